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

// update runs f on the pod's state under r.mu, making the state first when create, and
// not at all when the pod has none and create is false (reads do not create: a pod read
// after forget stays forgotten).
func (r *PodReconciler) update(uid types.UID, create bool, f func(*podState)) {
	r.mu.Lock()
	defer r.mu.Unlock()
	st := r.pods[uid]
	if st == nil {
		if !create {
			return
		}
		if r.pods == nil {
			r.pods = map[types.UID]*podState{}
		}
		st = &podState{}
		r.pods[uid] = st
	}
	f(st)
}

// view runs f on the pod's state, if it has one.
func (r *PodReconciler) view(uid types.UID, f func(*podState)) { r.update(uid, false, f) }

// put sets m[key] to v, making m when it is nil, or deletes key when keep is false.
func put[V any](m map[string]V, key string, v V, keep bool) map[string]V {
	if !keep {
		delete(m, key)
		return m
	}
	if m == nil {
		m = map[string]V{}
	}
	m[key] = v
	return m
}

// forgetState drops everything remembered of the pod.
func (r *PodReconciler) forgetState(uid types.UID) {
	r.mu.Lock()
	defer r.mu.Unlock()
	delete(r.pods, uid)
}

// backoffEntry is the pod's back-off entry for key (nil: none).
func (r *PodReconciler) backoffEntry(uid types.UID, key string) (e *podplan.BackoffEntry) {
	r.view(uid, func(st *podState) { e = st.backoff[key] })
	return e
}

// setBackoff sets the pod's back-off entry for key, or removes it when e is nil.
func (r *PodReconciler) setBackoff(uid types.UID, key string, e *podplan.BackoffEntry) {
	r.update(uid, e != nil, func(st *podState) { st.backoff = put(st.backoff, key, e, e != nil) })
}

// backoffs are a copy of the pod's back-off entries.
func (r *PodReconciler) backoffs(uid types.UID) map[string]podplan.BackoffEntry {
	out := map[string]podplan.BackoffEntry{}
	r.view(uid, func(st *podState) {
		for k, e := range st.backoff {
			out[k] = *e
		}
	})
	return out
}

// setErr records the error met applying a plan to container name, or clears it (nil).
func (r *PodReconciler) setErr(uid types.UID, name string, w *podplan.Waiting) {
	var v podplan.Waiting
	if w != nil {
		v = *w
	}
	r.update(uid, w != nil, func(st *podState) { st.errs = put(st.errs, name, v, w != nil) })
}

// applyErrs are a copy of the errors met applying plans, by container.
func (r *PodReconciler) applyErrs(uid types.UID) (out map[string]podplan.Waiting) {
	r.view(uid, func(st *podState) { out = maps.Clone(st.errs) })
	return out
}

// record keeps what an apply learned (podplan.Outcome) in the pod's state.
func (r *PodReconciler) record(uid types.UID, o podplan.Outcome) {
	for name, w := range o.Waiting {
		r.setErr(uid, name, w)
	}
	for key, e := range o.Backoff {
		r.setBackoff(uid, key, e)
	}
}

// setEvicted records the pod's eviction message.
func (r *PodReconciler) setEvicted(uid types.UID, msg string) {
	r.update(uid, true, func(st *podState) { st.evicted = msg })
}

// evictedMessage is the pod's eviction message, "" when it was not evicted.
func (r *PodReconciler) evictedMessage(uid types.UID) (msg string) {
	r.view(uid, func(st *podState) { msg = st.evicted })
	return msg
}

// cachedTokenFor is the pod's cached token for key when it is still fresh at now.
func (r *PodReconciler) cachedTokenFor(uid types.UID, key string, now time.Time) (token string, ok bool) {
	r.view(uid, func(st *podState) {
		if t, found := st.tokens[key]; found && now.Before(t.refresh) {
			token, ok = t.token, true
		}
	})
	return token, ok
}

// cacheToken keeps a token of the pod for key.
func (r *PodReconciler) cacheToken(uid types.UID, key string, t cachedToken) {
	r.update(uid, true, func(st *podState) { st.tokens = put(st.tokens, key, t, true) })
}
