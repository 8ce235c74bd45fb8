package podstart

import (
	"testing"
	"time"
)

func TestPhases(t *testing.T) {
	t0 := time.Unix(1000, 0)
	at := func(ms int) time.Time { return t0.Add(time.Duration(ms) * time.Millisecond) }
	for _, tc := range []struct {
		name string
		tl   Timeline
		want string
	}{
		{"full start", Timeline{at(0), at(2), at(3), at(3), at(5), at(120), at(122), at(150), at(190), at(200), at(200)},
			"queued=2ms plan=1ms volumes=0s slot=2ms sandbox=115ms image=2ms create=28ms start=40ms status=10ms ready=0s total=200ms"},
		// no volumes and no status write before Ready: those phases are left out
		{"steps not reached", Timeline{Seen: at(0), Synced: at(5), Planned: at(6), Sandbox: at(100), Ready: at(150)},
			"queued=5ms plan=1ms sandbox=94ms ready=50ms total=150ms"},
		// a step noted out of order counts 0 and does not move the origin back
		{"out of order", Timeline{Seen: at(10), Synced: at(5), Planned: at(12), Ready: at(20)},
			"queued=0s plan=2ms ready=8ms total=10ms"},
		{"never seen on the watch", Timeline{Synced: at(0), Ready: at(5)}, "total=0s"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if got := tc.tl.String(); got != tc.want {
				t.Errorf("got  %q\nwant %q", got, tc.want)
			}
			parsed, err := Parse(tc.tl.String())
			if err != nil {
				t.Fatal(err)
			}
			for _, p := range tc.tl.Phases() {
				if parsed[p.Name] != p.D {
					t.Errorf("parsed %s = %v, want %v", p.Name, parsed[p.Name], p.D)
				}
			}
		})
	}
}

func TestParseRejectsBadFields(t *testing.T) {
	for _, s := range []string{"queued", "queued=soon", "=1ms"} {
		if _, err := Parse(s); err == nil {
			t.Errorf("%q: no error", s)
		}
	}
}

func TestTrackerKeepsFirstMarkAndFinishesOnce(t *testing.T) {
	var tr Tracker
	t0 := time.Unix(1000, 0)
	tr.Mark("a", Seen, t0)
	tr.Mark("a", Synced, t0.Add(time.Millisecond))
	tr.Mark("a", Synced, t0.Add(time.Second)) // a later sync: not the start's
	tr.Mark("a", Step(99), t0)                // ignored
	tl, ok := tr.Finish("a", t0.Add(10*time.Millisecond))
	if !ok || tl[Synced] != t0.Add(time.Millisecond) || tl.Total() != 10*time.Millisecond {
		t.Fatalf("timeline %v %v", tl, ok)
	}
	if _, ok := tr.Finish("a", t0.Add(time.Minute)); ok {
		t.Error("finished twice")
	}
	tr.Mark("a", Seen, t0.Add(time.Minute)) // a Ready pod that goes on syncing starts nothing
	if _, ok := tr.Finish("a", t0.Add(time.Minute)); ok {
		t.Error("a finished pod got a new timeline")
	}
	tr.Forget("a")
	tr.Mark("a", Seen, t0)
	if _, ok := tr.Finish("a", t0.Add(time.Millisecond)); !ok {
		t.Error("after Forget a pod of that UID is tracked again")
	}
	if _, ok := tr.Finish("b", t0); ok {
		t.Error("a pod never marked finished")
	}
}
