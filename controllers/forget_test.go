package controllers

import (
	"testing"

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
