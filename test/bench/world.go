package bench

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"math/rand/v2"
	"net/netip"
	"slices"
	"sync"

	corev1 "k8s.io/api/core/v1"
	discoveryv1 "k8s.io/api/discovery/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
	"sigs.k8s.io/controller-runtime/pkg/client"
)

// Change kinds.
const (
	KindMoved   = "endpoint-moved"  // one endpoint of a Service replaced by a new address
	KindCreated = "service-created" // a new Service and its EndpointSlice
	KindDeleted = "service-deleted" // a Service (then its EndpointSlice) deleted
)

// Kinds in report order.
var Kinds = []string{KindMoved, KindCreated, KindDeleted}

// Edit is one API change the harness made and what the kernel must show after it.
type Edit struct {
	Kind     string
	Service  string
	Endpoint netip.Addr // moved: the new address; created: its first endpoint
}

// Expect is what a probe checks: chains that must exist and hold rules, chains that
// must be gone (or empty: flushed, awaiting deletion), and endpoints a Service's chain
// must send traffic to.
type Expect struct {
	Present []string `json:"present,omitempty"`
	Absent  []string `json:"absent,omitempty"`
	Reach   []Reach  `json:"reach,omitempty"`
	Unref   []Unref  `json:"unref,omitempty"`
}

// Unref is a deleted Service's chain no longer in use: gone, flushed, or no longer
// jumped to from the dispatch chain (kube-proxy's iptables mode in a large cluster keeps
// stale chains, unreferenced, until its next cleanup, up to a sync period later).
type Unref struct{ Chain, From string }

// Reach is one endpoint of a Service in the kernel: either its endpoint chain exists
// with rules (kube-proxy's iptables mode and nftables with session affinity, nodekeeper
// today), or the Service chain DNATs straight to it (kube-proxy ≥ 1.37 nftables without
// affinity: "dnat ip addr . port to numgen random mod N map { … }", or "dnat to ip:port"
// for one endpoint).
type Reach struct {
	ServiceChain, EndpointChain string
	Endpoint                    netip.AddrPort
}

// Expect is the kernel state that shows the edit done, in a layout.
func (e Edit) Expect(l Layout) Expect {
	p := Port(e.Service)
	switch e.Kind {
	case KindMoved:
		return Expect{Reach: []Reach{{l.ServiceChain(p), l.EndpointChain(p, Endpoint(e.Endpoint)), Endpoint(e.Endpoint)}}}
	case KindCreated:
		return Expect{Present: []string{l.ServiceChain(p)},
			Reach: []Reach{{l.ServiceChain(p), l.EndpointChain(p, Endpoint(e.Endpoint)), Endpoint(e.Endpoint)}}}
	default:
		if l.Dispatch != "" {
			return Expect{Unref: []Unref{{l.ServiceChain(p), l.Dispatch}}}
		}
		return Expect{Absent: []string{l.ServiceChain(p)}}
	}
}

type svcState struct {
	loaded    int // index of a loaded Service, -1 for a created one
	clusterIP netip.Addr
	eps       []netip.Addr
	exists    bool
}

// World is the set of benchmark objects in the apiserver beyond the loaded plan: it
// makes the changes, remembers what they touched, and puts the loaded plan back
// (Restore) so that every agent starts from the same objects. Safe for concurrent use;
// a Service being changed is busy until Release.
type World struct {
	C client.Client
	N int // loaded Services

	mu      sync.Mutex
	rng     *rand.Rand
	touched map[string]*svcState
	busy    map[string]bool
	created int
	// the EndpointSlice deletions that follow Service deletions, and their errors
	slicesGone sync.WaitGroup
	sliceErr   error
}

// NewWorld tracks changes over n loaded Services.
func NewWorld(c client.Client, n int, seed uint64) *World {
	return &World{C: c, N: n, rng: rand.New(rand.NewPCG(seed, 0x6e6b)), touched: map[string]*svcState{}, busy: map[string]bool{}}
}

func (w *World) state(name string) *svcState {
	if s, ok := w.touched[name]; ok {
		return s
	}
	var i int
	if _, err := fmt.Sscanf(name, "svc-%05d", &i); err != nil {
		return nil
	}
	s := &svcState{loaded: i, clusterIP: ClusterIP(i), eps: InitialEndpoints(i), exists: true}
	w.touched[name] = s
	return s
}

// pick chooses a loaded Service that exists and is not busy, marks it busy. Locked.
func (w *World) pick() (string, *svcState, error) {
	for range 1000 {
		name := ServiceName(w.rng.IntN(w.N))
		if w.busy[name] {
			continue
		}
		if s := w.state(name); s != nil && s.exists {
			w.busy[name] = true
			return name, s, nil
		}
	}
	return "", nil, errors.New("no free Service to change")
}

// Release ends a change of a Service (the next change may pick it again).
func (w *World) Release(name string) {
	w.mu.Lock()
	delete(w.busy, name)
	w.mu.Unlock()
}

// Kind draws a change kind: 70 % endpoint moves, 15 % creations, 15 % deletions.
func (w *World) Kind() string {
	w.mu.Lock()
	defer w.mu.Unlock()
	switch r := w.rng.IntN(100); {
	case r < 70:
		return KindMoved
	case r < 85:
		return KindCreated
	default:
		return KindDeleted
	}
}

func patchEndpoints(ctx context.Context, c client.Client, service string, eps []netip.Addr) error {
	body, err := json.Marshal(map[string]any{"endpoints": endpoints(eps, len(service))})
	if err != nil {
		return err
	}
	s := &discoveryv1.EndpointSlice{ObjectMeta: metav1.ObjectMeta{Namespace: Namespace, Name: SliceName(service)}}
	return c.Patch(ctx, s, client.RawPatch(types.MergePatchType, body))
}

// Do makes one change of the kind on a random Service (the Service stays busy until
// Release). before is called with the edit just before the API write the kernel state
// depends on (so a probe can watch for it while the write is in flight); the edit says
// what to expect.
func (w *World) Do(ctx context.Context, kind string, before func(Edit)) (Edit, error) {
	switch kind {
	case KindMoved:
		w.mu.Lock()
		name, s, err := w.pick()
		if err != nil {
			w.mu.Unlock()
			return Edit{}, err
		}
		eps := slices.Clone(s.eps)
		ip := SpareEndpointIP(w.rng)
		for slices.Contains(eps, ip) {
			ip = SpareEndpointIP(w.rng)
		}
		eps[w.rng.IntN(len(eps))] = ip
		w.mu.Unlock()
		before(Edit{Kind: kind, Service: name, Endpoint: ip})
		if err := patchEndpoints(ctx, w.C, name, eps); err != nil {
			w.Release(name)
			return Edit{}, fmt.Errorf("moving an endpoint of %s: %w", name, err)
		}
		w.mu.Lock()
		s.eps = eps
		w.mu.Unlock()
		return Edit{Kind: kind, Service: name, Endpoint: ip}, nil
	case KindCreated:
		w.mu.Lock()
		if w.created >= MaxCreated {
			w.mu.Unlock()
			return Edit{}, fmt.Errorf("more than %d Services created", MaxCreated)
		}
		k := w.created
		w.created++
		name := CreatedName(k)
		s := &svcState{loaded: -1, clusterIP: CreatedClusterIP(k)}
		for range EndpointsPerService {
			ip := SpareEndpointIP(w.rng)
			for slices.Contains(s.eps, ip) {
				ip = SpareEndpointIP(w.rng)
			}
			s.eps = append(s.eps, ip)
		}
		w.touched[name] = s
		w.busy[name] = true
		w.mu.Unlock()
		if err := create(ctx, w.C, NewService(name, s.clusterIP)); err != nil {
			w.Release(name)
			return Edit{}, fmt.Errorf("creating Service %s: %w", name, err)
		}
		w.mu.Lock()
		s.exists = true
		w.mu.Unlock()
		before(Edit{Kind: kind, Service: name, Endpoint: s.eps[0]})
		if err := create(ctx, w.C, NewEndpointSlice(name, s.eps)); err != nil {
			w.Release(name)
			return Edit{}, fmt.Errorf("creating EndpointSlice of %s: %w", name, err)
		}
		return Edit{Kind: kind, Service: name, Endpoint: s.eps[0]}, nil
	case KindDeleted:
		w.mu.Lock()
		name, s, err := w.pick()
		w.mu.Unlock()
		if err != nil {
			return Edit{}, err
		}
		before(Edit{Kind: kind, Service: name})
		if err := deleteObject(ctx, w.C, &corev1.Service{ObjectMeta: metav1.ObjectMeta{Namespace: Namespace, Name: name}}); err != nil {
			w.Release(name)
			return Edit{}, fmt.Errorf("deleting Service %s: %w", name, err)
		}
		w.mu.Lock()
		s.exists = false
		w.mu.Unlock()
		// the kernel shows the deletion of the Service; its EndpointSlice goes after it
		// (as the EndpointSlice controller deletes it), outside the timed write
		w.slicesGone.Add(1)
		go func() {
			defer w.slicesGone.Done()
			sl := &discoveryv1.EndpointSlice{ObjectMeta: metav1.ObjectMeta{Namespace: Namespace, Name: SliceName(name)}}
			if err := deleteObject(context.WithoutCancel(ctx), w.C, sl); err != nil {
				w.mu.Lock()
				w.sliceErr = errors.Join(w.sliceErr, fmt.Errorf("deleting EndpointSlice of %s: %w", name, err))
				w.mu.Unlock()
			}
		}()
		return Edit{Kind: kind, Service: name}, nil
	}
	return Edit{}, fmt.Errorf("unknown change kind %q", kind)
}

func deleteObject(ctx context.Context, c client.Client, o client.Object) error {
	if err := c.Delete(ctx, o); err != nil && !apierrors.IsNotFound(err) {
		return err
	}
	return nil
}

func deleteService(ctx context.Context, c client.Client, name string) error {
	svc := &corev1.Service{ObjectMeta: metav1.ObjectMeta{Namespace: Namespace, Name: name}}
	if err := c.Delete(ctx, svc); err != nil && !apierrors.IsNotFound(err) {
		return fmt.Errorf("deleting Service %s: %w", name, err)
	}
	sl := &discoveryv1.EndpointSlice{ObjectMeta: metav1.ObjectMeta{Namespace: Namespace, Name: SliceName(name)}}
	if err := c.Delete(ctx, sl); err != nil && !apierrors.IsNotFound(err) {
		return fmt.Errorf("deleting EndpointSlice of %s: %w", name, err)
	}
	return nil
}

// Restore puts the loaded plan back: deleted loaded Services are recreated, moved
// endpoints reset, created Services deleted. It returns how many Services it fixed.
// Call it between runs, when nothing is changing objects (it forgets busy Services:
// a failed run may have left some).
func (w *World) Restore(ctx context.Context) (int, error) {
	w.slicesGone.Wait()
	w.mu.Lock()
	if err := w.sliceErr; err != nil {
		w.sliceErr = nil
		w.mu.Unlock()
		return 0, err
	}
	defer w.mu.Unlock()
	clear(w.busy)
	n := 0
	for name, s := range w.touched {
		var err error
		switch {
		case s.loaded < 0 && s.exists:
			err = deleteService(ctx, w.C, name)
		case s.loaded >= 0 && !s.exists:
			err = create(ctx, w.C, NewService(name, s.clusterIP))
			if err == nil {
				err = create(ctx, w.C, NewEndpointSlice(name, InitialEndpoints(s.loaded)))
			}
		case s.loaded >= 0 && !slices.Equal(s.eps, InitialEndpoints(s.loaded)):
			err = patchEndpoints(ctx, w.C, name, InitialEndpoints(s.loaded))
		default:
			delete(w.touched, name)
			continue
		}
		if err != nil {
			return n, fmt.Errorf("restoring %s: %w", name, err)
		}
		delete(w.touched, name)
		n++
	}
	return n, nil
}

// Grow makes n loaded Services the population changes pick from (after Load).
func (w *World) Grow(n int) {
	w.mu.Lock()
	w.N = n
	w.mu.Unlock()
}
