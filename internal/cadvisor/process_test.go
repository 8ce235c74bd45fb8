package cadvisor

import (
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	dto "github.com/prometheus/client_model/go"
)

func writeFile(t *testing.T, p, content string) {
	t.Helper()
	if err := os.MkdirAll(filepath.Dir(p), 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(p, []byte(content), 0o644); err != nil {
		t.Fatal(err)
	}
}

// cAdvisor's process figures: processes in cgroup.procs, their fds and sockets, the root
// (lowest) PID's soft open-files limit, pids.current / pids.max.
func TestProcesses(t *testing.T) {
	root, proc := t.TempDir(), t.TempDir()
	writeFile(t, filepath.Join(root, "cpu", "cgroup.procs"), "42\n7\n")
	writeFile(t, filepath.Join(root, "pids", "pids.current"), "3\n")
	writeFile(t, filepath.Join(root, "pids", "pids.max"), "max\n")
	writeFile(t, filepath.Join(proc, "7", "limits"), "Limit                     Soft Limit           Hard Limit           Units\n"+
		"Max open files            1048576              1048576              files\n")
	for _, l := range []struct{ pid, fd, target string }{{"7", "0", "/dev/null"}, {"7", "3", "socket:[123]"}, {"42", "0", "/tmp/x"}} {
		if err := os.MkdirAll(filepath.Join(proc, l.pid, "fd"), 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.Symlink(l.target, filepath.Join(proc, l.pid, "fd", l.fd)); err != nil {
			t.Fatal(err)
		}
	}
	s := &Source{ProcDir: proc}
	ps := s.processes(filepath.Join(root, "cpu"), filepath.Join(root, "pids"))
	if ps == nil || ps.Count != 2 || ps.FDs != 3 || ps.Sockets != 1 || !ps.HaveMaxOpenFiles || ps.MaxOpenFiles != 1048576 ||
		!ps.HaveThreads || ps.Threads != 3 || ps.ThreadsMax != 0 {
		t.Errorf("processes %+v", ps)
	}
	if s.processes(filepath.Join(root, "none"), "") != nil {
		t.Error("processes of a cgroup without cgroup.procs")
	}
	if v, ok := maxOpenFiles("Max open files            unlimited            unlimited            files\n"); !ok || v != -1 {
		t.Errorf("unlimited: %d %v", v, ok)
	}
}

// The families nodekeeper adds to the first cut, as cAdvisor names and labels them.
func TestMetricsProcessMemoryOOMBlkio(t *testing.T) {
	now := time.Unix(1700000000, 0)
	oom := uint64(1)
	cg := Cgroup{ID: "/kubepods/podu1/c1", Name: "c1", Pod: "p", Namespace: "ns", Container: "c", Stats: Stats{Time: now,
		Memory:    &Memory{Usage: 1, Pgfault: 998, Pgmajfault: 3, HaveDetail: true},
		Processes: &Processes{Count: 2, FDs: 3, Sockets: 1, MaxOpenFiles: 1024, HaveMaxOpenFiles: true, Threads: 3, HaveThreads: true},
		OOMKills:  &oom,
		Fs:        &FsUsage{Device: "/dev/vda", Bytes: 8192},
		Blkio:     []Device{{Device: "/dev/vda", Major: "254", Minor: "0", Bytes: map[string]uint64{"Read": 4096, "Total": 4096}}},
		Spec:      &Spec{CPUShares: 2, HaveMemoryLimit: true, MemoryLimit: 80 << 20, MemorySwapLimit: 9223372036854771712, MemoryReservation: 1 << 63}}}
	got := map[string][]string{}
	for _, m := range Metrics([]Cgroup{cg}, Machine{}) {
		var pb dto.Metric
		if err := m.Write(&pb); err != nil {
			t.Fatal(err)
		}
		name := m.Desc().String()
		name = name[strings.Index(name, `"`)+1:]
		name = name[:strings.Index(name, `"`)]
		var labels []string
		for _, l := range pb.GetLabel() {
			if l.GetName() == "failure_type" || l.GetName() == "scope" || l.GetName() == "ulimit" || l.GetName() == "operation" || l.GetName() == "major" {
				labels = append(labels, l.GetName()+"="+l.GetValue())
			}
		}
		v := pb.GetGauge().GetValue() + pb.GetCounter().GetValue()
		got[name] = append(got[name], strings.Join(labels, ",")+"="+strings.TrimRight(strings.TrimRight(strconvF(v), "0"), "."))
	}
	for name, want := range map[string]string{
		"container_processes":                           "=2",
		"container_file_descriptors":                    "=3",
		"container_sockets":                             "=1",
		"container_threads":                             "=3",
		"container_threads_max":                         "=0",
		"container_ulimits_soft":                        "ulimit=max_open_files=1024",
		"container_oom_events_total":                    "=1",
		"container_fs_usage_bytes":                      "=8192",
		"container_memory_failures_total":               "failure_type=pgfault,scope=container=998",
		"container_blkio_device_usage_total":            "major=254,operation=Read=4096",
		"container_spec_memory_swap_limit_bytes":        "=0",
		"container_spec_memory_reservation_limit_bytes": "=0",
		"container_memory_events_max_total":             "=0",
	} {
		if !contains(got[name], want) {
			t.Errorf("%s: %v, want %q among them", name, got[name], want)
		}
	}
}

func strconvF(v float64) string { return fmtF(v) }

func fmtF(v float64) string { return fmt.Sprintf("%f", v) }

func contains(xs []string, x string) bool {
	for _, s := range xs {
		if s == x {
			return true
		}
	}
	return false
}

// The root cgroup's filesystems, as cAdvisor's: each block-device mount once, statfs
// figures, and the device's /proc/diskstats counters.
func TestFilesystems(t *testing.T) {
	proc := t.TempDir()
	if err := os.Symlink("4242", filepath.Join(proc, "self")); err != nil {
		t.Fatal(err)
	}
	writeFile(t, filepath.Join(proc, "4242", "mountinfo"),
		"27 1 254:0 / / rw,relatime - ext4 /dev/vdz rw\n"+
			"28 27 254:0 / /again rw,relatime - ext4 /dev/vdz rw\n"+
			"29 27 0:5 / /proc rw - proc proc rw\n")
	writeFile(t, filepath.Join(proc, "diskstats"),
		" 254       0 vdz 100 2 3000 40 200 5 6000 70 1 90 110 0 0 0 0 0 0\n")
	s := &Source{ProcDir: proc, SysDir: t.TempDir()}
	fss := s.filesystems()
	if len(fss) != 1 {
		t.Fatalf("filesystems %+v", fss)
	}
	f := fss[0]
	if f.Device != "/dev/vdz" || f.Limit == 0 || f.Inodes == 0 || !f.HaveDiskStats || f.ReadsCompleted != 100 || f.SectorsWritten != 6000 ||
		f.IoTimeMs != 90 || f.WeightedIoTimeMs != 110 || f.IoInProgress != 1 {
		t.Errorf("filesystem %+v", f)
	}
	names := map[string]bool{}
	for _, m := range Metrics([]Cgroup{{ID: "/", Stats: Stats{Time: time.Unix(1, 0), Filesystems: fss}}}, Machine{}) {
		d := m.Desc().String()
		d = d[strings.Index(d, `"`)+1:]
		names[d[:strings.Index(d, `"`)]] = true
	}
	for _, n := range []string{"container_fs_inodes_free", "container_fs_limit_bytes", "container_fs_usage_bytes", "container_fs_reads_total",
		"container_fs_sector_writes_total", "container_fs_io_time_weighted_seconds_total", "container_fs_io_current"} {
		if !names[n] {
			t.Errorf("no %s", n)
		}
	}
}
