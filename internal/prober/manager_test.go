package prober

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus/testutil"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/util/intstr"
	"k8s.io/client-go/tools/record"
	clocktesting "k8s.io/utils/clock/testing"

	"github.com/nodekeeper/nodekeeper/runtime/cri"
)

// execFunc is an Execer.
type execFunc func(ctx context.Context, cmd []string) (*cri.ExecResult, error)

func (f execFunc) ExecSync(ctx context.Context, _ string, cmd []string, _ time.Duration) (*cri.ExecResult, error) {
	return f(ctx, cmd)
}

// counter counts exec calls by command.
type counter struct {
	mu sync.Mutex
	n  map[string]int
}

func (c *counter) add(cmd string) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.n == nil {
		c.n = map[string]int{}
	}
	c.n[cmd]++
}

func (c *counter) get(cmd string) int {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.n[cmd]
}

func execProbe(cmd string, period, failures int32) *corev1.Probe {
	return &corev1.Probe{ProbeHandler: corev1.ProbeHandler{Exec: &corev1.ExecAction{Command: []string{cmd}}},
		PeriodSeconds: period, FailureThreshold: failures, TimeoutSeconds: 1}
}

type harness struct {
	t       *testing.T
	clk     *clocktesting.FakeClock
	m       *Manager
	rec     *record.FakeRecorder
	changed atomic.Int32
	pod     *corev1.Pod
}

func newHarness(t *testing.T, ex Execer) *harness {
	h := &harness{t: t, clk: clocktesting.NewFakeClock(t0), rec: record.NewFakeRecorder(1000),
		pod: &corev1.Pod{ObjectMeta: metav1.ObjectMeta{Name: "p", Namespace: "ns", UID: "u"}}}
	h.m = New(Options{Exec: ex, Recorder: h.rec, Clock: h.clk, Changed: func(*corev1.Pod) { h.changed.Add(1) }})
	t.Cleanup(func() { h.m.Forget(h.pod.UID) })
	return h
}

// run starts the workers of one running container c1.
func (h *harness) run(spec *corev1.Container, started time.Time) {
	h.m.Sync(h.pod, map[string]Running{"c1": {Spec: spec, StartedAt: started}}, "10.0.0.1")
}

// settle waits (real time, for goroutines only: nothing is timed) until n probe
// goroutines are parked on n unfired timers and no wake-up is pending.
func (h *harness) settle(n int) {
	h.t.Helper()
	deadline := time.Now().Add(5 * time.Second)
	for !h.m.Settled(n) || h.clk.Waiters() != n {
		if time.Now().After(deadline) {
			h.t.Fatalf("probe goroutines never settled (%d parked, %d pokes, want %d parked)", h.m.parked.Load(), h.m.pokes.Load(), n)
		}
		time.Sleep(time.Millisecond)
	}
}

// step moves the fake clock by d, one second at a time, letting n goroutines settle
// before each step and after the last.
func (h *harness) step(d time.Duration, n int) {
	h.t.Helper()
	h.settle(n)
	for s := time.Duration(0); s < d; s += time.Second {
		h.clk.Step(time.Second)
		h.settle(n)
	}
}

func (h *harness) results(spec *corev1.Container) Results { return h.m.Results(h.pod.UID, "c1", spec) }

func (h *harness) events() string {
	var out []string
	for {
		select {
		case e := <-h.rec.Events:
			out = append(out, e)
		default:
			return strings.Join(out, "\n")
		}
	}
}

// As upstream's prober: an exec the runtime cannot run is an error, retried three times
// and then thrown away (an "errored" event, no failure counted); a timed-out exec is a
// failure.
func TestWorkerErrorsAreNotFailures(t *testing.T) {
	var calls counter
	h := newHarness(t, execFunc(func(context.Context, []string) (*cri.ExecResult, error) {
		calls.add("check")
		return nil, errors.New("ExecSync: rpc error: connection reset")
	}))
	spec := &corev1.Container{Name: "app", LivenessProbe: execProbe("check", 1, 1)}
	h.run(spec, t0)
	h.step(4*time.Second, 1)
	if r := h.results(spec); r.Failed != "" {
		t.Errorf("an erroring probe failed the container: %+v", r)
	}
	if n := calls.get("check"); n != 5*MaxRetries {
		t.Errorf("%d exec calls in 5 periods, want %d (each retried %d times)", n, 5*MaxRetries, MaxRetries)
	}
	if ev := h.events(); strings.Count(ev, "Warning Unhealthy Liveness probe errored and resulted in unknown state: ExecSync: rpc error: connection reset") != 5 || strings.Contains(ev, "probe failed") {
		t.Errorf("events:\n%s", ev)
	}

	h2 := newHarness(t, execFunc(func(context.Context, []string) (*cri.ExecResult, error) {
		return nil, fmt.Errorf("ExecSync: timeout 1s exceeded: %w", context.DeadlineExceeded)
	}))
	h2.run(spec, t0)
	h2.settle(1)
	if r := h2.results(spec); r.Failed != "liveness" {
		t.Errorf("a timed-out exec probe did not fail: %+v", r)
	}
	if ev := h2.events(); ev != `Warning Unhealthy Liveness probe failed: command ["check"] timed out` {
		t.Errorf("events:\n%s", ev)
	}
	if h2.changed.Load() != 1 {
		t.Errorf("Changed called %d times, want 1", h2.changed.Load())
	}
}

// A liveness probe failing failureThreshold times in a row fails the container once, and
// is then on hold: no more execs in this container instance.
func TestWorkerLivenessThreshold(t *testing.T) {
	var calls counter
	h := newHarness(t, execFunc(func(context.Context, []string) (*cri.ExecResult, error) {
		calls.add("check")
		return &cri.ExecResult{ExitCode: 1, Stdout: []byte("dead\n")}, nil
	}))
	spec := &corev1.Container{Name: "app", LivenessProbe: execProbe("check", 2, 3)}
	h.run(spec, t0)
	h.step(3*time.Second, 1)
	if r := h.results(spec); r.Failed != "" || calls.get("check") != 2 {
		t.Errorf("after 3 s (runs at 0 and 2 s): %+v, %d execs", r, calls.get("check"))
	}
	h.step(10*time.Second, 1)
	if r := h.results(spec); r.Failed != "liveness" || calls.get("check") != 3 {
		t.Errorf("after 13 s: %+v, %d execs (want 3: on hold after the third)", r, calls.get("check"))
	}
	if ev := h.events(); strings.Count(ev, `Warning Unhealthy Liveness probe failed: command ["check"] exited with 1: dead`) != 3 {
		t.Errorf("events:\n%s", ev)
	}
}

// Each probe has a goroutine of its own, as upstream: a readiness probe that hangs does
// not hold up the liveness probe's periods.
func TestWorkerProbesRunIndependently(t *testing.T) {
	var calls counter
	release := make(chan struct{})
	defer close(release)
	h := newHarness(t, execFunc(func(ctx context.Context, cmd []string) (*cri.ExecResult, error) {
		calls.add(cmd[0])
		if cmd[0] == "ready" {
			select { // hangs past the test
			case <-release:
			case <-ctx.Done():
			}
			return nil, errors.New("hung")
		}
		return &cri.ExecResult{}, nil
	}))
	spec := &corev1.Container{Name: "app", ReadinessProbe: execProbe("ready", 1, 3), LivenessProbe: execProbe("live", 1, 3)}
	h.run(spec, t0)
	h.step(3*time.Second, 1) // the readiness goroutine never parks
	if n := calls.get("live"); n != 4 {
		t.Errorf("liveness ran %d times in 3 s with a 1 s period while readiness hung, want 4", n)
	}
	if n := calls.get("ready"); n != 1 {
		t.Errorf("readiness ran %d times, want 1 (still hanging)", n)
	}
}

// The initial delay counts from the container's start in the runtime, as upstream's
// worker (a worker begun late, e.g. after an agent restart, does not wait it again).
func TestWorkerInitialDelayFromContainerStart(t *testing.T) {
	for _, tc := range []struct {
		started   time.Time
		immediate int
	}{{t0.Add(-10 * time.Second), 1}, {t0, 0}, {time.Time{}, 0}} {
		var calls counter
		h := newHarness(t, execFunc(func(context.Context, []string) (*cri.ExecResult, error) {
			calls.add("check")
			return &cri.ExecResult{}, nil
		}))
		pr := execProbe("check", 10, 3)
		pr.InitialDelaySeconds = 5
		spec := &corev1.Container{Name: "app", ReadinessProbe: pr}
		h.run(spec, tc.started)
		h.settle(1)
		if n := calls.get("check"); n != tc.immediate {
			t.Errorf("started at %v: %d probes at once, want %d", tc.started, n, tc.immediate)
		}
		h.step(5*time.Second, 1)
		if n := calls.get("check"); n != 1 {
			t.Errorf("started at %v: %d probes after 5 s, want 1", tc.started, n)
		}
		if r := h.results(spec); !r.Ready {
			t.Errorf("started at %v: not ready after a success: %+v", tc.started, r)
		}
		h.m.Forget(h.pod.UID)
	}
}

// The startup probe gates the others: liveness and readiness run only once it succeeded,
// right then (not a period later), and the startup probe is then on hold.
func TestWorkerStartupGates(t *testing.T) {
	var calls counter
	var up atomic.Bool
	h := newHarness(t, execFunc(func(_ context.Context, cmd []string) (*cri.ExecResult, error) {
		calls.add(cmd[0])
		if cmd[0] == "start" && !up.Load() {
			return &cri.ExecResult{ExitCode: 1}, nil
		}
		return &cri.ExecResult{}, nil
	}))
	spec := &corev1.Container{Name: "app", StartupProbe: execProbe("start", 1, 30),
		LivenessProbe: execProbe("live", 10, 3), ReadinessProbe: execProbe("ready", 10, 3)}
	h.run(spec, t0)
	h.step(2*time.Second, 3)
	if r := h.results(spec); r.Started || r.Ready || calls.get("live")+calls.get("ready") != 0 || calls.get("start") != 3 {
		t.Errorf("before start-up: %+v, calls %v", r, calls.n)
	}
	up.Store(true)
	h.step(time.Second, 3)
	if r := h.results(spec); !r.Started || !r.Ready || calls.get("live") != 1 || calls.get("ready") != 1 {
		t.Errorf("after the startup probe succeeded: %+v, calls %v (liveness and readiness run at once)", r, calls.n)
	}
	h.step(20*time.Second, 3)
	if calls.get("start") != 4 || calls.get("live") != 3 || calls.get("ready") != 3 {
		t.Errorf("20 s later: calls %v, want start 4 (on hold), live and ready 3 (10 s period)", calls.n)
	}
}

// A pod being deleted: liveness stops (a failure already counted is dropped), readiness
// goes on.
func TestWorkerTerminating(t *testing.T) {
	var calls counter
	h := newHarness(t, execFunc(func(_ context.Context, cmd []string) (*cri.ExecResult, error) {
		calls.add(cmd[0])
		return &cri.ExecResult{ExitCode: 1}, nil
	}))
	spec := &corev1.Container{Name: "app", LivenessProbe: execProbe("live", 1, 1), ReadinessProbe: execProbe("ready", 1, 1)}
	h.run(spec, t0)
	h.settle(2)
	if r := h.results(spec); r.Failed != "liveness" {
		t.Fatalf("liveness did not fail: %+v", r)
	}
	h.m.Terminating(h.pod.UID)
	h.step(3*time.Second, 2)
	if r := h.results(spec); r.Failed != "" || r.Ready {
		t.Errorf("terminating: %+v, want not failed, not ready", r)
	}
	if calls.get("live") != 1 || calls.get("ready") != 4 {
		t.Errorf("terminating: calls %v, want live 1, ready 4", calls.n)
	}
}

// Sync stops the workers of containers no longer running, and Forget all of a pod's.
func TestSyncStopsWorkers(t *testing.T) {
	h := newHarness(t, execFunc(func(context.Context, []string) (*cri.ExecResult, error) { return &cri.ExecResult{}, nil }))
	spec := &corev1.Container{Name: "app", LivenessProbe: execProbe("live", 1, 1), ReadinessProbe: execProbe("ready", 1, 1)}
	other := &corev1.Pod{ObjectMeta: metav1.ObjectMeta{Name: "q", Namespace: "ns", UID: "v"}}
	h.m.Sync(h.pod, map[string]Running{"c1": {Spec: spec}, "c2": {Spec: &corev1.Container{Name: "plain"}}}, "10.0.0.1")
	h.m.Sync(other, map[string]Running{"c9": {Spec: spec}}, "10.0.0.2")
	h.settle(4)
	if len(h.m.workers) != 2 {
		t.Errorf("%d workers, want 2 (an unprobed container has none)", len(h.m.workers))
	}
	h.m.Sync(h.pod, nil, "")
	h.settle(2)
	if r := h.m.Results(h.pod.UID, "c1", spec); r.Ready {
		t.Errorf("a stopped worker's results: %+v, want the initial ones", r)
	}
	h.m.Forget(other.UID)
	h.settle(0)
	if len(h.m.workers) != 0 {
		t.Errorf("%d workers left", len(h.m.workers))
	}
}

// An httpGet probe redirected to another host succeeds with a ProbeWarning event, as
// upstream's; a 500 fails with the kubelet's wording, and the probe metrics count both.
func TestWorkerHTTPWarningAndFailure(t *testing.T) {
	var fail atomic.Bool
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if fail.Load() {
			http.Error(w, "broken", http.StatusInternalServerError)
			return
		}
		http.Redirect(w, r, "http://other.invalid/x", http.StatusFound)
	}))
	defer srv.Close()
	host, port, _ := net.SplitHostPort(srv.Listener.Addr().String())
	h := newHarness(t, nil)
	spec := &corev1.Container{Name: "web", ReadinessProbe: &corev1.Probe{PeriodSeconds: 1, FailureThreshold: 1,
		ProbeHandler: corev1.ProbeHandler{HTTPGet: &corev1.HTTPGetAction{Path: "/", Port: intstr.Parse(port)}}}}
	h.m.Sync(h.pod, map[string]Running{"c1": {Spec: spec}}, host)
	h.settle(1)
	if r := h.results(spec); !r.Ready {
		t.Errorf("a redirect to another host: %+v, want ready", r)
	}
	if ev := h.events(); !strings.HasPrefix(ev, "Warning ProbeWarning Readiness probe warning: ") {
		t.Errorf("events: %s", ev)
	}
	fail.Store(true)
	h.step(time.Second, 1)
	if r := h.results(spec); r.Ready {
		t.Errorf("a 500: %+v, want not ready", r)
	}
	if ev := h.events(); !strings.HasPrefix(ev, "Warning Unhealthy Readiness probe failed: HTTP probe failed with statuscode: 500") {
		t.Errorf("events: %s", ev)
	}
	ok := testutil.ToFloat64(probeTotal.WithLabelValues("Readiness", "successful", "web", "p", "ns", "u"))
	failed := testutil.ToFloat64(probeTotal.WithLabelValues("Readiness", "failed", "web", "p", "ns", "u"))
	if ok < 1 || failed < 1 {
		t.Errorf("prober_probe_total: %v successful, %v failed", ok, failed)
	}
}
