// Package cgrouptest writes cgroup v1 trees, /proc/<pid>/net/dev and /sys/dev/block
// files into a folder, for tests of readers of those files.
package cgrouptest

import (
	"fmt"
	"os"
	"path/filepath"
)

// Usage is what one cgroup's files say.
type Usage struct {
	CPUNanos, UserTicks, SystemTicks     uint64
	Periods, Throttled, ThrottledNanos   uint64
	MemUsage, MemMax, InactiveFile       uint64
	RSS, Cache, Mapped, Swap, Failcnt    uint64
	Device                               string // "253:0"
	ReadBytes, WriteBytes, Reads, Writes uint64
	Shares, Period                       uint64
	Quota                                int64
	Limit                                uint64
}

// WriteV1 writes the cgroup at path (e.g. /nk/kubepods/besteffort/pod<uid>) under
// mount in the v1 layout (cpuacct, cpu, memory, blkio hierarchies).
func WriteV1(mount, path string, u Usage) error {
	files := map[string]string{
		"cpuacct/cpuacct.usage":                           fmt.Sprint(u.CPUNanos),
		"cpuacct/cpuacct.stat":                            fmt.Sprintf("user %d\nsystem %d\n", u.UserTicks, u.SystemTicks),
		"cpu/cpu.stat":                                    fmt.Sprintf("nr_periods %d\nnr_throttled %d\nthrottled_time %d\n", u.Periods, u.Throttled, u.ThrottledNanos),
		"cpu/cpu.shares":                                  fmt.Sprint(u.Shares),
		"cpu/cpu.cfs_period_us":                           fmt.Sprint(u.Period),
		"cpu/cpu.cfs_quota_us":                            fmt.Sprint(u.Quota),
		"memory/memory.usage_in_bytes":                    fmt.Sprint(u.MemUsage),
		"memory/memory.max_usage_in_bytes":                fmt.Sprint(u.MemMax),
		"memory/memory.failcnt":                           fmt.Sprint(u.Failcnt),
		"memory/memory.limit_in_bytes":                    fmt.Sprint(u.Limit),
		"memory/memory.stat":                              fmt.Sprintf("cache %d\nrss %d\ntotal_cache %d\ntotal_rss %d\ntotal_mapped_file %d\ntotal_swap %d\ntotal_inactive_file %d\n", u.Cache, u.RSS, u.Cache, u.RSS, u.Mapped, u.Swap, u.InactiveFile),
		"blkio/blkio.throttle.io_service_bytes_recursive": fmt.Sprintf("%s Read %d\n%s Write %d\n%s Sync 0\nTotal %d\n", u.Device, u.ReadBytes, u.Device, u.WriteBytes, u.Device, u.ReadBytes+u.WriteBytes),
		"blkio/blkio.throttle.io_serviced_recursive":      fmt.Sprintf("%s Read %d\n%s Write %d\nTotal %d\n", u.Device, u.Reads, u.Device, u.Writes, u.Reads+u.Writes),
	}
	for rel, content := range files {
		dir, file := filepath.Split(rel)
		full := filepath.Join(mount, dir, path, file)
		if err := os.MkdirAll(filepath.Dir(full), 0o755); err != nil {
			return err
		}
		if err := os.WriteFile(full, []byte(content+"\n"), 0o644); err != nil {
			return err
		}
	}
	return nil
}

// NetDev is one /proc/net/dev line.
type NetDev struct {
	Name                                    string
	RxBytes, RxPackets, RxErrors, RxDropped uint64
	TxBytes, TxPackets, TxErrors, TxDropped uint64
}

// WriteNetDev writes <proc>/<pid>/net/dev.
func WriteNetDev(proc string, pid int, devs ...NetDev) error {
	s := "Inter-|   Receive                                                |  Transmit\n" +
		" face |bytes    packets errs drop fifo frame compressed multicast|bytes    packets errs drop fifo colls carrier compressed\n"
	for _, d := range devs {
		s += fmt.Sprintf("%6s: %d %d %d %d 0 0 0 0 %d %d %d %d 0 0 0 0\n", d.Name, d.RxBytes, d.RxPackets, d.RxErrors, d.RxDropped,
			d.TxBytes, d.TxPackets, d.TxErrors, d.TxDropped)
	}
	dir := filepath.Join(proc, fmt.Sprint(pid), "net")
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return err
	}
	return os.WriteFile(filepath.Join(dir, "dev"), []byte(s), 0o644)
}

// WriteBlockDevice writes <sys>/dev/block/<majMin>/uevent naming the device.
func WriteBlockDevice(sys, majMin, name string) error {
	dir := filepath.Join(sys, "dev", "block", majMin)
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return err
	}
	return os.WriteFile(filepath.Join(dir, "uevent"), []byte("MAJOR=253\nMINOR=0\nDEVNAME="+name+"\nDEVTYPE=disk\n"), 0o644)
}
