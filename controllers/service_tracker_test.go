package controllers

import (
	"context"
	"math/rand"
	"reflect"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/util/workqueue"
	clocktesting "k8s.io/utils/clock/testing"
	"sigs.k8s.io/controller-runtime/pkg/event"
	"sigs.k8s.io/controller-runtime/pkg/reconcile"

	"github.com/nodekeeper/nodekeeper/netrules"
)

// mirrorBackend keeps what an incremental backend would: on a full sync everything, on
// a partial one only the Services it is told changed. If the reconciler forgets to name
// a changed Service, the mirror drifts from the State.
type mirrorBackend struct {
	ports    map[string][]*netrules.ServicePort
	partials int
	changed  int
}

func (m *mirrorBackend) SyncState(_ context.Context, st *netrules.State, changed []string, full bool) (netrules.SyncStats, error) {
	if full {
		m.ports = map[string][]*netrules.ServicePort{}
		for _, k := range st.Services() {
			m.ports[k] = st.Ports(k)
		}
		return netrules.SyncStats{Full: true}, nil
	}
	m.partials++
	m.changed += len(changed)
	for _, k := range changed {
		if ps := st.Ports(k); ps != nil {
			m.ports[k] = ps
		} else {
			delete(m.ports, k)
		}
	}
	return netrules.SyncStats{}, nil
}

func (m *mirrorBackend) ruleset(fam netrules.Family, node netrules.Node) *netrules.Ruleset {
	st := netrules.NewState(fam, node)
	for k, ps := range m.ports {
		st.Set(k, ps)
	}
	return st.Ruleset()
}

// Random Service / EndpointSlice / Node events fed to the handlers, synced in random
// batches, leave every backend with exactly what a full Build of the final objects gives.
func TestTrackerIncrementalEqualsFullBuild(t *testing.T) {
	registerProxyMetrics()
	q := workqueue.NewTypedRateLimitingQueue(workqueue.DefaultTypedControllerRateLimiter[reconcile.Request]())
	defer q.ShutDown()
	ctx := context.Background()
	for seed := int64(0); seed < 100; seed++ {
		r := rand.New(rand.NewSource(seed))
		clk := clocktesting.NewFakeClock(time.Unix(1000, 0))
		be4, be6 := &mirrorBackend{}, &mirrorBackend{}
		rec := &ServiceReconciler{Node: netrules.Node{Name: "me"}, Clock: clk, FullSyncPeriod: time.Hour,
			Backends: map[netrules.Family]RulesBackend{netrules.IPv4: be4, netrules.IPv6: be6}}
		rec.tracker.init("me", clk, nil, nil)
		svcH, sliceH, nodeH := rec.tracker.serviceHandler(), rec.tracker.sliceHandler(), rec.tracker.nodeHandler()
		w := netrules.NewWorld("me")
		zone := ""
		for step := 0; step < 80; step++ {
			if r.Intn(15) == 0 { // this node's zone label changes
				old := &corev1.Node{ObjectMeta: metav1.ObjectMeta{Name: "me", Labels: map[string]string{corev1.LabelTopologyZone: zone}}}
				zone = []string{"", "z1", "z2"}[r.Intn(3)]
				n := &corev1.Node{ObjectMeta: metav1.ObjectMeta{Name: "me", Labels: map[string]string{corev1.LabelTopologyZone: zone}}}
				nodeH.Update(ctx, event.UpdateEvent{ObjectOld: old, ObjectNew: n}, q)
			}
			ev := w.Step(r)
			switch {
			case ev.Service != nil && ev.Gone:
				svcH.Delete(ctx, event.DeleteEvent{Object: ev.Service}, q)
			case ev.Service != nil:
				svcH.Create(ctx, event.CreateEvent{Object: ev.Service}, q)
			case ev.Gone:
				sliceH.Delete(ctx, event.DeleteEvent{Object: ev.Slice}, q)
			case ev.PrevSlice != nil:
				sliceH.Update(ctx, event.UpdateEvent{ObjectOld: ev.PrevSlice, ObjectNew: ev.Slice}, q)
			default:
				sliceH.Create(ctx, event.CreateEvent{Object: ev.Slice}, q)
			}
			if r.Intn(3) == 0 {
				clk.Step(time.Second)
				if _, err := rec.Reconcile(ctx, syncKey); err != nil {
					t.Fatal(err)
				}
			}
		}
		if _, err := rec.Reconcile(ctx, syncKey); err != nil {
			t.Fatal(err)
		}
		svcs, slices := w.Objects()
		node := netrules.Node{Name: "me", Zone: zone}
		want := netrules.Build(svcs, slices, node)
		for fam, be := range map[netrules.Family]*mirrorBackend{netrules.IPv4: be4, netrules.IPv6: be6} {
			got := be.ruleset(fam, node)
			if len(got.Ports) == 0 && len(want[fam].Ports) == 0 {
				continue
			}
			if !reflect.DeepEqual(got, want[fam]) {
				t.Fatalf("seed %d IPv%d: incremental differs from Build", seed, fam)
			}
		}
		if be4.partials == 0 {
			t.Fatalf("seed %d: no partial sync happened", seed)
		}
	}
}

// pendingBackend reports work left for its next calls, like a backend rewriting a big
// table in chunks.
type pendingBackend struct {
	left  int
	calls []bool // full flag of each call
}

func (b *pendingBackend) SyncState(_ context.Context, _ *netrules.State, _ []string, full bool) (netrules.SyncStats, error) {
	b.calls = append(b.calls, full)
	if b.left > 0 {
		b.left--
	}
	return netrules.SyncStats{Full: full, Pending: b.left}, nil
}

// A backend with pending work is called again at once, with no changes, until it is done;
// then the reconciler waits for the next full sync as usual.
func TestReconcilerRequeuesWhileBackendPending(t *testing.T) {
	registerProxyMetrics()
	clk := clocktesting.NewFakeClock(time.Unix(1000, 0))
	be := &pendingBackend{left: 3}
	rec := &ServiceReconciler{Node: netrules.Node{Name: "me"}, Clock: clk, FullSyncPeriod: time.Minute,
		Backends: map[netrules.Family]RulesBackend{netrules.IPv4: be}}
	rec.tracker.init("me", clk, nil, nil)
	ctx := context.Background()
	for i, wantFull := range []bool{true, false, false} {
		res, err := rec.Reconcile(ctx, syncKey)
		if err != nil {
			t.Fatal(err)
		}
		if len(be.calls) != i+1 || be.calls[i] != wantFull {
			t.Fatalf("call %d: backend calls %v", i, be.calls)
		}
		if i < 2 && res.RequeueAfter > 10*time.Millisecond {
			t.Fatalf("call %d: pending work but requeued after %v", i, res.RequeueAfter)
		}
		if i == 2 && res.RequeueAfter < time.Second {
			t.Fatalf("done but requeued after %v", res.RequeueAfter)
		}
	}
	// nothing pending, nothing changed: the backend is left alone
	if _, err := rec.Reconcile(ctx, syncKey); err != nil {
		t.Fatal(err)
	}
	if len(be.calls) != 3 {
		t.Fatalf("backend called without a reason: %v", be.calls)
	}
}
