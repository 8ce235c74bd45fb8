package stats

import (
	"os"
	"path/filepath"
	"testing"
	"time"

	statsapi "k8s.io/kubelet/pkg/apis/stats/v1alpha1"
)

func write(t *testing.T, p, content string) {
	t.Helper()
	if err := os.MkdirAll(filepath.Dir(p), 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(p, []byte(content), 0o644); err != nil {
		t.Fatal(err)
	}
}

// A stand-in /sys/fs/cgroup: the figures the kernel would show for a Burstable pod.
func TestPodCgroupV1AndV2(t *testing.T) {
	v1 := t.TempDir()
	pod := "nk/kubepods/burstable/podu1"
	write(t, filepath.Join(v1, "cpuacct", pod, "cpuacct.usage"), "2500000000\n")
	write(t, filepath.Join(v1, "memory", pod, "memory.usage_in_bytes"), "104857600\n")
	write(t, filepath.Join(v1, "memory", pod, "memory.stat"), "cache 1\ntotal_inactive_file 20971520\ntotal_rss 73400320\ntotal_pgfault 900\ntotal_pgmajfault 2\n")
	u, err := Linux{CgroupMount: v1}.PodCgroup("/nk", "u1")
	if err != nil {
		t.Fatal(err)
	}
	if !u.HaveCPU || u.CPUNanoSeconds != 2500000000 || !u.HaveMemory || u.UsageBytes != 100<<20 || u.WorkingSetBytes != 80<<20 ||
		u.RSSBytes != 70<<20 || u.PageFaults != 900 || u.MajorPageFaults != 2 {
		t.Errorf("v1: %+v", u)
	}
	if _, err := (Linux{CgroupMount: v1}).PodCgroup("/nk", "other"); err != ErrNoCgroup {
		t.Errorf("a pod without a cgroup: %v", err)
	}

	v2 := t.TempDir()
	write(t, filepath.Join(v2, "cgroup.controllers"), "cpu memory")
	pod = "kubepods/podu2" // Guaranteed, cgroupRoot "/"
	write(t, filepath.Join(v2, pod, "cpu.stat"), "usage_usec 1500000\nuser_usec 1000000\n")
	write(t, filepath.Join(v2, pod, "memory.current"), "52428800\n")
	write(t, filepath.Join(v2, pod, "memory.stat"), "anon 31457280\ninactive_file 10485760\npgfault 50\npgmajfault 1\n")
	u, err = Linux{CgroupMount: v2}.PodCgroup("/", "u2")
	if err != nil {
		t.Fatal(err)
	}
	if u.CPUNanoSeconds != 1500000000 || u.UsageBytes != 50<<20 || u.WorkingSetBytes != 40<<20 || u.RSSBytes != 30<<20 || u.PageFaults != 50 {
		t.Errorf("v2: %+v", u)
	}
}

// The pod's figures come from its cgroup when there is one, not from its containers.
func TestBuildPrefersThePodCgroup(t *testing.T) {
	now := time.Unix(1000, 0)
	pod := Pod{Ref: statsapi.PodReference{Name: "p", Namespace: "ns", UID: "u1"}, StartTime: now,
		Cgroup: &CgroupUsage{Time: now, CPUNanoSeconds: 7e9, WorkingSetBytes: 64 << 20, UsageBytes: 80 << 20, HaveCPU: true, HaveMemory: true}}
	s, _ := Build(Input{NodeName: "n", Host: Host{Time: now}, Pods: []Pod{pod}, OnlyCPUAndMemory: true}, nil)
	ps := s.Pods[0]
	if ps.CPU == nil || *ps.CPU.UsageCoreNanoSeconds != 7e9 || ps.Memory == nil || *ps.Memory.WorkingSetBytes != 64<<20 {
		t.Errorf("pod stats %+v %+v", ps.CPU, ps.Memory)
	}
}
