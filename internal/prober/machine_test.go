package prober

import (
	"fmt"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
)

var t0 = time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)

func probe(period, initialDelay, success, failure int32) *corev1.Probe {
	return &corev1.Probe{PeriodSeconds: period, InitialDelaySeconds: initialDelay, SuccessThreshold: success, FailureThreshold: failure}
}

// The machine driven second by second for a while: when the probe ran, what the results
// became and at which runs they changed.
func TestMachine(t *testing.T) {
	S, F, U := Success, Failure, Unknown
	cases := []struct {
		name        string
		typ         Type
		probe       *corev1.Probe
		res         Results       // the container's results at the start
		started     time.Duration // the container's start, relative to the worker's
		terminating bool
		results     []Result // what the probe returns, run after run
		seconds     int      // how long to drive it
		wantRuns    []int    // seconds at which it ran
		wantChanged []int    // runs (1-based) after which the results changed
		want        Results
	}{
		{name: "liveness fails past its threshold, then is on hold", typ: Liveness, probe: probe(1, 0, 1, 3),
			res: Results{Started: true}, results: []Result{F, F, F, F}, seconds: 6,
			wantRuns: []int{0, 1, 2}, wantChanged: []int{3}, want: Results{Started: true, Failed: "liveness"}},
		{name: "errors count neither way (thrown away)", typ: Liveness, probe: probe(1, 0, 1, 3),
			res: Results{Started: true}, results: []Result{F, U, F, U, U, F}, seconds: 8,
			wantRuns: []int{0, 1, 2, 3, 4, 5}, wantChanged: []int{6}, want: Results{Started: true, Failed: "liveness"}},
		{name: "errors only: never failed", typ: Liveness, probe: probe(1, 0, 1, 1),
			res: Results{Started: true}, results: []Result{U, U, U, U}, seconds: 4,
			wantRuns: []int{0, 1, 2, 3}, want: Results{Started: true}},
		{name: "a success resets the failure run", typ: Liveness, probe: probe(1, 0, 1, 3),
			res: Results{Started: true}, results: []Result{F, F, S, F, F}, seconds: 5,
			wantRuns: []int{0, 1, 2, 3, 4}, want: Results{Started: true}},
		{name: "readiness: successThreshold 2, failureThreshold 1, never on hold", typ: Readiness, probe: probe(2, 0, 2, 1),
			res: Results{Started: true}, results: []Result{S, S, F, S, S}, seconds: 10,
			wantRuns: []int{0, 2, 4, 6, 8}, wantChanged: []int{1, 2, 3, 5}, want: Results{Started: true, Ready: true, ReadinessRun: true}},
		{name: "readiness's first failure below threshold ends a kept readiness", typ: Readiness, probe: probe(1, 0, 1, 3),
			res: Results{Started: true}, results: []Result{F, F}, seconds: 2,
			wantRuns: []int{0, 1}, wantChanged: []int{1}, want: Results{Started: true, ReadinessRun: true}},
		{name: "initial delay counts from the container's start", typ: Readiness, probe: probe(10, 5, 1, 3),
			res: Results{Started: true}, started: -3 * time.Second, results: []Result{S, S}, seconds: 13,
			wantRuns: []int{2, 12}, wantChanged: []int{1}, want: Results{Started: true, Ready: true, ReadinessRun: true}},
		{name: "a container started in the future counts from now", typ: Readiness, probe: probe(10, 5, 1, 3),
			res: Results{Started: true}, started: time.Hour, results: []Result{S}, seconds: 6,
			wantRuns: []int{5}, wantChanged: []int{1}, want: Results{Started: true, Ready: true, ReadinessRun: true}},
		{name: "period defaults to 10 s", typ: Readiness, probe: probe(0, 0, 0, 0),
			res: Results{Started: true}, results: []Result{F, F, F}, seconds: 25,
			wantRuns: []int{0, 10, 20}, wantChanged: []int{1}, want: Results{Started: true, ReadinessRun: true}},
		{name: "liveness waits for the startup probe", typ: Liveness, probe: probe(1, 0, 1, 1),
			res: Results{Started: false}, results: []Result{F}, seconds: 5, want: Results{}},
		{name: "startup succeeds, then is on hold", typ: Startup, probe: probe(1, 0, 1, 3),
			res: Results{}, results: []Result{F, F, S, S}, seconds: 6,
			wantRuns: []int{0, 1, 2}, wantChanged: []int{3}, want: Results{Started: true}},
		{name: "startup fails past its threshold", typ: Startup, probe: probe(1, 0, 1, 2),
			res: Results{}, results: []Result{F, F, F}, seconds: 4,
			wantRuns: []int{0, 1}, wantChanged: []int{2}, want: Results{Failed: "startup"}},
		{name: "startup does not run once started", typ: Startup, probe: probe(1, 0, 1, 2),
			res: Results{Started: true}, results: []Result{F}, seconds: 3, want: Results{Started: true}},
		{name: "terminating: liveness stops", typ: Liveness, probe: probe(1, 0, 1, 1), terminating: true,
			res: Results{Started: true}, results: []Result{F}, seconds: 3, want: Results{Started: true}},
		{name: "terminating: startup stops", typ: Startup, probe: probe(1, 0, 1, 1), terminating: true,
			res: Results{}, results: []Result{F}, seconds: 3, want: Results{}},
		{name: "terminating: readiness goes on", typ: Readiness, probe: probe(1, 0, 1, 1), terminating: true,
			res: Results{Started: true, Ready: true}, results: []Result{S, F}, seconds: 2,
			wantRuns: []int{0, 1}, wantChanged: []int{2}, want: Results{Started: true, ReadinessRun: true}},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			m := NewMachine(c.typ, c.probe, t0.Add(c.started), t0)
			res := c.res
			var runs, changedAt []int
			for s := 0; s < c.seconds; s++ {
				now := t0.Add(time.Duration(s) * time.Second)
				run, wait := m.Tick(now, res, c.terminating)
				if !run {
					if wait <= 0 {
						t.Fatalf("at %ds: not due and no wait", s)
					}
					continue
				}
				if len(runs) >= len(c.results) {
					t.Fatalf("ran at %ds: more runs than results (%v)", s, runs)
				}
				r := c.results[len(runs)]
				runs = append(runs, s)
				var changed bool
				if res, changed = m.Record(r, res, c.terminating); changed {
					changedAt = append(changedAt, len(runs))
				}
			}
			if fmt.Sprint(runs) != fmt.Sprint(c.wantRuns) && (len(runs) > 0 || len(c.wantRuns) > 0) {
				t.Errorf("ran at %v s, want %v", runs, c.wantRuns)
			}
			if fmt.Sprint(changedAt) != fmt.Sprint(c.wantChanged) && (len(changedAt) > 0 || len(c.wantChanged) > 0) {
				t.Errorf("changed after runs %v, want %v", changedAt, c.wantChanged)
			}
			if res != c.want {
				t.Errorf("results %+v, want %+v", res, c.want)
			}
		})
	}
}

// Tick says how long to wait: until the next run, or one period while gated.
func TestMachineWait(t *testing.T) {
	m := NewMachine(Liveness, probe(7, 3, 1, 3), t0, t0)
	if run, wait := m.Tick(t0.Add(time.Second), Results{Started: true}, false); run || wait != 2*time.Second {
		t.Errorf("before the initial delay: run %v wait %v, want 2s", run, wait)
	}
	if run, wait := m.Tick(t0.Add(time.Second), Results{}, false); run || wait != 7*time.Second {
		t.Errorf("not started: run %v wait %v, want a period", run, wait)
	}
	if run, _ := m.Tick(t0.Add(3*time.Second), Results{Started: true}, false); !run {
		t.Error("not run at the initial delay")
	}
	if run, wait := m.Tick(t0.Add(4*time.Second), Results{Started: true}, false); run || wait != 6*time.Second {
		t.Errorf("after a run: run %v wait %v, want 6s", run, wait)
	}
}

func TestSpecDefaults(t *testing.T) {
	if got, want := SpecOf(&corev1.Probe{}), (Spec{Period: 10 * time.Second, SuccessThreshold: 1, FailureThreshold: 3}); got != want {
		t.Errorf("defaults %+v, want %+v", got, want)
	}
	if got, want := SpecOf(probe(2, 4, 5, 6)), (Spec{InitialDelay: 4 * time.Second, Period: 2 * time.Second, SuccessThreshold: 5, FailureThreshold: 6}); got != want {
		t.Errorf("%+v, want %+v", got, want)
	}
}

func TestInitialResults(t *testing.T) {
	p := &corev1.Probe{}
	for _, c := range []struct {
		spec corev1.Container
		want Results
	}{
		{corev1.Container{}, Results{Ready: true, Started: true}},
		{corev1.Container{ReadinessProbe: p}, Results{Started: true}},
		{corev1.Container{StartupProbe: p}, Results{Ready: true}},
		{corev1.Container{LivenessProbe: p}, Results{Ready: true, Started: true}},
	} {
		if got := InitialResults(&c.spec); got != c.want {
			t.Errorf("%+v: %+v, want %+v", c.spec, got, c.want)
		}
	}
}

// After an agent restart a container running since before it keeps its readiness until
// its readiness probe gives a result, if the pod is Ready (upstream's
// setReadyStateOnKubeletRestart).
func TestKeepReady(t *testing.T) {
	start := t0
	probed := &corev1.Container{Name: "c", ReadinessProbe: &corev1.Probe{}}
	pod := func(ready corev1.ConditionStatus) *corev1.Pod {
		return &corev1.Pod{Status: corev1.PodStatus{Conditions: []corev1.PodCondition{{Type: corev1.PodReady, Status: ready}}}}
	}
	long, recent := start.Add(-time.Minute), start.Add(-5*time.Second)
	cases := []struct {
		name    string
		pod     *corev1.Pod
		spec    *corev1.Container
		res     Results
		started time.Time
		want    bool
	}{
		{"running long before, pod Ready, not probed yet", pod(corev1.ConditionTrue), probed, Results{Started: true}, long, true},
		{"pod not Ready", pod(corev1.ConditionFalse), probed, Results{Started: true}, long, false},
		{"no Ready condition", &corev1.Pod{}, probed, Results{Started: true}, long, false},
		{"started within 10 s of the agent", pod(corev1.ConditionTrue), probed, Results{Started: true}, recent, false},
		{"start unknown", pod(corev1.ConditionTrue), probed, Results{Started: true}, time.Time{}, false},
		{"the probe has spoken", pod(corev1.ConditionTrue), probed, Results{Started: true, ReadinessRun: true}, long, false},
		{"no readiness probe", pod(corev1.ConditionTrue), &corev1.Container{Name: "c"}, Results{Started: true}, long, false},
	}
	for _, c := range cases {
		if got := KeepReady(c.pod, c.spec, c.res, c.started, start); got != c.want {
			t.Errorf("%s: got %v, want %v", c.name, got, c.want)
		}
	}
}
