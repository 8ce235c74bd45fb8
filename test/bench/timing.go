package bench

import (
	"context"
	"net/netip"
	"sync"
	"time"

	"github.com/nodekeeper/nodekeeper/netrules"
)

// Backend is controllers.RulesBackend (repeated so that this file needs only netrules).
type Backend interface {
	Sync(ctx context.Context, rs *netrules.Ruleset, full bool) (netrules.SyncStats, error)
}

// SyncRecord is one timed Backend.Sync call.
type SyncRecord struct {
	Start, End time.Time
	Asked      bool // full asked for by the reconciler
	Stats      netrules.SyncStats
	Ports      int // service ports in the ruleset
	Err        error
}

// Duration is how long the backend took.
func (s SyncRecord) Duration() time.Duration { return s.End.Sub(s.Start) }

type waiter struct {
	match func(*netrules.Ruleset) bool
	ch    chan SyncRecord
}

// Timed is a RulesBackend decorator: it times every Sync of the backend it wraps and
// lets a caller wait for the first successful sync whose ruleset satisfies a predicate.
// It never looks at the kernel.
type Timed struct {
	Backend Backend

	mu      sync.Mutex
	records []SyncRecord
	busy    bool
	lastEnd time.Time
	waiters []*waiter
}

// Sync implements the backend interface.
func (t *Timed) Sync(ctx context.Context, rs *netrules.Ruleset, full bool) (netrules.SyncStats, error) {
	t.mu.Lock()
	t.busy = true
	t.mu.Unlock()
	start := time.Now()
	st, err := t.Backend.Sync(ctx, rs, full)
	end := time.Now()
	rec := SyncRecord{Start: start, End: end, Asked: full, Stats: st, Err: err}
	if rs != nil {
		rec.Ports = len(rs.Ports)
	}
	t.mu.Lock()
	defer t.mu.Unlock()
	t.busy = false
	t.lastEnd = end
	t.records = append(t.records, rec)
	if err == nil {
		kept := t.waiters[:0]
		for _, w := range t.waiters {
			if w.match == nil || w.match(rs) {
				w.ch <- rec
				continue
			}
			kept = append(kept, w)
		}
		t.waiters = kept
	}
	return st, err
}

// Await returns a channel that receives the first successful sync, from now on, whose
// ruleset satisfies match (any sync when match is nil).
func (t *Timed) Await(match func(*netrules.Ruleset) bool) <-chan SyncRecord {
	w := &waiter{match: match, ch: make(chan SyncRecord, 1)}
	t.mu.Lock()
	t.waiters = append(t.waiters, w)
	t.mu.Unlock()
	return w.ch
}

// Quiet waits until no sync is running and none has ended for d.
func (t *Timed) Quiet(ctx context.Context, d time.Duration) error {
	tick := time.NewTicker(50 * time.Millisecond)
	defer tick.Stop()
	for {
		t.mu.Lock()
		quiet := !t.busy && time.Since(t.lastEnd) >= d
		t.mu.Unlock()
		if quiet {
			return nil
		}
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-tick.C:
		}
	}
}

// Records returns every sync so far.
func (t *Timed) Records() []SyncRecord {
	t.mu.Lock()
	defer t.mu.Unlock()
	return append([]SyncRecord(nil), t.records...)
}

// HasEndpoint matches a ruleset in which Service namespace/name sends ClusterIP traffic
// to ip.
func HasEndpoint(namespace, name string, ip netip.Addr) func(*netrules.Ruleset) bool {
	return func(rs *netrules.Ruleset) bool {
		if rs == nil {
			return false
		}
		for _, p := range rs.Ports {
			if p.Namespace != namespace || p.Name != name {
				continue
			}
			for _, e := range p.ClusterEndpoints {
				if e.IP == ip {
					return true
				}
			}
		}
		return false
	}
}

// CountServices counts the benchmark's Services in a ruleset.
func CountServices(rs *netrules.Ruleset) int {
	if rs == nil {
		return 0
	}
	n := 0
	for _, p := range rs.Ports {
		if p.Namespace == Namespace {
			n++
		}
	}
	return n
}
