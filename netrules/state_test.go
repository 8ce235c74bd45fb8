package netrules

import (
	"math/rand"
	"reflect"
	"testing"

	discoveryv1 "k8s.io/api/discovery/v1"
)

// A State kept up to date Service by Service, in any order of events, holds what a full
// Build of the final objects holds.
func TestStateFollowsBuild(t *testing.T) {
	node := Node{Name: "me"}
	for seed := int64(0); seed < 200; seed++ {
		r := rand.New(rand.NewSource(seed))
		w := NewWorld("me")
		states := map[Family]*State{IPv4: NewState(IPv4, node), IPv6: NewState(IPv6, node)}
		for step := 0; step < 60; step++ {
			ev := w.Step(r)
			// rebuild the Service the event touched, from the world's current objects
			var touched []string
			if ev.Service != nil {
				touched = []string{ev.Service.Namespace + "/" + ev.Service.Name}
			} else {
				touched = []string{SliceServiceKey(ev.Slice)}
				if ev.PrevSlice != nil {
					touched = append(touched, SliceServiceKey(ev.PrevSlice))
				}
			}
			_, slices := w.Objects()
			for _, key := range touched {
				var mine []*discoveryv1.EndpointSlice
				for _, s := range slices {
					if SliceServiceKey(s) == key {
						mine = append(mine, s)
					}
				}
				ports := BuildService(w.Services[key], mine, node)
				for fam, st := range states {
					st.Set(key, ports[fam])
				}
			}
		}
		svcs, slices := w.Objects()
		want := Build(svcs, slices, node)
		for fam, st := range states {
			got := st.Ruleset()
			if len(got.Ports) == 0 && len(want[fam].Ports) == 0 {
				continue
			}
			if !reflect.DeepEqual(got, want[fam]) {
				t.Fatalf("seed %d IPv%d: State differs from Build\ngot  %v\nwant %v", seed, fam, keys(got), keys(want[fam]))
			}
			if st.Len() != len(want[fam].Ports) {
				t.Fatalf("seed %d: Len %d, want %d", seed, st.Len(), len(want[fam].Ports))
			}
		}
	}
}

func keys(rs *Ruleset) []string {
	var out []string
	for _, p := range rs.Ports {
		out = append(out, p.Key())
	}
	return out
}
