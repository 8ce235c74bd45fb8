package fake

// What the contract table (runtime/cri/contract_test.go) cannot check against a real
// containerd: the fake's own hooks, its clock, address allocation and reference
// normalisation.

import (
	"context"
	"errors"
	"net/netip"
	"strings"
	"testing"
	"time"

	runtimeapi "k8s.io/cri-api/pkg/apis/runtime/v1"
	clocktesting "k8s.io/utils/clock/testing"

	"github.com/nodekeeper/nodekeeper/runtime/cri"
)

func sandboxConfig(name string) *runtimeapi.PodSandboxConfig {
	return &runtimeapi.PodSandboxConfig{
		Metadata: &runtimeapi.PodSandboxMetadata{Name: name, Namespace: "ns", Uid: "uid-" + name},
		Labels:   map[string]string{"pod": name},
	}
}

func containerConfig(name string) *runtimeapi.ContainerConfig {
	return &runtimeapi.ContainerConfig{
		Metadata: &runtimeapi.ContainerMetadata{Name: name},
		Image:    &runtimeapi.ImageSpec{Image: "busybox:local"},
		LogPath:  name + ".log",
	}
}

func TestClockDrivesTimestamps(t *testing.T) {
	ctx := context.Background()
	t0 := time.Date(2030, 1, 2, 3, 4, 5, 0, time.UTC)
	clk := clocktesting.NewFakePassiveClock(t0)
	f := New(WithClock(clk))
	f.LoadImage("busybox:local", 1)

	cfg := sandboxConfig("a")
	sb, err := f.RunPodSandbox(ctx, cfg, "")
	must(t, err)
	clk.SetTime(t0.Add(time.Second))
	id, err := f.CreateContainer(ctx, sb, containerConfig("c"), cfg)
	must(t, err)
	clk.SetTime(t0.Add(2 * time.Second))
	must(t, f.StartContainer(ctx, id))
	clk.SetTime(t0.Add(3 * time.Second))
	must(t, f.Exit(id, 42))

	sst, err := f.PodSandboxStatus(ctx, sb)
	must(t, err)
	st, err := f.ContainerStatus(ctx, id)
	must(t, err)
	for name, got := range map[string]int64{"sandbox createdAt": sst.CreatedAt, "createdAt": st.CreatedAt, "startedAt": st.StartedAt, "finishedAt": st.FinishedAt} {
		want := map[string]time.Duration{"sandbox createdAt": 0, "createdAt": time.Second, "startedAt": 2 * time.Second, "finishedAt": 3 * time.Second}[name]
		if got != t0.Add(want).UnixNano() {
			t.Errorf("%s = %v, want %v", name, time.Unix(0, got).UTC(), t0.Add(want))
		}
	}
	if st.State != runtimeapi.ContainerState_CONTAINER_EXITED || st.ExitCode != 42 || st.Reason != "Error" {
		t.Errorf("after Exit(42): %v %d %q", st.State, st.ExitCode, st.Reason)
	}
	if err := f.Exit(id, 1); err == nil {
		t.Error("Exit of an exited container succeeded")
	}
	if err := f.Exit("nope", 1); !errors.Is(err, cri.ErrNotFound) {
		t.Errorf("Exit of a missing container: %v", err)
	}
}

func TestPodIPsLikeHostLocal(t *testing.T) {
	ctx := context.Background()
	f := New(WithPodCIDR(netip.MustParsePrefix("10.9.0.0/29"))) // .2 to .6 usable
	ip := func(id string) string {
		st, err := f.PodSandboxStatus(ctx, id)
		must(t, err)
		return st.Network.Ip
	}
	var ids []string
	for _, n := range []string{"a", "b", "c", "d", "e"} {
		id, err := f.RunPodSandbox(ctx, sandboxConfig(n), "")
		must(t, err)
		ids = append(ids, id)
	}
	for i, want := range []string{"10.9.0.2", "10.9.0.3", "10.9.0.4", "10.9.0.5", "10.9.0.6"} {
		if got := ip(ids[i]); got != want {
			t.Errorf("sandbox %d: IP %s, want %s", i, got, want)
		}
	}
	_, err := f.RunPodSandbox(ctx, sandboxConfig("full"), "")
	if err == nil || !strings.Contains(err.Error(), "no IP addresses available") {
		t.Errorf("run in a full range: %v", err)
	}
	// The failed run reserved nothing, and a stopped sandbox gives its address back.
	must(t, f.StopPodSandbox(ctx, ids[1]))
	id, err := f.RunPodSandbox(ctx, sandboxConfig("full"), "")
	must(t, err)
	if got := ip(id); got != "10.9.0.3" {
		t.Errorf("reused IP %s, want 10.9.0.3", got)
	}
}

func TestImages(t *testing.T) {
	ctx := context.Background()
	f := New()
	spec := func(ref string) *runtimeapi.ImageSpec { return &runtimeapi.ImageSpec{Image: ref} }

	id := f.AddRegistryImage("example.com/app:v1", 1234)
	img, err := f.ImageStatus(ctx, spec("example.com/app:v1"))
	if err != nil || img != nil {
		t.Fatalf("an image in the registry only is not present: %v %v", img, err)
	}
	ref, err := f.PullImage(ctx, spec("example.com/app:v1"), nil, nil)
	must(t, err)
	if ref != id {
		t.Errorf("PullImage returned %q, want the image ID %q", ref, id)
	}
	img, err = f.ImageStatus(ctx, spec(id))
	must(t, err)
	if img.GetSize() != 1234 || len(img.RepoTags) != 1 || img.RepoTags[0] != "example.com/app:v1" {
		t.Errorf("pulled image %v", img)
	}
	_, err = f.PullImage(ctx, spec("example.com/app:v2"), nil, nil)
	if !errors.Is(err, cri.ErrNotFound) || !strings.Contains(err.Error(), `failed to pull and unpack image "example.com/app:v2"`) {
		t.Errorf("pull of a tag the registry lacks: %v", err)
	}
	// containerd asks the registry even for a present image
	f.LoadImage("busybox", 1)
	if _, err := f.PullImage(ctx, spec("busybox"), nil, nil); err == nil {
		t.Error("pull of a loaded image that no registry has succeeded")
	}
	if img, _ := f.ImageStatus(ctx, spec("docker.io/library/busybox:latest")); img == nil {
		t.Error("busybox is not docker.io/library/busybox:latest")
	}
	must(t, f.RemoveImage(ctx, spec("example.com/app:v1")))
	if img, _ := f.ImageStatus(ctx, spec(id)); img != nil {
		t.Errorf("removed image still present: %v", img)
	}
	list, err := f.ListImages(ctx, nil)
	must(t, err)
	if len(list) != 1 {
		t.Errorf("images %v, want busybox only", list)
	}
}

func TestNormalize(t *testing.T) {
	for in, want := range map[string]string{
		"busybox":                        "docker.io/library/busybox:latest",
		"busybox:local":                  "docker.io/library/busybox:local",
		"library/busybox:1":              "docker.io/library/busybox:1",
		"docker.io/busybox":              "docker.io/library/busybox:latest",
		"someone/app:v1":                 "docker.io/someone/app:v1",
		"registry.k8s.io/pause:3.10":     "registry.k8s.io/pause:3.10",
		"localhost/app":                  "localhost/app:latest",
		"localhost:5000/app":             "localhost:5000/app:latest",
		"127.0.0.1:1/a/b:v1":             "127.0.0.1:1/a/b:v1",
		"example.com/a@sha256:0123abcd":  "example.com/a@sha256:0123abcd",
		"Upper/case":                     "",
		"":                               "",
		"bad//name":                      "",
		"trailing:":                      "",
		"docker.io/library/busybox:1.36": "docker.io/library/busybox:1.36",
	} {
		got, err := normalize(in)
		if want == "" {
			if err == nil {
				t.Errorf("normalize(%q) = %q, want an error", in, got)
			}
			continue
		}
		if err != nil || got != want {
			t.Errorf("normalize(%q) = %q, %v; want %q", in, got, err, want)
		}
	}
}

func TestExecHandlerAndTimeout(t *testing.T) {
	ctx := context.Background()
	f := New()
	f.LoadImage("busybox:local", 1)
	cfg := sandboxConfig("x")
	sb, err := f.RunPodSandbox(ctx, cfg, "")
	must(t, err)
	id, err := f.CreateContainer(ctx, sb, containerConfig("c"), cfg)
	must(t, err)
	if _, err := f.ExecSync(ctx, id, []string{"true"}, 0); err == nil || !strings.Contains(err.Error(), "CONTAINER_CREATED") {
		t.Errorf("exec in a created container: %v", err)
	}
	must(t, f.StartContainer(ctx, id))
	res, err := f.ExecSync(ctx, id, []string{"true"}, 0)
	must(t, err)
	if res.ExitCode != 0 || len(res.Stdout) != 0 {
		t.Errorf("default exec: %+v", res)
	}
	var gotID string
	var gotCmd []string
	f.SetExecHandler(func(ctx context.Context, containerID string, cmd []string) (*cri.ExecResult, error) {
		gotID, gotCmd = containerID, cmd
		if cmd[0] == "hang" {
			<-ctx.Done()
			return nil, ctx.Err()
		}
		return &cri.ExecResult{Stdout: []byte("out"), ExitCode: 7}, nil
	})
	res, err = f.ExecSync(ctx, id, []string{"cat", "/etc/hostname"}, time.Second)
	must(t, err)
	if res.ExitCode != 7 || string(res.Stdout) != "out" || gotID != id || strings.Join(gotCmd, " ") != "cat /etc/hostname" {
		t.Errorf("exec: %+v, handler saw %s %v", res, gotID, gotCmd)
	}
	start := time.Now()
	_, err = f.ExecSync(ctx, id, []string{"hang"}, 20*time.Millisecond)
	if !errors.Is(err, context.DeadlineExceeded) || time.Since(start) > 5*time.Second {
		t.Errorf("exec past its timeout: %v after %v", err, time.Since(start))
	}
}

func TestDownAndConditions(t *testing.T) {
	ctx := context.Background()
	f := New()
	f.SetCondition(runtimeapi.NetworkReady, false, "NetworkPluginNotReady", "cni config uninitialized")
	st, err := f.Status(ctx)
	must(t, err)
	if len(st.Conditions) != 2 || st.Conditions[1].Status || st.Conditions[1].Reason != "NetworkPluginNotReady" {
		t.Errorf("conditions %v", st.Conditions)
	}
	f.SetDown(true)
	if _, err := f.ListContainers(ctx, nil); !errors.Is(err, cri.ErrUnavailable) {
		t.Errorf("down: %v", err)
	}
	f.SetDown(false)
	if _, err := f.ListContainers(ctx, nil); err != nil {
		t.Errorf("back up: %v", err)
	}
}

func TestResultsAreCopies(t *testing.T) {
	ctx := context.Background()
	f := New()
	cfg := sandboxConfig("a")
	sb, err := f.RunPodSandbox(ctx, cfg, "")
	must(t, err)
	cfg.Labels["pod"] = "changed by the caller"
	st, err := f.PodSandboxStatus(ctx, sb)
	must(t, err)
	st.Labels["pod"] = "changed again"
	list, err := f.ListPodSandbox(ctx, &runtimeapi.PodSandboxFilter{LabelSelector: map[string]string{"pod": "a"}})
	must(t, err)
	if len(list) != 1 {
		t.Errorf("the fake's state changed with the caller's maps: %v", list)
	}
}

func must(t *testing.T, err error) {
	t.Helper()
	if err != nil {
		t.Fatal(err)
	}
}

func TestConcurrentUse(t *testing.T) {
	ctx := context.Background()
	f := New()
	f.LoadImage("busybox:local", 1)
	done := make(chan error)
	for i := range 8 {
		go func() {
			done <- func() error {
				cfg := sandboxConfig(string(rune('a' + i)))
				sb, err := f.RunPodSandbox(ctx, cfg, "")
				if err != nil {
					return err
				}
				id, err := f.CreateContainer(ctx, sb, containerConfig("c"), cfg)
				if err != nil {
					return err
				}
				if err := f.StartContainer(ctx, id); err != nil {
					return err
				}
				if _, err := f.ExecSync(ctx, id, []string{"true"}, time.Second); err != nil {
					return err
				}
				if _, err := f.ListContainers(ctx, nil); err != nil {
					return err
				}
				return f.RemovePodSandbox(ctx, sb)
			}()
		}()
	}
	for range 8 {
		must(t, <-done)
	}
	if list, _ := f.ListContainers(ctx, nil); len(list) != 0 {
		t.Errorf("containers left: %v", list)
	}
}

// SetStopLag: StopContainer returns, the container still reads running for the given
// number of status reads, then it is exited with the code the stop gave it.
func TestStopLag(t *testing.T) {
	ctx := context.Background()
	f := New()
	f.LoadImage("busybox:local", 1)
	cfg := sandboxConfig("a")
	sb, err := f.RunPodSandbox(ctx, cfg, "")
	must(t, err)
	id, err := f.CreateContainer(ctx, sb, containerConfig("c"), cfg)
	must(t, err)
	must(t, f.StartContainer(ctx, id))
	must(t, f.SetTermExitCode(id, 0))
	must(t, f.SetStopLag(id, 2))
	must(t, f.StopContainer(ctx, id, time.Second))
	must(t, f.StopContainer(ctx, id, time.Second)) // a second stop changes nothing
	must(t, f.StopPodSandbox(ctx, sb))             // nor does the sandbox's (no SIGKILL: it has ended)
	for i, want := range []runtimeapi.ContainerState{runtimeapi.ContainerState_CONTAINER_RUNNING,
		runtimeapi.ContainerState_CONTAINER_RUNNING, runtimeapi.ContainerState_CONTAINER_EXITED, runtimeapi.ContainerState_CONTAINER_EXITED} {
		st, err := f.ContainerStatus(ctx, id)
		must(t, err)
		if st.State != want {
			t.Fatalf("read %d after the stop: %v, want %v", i+1, st.State, want)
		}
		if want == runtimeapi.ContainerState_CONTAINER_EXITED && (st.ExitCode != 0 || st.Reason != "Completed") {
			t.Errorf("read %d: exit %d %q, want 0 Completed (SetTermExitCode)", i+1, st.ExitCode, st.Reason)
		}
	}
}
