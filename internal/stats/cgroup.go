package stats

import (
	"errors"
	"os"
	"path/filepath"
	"time"

	"github.com/nodekeeper/nodekeeper/internal/cgroupfs"
)

// CgroupUsage is what a pod's cgroup says it uses: the pod's figures as upstream reports
// them (the pause process and every container included), not a sum of containers.
type CgroupUsage struct {
	Time                        time.Time
	CPUNanoSeconds              uint64
	WorkingSetBytes, UsageBytes uint64
	RSSBytes                    uint64
	PageFaults, MajorPageFaults uint64
	HaveCPU, HaveMemory         bool
}

// CgroupReader is a HostReader that can read pod cgroups (Linux can; optional).
type CgroupReader interface {
	// PodCgroup reads the cgroup of the pod with uid under root (cgroupfs layout:
	// root/kubepods[/burstable|/besteffort]/pod<uid>).
	PodCgroup(root, uid string) (*CgroupUsage, error)
}

// ErrNoCgroup is returned when the pod has no cgroup to read.
var ErrNoCgroup = errors.New("no pod cgroup")

// PodCgroup implements CgroupReader for cgroup v1 (cpuacct and memory hierarchies) and
// v2 (unified), under CgroupMount (default /sys/fs/cgroup).
func (l Linux) PodCgroup(root, uid string) (*CgroupUsage, error) {
	mount := l.CgroupMount
	if mount == "" {
		mount = "/sys/fs/cgroup"
	}
	_, err := os.Stat(filepath.Join(mount, "cgroup.controllers"))
	v2 := err == nil
	memDir := func(p string) string {
		if v2 {
			return filepath.Join(mount, p)
		}
		return filepath.Join(mount, "memory", p)
	}
	var path string
	for _, qos := range []string{"", "burstable", "besteffort"} {
		p := filepath.Join(root, "kubepods", qos, "pod"+uid)
		if _, err := os.Stat(memDir(p)); err == nil {
			path = p
			break
		}
	}
	if path == "" {
		return nil, ErrNoCgroup
	}
	u := &CgroupUsage{Time: time.Now()}
	if v2 {
		dir := filepath.Join(mount, path)
		if st, err := cgroupfs.Keyed(filepath.Join(dir, "cpu.stat")); err == nil {
			u.CPUNanoSeconds, u.HaveCPU = st["usage_usec"]*1000, true
		}
		cur, err1 := cgroupfs.Uint(filepath.Join(dir, "memory.current"))
		st, err2 := cgroupfs.Keyed(filepath.Join(dir, "memory.stat"))
		if err1 == nil && err2 == nil {
			u.UsageBytes, u.RSSBytes, u.HaveMemory = cur, st["anon"], true
			u.WorkingSetBytes = sub(cur, st["inactive_file"])
			u.PageFaults, u.MajorPageFaults = st["pgfault"], st["pgmajfault"]
		}
		return u, nil
	}
	if v, err := cgroupfs.Uint(filepath.Join(mount, "cpuacct", path, "cpuacct.usage")); err == nil {
		u.CPUNanoSeconds, u.HaveCPU = v, true
	}
	cur, err1 := cgroupfs.Uint(filepath.Join(mount, "memory", path, "memory.usage_in_bytes"))
	st, err2 := cgroupfs.Keyed(filepath.Join(mount, "memory", path, "memory.stat"))
	if err1 == nil && err2 == nil {
		u.UsageBytes, u.RSSBytes, u.HaveMemory = cur, st["total_rss"], true
		u.WorkingSetBytes = sub(cur, st["total_inactive_file"])
		u.PageFaults, u.MajorPageFaults = st["total_pgfault"], st["total_pgmajfault"]
	}
	return u, nil
}
