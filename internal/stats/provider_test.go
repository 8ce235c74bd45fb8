package stats

import (
	"context"
	"os"
	"path/filepath"
	"sync"
	"testing"
	"time"

	runtimeapi "k8s.io/cri-api/pkg/apis/runtime/v1"

	"github.com/nodekeeper/nodekeeper/internal/podplan"
	"github.com/nodekeeper/nodekeeper/runtime/cri/fake"
)

// recordingHost answers fixed values and remembers which directories were measured.
type recordingHost struct {
	mu   sync.Mutex
	dirs map[string]bool
	now  time.Time
}

func (h *recordingHost) Node() (Host, error) {
	return Host{Time: h.now, CPUNanoSeconds: uint64(h.now.Sub(t0)), Memory: Meminfo{TotalBytes: 1 << 30}}, nil
}
func (h *recordingHost) Statfs(string) (*Fs, error)      { return &Fs{CapacityBytes: 1 << 40}, nil }
func (h *recordingHost) NetDev(int) ([]Interface, error) { return nil, nil }
func (h *recordingHost) DirUsage(p string) (uint64, uint64, error) {
	h.mu.Lock()
	defer h.mu.Unlock()
	h.dirs[p] = true
	return 100, 1, nil
}

func TestProviderReadsOurRunningContainers(t *testing.T) {
	ctx := context.Background()
	rt := fake.New()
	rt.LoadImage("busybox:local", 1)
	root := t.TempDir()
	run := func(name string, managed bool, containers ...string) (string, map[string]string) {
		labels := map[string]string{}
		if managed {
			labels[podplan.LabelManaged] = "true"
		}
		cfg := &runtimeapi.PodSandboxConfig{Metadata: &runtimeapi.PodSandboxMetadata{Name: name, Namespace: "ns", Uid: "uid-" + name}, Labels: labels}
		sb, err := rt.RunPodSandbox(ctx, cfg, "")
		must(t, err)
		ids := map[string]string{}
		for _, c := range containers {
			id, err := rt.CreateContainer(ctx, sb, &runtimeapi.ContainerConfig{Metadata: &runtimeapi.ContainerMetadata{Name: c},
				Image: &runtimeapi.ImageSpec{Image: "busybox:local"}, Labels: labels}, cfg)
			must(t, err)
			must(t, rt.StartContainer(ctx, id))
			ids[c] = id
		}
		return sb, ids
	}
	_, web := run("web", true, "app", "done")
	must(t, rt.Exit(web["done"], 0))  // exited: not in the summary
	_, _ = run("foreign", false, "x") // not ours: never reported
	stopped, _ := run("old", true, "y")
	must(t, rt.StopPodSandbox(ctx, stopped)) // not ready: not reported
	must(t, rt.SetUsage(web["app"], fake.Usage{CPUCoreNanoSeconds: 1e9, WorkingSetBytes: 5 << 20}))
	must(t, os.MkdirAll(filepath.Join(root, "pods", "uid-web", "volumes", "cache"), 0o755))

	h := &recordingHost{dirs: map[string]bool{}, now: t0}
	p := &Provider{NodeName: "n", Runtime: rt, Host: h, RootDir: root}
	s, err := p.Summary(ctx, false)
	must(t, err)
	if len(s.Pods) != 1 || s.Pods[0].PodRef.Name != "web" || s.Pods[0].PodRef.UID != "uid-web" {
		t.Fatalf("pods: %+v", s.Pods)
	}
	ps := s.Pods[0]
	if len(ps.Containers) != 1 || ps.Containers[0].Name != "app" || *ps.Containers[0].Memory.WorkingSetBytes != 5<<20 {
		t.Errorf("containers: %+v", ps.Containers)
	}
	if len(ps.VolumeStats) != 1 || ps.VolumeStats[0].Name != "cache" || *ps.VolumeStats[0].UsedBytes != 100 {
		t.Errorf("volumes: %+v", ps.VolumeStats)
	}
	logDir := filepath.Join(root, "logs", "ns_web_uid-web", "app")
	if !h.dirs[logDir] || *ps.Containers[0].Logs.UsedBytes != 100 {
		t.Errorf("logs of %s not measured: %v", logDir, h.dirs)
	}
	if s.Node.Runtime == nil || s.Node.Runtime.ImageFs == nil || *s.Node.Runtime.ImageFs.UsedBytes != 1 {
		t.Errorf("image fs from the runtime: %+v", s.Node.Runtime)
	}

	// the next call has rates; a cpu-and-memory call measures no directories
	h.now = t0.Add(2 * time.Second)
	h.dirs = map[string]bool{}
	must(t, rt.SetUsage(web["app"], fake.Usage{CPUCoreNanoSeconds: 2e9, WorkingSetBytes: 5 << 20}))
	time.Sleep(10 * time.Millisecond) // the fake samples at its clock's now
	s, err = p.Summary(ctx, true)
	must(t, err)
	if r := s.Node.CPU.UsageNanoCores; r == nil || *r != 1e9 {
		t.Errorf("node rate: %v", deref64(r))
	}
	if r := s.Pods[0].Containers[0].CPU.UsageNanoCores; r == nil || *r == 0 {
		t.Errorf("container rate: %v", deref64(r))
	}
	if len(h.dirs) != 0 {
		t.Errorf("a cpu-and-memory call walked %v", h.dirs)
	}

	rt.SetDown(true)
	if _, err := p.Summary(ctx, false); err == nil {
		t.Error("no error with the runtime down")
	}
}
