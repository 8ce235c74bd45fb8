package host

import (
	"os"
	"path/filepath"
	"testing"

	corev1 "k8s.io/api/core/v1"
)

// TestLinuxReadsProc checks the parsing against a fixture /proc, /sys and /etc.
func TestLinuxReadsProc(t *testing.T) {
	root := t.TempDir()
	write := func(p, s string) {
		t.Helper()
		full := filepath.Join(root, p)
		if err := os.MkdirAll(filepath.Dir(full), 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(full, []byte(s), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	write("proc/meminfo", "MemTotal:        8000000 kB\nMemFree:  100 kB\nMemAvailable:    6000000 kB\n")
	write("proc/sys/kernel/pid_max", "4194304\n")
	write("proc/loadavg", "0.00 0.01 0.05 1/300 12345\n")
	write("proc/sys/kernel/random/boot_id", "boot-1\n")
	write("sys/kernel/mm/hugepages/hugepages-2048kB/nr_hugepages", "3\n")
	write("etc/machine-id", "machine-1\n")
	write("etc/os-release", "NAME=Debian\nPRETTY_NAME=\"Debian GNU/Linux 12 (bookworm)\"\n")
	l := &Linux{RootDir: root, MaxPods: 42, ProcDir: filepath.Join(root, "proc"), SysDir: filepath.Join(root, "sys"), EtcDir: filepath.Join(root, "etc")}

	c, err := l.Capacity()
	if err != nil {
		t.Fatal(err)
	}
	if m := c[corev1.ResourceMemory]; m.Value() != 8000000*1024 {
		t.Errorf("memory = %v", m.String())
	}
	if p := c[corev1.ResourcePods]; p.Value() != 42 {
		t.Errorf("pods = %v", p.String())
	}
	if hp := c["hugepages-2Mi"]; hp.Value() != 3*2*1024*1024 {
		t.Errorf("hugepages-2Mi = %v", hp.String())
	}
	if s := c[corev1.ResourceEphemeralStorage]; s.Value() <= 0 {
		t.Errorf("ephemeral-storage = %v", s.String())
	}
	info, err := l.Info()
	if err != nil {
		t.Fatal(err)
	}
	if info.MachineID != "machine-1" || info.BootID != "boot-1" || info.OSImage != "Debian GNU/Linux 12 (bookworm)" || info.KernelVersion == "" {
		t.Errorf("info = %+v", info)
	}
	st, err := l.Stats()
	if err != nil {
		t.Fatal(err)
	}
	if m := st["memory.available"].Available; m.Value() != 6000000*1024 {
		t.Errorf("memory.available = %v", m.String())
	}
	if p := st["pid.available"].Available; p.Value() != 4194304-300 {
		t.Errorf("pid.available = %v", p.String())
	}
	addrs, err := l.Addresses("192.0.2.7", "node-a")
	if err != nil || len(addrs) != 2 || addrs[0].Type != corev1.NodeInternalIP || addrs[0].Address != "192.0.2.7" || addrs[1].Address != "node-a" {
		t.Errorf("addresses = %v, %v", addrs, err)
	}
}
