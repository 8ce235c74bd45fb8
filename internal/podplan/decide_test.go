package podplan

import (
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/utils/ptr"
)

// Eviction and the active deadline are inputs of the plan: the pod's containers stop
// (evicted: at once), whatever their restart policy.
func TestPlanStopsEvictedAndPastDeadline(t *testing.T) {
	running := func(p *corev1.Pod) Observed {
		return Observed{Sandboxes: []Sandbox{ready("s", 0)}, Containers: []Container{ctr(p, "a", "s", 0, StateRunning, 0)}}
	}
	p := pod(corev1.RestartPolicyAlways, nil, "a")
	p.Spec.TerminationGracePeriodSeconds = ptr.To[int64](45)
	if a := Plan(Input{Pod: p, Observed: running(p), Now: t0}); a.KillPod || a.DeadlineExceeded {
		t.Fatalf("a healthy pod is killed: %s", a)
	}
	a := Plan(Input{Pod: p, Observed: running(p), Evicted: "The node was low on resource: ephemeral-storage.", Now: t0})
	if !a.KillPod || a.Grace != 0 || a.KillReason != "evicted: The node was low on resource: ephemeral-storage." {
		t.Errorf("evicted: %s", a)
	}
	p.Spec.ActiveDeadlineSeconds = ptr.To[int64](30)
	p.Status.StartTime = &metav1.Time{Time: t0}
	if a := Plan(Input{Pod: p, Observed: running(p), Now: t0.Add(29 * time.Second)}); a.KillPod || a.DeadlineExceeded || a.Wake != time.Second {
		t.Errorf("before the deadline: %s, want a wake-up when it runs out", a)
	}
	a = Plan(Input{Pod: p, Observed: running(p), Now: t0.Add(31 * time.Second)})
	if !a.KillPod || !a.DeadlineExceeded || a.Grace != 45*time.Second || a.KillReason != DeadlineExceededMessage {
		t.Errorf("past the deadline: %s", a)
	}
	p.Status.Phase = corev1.PodFailed
	if a := Plan(Input{Pod: p, Observed: running(p), Now: t0.Add(31 * time.Second)}); !a.KillPod || a.DeadlineExceeded {
		t.Errorf("a terminal pod past its deadline: %s, want killed without a new DeadlineExceeded", a)
	}
}

func TestGracePeriod(t *testing.T) {
	p := func(spec, deletion *int64) *corev1.Pod {
		return &corev1.Pod{ObjectMeta: metav1.ObjectMeta{DeletionGracePeriodSeconds: deletion}, Spec: corev1.PodSpec{TerminationGracePeriodSeconds: spec}}
	}
	for _, tc := range []struct {
		name    string
		pod     *corev1.Pod
		evicted bool
		want    time.Duration
	}{
		{"default", p(nil, nil), false, 30 * time.Second},
		{"the pod's", p(ptr.To[int64](5), nil), false, 5 * time.Second},
		{"the deletion's over the pod's", p(ptr.To[int64](5), ptr.To[int64](1)), false, time.Second},
		{"zero", p(ptr.To[int64](0), nil), false, 0},
		{"evicted: at once", p(ptr.To[int64](5), ptr.To[int64](1)), true, 0},
	} {
		if got := GracePeriod(tc.pod, tc.evicted); got != tc.want {
			t.Errorf("%s: %v, want %v", tc.name, got, tc.want)
		}
	}
}

func TestWake(t *testing.T) {
	plain := pod(corev1.RestartPolicyAlways, nil, "a")
	withCM := pod(corev1.RestartPolicyAlways, nil, "a")
	withCM.Spec.Volumes = []corev1.Volume{{Name: "c", VolumeSource: corev1.VolumeSource{ConfigMap: &corev1.ConfigMapVolumeSource{}}}}
	deadline := pod(corev1.RestartPolicyAlways, nil, "a")
	deadline.Spec.ActiveDeadlineSeconds = ptr.To[int64](60)
	deadline.Status.StartTime = &metav1.Time{Time: t0}
	for _, tc := range []struct {
		name    string
		pod     *corev1.Pod
		backoff Backoff
		waiting bool
		want    time.Duration
	}{
		{"nothing to wait for", plain, nil, false, 0},
		{"the first back-off still running", plain, Backoff{"a": t0.Add(40 * time.Second), "pull/b": t0.Add(20 * time.Second), "c": t0.Add(-time.Second)}, false, 20 * time.Second},
		{"waiting, no back-off: the retry period", plain, Backoff{"a": t0.Add(-time.Second)}, true, 10 * time.Second},
		{"waiting with a back-off: the back-off", plain, Backoff{"a": t0.Add(3 * time.Second)}, true, 3 * time.Second},
		{"the deadline sooner", deadline, Backoff{"a": t0.Add(2 * time.Minute)}, false, time.Minute},
		{"the back-off sooner than the deadline", deadline, Backoff{"a": t0.Add(5 * time.Second)}, false, 5 * time.Second},
		{"updatable volumes: a minute", withCM, nil, false, time.Minute},
		{"updatable volumes with a back-off: the back-off", withCM, Backoff{"a": t0.Add(5 * time.Second)}, false, 5 * time.Second},
	} {
		if got := Wake(tc.pod, tc.backoff, tc.waiting, 10*time.Second, t0); got != tc.want {
			t.Errorf("%s: %v, want %v", tc.name, got, tc.want)
		}
	}
}

// The plan explains itself, in the order apply carries it out.
func TestActionsString(t *testing.T) {
	p := pod(corev1.RestartPolicyAlways, nil, "c1", "c2")
	p.Spec.Containers[0].LivenessProbe = &corev1.Probe{}
	c1 := ctr(p, "c1", "s", 2, StateRunning, 0)
	c2 := ctr(p, "c2", "s", 3, StateExited, 1)
	a := Plan(Input{Pod: p, Observed: Observed{Sandboxes: []Sandbox{ready("s", 0)}, Containers: []Container{c1, c2},
		Unhealthy: map[string]string{c1.ID: "liveness"}}, Backoff: Backoff{"c2": t0.Add(40 * time.Second)}, RetryPeriod: 10 * time.Second, Now: t0})
	want := "kill c1: Container c1 failed liveness probe, will be restarted (grace 30s); start c1 (restart 3); " +
		"c2 waits: CrashLoopBackOff (back-off 40s restarting failed container=c2); wake in 40s"
	if got := a.String(); got != want {
		t.Errorf("plan:\n%s\nwant:\n%s", got, want)
	}
	if got := Plan(Input{Pod: p, Observed: Observed{}, Now: t0}).String(); got != "create sandbox (attempt 0); start c1; start c2" {
		t.Errorf("new pod: %s", got)
	}
	p.DeletionTimestamp = &metav1.Time{Time: t0}
	if got := Plan(Input{Pod: p, Observed: Observed{Sandboxes: []Sandbox{ready("s", 0)}, Containers: []Container{c1}}, Now: t0}).String(); got != "kill the pod: the pod is being deleted (grace 30s); write the final status, delete the pod, remove its sandboxes, volumes and logs" {
		t.Errorf("deleted pod: %s", got)
	}
	if got := (Actions{}).String(); got != "nothing to do" {
		t.Errorf("empty plan: %s", got)
	}
}

// A restart carries its next back-off entry: doubled from the last, reset after a long
// run; none without a policy, none for a first start.
func TestPlanRestartBackoff(t *testing.T) {
	p := pod(corev1.RestartPolicyAlways, nil, "a", "b")
	exited := ctr(p, "a", "s", 2, StateExited, 1) // ran 1 s
	long := ctr(p, "b", "s", 1, StateExited, 1)
	long.FinishedAt = long.StartedAt.Add(time.Hour)
	o := Observed{Sandboxes: []Sandbox{ready("s", 0)}, Containers: []Container{exited, long}}
	now := t0.Add(2 * time.Hour)
	entries := map[string]BackoffEntry{"a": {Delay: 20 * time.Second, LastUpdate: now.Add(-time.Minute)}, "b": {Delay: 80 * time.Second, LastUpdate: now.Add(-time.Minute)}}
	a := Plan(Input{Pod: p, Observed: o, Backoff: NotBefore(entries, o), Entries: entries, Policy: DefaultBackoff, Now: now})
	got := map[string]time.Duration{}
	for _, s := range a.Start {
		if s.Backoff == nil || !s.Backoff.LastUpdate.Equal(now) {
			t.Fatalf("start %s: back-off %+v", s.Name, s.Backoff)
		}
		got[s.Name] = s.Backoff.Delay
	}
	if got["a"] != 40*time.Second || got["b"] != 10*time.Second {
		t.Errorf("next delays %v, want a 40s (doubled), b 10s (reset after an hour's run)", got)
	}
	if a := Plan(Input{Pod: p, Observed: o, Now: now}); len(a.Start) != 2 || a.Start[0].Backoff != nil {
		t.Errorf("without a policy: %+v", a.Start)
	}
	if a := Plan(Input{Pod: p, Observed: Observed{}, Policy: DefaultBackoff, Now: now}); len(a.Start) != 2 || a.Start[0].Backoff != nil {
		t.Errorf("first starts: %+v", a.Start)
	}
}

func TestNotBefore(t *testing.T) {
	p := pod(corev1.RestartPolicyAlways, nil, "a", "b")
	exited := ctr(p, "a", "s", 1, StateExited, 1)
	running := ctr(p, "b", "s", 1, StateRunning, 0)
	o := Observed{Containers: []Container{exited, running}}
	got := NotBefore(map[string]BackoffEntry{
		"a": {Delay: 10 * time.Second}, "b": {Delay: 10 * time.Second}, "gone": {Delay: time.Second},
		"pull/b": {Delay: 20 * time.Second, LastUpdate: t0},
	}, o)
	want := Backoff{"a": exited.FinishedAt.Add(10 * time.Second), "pull/b": t0.Add(20 * time.Second)}
	if len(got) != len(want) || !got["a"].Equal(want["a"]) || !got["pull/b"].Equal(want["pull/b"]) {
		t.Errorf("%v, want %v (a running container and one never seen have none)", got, want)
	}
}

// Deletion is planned like the rest: kill within the deletion's grace period, then
// terminate; a terminal pod is killed but not terminated (its object stays).
func TestPlanTerminate(t *testing.T) {
	p := pod(corev1.RestartPolicyAlways, nil, "a")
	o := Observed{Sandboxes: []Sandbox{ready("s", 0)}, Containers: []Container{ctr(p, "a", "s", 0, StateRunning, 0)}}
	p.DeletionTimestamp = &metav1.Time{Time: t0}
	p.DeletionGracePeriodSeconds = ptr.To[int64](7)
	if a := Plan(Input{Pod: p, Observed: o, Now: t0}); !a.KillPod || !a.Terminate || a.Grace != 7*time.Second || len(a.Start) != 0 {
		t.Errorf("deleted: %s", a)
	}
	if a := Plan(Input{Pod: p, Observed: Observed{}, Now: t0}); a.KillPod || !a.Terminate {
		t.Errorf("deleted, nothing left: %s, want terminate only", a)
	}
	p.DeletionTimestamp = nil
	p.Status.Phase = corev1.PodSucceeded
	if a := Plan(Input{Pod: p, Observed: o, Now: t0}); !a.KillPod || a.Terminate {
		t.Errorf("terminal: %s", a)
	}
}
