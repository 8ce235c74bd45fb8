package controllers

import (
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/types"

	"github.com/nodekeeper/nodekeeper/internal/podplan"
)

// Forgetting a pod drops every piece of per-pod memory, its cached service account
// tokens included (they once grew with every pod ever run).
func TestForgetDropsPerPodState(t *testing.T) {
	r := &PodReconciler{}
	uid, other := types.UID("a"), types.UID("b")
	r.tokens = map[types.UID]map[string]cachedToken{
		uid:   {"default//token/3600": {token: "x"}},
		other: {"default//token/3600": {token: "y"}},
	}
	r.backoff = map[types.UID]map[string]*podplan.BackoffEntry{uid: {}}
	r.forget(uid)
	if _, ok := r.tokens[uid]; ok {
		t.Errorf("the forgotten pod's tokens are kept: %v", r.tokens)
	}
	if _, ok := r.tokens[other]; !ok {
		t.Errorf("another pod's tokens were dropped")
	}
	if _, ok := r.backoff[uid]; ok {
		t.Errorf("the forgotten pod's back-off is kept")
	}
}

// After an agent restart a container running since before it keeps its readiness until
// its readiness probe gives a result, if the pod is Ready (upstream's
// setReadyStateOnKubeletRestart).
func TestKeepReadyAfterRestart(t *testing.T) {
	p := &prober{start: time.Now()}
	probed := &corev1.Container{Name: "c", ReadinessProbe: &corev1.Probe{}}
	pod := func(ready corev1.ConditionStatus) *corev1.Pod {
		return &corev1.Pod{Status: corev1.PodStatus{Conditions: []corev1.PodCondition{{Type: corev1.PodReady, Status: ready}}}}
	}
	long, recent := p.start.Add(-time.Minute), p.start.Add(-5*time.Second)
	cases := []struct {
		name    string
		pod     *corev1.Pod
		spec    *corev1.Container
		res     ProbeResults
		started time.Time
		want    bool
	}{
		{"running long before, pod Ready, not probed yet", pod(corev1.ConditionTrue), probed, ProbeResults{Started: true}, long, true},
		{"pod not Ready", pod(corev1.ConditionFalse), probed, ProbeResults{Started: true}, long, false},
		{"started within 10 s of the agent", pod(corev1.ConditionTrue), probed, ProbeResults{Started: true}, recent, false},
		{"the probe has spoken", pod(corev1.ConditionTrue), probed, ProbeResults{Started: true, ReadinessRun: true}, long, false},
		{"no readiness probe", pod(corev1.ConditionTrue), &corev1.Container{Name: "c"}, ProbeResults{Started: true}, long, false},
	}
	for _, c := range cases {
		if got := p.keepReadyAfterRestart(c.pod, c.spec, c.res, c.started); got != c.want {
			t.Errorf("%s: got %v, want %v", c.name, got, c.want)
		}
	}
}
