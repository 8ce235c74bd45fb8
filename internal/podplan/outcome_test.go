package podplan

import (
	"testing"
	"time"
)

// The outcome keeps the last word per container and key, nil meaning cleared, and
// copies what it is given.
func TestOutcome(t *testing.T) {
	var o Outcome
	if o.String() != "nothing learned" {
		t.Errorf("empty: %s", o)
	}
	w := Waiting{Reason: "CreateContainerError"}
	o.SetWaiting("c1", &w)
	w.Reason = "changed after"
	o.SetWaiting("c2", &Waiting{Reason: "RunContainerError"})
	o.SetWaiting("c2", nil) // started after all
	o.SetBackoff("pull/c1", &BackoffEntry{Delay: 10 * time.Second, LastUpdate: t0})
	o.SetBackoff("c3", nil)
	if got, want := o.String(), "c1 waits: CreateContainerError; c2 no longer waits; back-off c3 reset; back-off pull/c1 10s"; got != want {
		t.Errorf("outcome %q, want %q", got, want)
	}
}
