// Package critest runs test pods on a real CRI runtime (a containerd started with
// hack/cri-up.sh, named by NK_CRI_ENDPOINT): one sandbox in a cgroup tree of the test's
// own, and busybox containers in it, all removed when the test ends.
package critest

import (
	"context"
	"os"
	"testing"
	"time"

	runtimeapi "k8s.io/cri-api/pkg/apis/runtime/v1"

	"github.com/nodekeeper/nodekeeper/host"
	"github.com/nodekeeper/nodekeeper/internal/podplan"
	"github.com/nodekeeper/nodekeeper/runtime/cri"
)

// Dial connects to the runtime at NK_CRI_ENDPOINT, closed when the test ends; it skips
// the test when NK_CRI_ENDPOINT is not set.
func Dial(t testing.TB) *cri.Remote {
	t.Helper()
	ep := os.Getenv("NK_CRI_ENDPOINT")
	if ep == "" {
		t.Skip("NK_CRI_ENDPOINT not set: start a containerd with hack/cri-up.sh")
	}
	rt, err := cri.Dial(cri.RemoteOptions{Endpoint: ep, Timeout: time.Minute})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = rt.Close() })
	return rt
}

// SandboxOptions names a test sandbox.
type SandboxOptions struct {
	Name, Namespace, UID string
	// CgroupRoot is a cgroup of the test's own (removed at the end, with everything
	// below it); the pod's cgroup is CgroupRoot/kubepods/besteffort/pod<UID>, as the
	// agent lays it out.
	CgroupRoot string
	// LogDirectory is the sandbox's log folder.
	LogDirectory string
	// Labels are added to the managed and pod UID labels, on the sandbox and its
	// containers.
	Labels map[string]string
}

// Sandbox is a running test sandbox.
type Sandbox struct {
	ID     string
	Config *runtimeapi.PodSandboxConfig
	rt     cri.Runtime
	t      testing.TB
}

// RunSandbox runs a sandbox, removed (then its cgroup tree) when the test ends.
func RunSandbox(t testing.TB, rt cri.Runtime, o SandboxOptions) *Sandbox {
	t.Helper()
	labels := map[string]string{podplan.LabelManaged: "true", podplan.LabelPodUID: o.UID}
	for k, v := range o.Labels {
		labels[k] = v
	}
	cfg := &runtimeapi.PodSandboxConfig{Metadata: &runtimeapi.PodSandboxMetadata{Name: o.Name, Namespace: o.Namespace, Uid: o.UID},
		Hostname: o.Name, LogDirectory: o.LogDirectory, Labels: labels,
		Linux: &runtimeapi.LinuxPodSandboxConfig{CgroupParent: o.CgroupRoot + "/kubepods/besteffort/pod" + o.UID}}
	t.Cleanup(func() { _ = host.Cgroups{}.Remove(o.CgroupRoot) }) // runs last
	id, err := rt.RunPodSandbox(context.Background(), cfg, "")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		if err := rt.RemovePodSandbox(context.Background(), id); err != nil {
			t.Error(err)
		}
	})
	return &Sandbox{ID: id, Config: cfg, rt: rt, t: t}
}

// Start creates and starts a busybox:local container running cmd, logging to logPath
// (relative to the sandbox's log folder), and returns its ID.
func (s *Sandbox) Start(name, logPath string, cmd ...string) string {
	s.t.Helper()
	labels := map[string]string{podplan.LabelContainerName: name}
	for k, v := range s.Config.Labels {
		labels[k] = v
	}
	ctx := context.Background()
	id, err := s.rt.CreateContainer(ctx, s.ID, &runtimeapi.ContainerConfig{Metadata: &runtimeapi.ContainerMetadata{Name: name},
		Image: &runtimeapi.ImageSpec{Image: "busybox:local"}, Command: cmd, Labels: labels, LogPath: logPath,
		Linux: &runtimeapi.LinuxContainerConfig{}}, s.Config)
	if err != nil {
		s.t.Fatal(err)
	}
	if err := s.rt.StartContainer(ctx, id); err != nil {
		s.t.Fatal(err)
	}
	return id
}
