package iptables

import (
	"context"
	"math/rand"
	"sort"
	"strings"
	"testing"

	discoveryv1 "k8s.io/api/discovery/v1"

	"github.com/nodekeeper/nodekeeper/netrules"
)

// worldDriver applies a World's random events to one State per family, as the
// ServiceReconciler does: each event rebuilds the Services it touches, and the Services
// whose ports changed are handed to the next sync.
type worldDriver struct {
	w       *netrules.World
	node    netrules.Node
	states  map[netrules.Family]*netrules.State
	changed map[netrules.Family]map[string]bool
}

func newWorldDriver(node netrules.Node) *worldDriver {
	d := &worldDriver{w: netrules.NewWorld(node.Name), node: node,
		states:  map[netrules.Family]*netrules.State{},
		changed: map[netrules.Family]map[string]bool{}}
	for _, fam := range []netrules.Family{netrules.IPv4, netrules.IPv6} {
		d.states[fam] = netrules.NewState(fam, node)
		d.changed[fam] = map[string]bool{}
	}
	return d
}

// step makes one random change.
func (d *worldDriver) step(r *rand.Rand) {
	ev := d.w.Step(r)
	var touched []string
	if ev.Service != nil {
		touched = []string{ev.Service.Namespace + "/" + ev.Service.Name}
	} else {
		touched = []string{netrules.SliceServiceKey(ev.Slice)}
		if ev.PrevSlice != nil {
			touched = append(touched, netrules.SliceServiceKey(ev.PrevSlice))
		}
	}
	_, slices := d.w.Objects()
	for _, key := range touched {
		var mine []*discoveryv1.EndpointSlice
		for _, s := range slices {
			if netrules.SliceServiceKey(s) == key {
				mine = append(mine, s)
			}
		}
		ports := netrules.BuildService(d.w.Services[key], mine, d.node)
		for fam, st := range d.states {
			if st.Set(key, ports[fam]) {
				d.changed[fam][key] = true
			}
		}
	}
}

// setNode changes the node's facts: every Service is rebuilt and the States' node set.
func (d *worldDriver) setNode(node netrules.Node) {
	d.node = node
	svcs, slices := d.w.Objects()
	for _, st := range d.states {
		st.Node = node
	}
	all := map[string]bool{}
	for fam, st := range d.states {
		for _, k := range st.Services() {
			all[k] = true
			d.changed[fam][k] = true
		}
	}
	for _, s := range svcs {
		all[s.Namespace+"/"+s.Name] = true
	}
	for key := range all {
		var mine []*discoveryv1.EndpointSlice
		for _, s := range slices {
			if netrules.SliceServiceKey(s) == key {
				mine = append(mine, s)
			}
		}
		ports := netrules.BuildService(d.w.Services[key], mine, node)
		for fam, st := range d.states {
			if st.Set(key, ports[fam]) {
				d.changed[fam][key] = true
			}
		}
	}
}

// take returns and forgets the Services changed since the last take, sorted.
func (d *worldDriver) take(fam netrules.Family) []string {
	var out []string
	for k := range d.changed[fam] {
		out = append(out, k)
	}
	sort.Strings(out)
	d.changed[fam] = map[string]bool{}
	return out
}

func (d *worldDriver) final() map[netrules.Family]*netrules.Ruleset {
	svcs, slices := d.w.Objects()
	return netrules.Build(svcs, slices, d.node)
}

// Random Service/EndpointSlice changes synced incrementally, in random batches, with
// periodic full syncs, injected restore failures, node changes and crossings of the
// large cluster threshold, leave the tables exactly as one full sync of the final
// objects into empty tables does.
func TestIncrementalEqualsFullSync(t *testing.T) {
	defer func(v int) { largeCluster = v }(largeCluster)
	ctx := context.Background()
	partial, big := 0, 0
	for seed := int64(0); seed < 150; seed++ {
		r := rand.New(rand.NewSource(seed))
		largeCluster = LargeClusterEndpoints
		if seed%3 == 0 {
			largeCluster = 4 // the random worlds cross it both ways
		}
		node := testNode
		d := newWorldDriver(node)
		fakes := map[netrules.Family]*Fake{netrules.IPv4: NewFake(), netrules.IPv6: NewFake()}
		proxiers := map[netrules.Family]*Proxier{}
		for fam, f := range fakes {
			proxiers[fam] = New(Options{Family: fam, Variant: []Variant{"", "nft"}[seed%2], Runner: f, ChunkChains: 1 + r.Intn(8)})
		}
		for step := 0; step < 80; step++ {
			d.step(r)
			if r.Intn(25) == 0 {
				node.MasqueradeAll = !node.MasqueradeAll
				d.setNode(node)
			}
			if r.Intn(3) != 0 {
				continue
			}
			for fam, p := range proxiers {
				if r.Intn(20) == 0 {
					fakes[fam].FailNext = true
				}
				full := r.Intn(15) == 0
				changed := d.take(fam)
				st, err := p.SyncState(ctx, d.states[fam], changed, full)
				fakes[fam].FailNext = false
				if err != nil {
					if !strings.Contains(err.Error(), "injected") {
						t.Fatalf("seed %d step %d: %v", seed, step, err)
					}
					continue
				}
				if !st.Full {
					partial++
				}
				if p.opt.noComments {
					big++
				}
			}
		}
		for fam, p := range proxiers {
			if _, err := p.SyncState(ctx, d.states[fam], d.take(fam), false); err != nil {
				t.Fatalf("seed %d: %v", seed, err)
			}
		}
		for fam, rs := range d.final() {
			fresh := NewFake()
			if _, err := New(Options{Family: fam, Runner: fresh}).Sync(ctx, rs, true); err != nil {
				t.Fatal(err)
			}
			for _, table := range tables {
				if got, want := fakes[fam].Dump(table), fresh.Dump(table); got != want {
					t.Fatalf("seed %d IPv%d %s: incremental differs from a full sync\n%s", seed, fam, table, lineDiff(got, want))
				}
			}
		}
	}
	if partial < 1000 || big == 0 {
		t.Errorf("the random runs did not exercise enough: %d partial syncs, %d in large cluster mode", partial, big)
	}
}

// lineDiff shows the lines only in got (+) or only in want (-).
func lineDiff(got, want string) string {
	in := func(s string) map[string]int {
		m := map[string]int{}
		for _, l := range strings.Split(s, "\n") {
			m[l]++
		}
		return m
	}
	g, w := in(got), in(want)
	var b strings.Builder
	for _, l := range strings.Split(got, "\n") {
		if g[l] > w[l] {
			b.WriteString("+ " + l + "\n")
		}
	}
	for _, l := range strings.Split(want, "\n") {
		if w[l] > g[l] {
			b.WriteString("- " + l + "\n")
		}
	}
	if b.Len() == 0 {
		return "(same lines, different order)\n--- got\n" + got + "--- want\n" + want
	}
	return b.String()
}
