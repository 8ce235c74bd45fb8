package bench

import (
	"context"
	"sort"
	"sync"
	"time"

	"k8s.io/apimachinery/pkg/api/meta"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/watch"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/rest"
)

// Watcher is a reference watch on the benchmark's Services and EndpointSlices, from the
// harness and not through any agent: the time its events arrive splits a change's
// latency into the API server's part (write sent → watch event delivered) and the
// agent's (watch event → rule in the kernel). Both agents watch the same API server, so
// the API part is what neither can do better than.
type Watcher struct {
	mu   sync.Mutex
	seen map[string][]time.Time // WatchKey → event arrival times, ascending
}

// WatchKey names an object of the benchmark namespace: "svc/<name>" or "slice/<name>".
func WatchKey(kind, name string) string { return kind + "/" + name }

// StartWatcher watches both kinds in the benchmark namespace until ctx ends.
func StartWatcher(ctx context.Context, cfg *rest.Config) (*Watcher, error) {
	cs, err := kubernetes.NewForConfig(cfg)
	if err != nil {
		return nil, err
	}
	w := &Watcher{seen: map[string][]time.Time{}}
	svcs := func(ctx context.Context, o metav1.ListOptions) (watch.Interface, error) {
		return cs.CoreV1().Services(Namespace).Watch(ctx, o)
	}
	slices := func(ctx context.Context, o metav1.ListOptions) (watch.Interface, error) {
		return cs.DiscoveryV1().EndpointSlices(Namespace).Watch(ctx, o)
	}
	svcRV, err := cs.CoreV1().Services(Namespace).List(ctx, metav1.ListOptions{Limit: 1})
	if err != nil {
		return nil, err
	}
	sliceRV, err := cs.DiscoveryV1().EndpointSlices(Namespace).List(ctx, metav1.ListOptions{Limit: 1})
	if err != nil {
		return nil, err
	}
	go w.follow(ctx, "svc", svcs, svcRV.ResourceVersion)
	go w.follow(ctx, "slice", slices, sliceRV.ResourceVersion)
	return w, nil
}

// follow runs one watch from rv, re-opening it from the last event seen when the API
// server ends it (or from now when that version is gone).
func (w *Watcher) follow(ctx context.Context, kind string, open func(context.Context, metav1.ListOptions) (watch.Interface, error), rv string) {
	for ctx.Err() == nil {
		wi, err := open(ctx, metav1.ListOptions{ResourceVersion: rv, AllowWatchBookmarks: true})
		if err != nil {
			time.Sleep(100 * time.Millisecond)
			continue
		}
		for ev := range wi.ResultChan() {
			at := time.Now()
			if ev.Type == watch.Error {
				rv = "" // expired: from now on
				break
			}
			m, err := meta.Accessor(ev.Object)
			if err != nil {
				continue
			}
			rv = m.GetResourceVersion()
			if ev.Type != watch.Bookmark {
				w.record(WatchKey(kind, m.GetName()), at)
			}
		}
		wi.Stop()
	}
}

func (w *Watcher) record(key string, at time.Time) {
	w.mu.Lock()
	defer w.mu.Unlock()
	ts := append(w.seen[key], at)
	// keep the last minutes only (a key is changed a few times per run)
	for len(ts) > 1 && at.Sub(ts[0]) > 10*time.Minute {
		ts = ts[1:]
	}
	w.seen[key] = ts
}

// After is the arrival of the first event on key at or after t.
func (w *Watcher) After(key string, t time.Time) (time.Time, bool) {
	if w == nil {
		return time.Time{}, false
	}
	w.mu.Lock()
	defer w.mu.Unlock()
	ts := w.seen[key]
	i := sort.Search(len(ts), func(i int) bool { return !ts[i].Before(t) })
	if i == len(ts) {
		return time.Time{}, false
	}
	return ts[i], true
}

// watchKeyOf is the object whose event carries the change the kernel shows: the
// EndpointSlice for moved endpoints and created Services (written last), the Service
// for deletions (written first).
func watchKeyOf(c Change) string {
	if c.Kind == KindDeleted {
		return WatchKey("svc", c.Service)
	}
	return WatchKey("slice", SliceName(c.Service))
}
