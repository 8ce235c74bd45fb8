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
