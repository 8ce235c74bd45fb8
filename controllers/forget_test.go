package controllers

import (
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/types"

	"github.com/nodekeeper/nodekeeper/internal/podplan"
)

// Forgetting a pod drops every piece of per-pod memory (back-off, apply errors, the
// eviction message, cached service account tokens: these once grew with every pod ever
// run) and keeps the other pods'. Reading a forgotten pod's state does not bring it back.
func TestForgetDropsPerPodState(t *testing.T) {
	r := &PodReconciler{}
	uid, other := types.UID("a"), types.UID("b")
	now := time.Now()
	for _, u := range []types.UID{uid, other} {
		r.setBackoff(u, "c", &podplan.BackoffEntry{Delay: time.Second, LastUpdate: now})
		r.setBackoff(u, "pull/c", &podplan.BackoffEntry{Delay: time.Second, LastUpdate: now})
		r.setErr(u, "c", &podplan.Waiting{Reason: "CreateContainerConfigError"})
		r.setEvicted(u, "evicted")
		r.cacheToken(u, "default//token/3600", cachedToken{token: "x", refresh: now.Add(time.Hour)})
	}
	r.forget(uid)
	if st, ok := r.pods[uid]; ok {
		t.Errorf("the forgotten pod's state is kept: %+v", st)
	}
	if r.backoffEntry(uid, "c") != nil || len(r.backoffs(uid)) != 0 || len(r.applyErrs(uid)) != 0 || r.evictedMessage(uid) != "" {
		t.Errorf("the forgotten pod still has back-off, errors or an eviction")
	}
	if _, ok := r.cachedTokenFor(uid, "default//token/3600", now); ok {
		t.Errorf("the forgotten pod's token is kept")
	}
	if _, ok := r.pods[uid]; ok || len(r.pods) != 1 {
		t.Errorf("reading a forgotten pod made it state again: %v", r.pods)
	}
	// the other pod keeps all of it
	if len(r.backoffs(other)) != 2 || r.applyErrs(other)["c"].Reason != "CreateContainerConfigError" || r.evictedMessage(other) != "evicted" {
		t.Errorf("another pod's state was dropped: %+v", r.pods[other])
	}
	if tok, ok := r.cachedTokenFor(other, "default//token/3600", now); !ok || tok != "x" {
		t.Errorf("another pod's token was dropped")
	}
	// clearing one entry leaves the rest
	r.setBackoff(other, "pull/c", nil)
	r.setErr(other, "c", nil)
	if len(r.backoffs(other)) != 1 || len(r.applyErrs(other)) != 0 {
		t.Errorf("clearing: %+v", r.pods[other])
	}
	// a stale token is not served
	if _, ok := r.cachedTokenFor(other, "default//token/3600", now.Add(2*time.Hour)); ok {
		t.Errorf("a token past its refresh time was served")
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
