package controllers

import (
	"maps"
	"time"

	"k8s.io/apimachinery/pkg/types"

	"github.com/nodekeeper/nodekeeper/internal/podplan"
)

// podState is all the reconciler remembers of one pod between its reconciles (besides
// the prober's workers, the start-up tracker and the device allocations, which forget
// releases too). It lives in PodReconciler.pods, under PodReconciler.mu, so forgetting a
// pod is one delete.
type podState struct {
	// backoff is the restart back-off by container name, and the image pull back-off
	// by "pull/<container>"
	backoff map[string]*podplan.BackoffEntry
	// errs are the errors met applying plans, by container: they become the
	// containers' waiting reasons
	errs map[string]podplan.Waiting
	// evicted is the eviction message once the pod is evicted
	evicted string
	// tokens are the projected service account tokens, by sa/audience/path/expiry
	tokens map[string]cachedToken
}

// stateLocked is the pod's state; a new one (kept) when create, else nil when it has
// none. r.mu must be held. Reads do not create: a pod read after forget stays forgotten.
func (r *PodReconciler) stateLocked(uid types.UID, create bool) *podState {
	st := r.pods[uid]
	if st == nil && create {
		if r.pods == nil {
			r.pods = map[types.UID]*podState{}
		}
		st = &podState{}
		r.pods[uid] = st
	}
	return st
}

// forgetState drops everything remembered of the pod.
func (r *PodReconciler) forgetState(uid types.UID) {
	r.mu.Lock()
	defer r.mu.Unlock()
	delete(r.pods, uid)
}

// backoffEntry is the pod's back-off entry for key (nil: none).
func (r *PodReconciler) backoffEntry(uid types.UID, key string) *podplan.BackoffEntry {
	r.mu.Lock()
	defer r.mu.Unlock()
	if st := r.stateLocked(uid, false); st != nil {
		return st.backoff[key]
	}
	return nil
}

// setBackoff sets the pod's back-off entry for key, or removes it when e is nil.
func (r *PodReconciler) setBackoff(uid types.UID, key string, e *podplan.BackoffEntry) {
	r.mu.Lock()
	defer r.mu.Unlock()
	if e == nil {
		if st := r.stateLocked(uid, false); st != nil {
			delete(st.backoff, key)
		}
		return
	}
	st := r.stateLocked(uid, true)
	if st.backoff == nil {
		st.backoff = map[string]*podplan.BackoffEntry{}
	}
	st.backoff[key] = e
}

// backoffs are a copy of the pod's back-off entries.
func (r *PodReconciler) backoffs(uid types.UID) map[string]podplan.BackoffEntry {
	r.mu.Lock()
	defer r.mu.Unlock()
	out := map[string]podplan.BackoffEntry{}
	if st := r.stateLocked(uid, false); st != nil {
		for k, e := range st.backoff {
			out[k] = *e
		}
	}
	return out
}

// setErr records the error met applying a plan to container name, or clears it (nil).
func (r *PodReconciler) setErr(uid types.UID, name string, w *podplan.Waiting) {
	r.mu.Lock()
	defer r.mu.Unlock()
	if w == nil {
		if st := r.stateLocked(uid, false); st != nil {
			delete(st.errs, name)
		}
		return
	}
	st := r.stateLocked(uid, true)
	if st.errs == nil {
		st.errs = map[string]podplan.Waiting{}
	}
	st.errs[name] = *w
}

// applyErrs are a copy of the errors met applying plans, by container.
func (r *PodReconciler) applyErrs(uid types.UID) map[string]podplan.Waiting {
	r.mu.Lock()
	defer r.mu.Unlock()
	if st := r.stateLocked(uid, false); st != nil {
		return maps.Clone(st.errs)
	}
	return nil
}

// setEvicted records the pod's eviction message.
func (r *PodReconciler) setEvicted(uid types.UID, msg string) {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.stateLocked(uid, true).evicted = msg
}

// evictedMessage is the pod's eviction message, "" when it was not evicted.
func (r *PodReconciler) evictedMessage(uid types.UID) string {
	r.mu.Lock()
	defer r.mu.Unlock()
	if st := r.stateLocked(uid, false); st != nil {
		return st.evicted
	}
	return ""
}

// cachedTokenFor is the pod's cached token for key when it is still fresh at now.
func (r *PodReconciler) cachedTokenFor(uid types.UID, key string, now time.Time) (string, bool) {
	r.mu.Lock()
	defer r.mu.Unlock()
	if st := r.stateLocked(uid, false); st != nil {
		if t, ok := st.tokens[key]; ok && now.Before(t.refresh) {
			return t.token, true
		}
	}
	return "", false
}

// cacheToken keeps a token of the pod for key.
func (r *PodReconciler) cacheToken(uid types.UID, key string, t cachedToken) {
	r.mu.Lock()
	defer r.mu.Unlock()
	st := r.stateLocked(uid, true)
	if st.tokens == nil {
		st.tokens = map[string]cachedToken{}
	}
	st.tokens[key] = t
}
