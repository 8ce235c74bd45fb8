package cadvisor

import (
	"bufio"
	"bytes"
	"context"
	"errors"
	"os"
	"path/filepath"
	"runtime"
	"sort"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/procfs"
	"github.com/prometheus/procfs/blockdevice"
	"golang.org/x/sys/unix"
	runtimeapi "k8s.io/cri-api/pkg/apis/runtime/v1"

	"github.com/nodekeeper/nodekeeper/internal/cgroupfs"
	"github.com/nodekeeper/nodekeeper/internal/podplan"
	"github.com/nodekeeper/nodekeeper/runtime/cri"
)

// Source reads the pods' cgroups: for every ready sandbox of ours its pod cgroup, its
// sandbox container (which alone carries the pod's network, as cAdvisor's containerd
// handler) and its running containers. Containers are found in the cgroupfs layout
// the runtime gives them under the pod cgroup (<pod cgroup>/<container ID>); where no
// cgroup can be read, CPU and memory come from the runtime's stats (CRI), without the
// figures only the cgroup has (cache, CFS, block IO).
type Source struct {
	Runtime cri.Runtime
	// CgroupRoot is the agent's cgroupRoot when it makes pod cgroups (cgroupsPerQOS);
	// "" when it does not (the containers' cgroups are then not looked for).
	CgroupRoot string
	// CgroupMount (default /sys/fs/cgroup), ProcDir (default /proc) and SysDir
	// (default /sys) are where the kernel's files are.
	CgroupMount, ProcDir, SysDir string
	// Now is the clock readings are stamped with (default time.Now).
	Now func() time.Time

	mu     sync.Mutex
	images map[string]string // image ref -> name (first repo tag)
	fsDevs map[string]string // snapshot folder -> its mount's source
}

func (s *Source) now() time.Time {
	if s.Now == nil {
		return time.Now()
	}
	return s.Now()
}

func (s *Source) mount() string {
	if s.CgroupMount == "" {
		return "/sys/fs/cgroup"
	}
	return s.CgroupMount
}

func (s *Source) proc() string {
	if s.ProcDir == "" {
		return "/proc"
	}
	return s.ProcDir
}

func (s *Source) sys() string {
	if s.SysDir == "" {
		return "/sys"
	}
	return s.SysDir
}

// Read reads every cgroup once.
func (s *Source) Read(ctx context.Context) ([]Cgroup, error) {
	managed := map[string]string{podplan.LabelManaged: "true"}
	sbs, err := s.Runtime.ListPodSandbox(ctx, &runtimeapi.PodSandboxFilter{LabelSelector: managed,
		State: &runtimeapi.PodSandboxStateValue{State: runtimeapi.PodSandboxState_SANDBOX_READY}})
	if err != nil {
		return nil, err
	}
	cs, err := s.Runtime.ListContainers(ctx, &runtimeapi.ContainerFilter{LabelSelector: managed,
		State: &runtimeapi.ContainerStateValue{State: runtimeapi.ContainerState_CONTAINER_RUNNING}})
	if err != nil {
		return nil, err
	}
	criStats := map[string]*runtimeapi.ContainerStats{}
	if st, err := s.Runtime.ListContainerStats(ctx, &runtimeapi.ContainerStatsFilter{LabelSelector: managed}); err == nil {
		for _, c := range st {
			criStats[c.GetAttributes().GetId()] = c
		}
	}
	bySandbox := map[string][]*runtimeapi.Container{}
	for _, c := range cs {
		bySandbox[c.GetPodSandboxId()] = append(bySandbox[c.GetPodSandboxId()], c)
	}
	devices := s.blockDevices()
	// the root cgroup, as cAdvisor's raw root container: the node's usage, its network
	// (this process's namespace) and its block-device filesystems
	rootCg := Cgroup{ID: "/", Stats: s.readCgroup("/", devices)}
	rootCg.Stats.Filesystems = s.filesystems()
	rootCg.Stats.Network = s.netDev(os.Getpid())
	if rootCg.Stats.Time.IsZero() {
		rootCg.Stats.Time = s.now()
	}
	out := []Cgroup{rootCg}
	for _, sb := range sbs {
		m := sb.GetMetadata()
		podPath := s.podCgroup(m.GetUid())
		if podPath != "" {
			out = append(out, Cgroup{ID: podPath, Pod: m.GetName(), Namespace: m.GetNamespace(),
				Stats: s.readCgroup(podPath, devices)})
		}
		sandbox := Cgroup{ID: join(podPath, sb.GetId()), Name: sb.GetId(), Pod: m.GetName(), Namespace: m.GetNamespace()}
		if podPath != "" {
			sandbox.Stats = s.readCgroup(sandbox.ID, devices)
		}
		if sandbox.Stats.Time.IsZero() {
			sandbox.Stats.Time = s.now()
		}
		sandbox.Stats.StartTime = time.Unix(0, sb.GetCreatedAt())
		if pid, err := s.Runtime.PodSandboxPID(ctx, sb.GetId()); err == nil && pid > 0 {
			sandbox.Stats.Network = s.netDev(pid)
		}
		out = append(out, sandbox)
		for _, c := range bySandbox[sb.GetId()] {
			cg := Cgroup{ID: join(podPath, c.GetId()), Name: c.GetId(), Image: s.imageName(ctx, c),
				Pod: m.GetName(), Namespace: m.GetNamespace(), Container: c.GetMetadata().GetName()}
			if podPath != "" {
				cg.Stats = s.readCgroup(cg.ID, devices)
			}
			if cg.Stats.CPU == nil || cg.Stats.Memory == nil {
				fromCRI(&cg.Stats, criStats[c.GetId()])
			}
			cg.Stats.StartTime = time.Unix(0, c.GetCreatedAt())
			if w := criStats[c.GetId()].GetWritableLayer(); w.GetUsedBytes() != nil {
				cg.Stats.Fs = &FsUsage{Device: s.fsDevice(w.GetFsId().GetMountpoint()), Bytes: w.GetUsedBytes().GetValue()}
			}
			out = append(out, cg)
		}
	}
	return out, nil
}

func join(parent, id string) string {
	if parent == "" {
		return "/" + id
	}
	return parent + "/" + id
}

// podCgroup is the pod's cgroup path under CgroupRoot, "" when it has none.
func (s *Source) podCgroup(uid string) string {
	if s.CgroupRoot == "" {
		return ""
	}
	for _, qos := range []string{"", "burstable", "besteffort"} {
		p := filepath.Join(s.CgroupRoot, "kubepods", qos, "pod"+uid)
		if !strings.HasPrefix(p, "/") {
			p = "/" + p
		}
		if _, err := os.Stat(s.memoryDir(p)); err == nil {
			return p
		}
	}
	return ""
}

func (s *Source) v2() bool {
	_, err := os.Stat(filepath.Join(s.mount(), "cgroup.controllers"))
	return err == nil
}

func (s *Source) memoryDir(p string) string {
	if s.v2() {
		return filepath.Join(s.mount(), p)
	}
	return filepath.Join(s.mount(), "memory", p)
}

// readCgroup reads what the cgroup's files say; Time stays zero when nothing could be read.
func (s *Source) readCgroup(p string, devices map[string]string) Stats {
	st := Stats{}
	if s.v2() {
		dir := filepath.Join(s.mount(), p)
		if cpu, err := cgroupfs.Keyed(filepath.Join(dir, "cpu.stat")); err == nil {
			st.CPU = &CPU{UsageNanos: cpu["usage_usec"] * 1000, UserNanos: cpu["user_usec"] * 1000, SystemNanos: cpu["system_usec"] * 1000,
				HaveUserSystem: true, Periods: cpu["nr_periods"], ThrottledPeriods: cpu["nr_throttled"], ThrottledNanos: cpu["throttled_usec"] * 1000,
				HaveCFS: true}
		}
		cur, err1 := cgroupfs.Uint(filepath.Join(dir, "memory.current"))
		ms, err2 := cgroupfs.Keyed(filepath.Join(dir, "memory.stat"))
		if err1 == nil && err2 == nil {
			peak, _ := cgroupfs.Uint(filepath.Join(dir, "memory.peak"))
			swap, _ := cgroupfs.Uint(filepath.Join(dir, "memory.swap.current"))
			ev, _ := cgroupfs.Keyed(filepath.Join(dir, "memory.events"))
			st.Memory = &Memory{Usage: cur, MaxUsage: peak, WorkingSet: sub(cur, ms["inactive_file"]), RSS: ms["anon"], Cache: ms["file"],
				Swap: swap, MappedFile: ms["file_mapped"], Failcnt: ev["max"],
				KernelUsage: ms["kernel"], ActiveFile: ms["active_file"], InactiveFile: ms["inactive_file"],
				Pgfault: ms["pgfault"], Pgmajfault: ms["pgmajfault"], EventsHigh: ev["high"], EventsMax: ev["max"], HaveDetail: true}
			if ev != nil {
				oom := ev["oom_kill"]
				st.OOMKills = &oom
			}
		}
		st.Processes = s.processes(dir, dir)
		st.Blkio = ioStatV2(filepath.Join(dir, "io.stat"), devices)
		st.Spec = specV2(dir)
	} else {
		m := s.mount()
		if usage, err := cgroupfs.Uint(filepath.Join(m, "cpuacct", p, "cpuacct.usage")); err == nil {
			cpu := &CPU{UsageNanos: usage}
			if us, err := cgroupfs.Keyed(filepath.Join(m, "cpuacct", p, "cpuacct.stat")); err == nil {
				// USER_HZ ticks (100 a second), as cAdvisor/libcontainer convert them
				cpu.UserNanos, cpu.SystemNanos, cpu.HaveUserSystem = us["user"]*1e7, us["system"]*1e7, true
			}
			if cs, err := cgroupfs.Keyed(filepath.Join(m, "cpu", p, "cpu.stat")); err == nil {
				cpu.Periods, cpu.ThrottledPeriods, cpu.ThrottledNanos, cpu.HaveCFS = cs["nr_periods"], cs["nr_throttled"], cs["throttled_time"], true
			}
			st.CPU = cpu
		}
		dir := filepath.Join(m, "memory", p)
		cur, err1 := cgroupfs.Uint(filepath.Join(dir, "memory.usage_in_bytes"))
		ms, err2 := cgroupfs.Keyed(filepath.Join(dir, "memory.stat"))
		if err1 == nil && err2 == nil {
			maxUsage, _ := cgroupfs.Uint(filepath.Join(dir, "memory.max_usage_in_bytes"))
			failcnt, _ := cgroupfs.Uint(filepath.Join(dir, "memory.failcnt"))
			kernel, _ := cgroupfs.Uint(filepath.Join(dir, "memory.kmem.usage_in_bytes"))
			st.Memory = &Memory{Usage: cur, MaxUsage: maxUsage, WorkingSet: sub(cur, ms["total_inactive_file"]), RSS: ms["total_rss"],
				Cache: ms["total_cache"], Swap: ms["total_swap"], MappedFile: ms["total_mapped_file"], Failcnt: failcnt,
				KernelUsage: kernel, ActiveFile: ms["total_active_file"], InactiveFile: ms["total_inactive_file"],
				Pgfault: ms["pgfault"], Pgmajfault: ms["pgmajfault"], HaveDetail: true}
			if oc, err := cgroupfs.Keyed(filepath.Join(dir, "memory.oom_control")); err == nil {
				oom := oc["oom_kill"]
				st.OOMKills = &oom
			}
		}
		st.Processes = s.processes(filepath.Join(m, "cpu", p), filepath.Join(m, "pids", p))
		st.Blkio = blkioV1(filepath.Join(m, "blkio", p), devices)
		st.Spec = specV1(m, p)
	}
	if st.CPU != nil || st.Memory != nil {
		st.Time = s.now()
	}
	return st
}

// fromCRI fills CPU and memory from the runtime's stats when the cgroup gave none.
func fromCRI(st *Stats, c *runtimeapi.ContainerStats) {
	if c == nil {
		return
	}
	if st.CPU == nil && c.GetCpu().GetUsageCoreNanoSeconds() != nil {
		st.CPU = &CPU{UsageNanos: c.GetCpu().GetUsageCoreNanoSeconds().GetValue()}
		st.Time = time.Unix(0, c.GetCpu().GetTimestamp())
	}
	if m := c.GetMemory(); st.Memory == nil && m.GetWorkingSetBytes() != nil {
		st.Memory = &Memory{Usage: m.GetUsageBytes().GetValue(), WorkingSet: m.GetWorkingSetBytes().GetValue(), RSS: m.GetRssBytes().GetValue()}
		if st.Time.IsZero() {
			st.Time = time.Unix(0, m.GetTimestamp())
		}
	}
}

// imageName is the container's image as a name (its first repo tag), as cAdvisor
// labels it, or what the runtime says the container runs.
func (s *Source) imageName(ctx context.Context, c *runtimeapi.Container) string {
	ref := c.GetImageRef()
	if ref == "" {
		ref = c.GetImage().GetImage()
	}
	s.mu.Lock()
	name, ok := s.images[ref]
	s.mu.Unlock()
	if ok {
		return name
	}
	name = c.GetImage().GetImage()
	if img, err := s.Runtime.ImageStatus(ctx, &runtimeapi.ImageSpec{Image: ref}); err == nil && img != nil && len(img.GetRepoTags()) > 0 {
		name = img.GetRepoTags()[0]
	}
	if name == "" {
		name = ref
	}
	s.mu.Lock()
	if s.images == nil {
		s.images = map[string]string{}
	}
	s.images[ref] = name
	s.mu.Unlock()
	return name
}

// netDev reads the interfaces of a process's network namespace, without the ones
// cAdvisor ignores (lo, veth*, docker*).
func (s *Source) netDev(pid int) []Interface {
	fs, err := procfs.NewFS(filepath.Join(s.proc(), strconv.Itoa(pid)))
	if err != nil {
		return nil
	}
	dev, err := fs.NetDev()
	if err != nil {
		return nil
	}
	var out []Interface
	for _, d := range dev {
		if ignoredInterface(d.Name) {
			continue
		}
		out = append(out, Interface{Name: d.Name, RxBytes: d.RxBytes, RxPackets: d.RxPackets, RxErrors: d.RxErrors, RxDropped: d.RxDropped,
			TxBytes: d.TxBytes, TxPackets: d.TxPackets, TxErrors: d.TxErrors, TxDropped: d.TxDropped})
	}
	return out
}

func ignoredInterface(name string) bool {
	for _, p := range []string{"lo", "veth", "docker", "nerdctl"} {
		if strings.HasPrefix(name, p) {
			return true
		}
	}
	return false
}

// blockDevices maps "major:minor" to the device's path (/dev/<DEVNAME>), from
// /sys/dev/block/*/uevent, as cAdvisor names devices.
func (s *Source) blockDevices() map[string]string {
	out := map[string]string{}
	dir := filepath.Join(s.sys(), "dev", "block")
	entries, err := os.ReadDir(dir)
	if err != nil {
		return out
	}
	for _, e := range entries {
		b, err := os.ReadFile(filepath.Join(dir, e.Name(), "uevent"))
		if err != nil {
			continue
		}
		for _, line := range strings.Split(string(b), "\n") {
			if v, ok := strings.CutPrefix(line, "DEVNAME="); ok {
				out[e.Name()] = "/dev/" + v
			}
		}
	}
	return out
}

func deviceName(devices map[string]string, majMin string) string {
	if d, ok := devices[majMin]; ok {
		return d
	}
	return majMin
}

// blkioV1 reads blkio.throttle.io_service_bytes_recursive and io_serviced_recursive
// ("8:0 Read 1234" lines).
func blkioV1(dir string, devices map[string]string) []Device {
	byDev := map[string]*Device{}
	get := func(k string) *Device {
		if byDev[k] == nil {
			maj, min, _ := strings.Cut(k, ":")
			byDev[k] = &Device{Device: deviceName(devices, k), Major: maj, Minor: min, Bytes: map[string]uint64{}}
		}
		return byDev[k]
	}
	read := func(file string, set func(d *Device, op string, v uint64)) {
		b, err := os.ReadFile(filepath.Join(dir, file))
		if err != nil {
			return
		}
		sc := bufio.NewScanner(bytes.NewReader(b))
		for sc.Scan() {
			f := strings.Fields(sc.Text())
			if len(f) != 3 {
				continue
			}
			v, err := strconv.ParseUint(f[2], 10, 64)
			if err != nil {
				continue
			}
			set(get(f[0]), f[1], v)
		}
	}
	read("blkio.throttle.io_service_bytes_recursive", func(d *Device, op string, v uint64) {
		d.Bytes[op] = v
		switch op {
		case "Read":
			d.ReadBytes = v
		case "Write":
			d.WriteBytes = v
		}
	})
	read("blkio.throttle.io_serviced_recursive", func(d *Device, op string, v uint64) {
		switch op {
		case "Read":
			d.Reads = v
		case "Write":
			d.Writes = v
		}
	})
	return devs(byDev)
}

// ioStatV2 reads io.stat ("8:0 rbytes=1 wbytes=2 rios=3 wios=4 ...").
func ioStatV2(file string, devices map[string]string) []Device {
	b, err := os.ReadFile(file)
	if err != nil {
		return nil
	}
	byDev := map[string]*Device{}
	sc := bufio.NewScanner(bytes.NewReader(b))
	for sc.Scan() {
		f := strings.Fields(sc.Text())
		if len(f) < 2 {
			continue
		}
		maj, min, _ := strings.Cut(f[0], ":")
		d := &Device{Device: deviceName(devices, f[0]), Major: maj, Minor: min, Bytes: map[string]uint64{}}
		for _, kv := range f[1:] {
			k, v, ok := strings.Cut(kv, "=")
			if !ok {
				continue
			}
			n, _ := strconv.ParseUint(v, 10, 64)
			switch k {
			case "rbytes":
				d.ReadBytes, d.Bytes["Read"] = n, n
			case "wbytes":
				d.WriteBytes, d.Bytes["Write"] = n, n
			case "dbytes":
				d.Bytes["Discard"] = n
			case "rios":
				d.Reads = n
			case "wios":
				d.Writes = n
			}
		}
		byDev[f[0]] = d
	}
	return devs(byDev)
}

func devs(m map[string]*Device) []Device {
	var out []Device
	for _, d := range m {
		out = append(out, *d)
	}
	return out
}

func specV1(mount, p string) *Spec {
	shares, err := cgroupfs.Uint(filepath.Join(mount, "cpu", p, "cpu.shares"))
	if err != nil {
		return nil
	}
	sp := &Spec{CPUShares: shares}
	sp.CPUPeriod, _ = cgroupfs.Uint(filepath.Join(mount, "cpu", p, "cpu.cfs_period_us"))
	if q, err := cgroupfs.Int(filepath.Join(mount, "cpu", p, "cpu.cfs_quota_us")); err == nil && q > 0 {
		sp.CPUQuota = uint64(q)
	}
	if l, err := cgroupfs.Uint(filepath.Join(mount, "memory", p, "memory.limit_in_bytes")); err == nil {
		sp.MemoryLimit, sp.HaveMemoryLimit = l, true
		sp.MemorySwapLimit, _ = cgroupfs.Uint(filepath.Join(mount, "memory", p, "memory.memsw.limit_in_bytes"))
		sp.MemoryReservation, _ = cgroupfs.Uint(filepath.Join(mount, "memory", p, "memory.soft_limit_in_bytes"))
	}
	return sp
}

func specV2(dir string) *Spec {
	w, err := cgroupfs.Uint(filepath.Join(dir, "cpu.weight"))
	if err != nil {
		return nil
	}
	// cAdvisor converts the weight back to shares as runc maps them
	sp := &Spec{CPUShares: 2 + ((w-1)*262142)/9999}
	if b, err := os.ReadFile(filepath.Join(dir, "cpu.max")); err == nil {
		f := strings.Fields(string(b))
		if len(f) == 2 {
			if f[0] != "max" {
				sp.CPUQuota, _ = strconv.ParseUint(f[0], 10, 64)
			}
			sp.CPUPeriod, _ = strconv.ParseUint(f[1], 10, 64)
		}
	}
	if b, err := os.ReadFile(filepath.Join(dir, "memory.max")); err == nil {
		if v := strings.TrimSpace(string(b)); v != "max" {
			sp.MemoryLimit, _ = strconv.ParseUint(v, 10, 64)
			sp.HaveMemoryLimit = true
		}
		unlimited := func(file string) uint64 {
			b, _ := os.ReadFile(filepath.Join(dir, file))
			v := strings.TrimSpace(string(b))
			if v == "max" {
				return ^uint64(0)
			}
			n, _ := strconv.ParseUint(v, 10, 64)
			return n
		}
		sp.MemorySwapLimit, sp.MemoryReservation = unlimited("memory.swap.max"), unlimited("memory.low")
	}
	return sp
}

// mounts are this process's mounts (<ProcDir>/self/mountinfo).
func (s *Source) mounts() ([]*procfs.MountInfo, error) {
	pfs, err := procfs.NewFS(s.proc())
	if err != nil {
		return nil, err
	}
	self, err := pfs.Self()
	if err != nil {
		return nil, err
	}
	return self.MountInfo()
}

// filesystems are the mounted block-device filesystems (a source under /dev/, each
// device once), with statfs figures and the device's /proc/diskstats counters, as
// cAdvisor's fs.GetGlobalFsInfo.
func (s *Source) filesystems() []Filesystem {
	mounts, err := s.mounts()
	if err != nil {
		return nil
	}
	disk := map[string]blockdevice.IOStats{}
	if bfs, err := blockdevice.NewFS(s.proc(), s.sys()); err == nil {
		if ds, err := bfs.ProcDiskstats(); err == nil {
			for _, d := range ds {
				disk["/dev/"+d.Info.DeviceName] = d.IOStats
			}
		}
	}
	seen := map[string]bool{}
	var out []Filesystem
	for _, m := range mounts {
		if !strings.HasPrefix(m.Source, "/dev/") || seen[m.Source] {
			continue
		}
		var st unix.Statfs_t
		if err := unix.Statfs(m.MountPoint, &st); err != nil {
			continue
		}
		seen[m.Source] = true
		bs := uint64(st.Bsize)
		f := Filesystem{Device: m.Source, Limit: st.Blocks * bs, Usage: (st.Blocks - st.Bfree) * bs, Inodes: st.Files, InodesFree: st.Ffree}
		if io, ok := disk[m.Source]; ok {
			f.HaveDiskStats = true
			f.ReadsCompleted, f.ReadsMerged, f.SectorsRead, f.ReadTimeMs = io.ReadIOs, io.ReadMerges, io.ReadSectors, io.ReadTicks
			f.WritesCompleted, f.WritesMerged, f.SectorsWritten, f.WriteTimeMs = io.WriteIOs, io.WriteMerges, io.WriteSectors, io.WriteTicks
			f.IoInProgress, f.IoTimeMs, f.WeightedIoTimeMs = io.IOsInProgress, io.IOsTotalTicks, io.WeightedIOTicks
		}
		out = append(out, f)
	}
	return out
}

// fsDevice is the source of the longest mount point holding path (/dev/vda1), as
// cAdvisor's GetDirFsDevice; "" if unknown. Looked up once per path.
func (s *Source) fsDevice(path string) string {
	if path == "" {
		return ""
	}
	s.mu.Lock()
	dev, ok := s.fsDevs[path]
	s.mu.Unlock()
	if ok {
		return dev
	}
	if mounts, err := s.mounts(); err == nil {
		best := -1
		for _, m := range mounts {
			mp := m.MountPoint
			if (path == mp || strings.HasPrefix(path, strings.TrimSuffix(mp, "/")+"/")) && len(mp) > best {
				best, dev = len(mp), m.Source
			}
		}
	}
	s.mu.Lock()
	if s.fsDevs == nil {
		s.fsDevs = map[string]string{}
	}
	s.fsDevs[path] = dev
	s.mu.Unlock()
	return dev
}

// processes is cAdvisor's processStatsFromProcs: the processes in procsDir's
// cgroup.procs, their open file descriptors and sockets, the soft open-files limit of the
// root process (the lowest PID: the container's init, which started first), and the
// pids controller's pids.current / pids.max in pidsDir; nil when cgroup.procs cannot be
// read.
func (s *Source) processes(procsDir, pidsDir string) *Processes {
	b, err := os.ReadFile(filepath.Join(procsDir, "cgroup.procs"))
	if err != nil {
		return nil
	}
	var pids []int
	for _, f := range strings.Fields(string(b)) {
		if p, err := strconv.Atoi(f); err == nil {
			pids = append(pids, p)
		}
	}
	sort.Ints(pids)
	ps := &Processes{Count: uint64(len(pids))}
	for _, pid := range pids {
		fdDir := filepath.Join(s.proc(), strconv.Itoa(pid), "fd")
		fds, err := os.ReadDir(fdDir)
		if err != nil {
			continue
		}
		ps.FDs += uint64(len(fds))
		for _, fd := range fds {
			if link, err := os.Readlink(filepath.Join(fdDir, fd.Name())); err == nil && strings.HasPrefix(link, "socket") {
				ps.Sockets++
			}
		}
	}
	if len(pids) > 0 {
		if b, err := os.ReadFile(filepath.Join(s.proc(), strconv.Itoa(pids[0]), "limits")); err == nil {
			ps.MaxOpenFiles, ps.HaveMaxOpenFiles = maxOpenFiles(string(b))
		}
	}
	if cur, err := cgroupfs.Uint(filepath.Join(pidsDir, "pids.current")); err == nil {
		ps.Threads, ps.HaveThreads = cur, true
		if b, err := os.ReadFile(filepath.Join(pidsDir, "pids.max")); err == nil {
			if v := strings.TrimSpace(string(b)); v != "max" {
				ps.ThreadsMax, _ = strconv.ParseUint(v, 10, 64)
			}
		}
	}
	return ps
}

// maxOpenFiles is the soft limit of the "Max open files" line of /proc/<pid>/limits
// (-1: unlimited), as cAdvisor's processLimitsFile.
func maxOpenFiles(limits string) (int64, bool) {
	for _, line := range strings.Split(limits, "\n") {
		rest, ok := strings.CutPrefix(line, "Max open files")
		if !ok {
			continue
		}
		f := strings.Fields(rest)
		if len(f) != 3 {
			return 0, false
		}
		if strings.EqualFold(f[0], "unlimited") {
			return -1, true
		}
		v, err := strconv.ParseInt(f[0], 10, 64)
		return v, err == nil
	}
	return 0, false
}

func sub(a, b uint64) uint64 {
	if b > a {
		return 0
	}
	return a - b
}

// Collector is a prometheus.Collector reading Source at each scrape.
type Collector struct {
	Source *Source
	// Machine gives the machine_* figures (nil: logical CPUs, no memory).
	Machine func() Machine
	// OnError receives a failed read (the scrape then has only the machine series).
	OnError func(error)
}

// Describe implements prometheus.Collector.
func (c *Collector) Describe(ch chan<- *prometheus.Desc) {
	for _, d := range allDescs {
		ch <- d
	}
}

// Collect implements prometheus.Collector.
func (c *Collector) Collect(ch chan<- prometheus.Metric) {
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	var cgs []Cgroup
	if c.Source == nil {
		if c.OnError != nil {
			c.OnError(errors.New("no cgroup source"))
		}
	} else if got, err := c.Source.Read(ctx); err != nil {
		if c.OnError != nil {
			c.OnError(err)
		}
	} else {
		cgs = got
	}
	m := Machine{CPUCores: runtime.NumCPU()}
	if c.Machine != nil {
		m = c.Machine()
	}
	for _, s := range Metrics(cgs, m) {
		ch <- s
	}
}
