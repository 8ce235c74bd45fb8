package controllers

import (
	"context"
	"sync"
	"time"
)

// terminationOrder makes containers wait for others to stop first
// (podplan.TerminationPrereqs); a nil order waits for nothing.
type terminationOrder struct {
	prereqs map[string][]string
	done    map[string]chan struct{} // made once, closed when the container stopped
	mu      sync.Mutex
	closed  map[string]bool
}

func newTerminationOrder(prereqs map[string][]string) *terminationOrder {
	if len(prereqs) == 0 {
		return nil
	}
	o := &terminationOrder{prereqs: prereqs, done: map[string]chan struct{}{}, closed: map[string]bool{}}
	for _, deps := range prereqs {
		for _, d := range deps {
			o.done[d] = make(chan struct{})
		}
	}
	return o
}

func (o *terminationOrder) mustWait(name string) bool {
	return o != nil && len(o.prereqs[name]) > 0
}

// wait blocks until every container name waits for has stopped, at most limit.
func (o *terminationOrder) wait(ctx context.Context, name string, limit time.Duration) {
	t := time.NewTimer(limit)
	defer t.Stop()
	for _, d := range o.prereqs[name] {
		select {
		case <-o.done[d]:
		case <-t.C:
			return
		case <-ctx.Done():
			return
		}
	}
}

// stopped records that a container has stopped (whether or not it had to wait).
func (o *terminationOrder) stopped(name string) {
	if o == nil {
		return
	}
	o.mu.Lock()
	defer o.mu.Unlock()
	if ch, ok := o.done[name]; ok && !o.closed[name] {
		close(ch)
		o.closed[name] = true
	}
}
