// Package podstart keeps each pod's start-up timeline inside the agent: when the watch
// first showed the pod, when its sync began, and when each step of its first start
// (plan, volumes, a start slot, RunPodSandbox, image, CreateContainer, StartContainer, the status
// write) was done, up to the status patch that made the pod Ready. The timeline is
// logged once per pod (the bench-pods benchmark reads it) and then dropped.
//
// Only the first occurrence of a step counts: a later sync that runs the same step again
// (a restart, a retry) does not move it. Safe for concurrent use.
package podstart

import (
	"fmt"
	"strings"
	"sync"
	"time"

	"k8s.io/apimachinery/pkg/types"
)

// Step is one point of a pod's start.
type Step int

// The steps in the order a start goes through them.
const (
	Seen    Step = iota // the watch delivered the pod (first time)
	Synced              // its sync began (a worker took it from the queue)
	Planned             // the pod's actions were computed
	Volumes             // its volumes were set up
	Slot                // it got a start slot (the runtime part may begin)
	Sandbox             // RunPodSandbox returned
	Image               // the image was present (checked or pulled), first container
	Created             // CreateContainer returned, first container
	Started             // StartContainer returned, last container of the first sync
	Status              // a status patch was accepted (first)
	Ready               // the status patch that made the pod Ready was accepted
	numSteps
)

// names are the phase names: the name of a step is the phase that ends with it.
var names = [numSteps]string{"seen", "queued", "plan", "volumes", "slot", "sandbox", "image", "create", "start", "status", "ready"}

func (s Step) String() string {
	if s < 0 || s >= numSteps {
		return fmt.Sprintf("Step(%d)", int(s))
	}
	return names[s]
}

// Timeline is one pod's steps (zero: not reached).
type Timeline [numSteps]time.Time

// Phase is the time from the previous reached step to this one.
type Phase struct {
	Name string
	D    time.Duration
}

// Phases are the durations between consecutive reached steps, from Seen on (steps not
// reached are left out; a step noted before the previous one counts 0). Pure.
func (tl Timeline) Phases() []Phase {
	var out []Phase
	prev := tl[Seen]
	if prev.IsZero() {
		return nil
	}
	for s := Synced; s < numSteps; s++ {
		if tl[s].IsZero() {
			continue
		}
		d := tl[s].Sub(prev)
		if d < 0 {
			d = 0
		}
		out = append(out, Phase{Name: s.String(), D: d})
		if tl[s].After(prev) {
			prev = tl[s]
		}
	}
	return out
}

// Total is Seen → Ready (0 when either is missing).
func (tl Timeline) Total() time.Duration {
	if tl[Seen].IsZero() || tl[Ready].IsZero() {
		return 0
	}
	return tl[Ready].Sub(tl[Seen])
}

// String is the phases as "queued=1.2ms plan=0.1ms … total=…", what the agent logs and
// Parse reads back.
func (tl Timeline) String() string {
	var b strings.Builder
	for _, p := range tl.Phases() {
		fmt.Fprintf(&b, "%s=%s ", p.Name, p.D.Round(10*time.Microsecond))
	}
	fmt.Fprintf(&b, "total=%s", tl.Total().Round(10*time.Microsecond))
	return b.String()
}

// Parse reads a String back into phase name → duration.
func Parse(s string) (map[string]time.Duration, error) {
	out := map[string]time.Duration{}
	for _, f := range strings.Fields(s) {
		k, v, ok := strings.Cut(f, "=")
		if !ok || k == "" {
			return nil, fmt.Errorf("timeline field %q: want name=duration", f)
		}
		d, err := time.ParseDuration(v)
		if err != nil {
			return nil, fmt.Errorf("timeline field %q: %w", f, err)
		}
		out[k] = d
	}
	return out, nil
}

// Tracker keeps the timelines of pods not yet Ready.
type Tracker struct {
	mu   sync.Mutex
	pods map[types.UID]*Timeline
	done map[types.UID]bool // Ready was reached: later marks are ignored
}

// Mark notes step s of the pod at now, the first time only. Seen starts a timeline;
// other steps of a pod without one (not seen on the watch: a static pod, a pod already
// running when the agent started) start one too, Seen left empty.
func (t *Tracker) Mark(uid types.UID, s Step, now time.Time) {
	if s < 0 || s >= numSteps {
		return
	}
	t.mu.Lock()
	defer t.mu.Unlock()
	if t.done[uid] {
		return
	}
	if t.pods == nil {
		t.pods = map[types.UID]*Timeline{}
	}
	tl := t.pods[uid]
	if tl == nil {
		tl = &Timeline{}
		t.pods[uid] = tl
	}
	if tl[s].IsZero() {
		tl[s] = now
	}
}

// Finish marks Ready and returns the pod's timeline, once: later calls return false.
func (t *Tracker) Finish(uid types.UID, now time.Time) (Timeline, bool) {
	t.mu.Lock()
	defer t.mu.Unlock()
	tl := t.pods[uid]
	if tl == nil || t.done[uid] {
		return Timeline{}, false
	}
	tl[Ready] = now
	delete(t.pods, uid)
	if t.done == nil {
		t.done = map[types.UID]bool{}
	}
	t.done[uid] = true
	return *tl, true
}

// Forget drops a pod (it is gone).
func (t *Tracker) Forget(uid types.UID) {
	t.mu.Lock()
	defer t.mu.Unlock()
	delete(t.pods, uid)
	delete(t.done, uid)
}
