package podplan

import (
	"fmt"
	"maps"
	"slices"
	"strings"
)

// Outcome is what carrying out a plan learned, returned by the apply and recorded into
// the pod's state once, after it: the containers' waiting states (the errors met:
// CreateContainerConfigError, ErrImagePull, …; nil clears one) and the back-off
// entries (restart back-off by container name, pull back-off by "pull/<name>"; nil
// removes one). The apply steps write only here, never into the reconciler.
type Outcome struct {
	Waiting map[string]*Waiting
	Backoff map[string]*BackoffEntry
}

// SetWaiting records container name's waiting state (nil: it has none any more).
func (o *Outcome) SetWaiting(name string, w *Waiting) {
	if o.Waiting == nil {
		o.Waiting = map[string]*Waiting{}
	}
	if w != nil {
		cp := *w
		w = &cp
	}
	o.Waiting[name] = w
}

// SetBackoff records the back-off entry for key (nil: removed).
func (o *Outcome) SetBackoff(key string, e *BackoffEntry) {
	if o.Backoff == nil {
		o.Backoff = map[string]*BackoffEntry{}
	}
	if e != nil {
		cp := *e
		e = &cp
	}
	o.Backoff[key] = e
}

// String lists the outcome for logs: "c1 waits: ErrImagePull; back-off pull/c1 10s".
func (o Outcome) String() string {
	var parts []string
	for _, k := range slices.Sorted(maps.Keys(o.Waiting)) {
		if w := o.Waiting[k]; w != nil {
			parts = append(parts, fmt.Sprintf("%s waits: %s", k, w.Reason))
		} else {
			parts = append(parts, k+" no longer waits")
		}
	}
	for _, k := range slices.Sorted(maps.Keys(o.Backoff)) {
		if e := o.Backoff[k]; e != nil {
			parts = append(parts, fmt.Sprintf("back-off %s %s", k, e.Delay))
		} else {
			parts = append(parts, "back-off "+k+" reset")
		}
	}
	if len(parts) == 0 {
		return "nothing learned"
	}
	return strings.Join(parts, "; ")
}
