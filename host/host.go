// Package host reads the facts about the machine that the Node reports: capacity, node
// info, addresses, and the live figures eviction signals are computed from.
// Host is the seam; Linux reads /proc, /sys and statfs, and tests use a fake.
package host

import (
	"bufio"
	"bytes"
	"fmt"
	"net"
	"os"
	"path/filepath"
	goruntime "runtime"
	"strconv"
	"strings"

	"golang.org/x/sys/unix"
	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/api/resource"
)

// Info is the static identity of the machine.
type Info struct {
	MachineID       string
	SystemUUID      string
	BootID          string
	KernelVersion   string
	OSImage         string
	OperatingSystem string
	Architecture    string
	Hostname        string
}

// Signal is one observed eviction signal: how much is available out of how much in all.
type Signal struct {
	Available resource.Quantity
	Capacity  resource.Quantity
}

// Stats maps eviction signal names (memory.available, nodefs.available, …) to their
// current observation. A signal the host cannot observe is absent.
type Stats map[string]Signal

// Host is what the node status needs from the machine. Implementations must be safe
// for concurrent use.
type Host interface {
	// Capacity returns cpu, memory, ephemeral-storage, pods and hugepages-<size>.
	Capacity() (corev1.ResourceList, error)
	// Info returns the machine's identity; it does not change while the agent runs
	// except BootID after a reboot.
	Info() (Info, error)
	// Stats returns the current eviction signal observations.
	Stats() (Stats, error)
	// Addresses returns the node's addresses: InternalIP (nodeIP when set) and
	// Hostname (hostname when set, as with upstream's --hostname-override).
	Addresses(nodeIP, hostname string) ([]corev1.NodeAddress, error)
}

// Linux reads the host through procfs, sysfs and statfs.
type Linux struct {
	// RootDir is the agent's state folder; its filesystem is nodefs.
	RootDir string
	// MaxPods is the pod capacity reported.
	MaxPods int32
	// ProcDir and SysDir default to /proc and /sys (overridable for tests).
	ProcDir, SysDir, EtcDir string
}

func (l *Linux) proc(p string) string { return filepath.Join(or(l.ProcDir, "/proc"), p) }
func (l *Linux) sys(p string) string  { return filepath.Join(or(l.SysDir, "/sys"), p) }
func (l *Linux) etc(p string) string  { return filepath.Join(or(l.EtcDir, "/etc"), p) }

func or(a, b string) string {
	if a != "" {
		return a
	}
	return b
}

// Capacity implements Host.
func (l *Linux) Capacity() (corev1.ResourceList, error) {
	mem, err := l.meminfo()
	if err != nil {
		return nil, err
	}
	fs, err := l.fsStats()
	if err != nil {
		return nil, err
	}
	out := corev1.ResourceList{
		corev1.ResourceCPU:              *resource.NewQuantity(int64(goruntime.NumCPU()), resource.DecimalSI),
		corev1.ResourceMemory:           *resource.NewQuantity(mem["MemTotal"], resource.BinarySI),
		corev1.ResourceEphemeralStorage: *resource.NewQuantity(fs.total, resource.BinarySI),
		corev1.ResourcePods:             *resource.NewQuantity(int64(l.MaxPods), resource.DecimalSI),
	}
	// hugepages-<size>: one entry per size the kernel offers, even when zero (as upstream)
	dirs, _ := filepath.Glob(l.sys("kernel/mm/hugepages/hugepages-*kB"))
	for _, d := range dirs {
		kb, err := strconv.ParseInt(strings.TrimSuffix(strings.TrimPrefix(filepath.Base(d), "hugepages-"), "kB"), 10, 64)
		if err != nil {
			continue
		}
		n, err := readInt(filepath.Join(d, "nr_hugepages"))
		if err != nil {
			continue
		}
		size := resource.NewQuantity(kb*1024, resource.BinarySI)
		out[corev1.ResourceName(corev1.ResourceHugePagesPrefix+size.String())] = *resource.NewQuantity(n*kb*1024, resource.BinarySI)
	}
	return out, nil
}

// Info implements Host.
func (l *Linux) Info() (Info, error) {
	var uts unix.Utsname
	if err := unix.Uname(&uts); err != nil {
		return Info{}, fmt.Errorf("uname: %w", err)
	}
	hostname, _ := os.Hostname()
	info := Info{
		MachineID:       readTrim(l.etc("machine-id")),
		SystemUUID:      strings.ToLower(readTrim(l.sys("class/dmi/id/product_uuid"))),
		BootID:          readTrim(l.proc("sys/kernel/random/boot_id")),
		KernelVersion:   unix.ByteSliceToString(uts.Release[:]),
		OSImage:         osImage(l.etc("os-release")),
		OperatingSystem: goruntime.GOOS,
		Architecture:    goruntime.GOARCH,
		Hostname:        strings.ToLower(hostname),
	}
	if info.MachineID == "" {
		info.MachineID = readTrim(l.sys("class/dmi/id/product_uuid"))
	}
	return info, nil
}

// Stats implements Host.
func (l *Linux) Stats() (Stats, error) {
	mem, err := l.meminfo()
	if err != nil {
		return nil, err
	}
	fs, err := l.fsStats()
	if err != nil {
		return nil, err
	}
	st := Stats{
		"memory.available": {
			Available: *resource.NewQuantity(mem["MemAvailable"], resource.BinarySI),
			Capacity:  *resource.NewQuantity(mem["MemTotal"], resource.BinarySI),
		},
		"nodefs.available":   {Available: *resource.NewQuantity(fs.avail, resource.BinarySI), Capacity: *resource.NewQuantity(fs.total, resource.BinarySI)},
		"nodefs.inodesFree":  {Available: *resource.NewQuantity(fs.inodesFree, resource.DecimalSI), Capacity: *resource.NewQuantity(fs.inodes, resource.DecimalSI)},
		"imagefs.available":  {Available: *resource.NewQuantity(fs.avail, resource.BinarySI), Capacity: *resource.NewQuantity(fs.total, resource.BinarySI)},
		"imagefs.inodesFree": {Available: *resource.NewQuantity(fs.inodesFree, resource.DecimalSI), Capacity: *resource.NewQuantity(fs.inodes, resource.DecimalSI)},
	}
	if pidMax, err := readInt(l.proc("sys/kernel/pid_max")); err == nil {
		if procs, err := l.processCount(); err == nil {
			st["pid.available"] = Signal{
				Available: *resource.NewQuantity(pidMax-procs, resource.DecimalSI),
				Capacity:  *resource.NewQuantity(pidMax, resource.DecimalSI),
			}
		}
	}
	return st, nil
}

// Addresses implements Host: InternalIP (nodeIP, else the first global unicast
// address of an interface that is up) and Hostname.
func (l *Linux) Addresses(nodeIP, hostname string) ([]corev1.NodeAddress, error) {
	ip := nodeIP
	if ip == "" {
		ifaces, err := net.Interfaces()
		if err != nil {
			return nil, fmt.Errorf("listing interfaces: %w", err)
		}
		for _, ifc := range ifaces {
			if ifc.Flags&net.FlagUp == 0 || ifc.Flags&net.FlagLoopback != 0 {
				continue
			}
			addrs, _ := ifc.Addrs()
			for _, a := range addrs {
				if n, ok := a.(*net.IPNet); ok && n.IP.To4() != nil && n.IP.IsGlobalUnicast() {
					ip = n.IP.String()
					break
				}
			}
			if ip != "" {
				break
			}
		}
	}
	var out []corev1.NodeAddress
	if ip != "" {
		out = append(out, corev1.NodeAddress{Type: corev1.NodeInternalIP, Address: ip})
	}
	if hostname == "" {
		h, err := os.Hostname()
		if err != nil {
			return nil, fmt.Errorf("reading hostname: %w", err)
		}
		hostname = strings.ToLower(h)
	}
	out = append(out, corev1.NodeAddress{Type: corev1.NodeHostName, Address: hostname})
	return out, nil
}

// meminfo returns /proc/meminfo values in bytes.
func (l *Linux) meminfo() (map[string]int64, error) {
	data, err := os.ReadFile(l.proc("meminfo"))
	if err != nil {
		return nil, fmt.Errorf("reading meminfo: %w", err)
	}
	out := map[string]int64{}
	sc := bufio.NewScanner(bytes.NewReader(data))
	for sc.Scan() {
		f := strings.Fields(sc.Text())
		if len(f) < 2 {
			continue
		}
		v, err := strconv.ParseInt(f[1], 10, 64)
		if err != nil {
			continue
		}
		if len(f) == 3 && f[2] == "kB" {
			v *= 1024
		}
		out[strings.TrimSuffix(f[0], ":")] = v
	}
	if out["MemTotal"] == 0 {
		return nil, fmt.Errorf("meminfo has no MemTotal")
	}
	return out, nil
}

type fsStats struct{ total, avail, inodes, inodesFree int64 }

func (l *Linux) fsStats() (fsStats, error) {
	dir := l.RootDir
	// measure the filesystem the root dir will live on even before it exists
	for dir != "/" && dir != "." {
		if _, err := os.Stat(dir); err == nil {
			break
		}
		dir = filepath.Dir(dir)
	}
	var st unix.Statfs_t
	if err := unix.Statfs(dir, &st); err != nil {
		return fsStats{}, fmt.Errorf("statfs %s: %w", dir, err)
	}
	bs := int64(st.Bsize)
	return fsStats{
		total: int64(st.Blocks) * bs, avail: int64(st.Bavail) * bs,
		inodes: int64(st.Files), inodesFree: int64(st.Ffree),
	}, nil
}

// processCount is the number of tasks, from /proc/loadavg's "running/total" field.
func (l *Linux) processCount() (int64, error) {
	f := strings.Fields(readTrim(l.proc("loadavg")))
	if len(f) < 4 {
		return 0, fmt.Errorf("unexpected loadavg")
	}
	_, total, ok := strings.Cut(f[3], "/")
	if !ok {
		return 0, fmt.Errorf("unexpected loadavg")
	}
	return strconv.ParseInt(total, 10, 64)
}

func readTrim(p string) string {
	b, err := os.ReadFile(p)
	if err != nil {
		return ""
	}
	return strings.TrimSpace(string(b))
}

func readInt(p string) (int64, error) {
	return strconv.ParseInt(readTrim(p), 10, 64)
}

func osImage(osRelease string) string {
	data, err := os.ReadFile(osRelease)
	if err != nil {
		return "Unknown"
	}
	for _, line := range strings.Split(string(data), "\n") {
		if v, ok := strings.CutPrefix(line, "PRETTY_NAME="); ok {
			return strings.Trim(v, `"'`)
		}
	}
	return "Unknown"
}
