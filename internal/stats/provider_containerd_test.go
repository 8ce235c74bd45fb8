package stats

// The provider against a real containerd and the real /proc: run with
//
//	ep=$(NK_CACHE=... NK_NETNS=... hack/cri-up.sh)
//	NK_CRI_ENDPOINT=$ep go test ./internal/stats -run Containerd -v
//
// Skipped without NK_CRI_ENDPOINT.

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"testing"
	"time"

	statsapi "k8s.io/kubelet/pkg/apis/stats/v1alpha1"

	"github.com/nodekeeper/nodekeeper/runtime/cri/critest"
)

func TestProviderOnContainerd(t *testing.T) {
	rt := critest.Dial(t)
	ctx := context.Background()
	root := t.TempDir()
	uid := fmt.Sprintf("stats-%d-%d", os.Getpid(), time.Now().UnixNano()%1e6)
	cgroupRoot := "/nk-stats-" + uid // the pod's cgroup, as the agent lays it out
	tp := critest.RunSandbox(t, rt, critest.SandboxOptions{Name: "hog", Namespace: "nk-stats", UID: uid, CgroupRoot: cgroupRoot,
		LogDirectory: filepath.Join(root, "logs", "nk-stats_hog_"+uid), Labels: map[string]string{"nodekeeper.io/stats-test": uid}})
	start := func(name string, cmd ...string) { tp.Start(name, name+"/0.log", cmd...) }
	start("mem", "sh", "-c", "dd if=/dev/zero of=/dev/shm/x bs=1M count=30 2>/dev/null; echo filled; sleep 3600")
	start("cpu", "sh", "-c", "while :; do :; done")
	must(t, os.MkdirAll(filepath.Join(root, "pods", uid, "volumes", "scratch"), 0o755))
	must(t, os.WriteFile(filepath.Join(root, "pods", uid, "volumes", "scratch", "f"), make([]byte, 64<<10), 0o644))

	p := &Provider{NodeName: "n", Runtime: rt, Host: Linux{}, RootDir: root, CgroupRoot: cgroupRoot}
	find := func(s *statsapi.Summary) *statsapi.PodStats {
		for i := range s.Pods {
			if s.Pods[i].PodRef.UID == uid {
				return &s.Pods[i]
			}
		}
		t.Fatalf("pod %s not in the summary: %+v", uid, s.Pods)
		return nil
	}
	container := func(ps *statsapi.PodStats, name string) statsapi.ContainerStats {
		for _, c := range ps.Containers {
			if c.Name == name {
				return c
			}
		}
		t.Fatalf("container %s not in %+v", name, ps.Containers)
		return statsapi.ContainerStats{}
	}
	var s *statsapi.Summary
	var err error
	deadline := time.Now().Add(30 * time.Second)
	for {
		s, err = p.Summary(ctx, false)
		must(t, err)
		if ws := container(find(s), "mem").Memory; ws != nil && *ws.WorkingSetBytes >= 30<<20 || time.Now().After(deadline) {
			break
		}
		time.Sleep(200 * time.Millisecond)
	}
	time.Sleep(2 * time.Second)
	s, err = p.Summary(ctx, false)
	must(t, err)
	ps := find(s)
	mem, busy := container(ps, "mem"), container(ps, "cpu")
	ws := *mem.Memory.WorkingSetBytes
	t.Logf("mem: working set %d MiB; cpu: %d ms used, %d millicores; pod: %d millicores, working set %d MiB",
		ws>>20, *busy.CPU.UsageCoreNanoSeconds/1e6, deref64(busy.CPU.UsageNanoCores)/1e6, deref64(ps.CPU.UsageNanoCores)/1e6, *ps.Memory.WorkingSetBytes>>20)
	expect(t, ws >= 30<<20 && ws < 60<<20, "working set of a container holding 30 MiB in /dev/shm: %d", ws)
	expect(t, busy.CPU.UsageNanoCores != nil && *busy.CPU.UsageNanoCores > 5e7, "a busy loop's rate: %v millicores (want > 50)", deref64(busy.CPU.UsageNanoCores)/1e6)
	expect(t, *ps.Memory.WorkingSetBytes >= ws, "pod working set below its container's")
	expect(t, ps.Memory.PageFaults != nil && *ps.Memory.PageFaults > 0, "pod memory read from the pod cgroup (page faults): %+v", ps.Memory)
	expect(t, ps.CPU.UsageNanoCores != nil && *ps.CPU.UsageNanoCores >= deref64(busy.CPU.UsageNanoCores)/2, "pod cpu rate from its cgroup: %v", ps.CPU.UsageNanoCores)
	expect(t, ps.Network != nil && ps.Network.Name == "eth0", "pod network (the sandbox's namespace): %+v", ps.Network)
	expect(t, mem.Rootfs != nil && mem.Rootfs.CapacityBytes != nil, "container rootfs: %+v", mem.Rootfs)
	expect(t, mem.Logs != nil && mem.Logs.UsedBytes != nil && *mem.Logs.UsedBytes > 0, "container logs (it wrote 'filled'): %+v", mem.Logs)
	expect(t, len(ps.VolumeStats) == 1 && ps.VolumeStats[0].Name == "scratch" && *ps.VolumeStats[0].UsedBytes >= 64<<10, "volumes: %+v", ps.VolumeStats)
	n := s.Node
	expect(t, n.CPU.UsageNanoCores != nil && *n.CPU.UsageNanoCores > 5e7, "node rate with a busy loop running: %v", n.CPU.UsageNanoCores)
	expect(t, *n.Memory.WorkingSetBytes > ws && *n.Memory.AvailableBytes > 0, "node memory: %+v", n.Memory)
	expect(t, n.Fs != nil && *n.Fs.CapacityBytes > 0 && n.Runtime != nil && n.Runtime.ImageFs != nil && *n.Runtime.ImageFs.UsedBytes > 0,
		"node fs %+v runtime %+v", n.Fs, n.Runtime)
}

func deref64(p *uint64) uint64 {
	if p == nil {
		return 0
	}
	return *p
}

func must(t *testing.T, err error) {
	t.Helper()
	if err != nil {
		t.Fatal(err)
	}
}

func expect(t *testing.T, ok bool, format string, args ...any) {
	t.Helper()
	if !ok {
		t.Errorf(format, args...)
	}
}
