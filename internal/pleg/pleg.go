// Package pleg is the relister (the kubelet's pod lifecycle event generator): it lists
// the runtime's containers and sandboxes of this agent, compares the listing with the
// previous one and names the pods whose containers or sandboxes appeared, changed state
// or went away, and the pods of sandboxes no known pod owns (orphans, to be removed).
// The comparison is pure (Take, Changed, Orphans); Relister.Relist does the I/O.
package pleg

import (
	"context"
	"time"

	"github.com/go-logr/logr"
	"k8s.io/apimachinery/pkg/types"
	runtimeapi "k8s.io/cri-api/pkg/apis/runtime/v1"

	"github.com/nodekeeper/nodekeeper/internal/kubeletmetrics"
	"github.com/nodekeeper/nodekeeper/internal/podplan"
)

// Entry is what one listing saw of a container or sandbox.
type Entry struct {
	State string
	Pod   types.NamespacedName
}

// Snapshot is one listing: "c/<id>" (containers) or "s/<id>" (sandboxes) → Entry.
type Snapshot map[string]Entry

// PodOf is the pod a container's or sandbox's labels name.
func PodOf(labels map[string]string) types.NamespacedName {
	return types.NamespacedName{Namespace: labels[podplan.LabelPodNamespace], Name: labels[podplan.LabelPodName]}
}

// Take makes the snapshot of one listing.
func Take(cs []*runtimeapi.Container, sbs []*runtimeapi.PodSandbox) Snapshot {
	s := make(Snapshot, len(cs)+len(sbs))
	for _, c := range cs {
		s["c/"+c.Id] = Entry{State: c.State.String(), Pod: PodOf(c.Labels)}
	}
	for _, sb := range sbs {
		s["s/"+sb.Id] = Entry{State: sb.State.String(), Pod: PodOf(sb.Labels)}
	}
	return s
}

// Changed names the pods with an entry new in now, gone from last, or in another state.
// With no previous listing (last nil) nothing has changed: the first reconcile of every
// pod observes the runtime anyway.
func Changed(last, now Snapshot) map[types.NamespacedName]bool {
	changed := map[types.NamespacedName]bool{}
	if last == nil {
		return changed
	}
	for id, e := range now {
		if old, ok := last[id]; !ok || old.State != e.State {
			changed[e.Pod] = true
		}
	}
	for id, e := range last {
		if _, ok := now[id]; !ok {
			changed[e.Pod] = true
		}
	}
	return changed
}

// Orphans names the pods of sandboxes whose pod UID is not among known.
func Orphans(sbs []*runtimeapi.PodSandbox, known map[types.UID]bool) []types.NamespacedName {
	var out []types.NamespacedName
	for _, sb := range sbs {
		if !known[types.UID(sb.Labels[podplan.LabelPodUID])] {
			out = append(out, PodOf(sb.Labels))
		}
	}
	return out
}

// Lister is what the relister needs of the runtime.
type Lister interface {
	ListContainers(ctx context.Context, filter *runtimeapi.ContainerFilter) ([]*runtimeapi.Container, error)
	ListPodSandbox(ctx context.Context, filter *runtimeapi.PodSandboxFilter) ([]*runtimeapi.PodSandbox, error)
}

// Relister lists the runtime and tells Notify about the pods concerned.
type Relister struct {
	Runtime Lister
	// Known lists the UIDs of the pods this node has; an error skips the orphan check.
	Known func(ctx context.Context) (map[types.UID]bool, error)
	// Notify is told each pod to reconcile (once per relist).
	Notify func(types.NamespacedName)
	Log    logr.Logger

	last Snapshot
}

// Relist lists the runtime once. Not safe for concurrent use.
func (l *Relister) Relist(ctx context.Context) {
	start := time.Now()
	sel := map[string]string{podplan.LabelManaged: "true"}
	cs, err := l.Runtime.ListContainers(ctx, &runtimeapi.ContainerFilter{LabelSelector: sel})
	if err != nil {
		l.Log.V(2).Info("Relisting containers failed", "error", err.Error())
		return
	}
	sbs, err := l.Runtime.ListPodSandbox(ctx, &runtimeapi.PodSandboxFilter{LabelSelector: sel})
	if err != nil {
		l.Log.V(2).Info("Relisting sandboxes failed", "error", err.Error())
		return
	}
	// as upstream's PLEG: the relist's duration, the running pods and containers by state
	kubeletmetrics.ObserveRelist(start, cs, sbs)
	now := Take(cs, sbs)
	changed := Changed(l.last, now)
	l.last = now
	if l.Known != nil {
		if known, err := l.Known(ctx); err == nil {
			for _, p := range Orphans(sbs, known) {
				changed[p] = true
			}
		} else {
			l.Log.V(2).Info("Listing the node's pods failed, orphans wait for the next relist", "error", err.Error())
		}
	}
	for p := range changed {
		l.Notify(p)
	}
}
