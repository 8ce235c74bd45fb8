package host

import (
	"os"
	"path/filepath"
	"testing"

	"github.com/nodekeeper/nodekeeper/internal/podplan"
)

func i64(v int64) *int64 { return &v }

// dropFiles removes the regular files below dir: a real cgroup folder's files are the
// kernel's and do not keep rmdir from removing it, a temporary folder's do.
func dropFiles(t *testing.T, dir string) {
	t.Helper()
	_ = filepath.Walk(dir, func(p string, info os.FileInfo, err error) error {
		if err == nil && info.Mode().IsRegular() {
			_ = os.Remove(p)
		}
		return nil
	})
}

func read(t *testing.T, p string) string {
	t.Helper()
	b, err := os.ReadFile(p)
	if err != nil {
		t.Fatal(err)
	}
	return string(b)
}

// A plain folder stands in for /sys/fs/cgroup: the files written are what the kernel
// would get.
func TestCgroupsV1(t *testing.T) {
	m := t.TempDir()
	for _, c := range []string{"cpu", "cpuacct", "memory", "pids", "cpuset"} {
		if err := os.Mkdir(filepath.Join(m, c), 0o755); err != nil {
			t.Fatal(err)
		}
	}
	cg := Cgroups{Mount: m}
	if cg.V2() {
		t.Fatal("v1 layout seen as v2")
	}
	path := "/kubepods/burstable/podu1"
	if err := cg.Ensure(path, podplan.CgroupResources{CPUShares: i64(204), CPUQuota: i64(50000), CPUPeriod: i64(100000), MemoryLimit: i64(128 << 20)}); err != nil {
		t.Fatal(err)
	}
	for f, want := range map[string]string{"cpu" + path + "/cpu.shares": "204", "cpu" + path + "/cpu.cfs_quota_us": "50000",
		"cpu" + path + "/cpu.cfs_period_us": "100000", "memory" + path + "/memory.limit_in_bytes": "134217728"} {
		if got := read(t, filepath.Join(m, f)); got != want {
			t.Errorf("%s = %q, want %q", f, got, want)
		}
	}
	if _, err := os.Stat(filepath.Join(m, "pids", path)); err != nil {
		t.Errorf("pids hierarchy: %v", err)
	}
	if _, err := os.Stat(filepath.Join(m, "cpuset", path)); err == nil {
		t.Errorf("cpuset is left to the runtime")
	}
	// the runtime nests a container cgroup (and creates cpuset's) under the pod's
	for _, c := range []string{"cpu", "memory", "cpuset"} {
		if err := os.MkdirAll(filepath.Join(m, c, path, "ctr1"), 0o755); err != nil {
			t.Fatal(err)
		}
	}
	if !cg.Exists(path) {
		t.Fatal("Exists: false")
	}
	dropFiles(t, m)
	if err := cg.Remove(path); err != nil {
		t.Fatal(err)
	}
	for _, c := range []string{"cpu", "cpuacct", "memory", "pids", "cpuset"} {
		if _, err := os.Stat(filepath.Join(m, c, path)); !os.IsNotExist(err) {
			t.Errorf("%s%s left behind", c, path)
		}
		if _, err := os.Stat(filepath.Join(m, c, "kubepods")); c != "cpuset" && err != nil {
			t.Errorf("the QoS folders stay: %v", err)
		}
	}
	// BestEffort: the QoS folder gets the minimum shares
	if err := cg.Ensure("/kubepods/besteffort/podu2", podplan.CgroupResources{CPUShares: i64(2)}); err != nil {
		t.Fatal(err)
	}
	if got := read(t, filepath.Join(m, "cpu/kubepods/besteffort/cpu.shares")); got != "2" {
		t.Errorf("besteffort shares %q", got)
	}
}

func TestCgroupsV2(t *testing.T) {
	m := t.TempDir()
	if err := os.WriteFile(filepath.Join(m, "cgroup.controllers"), []byte("cpu memory pids"), 0o644); err != nil {
		t.Fatal(err)
	}
	cg := Cgroups{Mount: m}
	if !cg.V2() {
		t.Fatal("v2 layout not seen")
	}
	path := "/kubepods/podu1"
	if err := cg.Ensure(path, podplan.CgroupResources{CPUShares: i64(1024), CPUQuota: i64(100000), CPUPeriod: i64(100000), MemoryLimit: i64(1 << 30)}); err != nil {
		t.Fatal(err)
	}
	for f, want := range map[string]string{"kubepods/podu1/cpu.weight": "39", "kubepods/podu1/cpu.max": "100000 100000",
		"kubepods/podu1/memory.max": "1073741824", "cgroup.subtree_control": "+cpu +memory +pids", "kubepods/cgroup.subtree_control": "+cpu +memory +pids"} {
		if got := read(t, filepath.Join(m, f)); got != want {
			t.Errorf("%s = %q, want %q", f, got, want)
		}
	}
	dropFiles(t, filepath.Join(m, "kubepods"))
	if err := cg.Remove(path); err != nil {
		t.Fatal(err)
	}
	if cg.Exists(path) {
		t.Error("pod cgroup left behind")
	}
}
