package netrules

import (
	"context"
	"reflect"
	"sort"
)

// State is the desired rules of one family kept per Service, so that a change to one
// Service costs work for that Service only. The ServiceReconciler keeps one State per
// family up to date from its event handlers; backends read it.
//
// For any set of objects, a State filled with BuildService of each Service holds the
// same ports as Build of all of them: Ruleset returns exactly Build's Ruleset.
type State struct {
	Family Family
	Node   Node
	ports  map[string][]*ServicePort // Service key ("namespace/name") -> its ports, sorted by Key
	n      int
}

// NewState returns an empty State.
func NewState(fam Family, node Node) *State {
	return &State{Family: fam, Node: node, ports: map[string][]*ServicePort{}}
}

// Set replaces the ports of one Service (none: the Service has no rules). It reports
// whether anything changed.
func (s *State) Set(service string, ports []*ServicePort) bool {
	old, had := s.ports[service]
	if len(ports) == 0 {
		if !had {
			return false
		}
		delete(s.ports, service)
		s.n -= len(old)
		return true
	}
	if had && reflect.DeepEqual(old, ports) {
		return false
	}
	s.ports[service] = ports
	s.n += len(ports) - len(old)
	return true
}

// Ports returns one Service's ports, sorted by Key (nil when it has none). The caller
// must not modify them.
func (s *State) Ports(service string) []*ServicePort { return s.ports[service] }

// Services returns the keys of every Service with ports, sorted.
func (s *State) Services() []string {
	out := make([]string, 0, len(s.ports))
	for k := range s.ports {
		out = append(out, k)
	}
	sort.Strings(out)
	return out
}

// Each calls fn for every Service with ports, in no order (cheaper than Services).
func (s *State) Each(fn func(key string, ports []*ServicePort)) {
	for k, ps := range s.ports {
		fn(k, ps)
	}
}

// Len is the number of service ports.
func (s *State) Len() int { return s.n }

// Ruleset materializes the whole State as Build would return it (ports sorted by Key).
// It costs O(n log n): for full syncs and for backends that always render everything.
func (s *State) Ruleset() *Ruleset {
	rs := &Ruleset{Family: s.Family, Node: s.Node, Ports: make([]*ServicePort, 0, s.n)}
	for _, ports := range s.ports {
		rs.Ports = append(rs.Ports, ports...)
	}
	sort.Slice(rs.Ports, func(i, j int) bool { return rs.Ports[i].Key() < rs.Ports[j].Key() })
	return rs
}

// Subset is a Ruleset of the named Services only (ports sorted by Key), e.g. the
// changed ones for StaleConntrack.
func (s *State) Subset(services []string) *Ruleset {
	rs := &Ruleset{Family: s.Family, Node: s.Node}
	for _, k := range services {
		rs.Ports = append(rs.Ports, s.ports[k]...)
	}
	sort.Slice(rs.Ports, func(i, j int) bool { return rs.Ports[i].Key() < rs.Ports[j].Key() })
	return rs
}

// RulesetSyncer is a backend that always works from the whole Ruleset.
type RulesetSyncer interface {
	Sync(ctx context.Context, rs *Ruleset, full bool) (SyncStats, error)
}

// Whole adapts a RulesetSyncer to the incremental backend interface: every sync hands
// it the whole State as a Ruleset (its cost grows with the cluster).
type Whole struct{ RulesetSyncer }

// SyncState implements the incremental backend interface by ignoring changed.
func (w Whole) SyncState(ctx context.Context, st *State, _ []string, full bool) (SyncStats, error) {
	return w.Sync(ctx, st.Ruleset(), full)
}
