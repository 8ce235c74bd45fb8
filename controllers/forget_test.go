package controllers

import (
	"testing"
	"time"

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
