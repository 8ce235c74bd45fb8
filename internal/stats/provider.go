package stats

import (
	"context"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"strconv"
	"sync"
	"time"

	"github.com/prometheus/procfs"
	"golang.org/x/sys/unix"
	corev1 "k8s.io/api/core/v1"
	runtimeapi "k8s.io/cri-api/pkg/apis/runtime/v1"
	statsapi "k8s.io/kubelet/pkg/apis/stats/v1alpha1"
	"sigs.k8s.io/controller-runtime/pkg/client"

	"github.com/nodekeeper/nodekeeper/internal/podplan"
	"github.com/nodekeeper/nodekeeper/runtime/cri"
)

// HostReader reads the node. Linux reads the real one; tests use fixed values.
type HostReader interface {
	// Node reads CPU, memory and network (and nothing that walks disks).
	Node() (Host, error)
	// Statfs reads the filesystem holding path.
	Statfs(path string) (*Fs, error)
	// NetDev reads /proc/<pid>/net/dev: the interfaces of that process's network namespace.
	NetDev(pid int) ([]Interface, error)
	// DirUsage is what the files under path use (bytes in blocks, inodes), as du.
	DirUsage(path string) (bytes, inodes uint64, err error)
}

// Provider reads what Build needs from the host and the runtime and keeps the CPU
// samples between calls. Safe for concurrent use.
type Provider struct {
	NodeName string
	Runtime  cri.Runtime
	Host     HostReader
	// Pods, when set, gives pods' status.startTime (else the sandbox's creation time).
	Pods client.Reader
	// CgroupRoot, when set (the agent's cgroupRoot with cgroupsPerQOS), makes pod CPU
	// and memory come from each pod's cgroup when Host can read it (CgroupReader), as
	// upstream; otherwise they are the sums of the pod's containers.
	CgroupRoot string
	// RootDir is the agent's rootDir: nodefs, and <rootDir>/pods/<uid>/volumes/<name>
	// are read from it.
	RootDir string
	// PodLogsDir holds the containers' logs, <podLogsDir>/<ns>_<name>_<uid>/<container>/
	// (default <rootDir>/logs).
	PodLogsDir string

	mu   sync.Mutex
	prev Samples
}

// Summary reads the node and the runtime and builds the summary.
// Calls are serialized, so the samples kept for rates are always in time order.
func (p *Provider) Summary(ctx context.Context, onlyCPUAndMemory bool) (*statsapi.Summary, error) {
	p.mu.Lock()
	defer p.mu.Unlock()
	in, err := p.read(ctx, onlyCPUAndMemory)
	if err != nil {
		return nil, err
	}
	s, next := Build(in, p.prev)
	if p.prev == nil {
		p.prev = Samples{}
	}
	// keep the samples of what was not part of this call (e.g. a cpu-and-memory call
	// does not drop anything); drop what no longer exists only on a full call
	if onlyCPUAndMemory {
		for k, v := range next {
			p.prev[k] = v
		}
	} else {
		p.prev = next
	}
	return s, nil
}

func (p *Provider) read(ctx context.Context, onlyCPUAndMemory bool) (Input, error) {
	in := Input{NodeName: p.NodeName, OnlyCPUAndMemory: onlyCPUAndMemory}
	h, err := p.Host.Node()
	if err != nil {
		return in, fmt.Errorf("reading the node: %w", err)
	}
	if !onlyCPUAndMemory {
		if h.RootFs, err = p.Host.Statfs(p.RootDir); err != nil {
			return in, fmt.Errorf("reading nodefs: %w", err)
		}
		if fsi, err := p.Runtime.ImageFsInfo(ctx); err == nil && len(fsi) > 0 {
			in.ImageFsUsage = fsi[0]
			h.ImageFs, _ = p.Host.Statfs(fsi[0].GetFsId().GetMountpoint()) // capacity unknown if it cannot be read
		}
	}
	in.Host = h

	managed := map[string]string{podplan.LabelManaged: "true"}
	sbs, err := p.Runtime.ListPodSandbox(ctx, &runtimeapi.PodSandboxFilter{LabelSelector: managed,
		State: &runtimeapi.PodSandboxStateValue{State: runtimeapi.PodSandboxState_SANDBOX_READY}})
	if err != nil {
		return in, err
	}
	cs, err := p.Runtime.ListContainers(ctx, &runtimeapi.ContainerFilter{LabelSelector: managed,
		State: &runtimeapi.ContainerStateValue{State: runtimeapi.ContainerState_CONTAINER_RUNNING}})
	if err != nil {
		return in, err
	}
	stats, err := p.Runtime.ListContainerStats(ctx, &runtimeapi.ContainerStatsFilter{LabelSelector: managed})
	if err != nil {
		return in, err
	}
	statsByID := map[string]*runtimeapi.ContainerStats{}
	for _, s := range stats {
		statsByID[s.GetAttributes().GetId()] = s
	}
	bySandbox := map[string][]*runtimeapi.Container{}
	for _, c := range cs {
		bySandbox[c.GetPodSandboxId()] = append(bySandbox[c.GetPodSandboxId()], c)
	}
	for _, sb := range sbs {
		m := sb.GetMetadata()
		pod := Pod{Ref: statsapi.PodReference{Name: m.GetName(), Namespace: m.GetNamespace(), UID: m.GetUid()},
			StartTime: time.Unix(0, sb.GetCreatedAt())}
		if p.Pods != nil {
			obj := &corev1.Pod{}
			if err := p.Pods.Get(ctx, client.ObjectKey{Namespace: m.GetNamespace(), Name: m.GetName()}, obj); err == nil &&
				string(obj.UID) == m.GetUid() && obj.Status.StartTime != nil {
				pod.StartTime = obj.Status.StartTime.Time
			}
		}
		logsRoot := p.PodLogsDir
		if logsRoot == "" {
			logsRoot = filepath.Join(p.RootDir, "logs")
		}
		logDir := filepath.Join(logsRoot, m.GetNamespace()+"_"+m.GetName()+"_"+m.GetUid())
		for _, c := range bySandbox[sb.GetId()] {
			ct := Container{Name: c.GetMetadata().GetName(), CreatedAt: time.Unix(0, c.GetCreatedAt()), Stats: statsByID[c.GetId()]}
			if !onlyCPUAndMemory {
				ct.LogsUsedBytes, ct.LogsInodesUsed, _ = p.Host.DirUsage(filepath.Join(logDir, ct.Name)) // no logs yet: 0
			}
			pod.Containers = append(pod.Containers, ct)
		}
		if cr, ok := p.Host.(CgroupReader); ok && p.CgroupRoot != "" {
			if u, err := cr.PodCgroup(p.CgroupRoot, m.GetUid()); err == nil {
				pod.Cgroup = u
			}
		}
		if !onlyCPUAndMemory {
			p.readPodFs(ctx, sb, &pod)
		}
		in.Pods = append(in.Pods, pod)
	}
	return in, nil
}

// readPodFs reads the pod's network (its sandbox process's namespace) and volumes;
// what cannot be read is left out of the summary rather than failing it.
func (p *Provider) readPodFs(ctx context.Context, sb *runtimeapi.PodSandbox, pod *Pod) {
	if pid, err := p.Runtime.PodSandboxPID(ctx, sb.GetId()); err == nil && pid > 0 {
		if ifs, err := p.Host.NetDev(pid); err == nil {
			pod.Network, pod.NetworkTime = ifs, time.Now()
		}
	}
	dir := filepath.Join(p.RootDir, "pods", pod.Ref.UID, "volumes")
	entries, err := os.ReadDir(dir)
	if err != nil {
		return
	}
	for _, e := range entries {
		if !e.IsDir() {
			continue
		}
		path := filepath.Join(dir, e.Name())
		used, inodes, err := p.Host.DirUsage(path)
		if err != nil {
			continue
		}
		fs, _ := p.Host.Statfs(path)
		pod.Volumes = append(pod.Volumes, Volume{Name: e.Name(), UsedBytes: used, InodesUsed: inodes, Fs: fs})
	}
}

// Linux reads the real node through /proc (ProcDir, default /proc) and statfs.
type Linux struct {
	ProcDir string
	// CgroupMount is where the cgroup filesystems are (default /sys/fs/cgroup).
	CgroupMount string
}

func (l Linux) proc() string {
	if l.ProcDir == "" {
		return "/proc"
	}
	return l.ProcDir
}

// Node implements HostReader.
func (l Linux) Node() (Host, error) {
	pfs, err := procfs.NewFS(l.proc())
	if err != nil {
		return Host{}, err
	}
	now := time.Now()
	st, err := pfs.Stat()
	if err != nil {
		return Host{}, err
	}
	c := st.CPUTotal
	busy := c.User + c.Nice + c.System + c.IRQ + c.SoftIRQ + c.Steal
	mi, err := pfs.Meminfo()
	if err != nil {
		return Host{}, err
	}
	kb := func(v *uint64) uint64 {
		if v == nil {
			return 0
		}
		return *v * 1024
	}
	h := Host{Time: now, BootTime: time.Unix(int64(st.BootTime), 0), CPUNanoSeconds: uint64(busy * 1e9),
		Memory: Meminfo{TotalBytes: kb(mi.MemTotal), FreeBytes: kb(mi.MemFree), InactiveFileBytes: kb(mi.InactiveFile), AnonBytes: kb(mi.AnonPages)}}
	dev, err := pfs.NetDev()
	if err != nil {
		return Host{}, err
	}
	h.Interfaces = interfaces(dev)
	return h, nil
}

// NetDev implements HostReader.
func (l Linux) NetDev(pid int) ([]Interface, error) {
	pfs, err := procfs.NewFS(filepath.Join(l.proc(), strconv.Itoa(pid)))
	if err != nil {
		return nil, err
	}
	dev, err := pfs.NetDev()
	if err != nil {
		return nil, err
	}
	return interfaces(dev), nil
}

func interfaces(dev procfs.NetDev) []Interface {
	var out []Interface
	for _, d := range dev {
		out = append(out, Interface{Name: d.Name, RxBytes: d.RxBytes, RxErrors: d.RxErrors, TxBytes: d.TxBytes, TxErrors: d.TxErrors})
	}
	return out
}

// Statfs implements HostReader.
func (Linux) Statfs(path string) (*Fs, error) {
	var s unix.Statfs_t
	if err := unix.Statfs(path, &s); err != nil {
		return nil, fmt.Errorf("statfs %s: %w", path, err)
	}
	bs := uint64(s.Bsize)
	return &Fs{CapacityBytes: s.Blocks * bs, AvailableBytes: s.Bavail * bs, UsedBytes: (s.Blocks - s.Bfree) * bs,
		Inodes: s.Files, InodesFree: s.Ffree}, nil
}

// DirUsage implements HostReader: the blocks of every file and directory under path
// (not following symlinks, not crossing into other filesystems' content counted twice).
func (Linux) DirUsage(path string) (uint64, uint64, error) {
	var bytes, inodes uint64
	seen := map[uint64]bool{}
	err := filepath.WalkDir(path, func(p string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		var st unix.Stat_t
		if err := unix.Lstat(p, &st); err != nil {
			return nil // gone meanwhile
		}
		if seen[st.Ino] {
			return nil
		}
		seen[st.Ino] = true
		bytes += uint64(st.Blocks) * 512
		inodes++
		return nil
	})
	return bytes, inodes, err
}
