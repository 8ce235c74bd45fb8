package bench

import (
	"context"
	"sync"
	"testing"
	"time"
)

// setProbe shows the chains in present as there.
type setProbe struct {
	mu      sync.Mutex
	present map[string]bool
}

func (p *setProbe) Check(es []Expect) ([]bool, error) {
	p.mu.Lock()
	defer p.mu.Unlock()
	out := make([]bool, len(es))
	for i, e := range es {
		out[i] = len(e.Present) > 0 && p.present[e.Present[0]]
	}
	return out, nil
}
func (p *setProbe) Missing([]string) (int, error) { return 0, nil }
func (p *setProbe) Close() error                  { return nil }

func (p *setProbe) show(chain string) {
	p.mu.Lock()
	p.present[chain] = true
	p.mu.Unlock()
}

// A change the kernel shows while its write is still in flight is timed from the write,
// not from its return, and reported once the write's duration is known.
func TestProberTimesFromTheWriteSent(t *testing.T) {
	probe := &setProbe{present: map[string]bool{}}
	pr := &prober{p: probe, timeout: 10 * time.Second}
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	go pr.run(ctx)

	got := make(chan Change, 1)
	start := time.Now()
	p := pr.add(Change{Kind: KindMoved, Service: "a", start: start}, Expect{Present: []string{"chain-a"}}, func(c Change) { got <- c })
	time.Sleep(20 * time.Millisecond)
	probe.show("chain-a") // the agent was faster than the API server's answer
	for deadline := time.Now().Add(5 * time.Second); ; time.Sleep(time.Millisecond) {
		pr.mu.Lock()
		seen := p.seen
		pr.mu.Unlock()
		if seen {
			break
		}
		if time.Now().After(deadline) {
			t.Fatal("the probe never saw chain-a")
		}
	}
	time.Sleep(10 * time.Millisecond) // more rounds: still not reported
	select {
	case c := <-got:
		t.Fatalf("done before the write returned: %+v", c)
	default:
	}
	time.Sleep(100 * time.Millisecond) // a slow write
	pr.written(p, time.Since(start).Seconds())
	c := <-got
	if c.Latency < 0.015 || c.Latency > 0.090 {
		t.Errorf("latency %.3fs: want the time the kernel showed it (~0.02s), not the write's return (≥0.12s)", c.Latency)
	}
	if c.Written < 0.12 {
		t.Errorf("written %.3fs: want the write's duration (≥0.12s)", c.Written)
	}

	// a change seen after its write returned is done when seen
	p2 := pr.add(Change{Kind: KindMoved, Service: "b", start: time.Now()}, Expect{Present: []string{"chain-b"}}, func(c Change) { got <- c })
	pr.written(p2, 0.001)
	probe.show("chain-b")
	select {
	case c := <-got:
		if c.Service != "b" || c.TimedOut {
			t.Errorf("got %+v", c)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("change b never done")
	}

	// a failed write is dropped, never reported
	p3 := pr.add(Change{Kind: KindMoved, Service: "c", start: time.Now()}, Expect{Present: []string{"chain-c"}}, func(c Change) { got <- c })
	if !pr.drop(p3) {
		t.Error("drop: want the pending change found")
	}
	if pr.drop(p3) {
		t.Error("drop twice: want false")
	}
}
