// Package stats builds the kubelet's Summary API (/stats/summary, the
// k8s.io/kubelet/pkg/apis/stats/v1alpha1 shape) and the resource metrics
// (/metrics/resource) that metrics-server reads.
//
// The computation is pure: Build takes what was read (host readings, CRI container
// stats, per-pod network and volume usage) and the previous CPU samples, and returns the
// Summary and the samples to keep for the next call (usageNanoCores is a rate, so it
// needs two cumulative samples). Provider (provider.go) is the small I/O layer that
// reads /proc, statfs and the CRI runtime and calls Build.
package stats

import (
	"sort"
	"time"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	runtimeapi "k8s.io/cri-api/pkg/apis/runtime/v1"
	statsapi "k8s.io/kubelet/pkg/apis/stats/v1alpha1"
)

// Host is what was read from the node at Time.
type Host struct {
	Time     time.Time
	BootTime time.Time
	// CPUNanoSeconds is the CPU time all CPUs spent not idle since boot (/proc/stat:
	// user+nice+system+irq+softirq+steal).
	CPUNanoSeconds uint64
	Memory         Meminfo
	// RootFs is the filesystem of the agent's rootDir (nodefs); ImageFs the one holding
	// the runtime's images (statfs of ImageFsInfo's mountpoint).
	RootFs, ImageFs *Fs
	// Interfaces are the node's network interfaces (/proc/net/dev).
	Interfaces []Interface
}

// Meminfo holds the /proc/meminfo values the summary needs, in bytes.
type Meminfo struct {
	TotalBytes, FreeBytes, InactiveFileBytes, AnonBytes uint64
}

// Fs is a statfs reading.
type Fs struct {
	CapacityBytes, AvailableBytes, UsedBytes uint64
	Inodes, InodesFree                       uint64
}

// Interface is one line of /proc/net/dev.
type Interface struct {
	Name                                 string
	RxBytes, RxErrors, TxBytes, TxErrors uint64
}

// Input is everything Build needs.
type Input struct {
	NodeName string
	Host     Host
	// ImageFsUsage is the runtime's own answer (CRI ImageFsInfo): bytes and inodes its
	// images use. nil when the runtime did not answer.
	ImageFsUsage *runtimeapi.FilesystemUsage
	Pods         []Pod
	// OnlyCPUAndMemory leaves out everything but cpu and memory (upstream's
	// only_cpu_and_memory=true, and what /metrics/resource reads).
	OnlyCPUAndMemory bool
}

// Pod is one running pod sandbox with what was read about it.
type Pod struct {
	Ref       statsapi.PodReference
	StartTime time.Time
	// Containers are the pod's running containers.
	Containers []Container
	// Network is the pod's network namespace (/proc/<sandbox pid>/net/dev) read at
	// NetworkTime; nil when it could not be read (the pod is on the node's network, or
	// the runtime gave no process).
	Network     []Interface
	NetworkTime time.Time
	Volumes     []Volume
	// Cgroup is the pod cgroup's reading; nil: pod CPU and memory are the containers' sums.
	Cgroup *CgroupUsage
}

// Container is one running container.
type Container struct {
	Name      string
	CreatedAt time.Time
	// Stats is the runtime's sample (CRI ListContainerStats).
	Stats *runtimeapi.ContainerStats
	// LogsUsedBytes and LogsInodesUsed are what the container's log files use on nodefs.
	LogsUsedBytes, LogsInodesUsed uint64
}

// Volume is one volume directory of the pod (<rootDir>/pods/<uid>/volumes/<name>).
type Volume struct {
	Name                  string
	UsedBytes, InodesUsed uint64
	Fs                    *Fs // the filesystem it lives on
}

// CPUSample is a cumulative CPU reading kept between calls, and the rate computed from it.
type CPUSample struct {
	Time           time.Time
	UsageNanoSecs  uint64
	UsageNanoCores *uint64
}

// Samples are the CPU samples kept between calls, by key ("node", "pod/<uid>",
// "container/<id>").
type Samples map[string]CPUSample

// NanoCores is the CPU rate between two cumulative samples, in billionths of a core:
// nil without a usable earlier sample (first sample, a counter that went back after a
// restart, or time that did not advance); a sample taken at the same time as the
// previous one keeps the previous rate (the runtime had not sampled again).
func NanoCores(prev, cur CPUSample) *uint64 {
	switch {
	case prev.Time.IsZero():
		return nil
	case cur.Time.Equal(prev.Time) && cur.UsageNanoSecs == prev.UsageNanoSecs:
		return prev.UsageNanoCores
	case !cur.Time.After(prev.Time) || cur.UsageNanoSecs < prev.UsageNanoSecs:
		return nil
	}
	v := uint64(float64(cur.UsageNanoSecs-prev.UsageNanoSecs) / float64(cur.Time.Sub(prev.Time).Nanoseconds()) * float64(time.Second))
	return &v
}

// cpu builds CPUStats for a cumulative reading, computing the rate against prev[key]
// unless the runtime gave one (runtimeRate), and records the sample in next.
func cpu(key string, t time.Time, usage uint64, runtimeRate *uint64, prev, next Samples) *statsapi.CPUStats {
	cur := CPUSample{Time: t, UsageNanoSecs: usage}
	cur.UsageNanoCores = runtimeRate
	if cur.UsageNanoCores == nil {
		cur.UsageNanoCores = NanoCores(prev[key], cur)
	}
	next[key] = cur
	return &statsapi.CPUStats{Time: metav1.NewTime(t), UsageCoreNanoSeconds: ptr(usage), UsageNanoCores: copyPtr(cur.UsageNanoCores)}
}

// Build computes the Summary from what was read, and the CPU samples to pass as prev
// next time. Pods and containers are sorted (namespace, name) so the output is stable.
func Build(in Input, prev Samples) (*statsapi.Summary, Samples) {
	next := Samples{}
	h := in.Host
	node := statsapi.NodeStats{NodeName: in.NodeName, StartTime: metav1.NewTime(h.BootTime)}
	node.CPU = cpu("node", h.Time, h.CPUNanoSeconds, nil, prev, next)
	// as cAdvisor's root cgroup: usage = total - free, working set = usage - inactive
	// file pages, available = capacity - working set (what eviction's memory.available is)
	m := h.Memory
	usage := sub(m.TotalBytes, m.FreeBytes)
	ws := sub(usage, m.InactiveFileBytes)
	node.Memory = &statsapi.MemoryStats{Time: metav1.NewTime(h.Time), UsageBytes: ptr(usage), WorkingSetBytes: ptr(ws),
		AvailableBytes: ptr(sub(m.TotalBytes, ws)), RSSBytes: ptr(m.AnonBytes)}
	if !in.OnlyCPUAndMemory {
		node.Fs = fsStats(h.Time, h.RootFs, nil, nil)
		node.Network = network(h.Time, h.Interfaces)
		if h.ImageFs != nil || in.ImageFsUsage != nil {
			node.Runtime = &statsapi.RuntimeStats{ImageFs: fsStats(h.Time, h.ImageFs,
				valuePtr(in.ImageFsUsage.GetUsedBytes()), valuePtr(in.ImageFsUsage.GetInodesUsed()))}
		}
	}

	pods := append([]Pod(nil), in.Pods...)
	sort.Slice(pods, func(i, j int) bool {
		if pods[i].Ref.Namespace != pods[j].Ref.Namespace {
			return pods[i].Ref.Namespace < pods[j].Ref.Namespace
		}
		return pods[i].Ref.Name < pods[j].Ref.Name
	})
	out := &statsapi.Summary{Node: node, Pods: []statsapi.PodStats{}}
	for _, p := range pods {
		out.Pods = append(out.Pods, podStats(in, h, p, prev, next))
	}
	return out, next
}

func podStats(in Input, h Host, p Pod, prev, next Samples) statsapi.PodStats {
	ps := statsapi.PodStats{PodRef: p.Ref, StartTime: metav1.NewTime(p.StartTime), Containers: []statsapi.ContainerStats{}}
	cs := append([]Container(nil), p.Containers...)
	sort.Slice(cs, func(i, j int) bool { return cs[i].Name < cs[j].Name })
	var cpuSum, wsSum, usageSum, rssSum uint64
	var cpuTime, memTime time.Time
	haveCPU, haveMem := false, false
	var ephemeral, ephemeralInodes uint64
	for _, c := range cs {
		st := c.Stats
		cstats := statsapi.ContainerStats{Name: c.Name, StartTime: metav1.NewTime(c.CreatedAt)}
		if u := st.GetCpu(); u.GetUsageCoreNanoSeconds() != nil {
			t := time.Unix(0, u.GetTimestamp())
			cstats.CPU = cpu("container/"+st.GetAttributes().GetId(), t, u.GetUsageCoreNanoSeconds().GetValue(),
				valuePtr(u.GetUsageNanoCores()), prev, next)
			cpuSum += u.GetUsageCoreNanoSeconds().GetValue()
			haveCPU = true
			if t.After(cpuTime) {
				cpuTime = t
			}
		}
		if m := st.GetMemory(); m.GetWorkingSetBytes() != nil {
			t := time.Unix(0, m.GetTimestamp())
			cstats.Memory = &statsapi.MemoryStats{Time: metav1.NewTime(t), WorkingSetBytes: valuePtr(m.GetWorkingSetBytes()),
				UsageBytes: valuePtr(m.GetUsageBytes()), RSSBytes: valuePtr(m.GetRssBytes()), AvailableBytes: valuePtr(m.GetAvailableBytes()),
				PageFaults: valuePtr(m.GetPageFaults()), MajorPageFaults: valuePtr(m.GetMajorPageFaults())}
			wsSum += m.GetWorkingSetBytes().GetValue()
			usageSum += m.GetUsageBytes().GetValue()
			rssSum += m.GetRssBytes().GetValue()
			haveMem = true
			if t.After(memTime) {
				memTime = t
			}
		}
		if !in.OnlyCPUAndMemory {
			if wl := st.GetWritableLayer(); wl != nil {
				cstats.Rootfs = fsStats(time.Unix(0, wl.GetTimestamp()), h.ImageFs, valuePtr(wl.GetUsedBytes()), valuePtr(wl.GetInodesUsed()))
				ephemeral += wl.GetUsedBytes().GetValue()
				ephemeralInodes += wl.GetInodesUsed().GetValue()
			}
			cstats.Logs = fsStats(h.Time, h.RootFs, ptr(c.LogsUsedBytes), ptr(c.LogsInodesUsed))
			ephemeral += c.LogsUsedBytes
			ephemeralInodes += c.LogsInodesUsed
		}
		ps.Containers = append(ps.Containers, cstats)
	}
	// pod cpu and memory: the pod cgroup's when it was read (as upstream), else the
	// sums of its containers'
	switch {
	case p.Cgroup != nil && p.Cgroup.HaveCPU:
		ps.CPU = cpu("pod/"+p.Ref.UID, p.Cgroup.Time, p.Cgroup.CPUNanoSeconds, nil, prev, next)
	case haveCPU:
		ps.CPU = cpu("pod/"+p.Ref.UID, cpuTime, cpuSum, nil, prev, next)
	}
	switch {
	case p.Cgroup != nil && p.Cgroup.HaveMemory:
		g := p.Cgroup
		ps.Memory = &statsapi.MemoryStats{Time: metav1.NewTime(g.Time), WorkingSetBytes: ptr(g.WorkingSetBytes), UsageBytes: ptr(g.UsageBytes),
			RSSBytes: ptr(g.RSSBytes), PageFaults: ptr(g.PageFaults), MajorPageFaults: ptr(g.MajorPageFaults)}
	case haveMem:
		ps.Memory = &statsapi.MemoryStats{Time: metav1.NewTime(memTime), WorkingSetBytes: ptr(wsSum), UsageBytes: ptr(usageSum), RSSBytes: ptr(rssSum)}
	}
	if in.OnlyCPUAndMemory {
		return ps
	}
	ps.Network = network(p.NetworkTime, p.Network)
	vols := append([]Volume(nil), p.Volumes...)
	sort.Slice(vols, func(i, j int) bool { return vols[i].Name < vols[j].Name })
	for _, v := range vols {
		fs := fsStats(h.Time, v.Fs, ptr(v.UsedBytes), ptr(v.InodesUsed))
		ps.VolumeStats = append(ps.VolumeStats, statsapi.VolumeStats{Name: v.Name, FsStats: *fs})
		ephemeral += v.UsedBytes
		ephemeralInodes += v.InodesUsed
	}
	ps.EphemeralStorage = fsStats(h.Time, h.RootFs, ptr(ephemeral), ptr(ephemeralInodes))
	return ps
}

// fsStats is a filesystem's capacity from statfs (when known) with usage: what the
// caller says was used, or for a whole filesystem (used nil) its statfs usage.
func fsStats(t time.Time, fs *Fs, used, inodesUsed *uint64) *statsapi.FsStats {
	out := &statsapi.FsStats{Time: metav1.NewTime(t), UsedBytes: used, InodesUsed: inodesUsed}
	if fs != nil {
		out.CapacityBytes, out.AvailableBytes = ptr(fs.CapacityBytes), ptr(fs.AvailableBytes)
		out.Inodes, out.InodesFree = ptr(fs.Inodes), ptr(fs.InodesFree)
		if used == nil {
			out.UsedBytes, out.InodesUsed = ptr(fs.UsedBytes), ptr(sub(fs.Inodes, fs.InodesFree))
		}
	}
	return out
}

// ignoredInterface is cAdvisor's list of interfaces left out of a network summary.
func ignoredInterface(name string) bool {
	for _, p := range []string{"lo", "veth", "docker", "nerdctl"} {
		if len(name) >= len(p) && name[:len(p)] == p {
			return true
		}
	}
	return false
}

// network is NetworkStats for the interfaces (lo and veths left out, as cAdvisor does);
// the top-level figures are eth0's, as upstream's default interface, or the first
// interface's when there is no eth0. nil when there is nothing.
func network(t time.Time, ifs []Interface) *statsapi.NetworkStats {
	var kept []statsapi.InterfaceStats
	for _, i := range ifs {
		if ignoredInterface(i.Name) {
			continue
		}
		kept = append(kept, statsapi.InterfaceStats{Name: i.Name, RxBytes: ptr(i.RxBytes), RxErrors: ptr(i.RxErrors),
			TxBytes: ptr(i.TxBytes), TxErrors: ptr(i.TxErrors)})
	}
	if len(kept) == 0 {
		return nil
	}
	sort.Slice(kept, func(i, j int) bool { return kept[i].Name < kept[j].Name })
	out := &statsapi.NetworkStats{Time: metav1.NewTime(t), Interfaces: kept, InterfaceStats: kept[0]}
	for _, i := range kept {
		if i.Name == "eth0" {
			out.InterfaceStats = i
		}
	}
	return out
}

func ptr(v uint64) *uint64 { return &v }

func copyPtr(p *uint64) *uint64 {
	if p == nil {
		return nil
	}
	return ptr(*p)
}

func valuePtr(v *runtimeapi.UInt64Value) *uint64 {
	if v == nil {
		return nil
	}
	return ptr(v.GetValue())
}

func sub(a, b uint64) uint64 {
	if b > a {
		return 0
	}
	return a - b
}
