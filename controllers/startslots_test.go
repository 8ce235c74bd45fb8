package controllers

import (
	"context"
	"testing"
	"time"
)

func TestStartSlotsBound(t *testing.T) {
	for _, tc := range []struct{ configured, ncpu, want int }{
		{0, 1, 8}, {0, 2, 8}, {0, 4, 16}, {3, 16, 3}, {-1, 4, 0},
	} {
		if got := startSlots(tc.configured, tc.ncpu); got != tc.want {
			t.Errorf("startSlots(%d, %d) = %d, want %d", tc.configured, tc.ncpu, got, tc.want)
		}
	}
}

// A start waits for a slot while every slot is taken, gets one when a slot is given
// back, and a release called twice gives back only one.
func TestStartSlotWaitsAndReleasesOnce(t *testing.T) {
	r := &PodReconciler{slots: make(chan struct{}, 1)}
	ctx := context.Background()
	first, err := r.startSlot(ctx)
	if err != nil {
		t.Fatal(err)
	}
	waiting, cancel := context.WithTimeout(ctx, 50*time.Millisecond)
	defer cancel()
	if _, err := r.startSlot(waiting); err == nil {
		t.Fatal("a second start got a slot while the only one was taken")
	}
	got := make(chan func(), 1)
	go func() {
		rel, err := r.startSlot(ctx)
		if err != nil {
			t.Error(err)
		}
		got <- rel
	}()
	first()
	first() // no second slot given back
	second := <-got
	if len(r.slots) != 1 {
		t.Errorf("slots taken %d, want 1", len(r.slots))
	}
	second()
	if len(r.slots) != 0 {
		t.Errorf("slots taken %d after every release, want 0", len(r.slots))
	}
	// no bound: never waits
	free := &PodReconciler{}
	rel, err := free.startSlot(ctx)
	if err != nil {
		t.Fatal(err)
	}
	rel()
}
