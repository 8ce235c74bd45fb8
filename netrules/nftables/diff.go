package nftables

import (
	"fmt"
	"net/netip"
	"sort"
	"strconv"
	"strings"
	"time"

	"github.com/nodekeeper/nodekeeper/netrules"
)

// OpKind is one kind of table operation.
type OpKind uint8

const (
	OpAddTable     OpKind = iota
	OpAddMap              // Map
	OpAddBaseChain        // Base
	OpAddChain            // Name
	OpFlushChain          // Name
	OpAddRule             // Name (the chain), Rule
	OpDelChain            // Name
	OpAddSet              // Name, Timeout
	OpDelSet              // Name
	OpAddElem             // Key, Verdict
	OpDelElem             // Key
	OpAddEPMap            // Name: the endpoint map
	OpAddEPElem           // Name, Index, Endpoint
	OpDelEPElem           // Name, Index
)

// Op is one table operation, as data: a batch is a list of them, sent in order.
type Op struct {
	Kind     OpKind
	Name     string
	Rule     *Rule
	Timeout  int32
	Map      uint8
	Key      ElemKey
	Verdict  Verdict
	Base     *BaseChain
	Index    uint32
	Endpoint netip.AddrPort
}

// StaleDelay is how long a chain or set stays flushed before it is deleted: kernels
// before 6.2 still count a chain unlinked in the previous transaction as referenced.
const StaleDelay = time.Second

type claimant struct {
	port    string // the port's Key
	verdict Verdict
}

// Planner is the pure heart of the incremental backend: it keeps what was applied per
// Service (the ports, shared with netrules.State, whose artifacts Compile recomputes),
// the owner index of shared map keys and the map elements the kernel holds, and turns
// a Service's new ports into the operations that bring the table there.
type Planner struct {
	Env     Env
	applied map[string][]*netrules.ServicePort
	owners  map[ElemKey][]claimant // sorted by port; the last one wins (Render's order)
	elems   map[ElemKey]Verdict
	// flushed chains and sets waiting for deletion, since when
	stale     map[string]time.Time
	staleSets map[string]time.Time
	// resync: chains and sets found in the kernel and not rewritten yet
	leftover     map[string]bool
	leftoverSets map[string]bool
	// the endpoint maps: each port's range (by EndpointMap.Name), the shards, what the
	// kernel holds, and what a resync found there (deleted by Finish: new ranges are
	// allocated above it)
	ranges     map[string]epRange
	shards     []*epShard
	ep         map[epKey]netip.AddrPort
	leftoverEP map[epKey]bool
	// endpoint map elements no rule uses any more, since when, and the ranges they
	// were in: deleted (and the ranges reused) StaleDelay later, never in the batch
	// that stops using them. A packet that entered a chain before a commit runs the
	// rules of before it, but its map lookup sees the elements of after it: deleting
	// an element with the rule that used it would let such a packet find nothing
	// and leave unDNATed (seen: one SYN in ~10,000 during endpoint churn, its
	// connection then stuck on the conntrack entry of that first packet).
	staleEP     map[epKey]time.Time
	pendingFree []pendingRange
}

// pendingRange is a freed range whose elements wait for deletion.
type pendingRange struct {
	r     epRange
	since time.Time
}

// The endpoints go into maps of at most ShardPorts ports each: the kernel checks every
// element of a map when a rule binds to it and every rule bound to a map when an element
// is added, so one map for all would make a full sync quadratic (measured: 26 s at
// 10,000 Services × 5); shards keep both walks short.
// (Env.ShardPorts overrides it: tests use small shards.)
const ShardPorts = 64

// epShard is one endpoint map: its ports, next unused index and free ranges by size.
type epShard struct {
	ports   int
	next    uint32
	free    map[uint32][]uint32
	created bool // in the kernel (or its creation planned)
}

// epKey is an element of an endpoint map.
type epKey struct {
	shard int
	index uint32
}

// epRange is a port's slice of an endpoint map: indexes base .. base+size-1.
type epRange struct {
	shard      int
	base, size uint32
}

func shardName(i int) string { return fmt.Sprintf("%s-%d", mapEndpoints, i) }

// parseShardName is shardName's inverse.
func parseShardName(s string) (int, bool) {
	rest, ok := strings.CutPrefix(s, mapEndpoints+"-")
	if !ok {
		return 0, false
	}
	i, err := strconv.Atoi(rest)
	return i, err == nil && i >= 0 && shardName(i) == s
}

// rangeSize is the size of the range a port with n endpoints gets: a power of two, so
// freed ranges are reused and a port keeps its range while its endpoint count moves.
func rangeSize(n int) uint32 {
	s := uint32(4)
	for s < uint32(n) {
		s <<= 1
	}
	return s
}

func (p *Planner) shard(i int) *epShard {
	for len(p.shards) <= i {
		p.shards = append(p.shards, &epShard{free: map[uint32][]uint32{}})
	}
	return p.shards[i]
}

// allocRange gives a range for n endpoints in the first shard with room for a port
// (ops gets the shard's creation when it is new).
func (p *Planner) allocRange(n int, ops *[]Op) epRange {
	max := ShardPorts
	if p.Env.ShardPorts > 0 {
		max = p.Env.ShardPorts
	}
	i := 0
	for i < len(p.shards) && p.shards[i].ports >= max {
		i++
	}
	sh := p.shard(i)
	if !sh.created {
		*ops = append(*ops, Op{Kind: OpAddEPMap, Name: shardName(i)})
		sh.created = true
	}
	sh.ports++
	size := rangeSize(n)
	if f := sh.free[size]; len(f) > 0 {
		b := f[len(f)-1]
		sh.free[size] = f[:len(f)-1]
		return epRange{i, b, size}
	}
	r := epRange{i, sh.next, size}
	sh.next += size
	return r
}

// freeRange gives r back: its elements go stale now, and the range is reused once
// Expired has deleted them.
func (p *Planner) freeRange(r epRange, now time.Time) {
	sh := p.shard(r.shard)
	sh.ports--
	for i := uint32(0); i < r.size; i++ {
		p.staleKey(epKey{r.shard, r.base + i}, now)
	}
	p.pendingFree = append(p.pendingFree, pendingRange{r, now})
}

// staleKey marks an element the kernel holds as unused since now (if not already).
func (p *Planner) staleKey(k epKey, now time.Time) {
	if _, ok := p.ep[k]; !ok {
		return
	}
	if _, ok := p.staleEP[k]; !ok {
		p.staleEP[k] = now
	}
}

// setOffsets writes each ActDNATMap rule's map and range base from ranges.
func setOffsets(c compiled, ranges map[string]epRange) {
	for _, rules := range c.chains {
		for i := range rules {
			if a := &rules[i].Action; a.Kind == ActDNATMap {
				r := ranges[a.Range]
				a.Map, a.Offset = shardName(r.shard), r.base
			}
		}
	}
}

// NewPlanner returns a Planner for an empty table.
func NewPlanner(env Env) *Planner {
	p := &Planner{Env: env}
	p.Reset(nil, nil, nil, nil)
	return p
}

// Reset forgets everything applied and starts from what the kernel holds: its
// per-Service chains and affinity sets (content unknown: each is rewritten or removed)
// and its map elements (known exactly). After Reset every Service must be planned
// again with rewrite, and then Finish removes what nobody claimed.
func (p *Planner) Reset(chains, sets []string, elems map[ElemKey]Verdict, ep map[string]map[uint32]netip.AddrPort) {
	p.applied = map[string][]*netrules.ServicePort{}
	p.owners = map[ElemKey][]claimant{}
	p.elems = map[ElemKey]Verdict{}
	for k, v := range elems {
		p.elems[k] = v
	}
	p.stale, p.staleSets = map[string]time.Time{}, map[string]time.Time{}
	p.leftover, p.leftoverSets = map[string]bool{}, map[string]bool{}
	for _, c := range chains {
		if isServiceChain(c) {
			p.leftover[c] = true
		}
	}
	for _, s := range sets {
		p.leftoverSets[s] = true
	}
	p.ranges, p.shards = map[string]epRange{}, nil
	p.ep, p.leftoverEP = map[epKey]netip.AddrPort{}, map[epKey]bool{}
	p.staleEP, p.pendingFree = map[epKey]time.Time{}, nil
	for name, m := range ep {
		i, ok := parseShardName(name)
		if !ok {
			continue
		}
		sh := p.shard(i)
		sh.created = true
		for idx, e := range m {
			k := epKey{i, idx}
			p.ep[k], p.leftoverEP[k] = e, true
			if idx >= sh.next {
				sh.next = idx + 1
			}
		}
	}
}

// Applied returns the ports applied for a Service.
func (p *Planner) Applied(service string) []*netrules.ServicePort { return p.applied[service] }

// AppliedServices returns every Service with applied ports.
func (p *Planner) AppliedServices() []string {
	out := make([]string, 0, len(p.applied))
	for k := range p.applied {
		out = append(out, k)
	}
	sort.Strings(out)
	return out
}

// SamePorts tells whether two port lists are the same (netrules.State keeps the slice
// of an unchanged Service, so identity is the fast path).
func SamePorts(a, b []*netrules.ServicePort) bool {
	if len(a) != len(b) {
		return false
	}
	if len(a) == 0 {
		return true
	}
	if &a[0] == &b[0] {
		return true
	}
	for i := range a {
		if a[i] != b[i] {
			return false
		}
	}
	return true
}

type compiled struct {
	chains map[string][]Rule
	order  []string
	sets   map[string]int32
	maps   map[string][]netip.AddrPort
	claims []struct {
		port string
		c    Claim
	}
}

func (p *Planner) compile(ports []*netrules.ServicePort) compiled {
	c := compiled{chains: map[string][]Rule{}, sets: map[string]int32{}, maps: map[string][]netip.AddrPort{}}
	for _, sp := range ports {
		a := Compile(sp, p.Env)
		k := sp.Key()
		for _, ch := range a.Chains {
			if _, dup := c.chains[ch.Name]; !dup {
				c.order = append(c.order, ch.Name)
			}
			c.chains[ch.Name] = ch.Rules
		}
		for _, s := range a.Sets {
			c.sets[s.Name] = s.Timeout
		}
		for _, m := range a.Maps {
			c.maps[m.Name] = m.Elems
		}
		for _, cl := range a.Claims {
			c.claims = append(c.claims, struct {
				port string
				c    Claim
			}{k, cl})
		}
	}
	return c
}

func sameRules(a, b []Rule, ipf string) bool {
	if len(a) != len(b) {
		return false
	}
	for i := range a {
		if a[i].Text(ipf) != b[i].Text(ipf) {
			return false
		}
	}
	return true
}

// Plan returns the operations that take one Service from its applied ports to ports
// (nil: the Service is gone) and records them as applied. With rewrite every chain of
// the Service is written even if unchanged (a repair). Ops come in an order the kernel
// accepts: sets and chains before the rules and elements that refer to them.
func (p *Planner) Plan(service string, ports []*netrules.ServicePort, rewrite bool, now time.Time) []Op {
	old := p.applied[service]
	if !rewrite && SamePorts(old, ports) {
		return nil
	}
	ipf := ipFamily(p.Env.Family)
	oc, nc := p.compile(old), p.compile(ports)
	setOffsets(oc, p.ranges)
	var ops []Op
	for _, s := range sortedKeys(nc.sets) {
		if _, had := oc.sets[s]; had && !rewrite && !p.leftoverSets[s] {
			continue
		}
		ops = append(ops, Op{Kind: OpAddSet, Name: s, Timeout: nc.sets[s]})
		delete(p.staleSets, s)
		delete(p.leftoverSets, s)
	}
	// endpoint map ranges: a port keeps its range while its endpoints fit, else it
	// moves to a new one (its rule changes then anyway: mod N); elements are written
	// where the kernel's differ (an element replaced in place: deletion, then
	// addition); elements the new rules no longer use go stale (see staleEP)
	newRanges := map[string]epRange{}
	var epNew, epDel, epAdd []Op
	for _, m := range sortedKeys(oc.maps) {
		r := p.ranges[m]
		want, keep := nc.maps[m]
		if keep && rangeSize(len(want)) == r.size {
			newRanges[m] = r
			for i := len(want); i < len(oc.maps[m]); i++ {
				p.staleKey(epKey{r.shard, r.base + uint32(i)}, now)
			}
			continue
		}
		p.freeRange(r, now)
		delete(p.ranges, m)
	}
	for _, m := range sortedKeys(nc.maps) {
		r, ok := newRanges[m]
		if !ok {
			r = p.allocRange(len(nc.maps[m]), &epNew)
			newRanges[m] = r
		}
		p.ranges[m] = r
		for i, e := range nc.maps[m] {
			k := epKey{r.shard, r.base + uint32(i)}
			delete(p.staleEP, k)
			cur, ok := p.ep[k]
			if ok && cur == e {
				continue
			}
			if ok {
				epDel = append(epDel, Op{Kind: OpDelEPElem, Name: shardName(k.shard), Index: k.index})
			}
			epAdd = append(epAdd, Op{Kind: OpAddEPElem, Name: shardName(k.shard), Index: k.index, Endpoint: e})
			p.ep[k] = e
		}
	}
	setOffsets(nc, newRanges)
	ops = append(append(append(ops, epNew...), epDel...), epAdd...)
	var write []string
	for _, c := range nc.order {
		orules, had := oc.chains[c]
		_, flushed := p.stale[c]
		exists := had || flushed || p.leftover[c]
		if had && !rewrite && sameRules(orules, nc.chains[c], ipf) {
			continue
		}
		if !had {
			ops = append(ops, Op{Kind: OpAddChain, Name: c})
		}
		if exists {
			ops = append(ops, Op{Kind: OpFlushChain, Name: c})
		}
		write = append(write, c)
		delete(p.stale, c)
		delete(p.leftover, c)
	}
	for _, c := range write {
		rules := nc.chains[c]
		for i := range rules {
			ops = append(ops, Op{Kind: OpAddRule, Name: c, Rule: &rules[i]})
		}
	}
	// map elements: move the Service's claims, then fix every key whose winner changed
	var touched []ElemKey
	seen := map[ElemKey]bool{}
	for _, cl := range oc.claims {
		p.unclaim(cl.c.Key, cl.port)
		if !seen[cl.c.Key] {
			seen[cl.c.Key] = true
			touched = append(touched, cl.c.Key)
		}
	}
	for _, cl := range nc.claims {
		p.claim(cl.c.Key, cl.port, cl.c.Verdict)
		if !seen[cl.c.Key] {
			seen[cl.c.Key] = true
			touched = append(touched, cl.c.Key)
		}
	}
	ops = append(ops, p.fixElems(touched)...)
	// chains and sets the Service no longer has: flushed now, deleted later
	for _, c := range oc.order {
		if _, keep := nc.chains[c]; !keep {
			ops = append(ops, Op{Kind: OpFlushChain, Name: c})
			p.stale[c] = now
		}
	}
	for _, s := range sortedKeys(oc.sets) {
		if _, keep := nc.sets[s]; !keep {
			p.staleSets[s] = now
		}
	}
	if len(ports) == 0 {
		delete(p.applied, service)
	} else {
		p.applied[service] = ports
	}
	return ops
}

// fixElems brings the kernel's elements of keys to their winners; deletions of a key
// come before its addition.
func (p *Planner) fixElems(keys []ElemKey) []Op {
	var ops []Op
	for _, k := range keys {
		cur, has := p.elems[k]
		want, ok := p.winner(k)
		if has && (!ok || cur != want) {
			ops = append(ops, Op{Kind: OpDelElem, Key: k})
			delete(p.elems, k)
		}
		if ok && (!has || cur != want) {
			ops = append(ops, Op{Kind: OpAddElem, Key: k, Verdict: want})
			p.elems[k] = want
		}
	}
	return ops
}

func (p *Planner) winner(k ElemKey) (Verdict, bool) {
	cs := p.owners[k]
	if len(cs) == 0 {
		return Verdict{}, false
	}
	return cs[len(cs)-1].verdict, true
}

func (p *Planner) claim(k ElemKey, port string, v Verdict) {
	cs := p.owners[k]
	i := sort.Search(len(cs), func(i int) bool { return cs[i].port >= port })
	if i < len(cs) && cs[i].port == port {
		cs[i].verdict = v
		return
	}
	cs = append(cs, claimant{})
	copy(cs[i+1:], cs[i:])
	cs[i] = claimant{port: port, verdict: v}
	p.owners[k] = cs
}

func (p *Planner) unclaim(k ElemKey, port string) {
	cs := p.owners[k]
	i := sort.Search(len(cs), func(i int) bool { return cs[i].port >= port })
	if i < len(cs) && cs[i].port == port {
		cs = append(cs[:i], cs[i+1:]...)
	}
	if len(cs) == 0 {
		delete(p.owners, k)
	} else {
		p.owners[k] = cs
	}
}

// Resyncing tells whether chains or sets found by Reset still wait for Finish.
func (p *Planner) Resyncing() bool {
	return len(p.leftover) > 0 || len(p.leftoverSets) > 0 || len(p.leftoverEP) > 0
}

// Finish ends a resync: elements nobody claims are deleted, chains and sets found in
// the kernel that no Service rewrote are flushed (and deleted later).
func (p *Planner) Finish(now time.Time) []Op {
	var ops []Op
	var keys []ElemKey
	for k := range p.elems {
		if _, ok := p.owners[k]; !ok {
			keys = append(keys, k)
		}
	}
	sortElemKeys(keys)
	for _, k := range keys {
		ops = append(ops, Op{Kind: OpDelElem, Key: k})
		delete(p.elems, k)
	}
	// what the resync found in the endpoint maps: new ranges were allocated above it,
	// so nothing uses it once every Service is rewritten (its old rules possibly in
	// this very batch: it goes stale, see staleEP)
	for k := range p.leftoverEP {
		p.staleKey(k, now)
	}
	p.leftoverEP = map[epKey]bool{}
	for _, c := range sortedKeys(p.leftover) {
		ops = append(ops, Op{Kind: OpFlushChain, Name: c})
		p.stale[c] = now
	}
	for _, s := range sortedKeys(p.leftoverSets) {
		p.staleSets[s] = now
	}
	p.leftover, p.leftoverSets = map[string]bool{}, map[string]bool{}
	return ops
}

// Expired returns the deletions of chains and sets flushed at least StaleDelay ago,
// and forgets them.
func (p *Planner) Expired(now time.Time) []Op {
	var ops []Op
	var keys []epKey
	for k, t := range p.staleEP {
		if now.Sub(t) >= StaleDelay {
			keys = append(keys, k)
		}
	}
	sortEPKeys(keys)
	for _, k := range keys {
		ops = append(ops, Op{Kind: OpDelEPElem, Name: shardName(k.shard), Index: k.index})
		delete(p.ep, k)
		delete(p.staleEP, k)
	}
	kept := p.pendingFree[:0]
	for _, f := range p.pendingFree {
		if now.Sub(f.since) < StaleDelay {
			kept = append(kept, f)
			continue
		}
		sh := p.shard(f.r.shard)
		sh.free[f.r.size] = append(sh.free[f.r.size], f.r.base)
	}
	p.pendingFree = kept
	for _, c := range sortedKeys(p.stale) {
		if now.Sub(p.stale[c]) >= StaleDelay {
			ops = append(ops, Op{Kind: OpDelChain, Name: c})
			delete(p.stale, c)
		}
	}
	for _, s := range sortedKeys(p.staleSets) {
		if now.Sub(p.staleSets[s]) >= StaleDelay {
			ops = append(ops, Op{Kind: OpDelSet, Name: s})
			delete(p.staleSets, s)
		}
	}
	return ops
}

// StaleOlderThan tells whether some chain or set has waited for deletion longer than d.
func (p *Planner) StaleOlderThan(now time.Time, d time.Duration) bool {
	for _, t := range p.stale {
		if now.Sub(t) > d {
			return true
		}
	}
	for _, t := range p.staleSets {
		if now.Sub(t) > d {
			return true
		}
	}
	for _, t := range p.staleEP {
		if now.Sub(t) > d {
			return true
		}
	}
	return false
}

// StaleCount is how many chains and sets wait for deletion.
func (p *Planner) StaleCount() int { return len(p.stale) + len(p.staleSets) + len(p.staleEP) }

func sortEPKeys(keys []epKey) {
	sort.Slice(keys, func(i, j int) bool {
		if keys[i].shard != keys[j].shard {
			return keys[i].shard < keys[j].shard
		}
		return keys[i].index < keys[j].index
	})
}

// BaseOps writes the table, its maps and its fixed chains (a repair of them too).
func BaseOps(l Layout) []Op {
	ops := []Op{{Kind: OpAddTable}}
	for m := uint8(0); m < numMaps; m++ {
		ops = append(ops, Op{Kind: OpAddMap, Map: m})
	}
	for _, c := range l.Chains {
		ops = append(ops, Op{Kind: OpAddChain, Name: c.Name}, Op{Kind: OpFlushChain, Name: c.Name})
	}
	for i := range l.Base {
		ops = append(ops, Op{Kind: OpAddBaseChain, Base: &l.Base[i]}, Op{Kind: OpFlushChain, Name: l.Base[i].Name})
	}
	for _, c := range l.Chains {
		for i := range c.Rules {
			ops = append(ops, Op{Kind: OpAddRule, Name: c.Name, Rule: &c.Rules[i]})
		}
	}
	for _, b := range l.Base {
		for i := range b.Rules {
			ops = append(ops, Op{Kind: OpAddRule, Name: b.Name, Rule: &b.Rules[i]})
		}
	}
	return ops
}

func sortedKeys[V any](m map[string]V) []string {
	out := make([]string, 0, len(m))
	for k := range m {
		out = append(out, k)
	}
	sort.Strings(out)
	return out
}

func sortElemKeys(keys []ElemKey) {
	sort.Slice(keys, func(i, j int) bool {
		a, b := keys[i], keys[j]
		if a.Map != b.Map {
			return a.Map < b.Map
		}
		if c := a.Addr.Compare(b.Addr); c != 0 {
			return c < 0
		}
		if a.Proto != b.Proto {
			return a.Proto < b.Proto
		}
		return a.Port < b.Port
	})
}
