package controllers

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/tools/record"
	"sigs.k8s.io/controller-runtime/pkg/event"

	"github.com/nodekeeper/nodekeeper/runtime/cri"
)

// execRuntime is a runtime whose only working call is ExecSync.
type execRuntime struct {
	cri.Runtime
	exec func(ctx context.Context, cmd []string) (*cri.ExecResult, error)
}

func (r execRuntime) ExecSync(ctx context.Context, _ string, cmd []string, _ time.Duration) (*cri.ExecResult, error) {
	return r.exec(ctx, cmd)
}

func workerExecProbe(cmd string, period, failures int32) *corev1.Probe {
	return &corev1.Probe{ProbeHandler: corev1.ProbeHandler{Exec: &corev1.ExecAction{Command: []string{cmd}}},
		PeriodSeconds: period, FailureThreshold: failures, TimeoutSeconds: 1}
}

func runWorker(t *testing.T, rt cri.Runtime, spec *corev1.Container, d time.Duration) (*probeWorker, *record.FakeRecorder) {
	t.Helper()
	rec := record.NewFakeRecorder(100)
	p := &prober{runtime: rt, recorder: rec, events: make(chan event.GenericEvent, 10), workers: map[string]*probeWorker{}}
	ctx, cancel := context.WithTimeout(context.Background(), d)
	defer cancel()
	w := &probeWorker{res: ProbeResults{Started: true}}
	pod := &corev1.Pod{ObjectMeta: metav1.ObjectMeta{Name: "p", Namespace: "ns", UID: "u"}}
	p.run(ctx, w, pod, "c1", spec, time.Time{})
	return w, rec
}

func events(rec *record.FakeRecorder) string {
	var out []string
	for {
		select {
		case e := <-rec.Events:
			out = append(out, e)
		default:
			return strings.Join(out, "\n")
		}
	}
}

// As upstream's prober: an exec the runtime cannot run is an error, retried three times
// and then thrown away (an "errored" event, no failure counted); a timed-out exec is a
// failure.
func TestProbeErrorsAreNotFailures(t *testing.T) {
	var calls atomic.Int32
	rt := execRuntime{exec: func(context.Context, []string) (*cri.ExecResult, error) {
		calls.Add(1)
		return nil, errors.New("ExecSync: rpc error: connection reset")
	}}
	w, rec := runWorker(t, rt, &corev1.Container{Name: "app", LivenessProbe: workerExecProbe("check", 1, 1)}, 800*time.Millisecond)
	if w.res.Failed != "" {
		t.Errorf("an erroring probe failed the container: %+v", w.res)
	}
	if n := calls.Load(); n != maxProbeRetries {
		t.Errorf("%d exec calls, want %d (one period, retried)", n, maxProbeRetries)
	}
	if ev := events(rec); !strings.Contains(ev, "Liveness probe errored and resulted in unknown state") || strings.Contains(ev, "probe failed") {
		t.Errorf("events: %s", ev)
	}

	rt = execRuntime{exec: func(context.Context, []string) (*cri.ExecResult, error) {
		return nil, fmt.Errorf("ExecSync: timeout 1s exceeded: %w", context.DeadlineExceeded)
	}}
	w, rec = runWorker(t, rt, &corev1.Container{Name: "app", LivenessProbe: workerExecProbe("check", 1, 1)}, 500*time.Millisecond)
	if w.res.Failed != "liveness" {
		t.Errorf("a timed-out exec probe did not fail: %+v", w.res)
	}
	if ev := events(rec); !strings.Contains(ev, `Liveness probe failed: command ["check"] timed out`) {
		t.Errorf("events: %s", ev)
	}
}

// Each probe has a worker of its own, as upstream: a readiness probe that hangs does not
// hold up the liveness probe's periods.
func TestProbesRunIndependently(t *testing.T) {
	var live atomic.Int32
	var once sync.Once
	release := make(chan struct{})
	defer once.Do(func() { close(release) })
	rt := execRuntime{exec: func(ctx context.Context, cmd []string) (*cri.ExecResult, error) {
		if cmd[0] == "ready" {
			select { // hangs past the test
			case <-release:
			case <-ctx.Done():
			}
			return nil, ctx.Err()
		}
		live.Add(1)
		return &cri.ExecResult{}, nil
	}}
	spec := &corev1.Container{Name: "app", ReadinessProbe: workerExecProbe("ready", 1, 3), LivenessProbe: workerExecProbe("live", 1, 3)}
	runWorker(t, rt, spec, 2500*time.Millisecond)
	if n := live.Load(); n < 2 {
		t.Errorf("liveness ran %d times in 2.5 s with a 1 s period while readiness hung", n)
	}
}

// The initial delay counts from the container's start in the runtime, as upstream's
// worker (a worker begun late, e.g. after an agent restart, does not wait it again).
func TestProbeInitialDelayFromContainerStart(t *testing.T) {
	var calls atomic.Int32
	rt := execRuntime{exec: func(context.Context, []string) (*cri.ExecResult, error) {
		calls.Add(1)
		return &cri.ExecResult{}, nil
	}}
	pr := workerExecProbe("check", 10, 3)
	pr.InitialDelaySeconds = 5
	spec := &corev1.Container{Name: "app", ReadinessProbe: pr}
	p := &prober{runtime: rt, recorder: record.NewFakeRecorder(100), events: make(chan event.GenericEvent, 10)}
	pod := &corev1.Pod{ObjectMeta: metav1.ObjectMeta{Name: "p", Namespace: "ns", UID: "u"}}
	for _, tc := range []struct {
		started time.Time
		want    int32
	}{{time.Now().Add(-10 * time.Second), 1}, {time.Now(), 0}, {time.Time{}, 0}} {
		calls.Store(0)
		ctx, cancel := context.WithTimeout(context.Background(), 600*time.Millisecond)
		p.run(ctx, &probeWorker{res: ProbeResults{Started: true}}, pod, "c1", spec, tc.started)
		cancel()
		if n := calls.Load(); n != tc.want {
			t.Errorf("started %v ago: %d probes in 0.6 s, want %d", time.Since(tc.started).Round(time.Second), n, tc.want)
		}
	}
}
