package controllers

import (
	"context"
	"sort"
	"sync"
	"time"

	corev1 "k8s.io/api/core/v1"
	discoveryv1 "k8s.io/api/discovery/v1"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/client-go/util/workqueue"
	"k8s.io/utils/clock"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/event"
	"sigs.k8s.io/controller-runtime/pkg/handler"
	"sigs.k8s.io/controller-runtime/pkg/reconcile"

	"github.com/nodekeeper/nodekeeper/netrules"
	"github.com/nodekeeper/nodekeeper/netrules/healthcheck"
)

// serviceTracker is fed by the ServiceReconciler's event handlers: it keeps the current
// Services and EndpointSlices (the informer's objects, read-only) indexed by Service, and
// the set of Services an event touched since the last sync (kube-proxy's change
// trackers). Every handler enqueues the one sync key, so a burst coalesces into one sync.
type serviceTracker struct {
	mu       sync.Mutex
	nodeName string
	clock    clock.PassiveClock
	// queued is called on every change (the proxy health's QueuedUpdate), node is told
	// every version of this node's Node (nil when deleted); both may be nil
	queued   func()
	node     nodeSyncer
	services map[string]*corev1.Service                       // "ns/name" -> Service
	slices   map[string]map[string]*discoveryv1.EndpointSlice // "ns/name" -> slice name -> slice
	sliceSvc map[types.NamespacedName]string                  // slice -> the Service key it was indexed under
	zone     string                                           // this node's topology zone
	dirty    map[string]struct{}
	since    time.Time // the first mark since the last take
	// triggers are the last-change-trigger-time annotations of the EndpointSlice changes
	// since the last sync (network programming latency)
	triggers []trigger
	// endpoint and Service changes pending (upstream counts one per event)
	endpointChanges, serviceChanges int
}

// syncBatch is what one sync takes from the tracker.
type syncBatch struct {
	services                        []string  // dirty Service keys, sorted
	since                           time.Time // when the oldest of these changes was seen
	zone                            string
	triggers                        []trigger
	endpointChanges, serviceChanges int
}

// trigger is an EndpointSlice change's last-change-trigger-time, for the family of the
// slice's addresses.
type trigger struct {
	family netrules.Family
	at     time.Time
}

// nodeSyncer is told this node's Node (healthcheck.Proxy).
type nodeSyncer interface{ SyncNode(*corev1.Node) }

func (t *serviceTracker) init(nodeName string, clk clock.PassiveClock, queued func(), node *healthcheck.Proxy) {
	t.mu.Lock()
	defer t.mu.Unlock()
	t.nodeName, t.clock, t.queued = nodeName, clk, queued
	if node != nil {
		t.node = node
	}
	if t.services == nil {
		t.services = map[string]*corev1.Service{}
		t.slices = map[string]map[string]*discoveryv1.EndpointSlice{}
		t.sliceSvc = map[types.NamespacedName]string{}
		t.dirty = map[string]struct{}{}
	}
}

func (t *serviceTracker) markLocked(key string) {
	t.dirty[key] = struct{}{}
	if t.queued != nil {
		t.queued()
	}
	if t.clock != nil {
		at := t.clock.Now()
		if t.since.IsZero() {
			t.since = at
		}
		now := float64(at.UnixNano()) / 1e9
		lastQueuedTimestamp.WithLabelValues(familyLabel(netrules.IPv4)).Set(now)
		lastQueuedTimestamp.WithLabelValues(familyLabel(netrules.IPv6)).Set(now)
	}
}

func enqueue(q workqueue.TypedRateLimitingInterface[reconcile.Request]) { q.Add(syncKey) }

func (t *serviceTracker) setService(svc *corev1.Service, gone bool) {
	key := svc.Namespace + "/" + svc.Name
	t.mu.Lock()
	defer t.mu.Unlock()
	if gone {
		delete(t.services, key)
	} else {
		t.services[key] = svc
	}
	t.serviceChanges++
	serviceChangesTotal.Inc()
	serviceChangesPending.Set(float64(t.serviceChanges))
	t.markLocked(key)
}

func (t *serviceTracker) setSlice(s *discoveryv1.EndpointSlice, gone bool) {
	nn := types.NamespacedName{Namespace: s.Namespace, Name: s.Name}
	key := netrules.SliceServiceKey(s)
	t.mu.Lock()
	defer t.mu.Unlock()
	// the service-name label may have changed: drop the slice from its old Service
	if old, ok := t.sliceSvc[nn]; ok && (gone || old != key) {
		if m := t.slices[old]; m != nil {
			delete(m, s.Name)
			if len(m) == 0 {
				delete(t.slices, old)
			}
		}
		delete(t.sliceSvc, nn)
		t.markLocked(old)
	}
	if !gone && key != "" {
		m := t.slices[key]
		if m == nil {
			m = map[string]*discoveryv1.EndpointSlice{}
			t.slices[key] = m
		}
		m[s.Name] = s
		t.sliceSvc[nn] = key
		t.markLocked(key)
		if v, ok := s.Annotations[corev1.EndpointsLastChangeTriggerTime]; ok {
			if tt, err := time.Parse(time.RFC3339Nano, v); err == nil {
				fam := netrules.IPv4
				if s.AddressType == discoveryv1.AddressTypeIPv6 {
					fam = netrules.IPv6
				}
				t.triggers = append(t.triggers, trigger{family: fam, at: tt})
			}
		}
	}
	t.endpointChanges++
	endpointChangesTotal.Inc()
	endpointChangesPending.Set(float64(t.endpointChanges))
}

func (t *serviceTracker) setNode(n *corev1.Node, gone bool) {
	zone := ""
	if !gone {
		zone = n.Labels[corev1.LabelTopologyZone]
	}
	t.mu.Lock()
	defer t.mu.Unlock()
	if zone != t.zone && t.queued != nil {
		t.queued()
	}
	t.zone = zone // a zone change rebuilds everything (the reconciler compares)
}

// sawNode hands every version of this node's Node to the proxy health (eligibility:
// deleted, being deleted, tainted for deletion by the autoscaler).
func (t *serviceTracker) sawNode(n *corev1.Node, gone bool) {
	if t.node == nil {
		return
	}
	if gone {
		n = nil
	}
	t.node.SyncNode(n)
}

// take hands the pending changes to a sync and starts a new batch.
func (t *serviceTracker) take() syncBatch {
	t.mu.Lock()
	defer t.mu.Unlock()
	b := syncBatch{zone: t.zone, since: t.since, triggers: t.triggers, endpointChanges: t.endpointChanges, serviceChanges: t.serviceChanges}
	t.since = time.Time{}
	b.services = make([]string, 0, len(t.dirty))
	for k := range t.dirty {
		b.services = append(b.services, k)
	}
	sort.Strings(b.services)
	t.dirty = map[string]struct{}{}
	t.triggers = nil
	t.endpointChanges, t.serviceChanges = 0, 0
	endpointChangesPending.Set(0)
	serviceChangesPending.Set(0)
	return b
}

// pendingAgain puts back what a failed sync took (its triggers are observed when a sync
// finally succeeds; its Services are already in the reconciler's State).
func (t *serviceTracker) pendingAgain(b syncBatch) {
	t.mu.Lock()
	defer t.mu.Unlock()
	t.triggers = append(b.triggers, t.triggers...)
}

// allServiceKeys is every Service known (plus extra keys), sorted and deduplicated.
func (t *serviceTracker) allServiceKeys(extra []string) []string {
	t.mu.Lock()
	set := make(map[string]struct{}, len(t.services)+len(extra))
	for k := range t.services {
		set[k] = struct{}{}
	}
	t.mu.Unlock()
	for _, k := range extra {
		set[k] = struct{}{}
	}
	out := make([]string, 0, len(set))
	for k := range set {
		out = append(out, k)
	}
	sort.Strings(out)
	return out
}

// get returns a Service (nil when gone) and its EndpointSlices.
func (t *serviceTracker) get(key string) (*corev1.Service, []*discoveryv1.EndpointSlice) {
	t.mu.Lock()
	defer t.mu.Unlock()
	m := t.slices[key]
	out := make([]*discoveryv1.EndpointSlice, 0, len(m))
	for _, s := range m {
		out = append(out, s)
	}
	return t.services[key], out
}

func (t *serviceTracker) serviceHandler() handler.EventHandler { return recordAs(t.setService) }

func (t *serviceTracker) sliceHandler() handler.EventHandler { return recordAs(t.setSlice) }

// recordAs is an event handler that records every create, update and delete of one
// object type with set (gone on delete) and enqueues the sync key.
func recordAs[T client.Object](set func(obj T, gone bool)) handler.EventHandler {
	on := func(o client.Object, gone bool, q workqueue.TypedRateLimitingInterface[reconcile.Request]) {
		if obj, ok := o.(T); ok {
			set(obj, gone)
			enqueue(q)
		}
	}
	return handler.Funcs{
		CreateFunc: func(_ context.Context, e event.CreateEvent, q workqueue.TypedRateLimitingInterface[reconcile.Request]) {
			on(e.Object, false, q)
		},
		UpdateFunc: func(_ context.Context, e event.UpdateEvent, q workqueue.TypedRateLimitingInterface[reconcile.Request]) {
			on(e.ObjectNew, false, q)
		},
		DeleteFunc: func(_ context.Context, e event.DeleteEvent, q workqueue.TypedRateLimitingInterface[reconcile.Request]) {
			on(e.Object, true, q)
		},
	}
}

func (t *serviceTracker) nodeHandler() handler.EventHandler {
	on := func(o client.Object, gone bool, q workqueue.TypedRateLimitingInterface[reconcile.Request]) {
		if n, ok := o.(*corev1.Node); ok {
			t.sawNode(n, gone)
			t.setNode(n, gone)
			enqueue(q)
		}
	}
	return handler.Funcs{
		CreateFunc: func(_ context.Context, e event.CreateEvent, q workqueue.TypedRateLimitingInterface[reconcile.Request]) {
			on(e.Object, false, q)
		},
		UpdateFunc: func(_ context.Context, e event.UpdateEvent, q workqueue.TypedRateLimitingInterface[reconcile.Request]) {
			if e.ObjectOld.GetLabels()[corev1.LabelTopologyZone] != e.ObjectNew.GetLabels()[corev1.LabelTopologyZone] {
				on(e.ObjectNew, false, q)
			} else if n, ok := e.ObjectNew.(*corev1.Node); ok {
				t.sawNode(n, false)
			}
		},
		DeleteFunc: func(_ context.Context, e event.DeleteEvent, q workqueue.TypedRateLimitingInterface[reconcile.Request]) {
			on(e.Object, true, q)
		},
	}
}
