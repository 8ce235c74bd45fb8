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
// Table is the table it applies to (0: the main table, i ≥ 1: shard i).
type Op struct {
	Kind     OpKind
	Table    int
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
	port string // the port's Key
	placed
}

// placed is a map element as the kernel holds it: in which table, with which verdict.
type placed struct {
	table   int
	verdict Verdict
}

// tref names a chain or set of one table.
type tref struct {
	table int
	name  string
}

// shardTable is what the Planner knows of a table: how many ports it holds (shards)
// and whether it exists (or its creation is planned).
type shardTable struct {
	ports   int
	created bool
	// lazy: the maps whose lazy base chains the table has (or will have: planned)
	lazy map[uint8]bool
}

func (t *shardTable) hasLazy(m uint8) bool { return t.lazy[m] }

// TableDump is what one table of the kernel holds, as the Planner needs it.
type TableDump struct {
	Index  int
	Chains []string
	// Sets: its named sets and maps, endpoint maps included
	Sets []string
	// Elems: the elements of its verdict maps and key sets (those of mapNames)
	Elems map[ElemKey]Verdict
	// EP: its endpoint maps' elements, by map
	EP map[string]map[uint32]netip.AddrPort
}

// Planner is the pure heart of the incremental backend: it keeps what was applied per
// Service (the ports, shared with netrules.State, whose artifacts Compile recomputes),
// the owner index of shared map keys and the map elements the kernel holds, and turns
// a Service's new ports into the operations that bring the table there.
type Planner struct {
	Env Env
	// Main and Shard are the fixed layouts of the main table and of a shard (the
	// Proxier's; NewPlanner's for an empty node)
	Main, Shard Layout
	applied     map[string][]*netrules.ServicePort
	// the table of each Service with ports (all its ports are in one shard), and the
	// tables (index 0: the main one)
	svcTable map[string]int
	tables   []*shardTable
	owners   map[ElemKey][]claimant // sorted by port; the last one wins (Render's order)
	elems    map[ElemKey][]placed
	// flushed chains and sets waiting for deletion, since when
	stale     map[tref]time.Time
	staleSets map[tref]time.Time
	// resync: chains and sets found in the kernel and not rewritten yet, and the shard
	// where each leftover Service chain was (a Service goes back to it)
	leftover     map[tref]bool
	leftoverSets map[tref]bool
	leftoverAt   map[string]int
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
	// firstStale: no stale chain, set or element is older (zero: none)
	firstStale time.Time
	// retiring: the endpoint map elements a resync found, stale since Finish
	retiring []retiringSet
	// resync: what was applied before Reset (a Service deleted before its rewrite
	// takes its chains and elements away with it), and whether the table's listing may
	// have missed a chain (every chain written is flushed first then)
	before map[string][]*netrules.ServicePort
	unsure bool
}

// retiringSet is endpoint map elements that went stale together.
type retiringSet struct {
	keys  map[epKey]bool
	since time.Time
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

// epShard is one endpoint map: its table, ports, next unused index and free ranges by
// size. (Its name, endpoints-<i>, is unique across tables.)
type epShard struct {
	table   int
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

// allocRange gives a range for n endpoints in the first endpoint map of table t with
// room for a port (ops gets the map's creation when it is new).
func (p *Planner) allocRange(n, t int, ops *[]Op) epRange {
	max := ShardPorts
	if p.Env.ShardPorts > 0 {
		max = p.Env.ShardPorts
	}
	i := 0
	for i < len(p.shards) && (p.shards[i].ports >= max || p.shards[i].created && p.shards[i].table != t) {
		i++
	}
	sh := p.shard(i)
	if !sh.created {
		*ops = append(*ops, Op{Kind: OpAddEPMap, Table: t, Name: shardName(i)})
		sh.created, sh.table = true, t
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
// noteStale records that something went stale at now.
func (p *Planner) noteStale(now time.Time) {
	if p.firstStale.IsZero() || now.Before(p.firstStale) {
		p.firstStale = now
	}
}

// StaleDue is how long until the oldest stale object is due for deletion (≤ 0: due
// now); ok is false when nothing is stale.
func (p *Planner) StaleDue(now time.Time) (d time.Duration, ok bool) {
	if p.firstStale.IsZero() {
		return 0, false
	}
	return p.firstStale.Add(StaleDelay).Sub(now), true
}

func (p *Planner) staleKey(k epKey, now time.Time) {
	if _, ok := p.ep[k]; !ok {
		return
	}
	if _, ok := p.staleEP[k]; !ok {
		p.staleEP[k] = now
		p.noteStale(now)
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

// NewPlanner returns a Planner for an empty kernel, with the layouts of env's node
// (the Proxier sets them from the node itself: LocalhostNodePorts).
func NewPlanner(env Env) *Planner {
	node := netrules.Node{ClusterCIDRs: env.ClusterCIDRs, MasqueradeAll: env.MasqueradeAll}
	p := &Planner{Env: env, Main: FixedLayout(env.Family, node), Shard: ShardLayout(env.Family, node)}
	p.Reset(nil)
	return p
}

// Reset forgets everything applied and starts from what the kernel holds: its tables,
// their per-Service chains and affinity sets (content unknown: each is rewritten or
// removed) and their map elements (known exactly). After Reset every Service must be
// planned again with rewrite, and then Finish removes what nobody claimed. Whatever a
// table holds that its layout does not name (a Service chain, or what an older layout
// had there) is a leftover.
func (p *Planner) Reset(tables []TableDump) {
	p.before, p.unsure = p.applied, len(tables) > 0
	if len(p.before) == 0 {
		p.before = nil
	}
	p.reset(tables)
}

// Adopt makes p, Reset from a read-back of the tables off the worker (a fresh Planner
// with the Env and layouts), the planner after prev: prev's applied Services become
// what a resync removes unless rewritten (as in Reset), and the batches committed
// while the tables were read are replayed over what was read (each operation sets an
// object to a value or removes it: applied in order they give what the kernel holds
// after the last, whenever the read-back saw each object).
func (p *Planner) Adopt(prev *Planner, log []Op) {
	p.before = nil
	if prev != nil && len(prev.applied) > 0 {
		p.before = prev.applied
	}
	if prev != nil && len(prev.before) > 0 {
		// a resync started again before its Finish: what it had not rewritten yet counts
		m := make(map[string][]*netrules.ServicePort, len(prev.applied)+len(prev.before))
		for k, v := range prev.before {
			m[k] = v
		}
		for k, v := range prev.applied {
			m[k] = v
		}
		p.before = m
	}
	for _, op := range log {
		p.replay(op)
	}
}

// replay is one committed operation, as Reset would have found its result.
func (p *Planner) replay(op Op) {
	t := op.Table
	l := p.layout(t)
	switch op.Kind {
	case OpAddTable:
		p.table(t).created = true
	case OpAddBaseChain:
		if m, ok := l.lazyMap(op.Base.Name); ok {
			p.markLazy(t, m)
		}
	case OpAddChain:
		if !l.fixedName(op.Name) {
			p.leftover[tref{t, op.Name}] = true
			if t > 0 {
				p.leftoverAt[op.Name] = t
			}
		}
	case OpDelChain:
		if m, ok := l.lazyMap(op.Name); ok {
			delete(p.table(t).lazy, m)
		}
		delete(p.leftover, tref{t, op.Name})
		if p.leftoverAt[op.Name] == t {
			delete(p.leftoverAt, op.Name)
		}
	case OpAddSet:
		p.leftoverSets[tref{t, op.Name}] = true
	case OpDelSet:
		delete(p.leftoverSets, tref{t, op.Name})
	case OpAddElem:
		var keep []placed
		for _, cur := range p.elems[op.Key] {
			if cur.table != t {
				keep = append(keep, cur)
			}
		}
		p.elems[op.Key] = append(keep, placed{t, op.Verdict})
		if len(l.lazyFor(op.Key.Map)) > 0 {
			p.markLazy(t, op.Key.Map)
		}
	case OpDelElem:
		var keep []placed
		for _, cur := range p.elems[op.Key] {
			if cur.table != t {
				keep = append(keep, cur)
			}
		}
		if len(keep) == 0 {
			delete(p.elems, op.Key)
		} else {
			p.elems[op.Key] = keep
		}
	case OpAddEPMap:
		if i, ok := parseShardName(op.Name); ok && (i >= len(p.shards) || !p.shards[i].created) {
			sh := p.shard(i)
			sh.created, sh.table = true, t
		}
	case OpAddEPElem:
		if i, ok := parseShardName(op.Name); ok {
			k := epKey{i, op.Index}
			p.ep[k], p.leftoverEP[k] = op.Endpoint, true
			if sh := p.shard(i); op.Index >= sh.next {
				sh.next = op.Index + 1
			}
		}
	case OpDelEPElem:
		if i, ok := parseShardName(op.Name); ok {
			delete(p.ep, epKey{i, op.Index})
			delete(p.leftoverEP, epKey{i, op.Index})
		}
	}
}

func (p *Planner) reset(tables []TableDump) {
	// (sized up front: at 10,000 Services growing these maps was most of Reset's time)
	nElems, nChains, nEP := 0, 0, 0
	for _, d := range tables {
		nElems += len(d.Elems)
		nChains += len(d.Chains)
		for _, m := range d.EP {
			nEP += len(m)
		}
	}
	nSvc := max(len(p.before), nChains)
	p.applied, p.svcTable = make(map[string][]*netrules.ServicePort, nSvc), make(map[string]int, nSvc)
	p.tables = []*shardTable{{}}
	p.owners = make(map[ElemKey][]claimant, nElems)
	p.elems = make(map[ElemKey][]placed, nElems)
	p.stale, p.staleSets = map[tref]time.Time{}, map[tref]time.Time{}
	p.leftover, p.leftoverSets, p.leftoverAt = make(map[tref]bool, nChains), map[tref]bool{}, make(map[string]int, nChains)
	p.ranges, p.shards = make(map[string]epRange, nSvc), nil
	p.ep, p.leftoverEP = make(map[epKey]netip.AddrPort, nEP), make(map[epKey]bool, nEP)
	p.staleEP, p.pendingFree, p.firstStale, p.retiring = map[epKey]time.Time{}, nil, time.Time{}, nil
	sort.Slice(tables, func(i, j int) bool { return tables[i].Index < tables[j].Index })
	for _, d := range tables {
		t := d.Index
		p.table(t).created = true
		l := p.layout(t)
		for k, v := range d.Elems {
			p.elems[k] = append(p.elems[k], placed{t, v})
			if len(l.lazyFor(k.Map)) > 0 {
				p.markLazy(t, k.Map) // its chains are written back by BaseOps
			}
		}
		for _, c := range d.Chains {
			if m, ok := l.lazyMap(c); ok {
				p.markLazy(t, m)
			}
			if !l.fixedName(c) {
				p.leftover[tref{t, c}] = true
				if t > 0 {
					p.leftoverAt[c] = t
				}
			}
		}
		for _, s := range d.Sets {
			if m, ok := mapIndex(s); ok && l.hasMap(m) {
				continue
			}
			if i, ok := parseShardName(s); ok && t > 0 && (i >= len(p.shards) || !p.shards[i].created) {
				sh := p.shard(i)
				sh.created, sh.table = true, t
				for idx, e := range d.EP[s] {
					k := epKey{i, idx}
					p.ep[k], p.leftoverEP[k] = e, true
					if idx >= sh.next {
						sh.next = idx + 1
					}
				}
				continue
			}
			p.leftoverSets[tref{t, s}] = true
		}
	}
}

// mapIndex is the index of a fixed map's name.
func mapIndex(name string) (uint8, bool) {
	for i, n := range mapNames {
		if n == name {
			return uint8(i), true
		}
	}
	return 0, false
}

func (p *Planner) table(i int) *shardTable {
	for len(p.tables) <= i {
		p.tables = append(p.tables, &shardTable{})
	}
	return p.tables[i]
}

func (p *Planner) layout(t int) Layout {
	if t == 0 {
		return p.Main
	}
	return p.Shard
}

// tablePorts is the ports a shard takes before the next one is started.
func (p *Planner) tablePorts() int {
	if p.Env.TablePorts > 0 {
		return p.Env.TablePorts
	}
	return TablePorts
}

// pickTable chooses the shard of a Service that has none: the one where a resync found
// its chains, else the first with room, else a new one (whose creation goes to ops).
func (p *Planner) pickTable(chains []string, ops *[]Op) int {
	for _, c := range chains {
		if t, ok := p.leftoverAt[c]; ok {
			return t
		}
	}
	max := p.tablePorts()
	for i := 1; i < len(p.tables); i++ {
		if p.tables[i].created && p.tables[i].ports < max {
			return i
		}
	}
	i := len(p.tables)
	for j := 1; j < len(p.tables); j++ {
		if !p.tables[j].created {
			i = j
			break
		}
	}
	p.table(i).created = true
	*ops = append(*ops, TableOps(p.Shard, i, nil)...)
	return i
}

// Tables lists the indexes of the tables that exist (or whose creation is planned).
func (p *Planner) Tables() []int {
	var out []int
	for i, t := range p.tables {
		if t.created {
			out = append(out, i)
		}
	}
	return out
}

// BaseOps writes every table's fixed part (the main one always): a repair of them too.
func (p *Planner) BaseOps() []Op {
	p.table(0).created = true
	var ops []Op
	for _, i := range p.Tables() {
		ops = append(ops, TableOps(p.layout(i), i, p.tables[i].hasLazy)...)
	}
	return ops
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
	if _, ok := p.svcTable[service]; !ok && len(ports) == 0 {
		return p.dropBefore(service, now) // nothing applied (since Reset), nothing wanted
	}
	if !rewrite && SamePorts(old, ports) {
		return nil
	}
	ipf := ipFamily(p.Env.Family)
	oc, nc := p.compile(old), p.compile(ports)
	setOffsets(oc, p.ranges)
	var ops []Op
	t, ok := p.svcTable[service]
	if !ok {
		t = p.pickTable(nc.order, &ops)
		p.svcTable[service] = t
	}
	p.table(t).ports += len(ports) - len(old)
	for _, s := range sortedKeys(nc.sets) {
		r := tref{t, s}
		if _, had := oc.sets[s]; had && !rewrite && !p.leftoverSets[r] {
			continue
		}
		ops = append(ops, Op{Kind: OpAddSet, Table: t, Name: s, Timeout: nc.sets[s]})
		delete(p.staleSets, r)
		delete(p.leftoverSets, r)
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
			r = p.allocRange(len(nc.maps[m]), t, &epNew)
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
				epDel = append(epDel, Op{Kind: OpDelEPElem, Table: t, Name: shardName(k.shard), Index: k.index})
			}
			epAdd = append(epAdd, Op{Kind: OpAddEPElem, Table: t, Name: shardName(k.shard), Index: k.index, Endpoint: e})
			p.ep[k] = e
		}
	}
	setOffsets(nc, newRanges)
	ops = append(append(append(ops, epNew...), epDel...), epAdd...)
	var write []string
	for _, c := range nc.order {
		orules, had := oc.chains[c]
		r := tref{t, c}
		_, flushed := p.stale[r]
		exists := had || flushed || p.leftover[r] || p.unsure
		if had && !rewrite && sameRules(orules, nc.chains[c], ipf) {
			continue
		}
		if !had {
			ops = append(ops, Op{Kind: OpAddChain, Table: t, Name: c})
		}
		if exists {
			ops = append(ops, Op{Kind: OpFlushChain, Table: t, Name: c})
		}
		write = append(write, c)
		delete(p.stale, r)
		delete(p.leftover, r)
		delete(p.leftoverAt, c)
	}
	for _, c := range write {
		rules := nc.chains[c]
		for i := range rules {
			ops = append(ops, Op{Kind: OpAddRule, Table: t, Name: c, Rule: &rules[i]})
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
		home := 0
		if mapInShard(cl.c.Key.Map) {
			home = t
		}
		p.claim(cl.c.Key, cl.port, placed{home, cl.c.Verdict})
		if !seen[cl.c.Key] {
			seen[cl.c.Key] = true
			touched = append(touched, cl.c.Key)
		}
	}
	ops = append(ops, p.fixElems(touched)...)
	// chains and sets the Service no longer has: flushed now, deleted later
	for _, c := range oc.order {
		if _, keep := nc.chains[c]; !keep {
			ops = append(ops, Op{Kind: OpFlushChain, Table: t, Name: c})
			p.stale[tref{t, c}] = now
			p.noteStale(now)
		}
	}
	for _, s := range sortedKeys(oc.sets) {
		if _, keep := nc.sets[s]; !keep {
			p.staleSets[tref{t, s}] = now
			p.noteStale(now)
		}
	}
	if len(ports) == 0 {
		delete(p.applied, service)
		delete(p.svcTable, service)
	} else {
		p.applied[service] = ports
	}
	return ops
}

// dropBefore removes, during a resync, what a Service deleted before its rewrite had:
// its chains found in the kernel are flushed (deleted later) and the elements that go
// to them or are keyed by its ClusterIP (unique to it) are deleted, so the deletion
// shows at once rather than at Finish, which removes the rest (elements a shared key
// may still need, endpoint map elements, affinity sets).
func (p *Planner) dropBefore(service string, now time.Time) []Op {
	prev := p.before[service]
	if prev == nil {
		return nil
	}
	delete(p.before, service)
	c := p.compile(prev)
	mine := map[string]bool{}
	var ops []Op
	for _, name := range c.order {
		mine[name] = true
		t, ok := p.leftoverAt[name]
		if !ok || !p.leftover[tref{t, name}] {
			continue
		}
		ops = append(ops, Op{Kind: OpFlushChain, Table: t, Name: name})
		p.stale[tref{t, name}] = now
		p.noteStale(now)
		delete(p.leftover, tref{t, name})
		delete(p.leftoverAt, name)
	}
	cips := map[netip.Addr]bool{}
	for _, sp := range prev {
		cips[sp.ClusterIP] = true
	}
	for _, cl := range c.claims {
		k := cl.c.Key
		if _, owned := p.owners[k]; owned {
			continue // someone rewritten since claims it
		}
		var keep []placed
		for _, cur := range p.elems[k] {
			if mine[cur.verdict.Chain] || k.Addr.IsValid() && cips[k.Addr] {
				ops = append(ops, Op{Kind: OpDelElem, Table: cur.table, Key: k})
				continue
			}
			keep = append(keep, cur)
		}
		if len(keep) == 0 {
			delete(p.elems, k)
		} else {
			p.elems[k] = keep
		}
	}
	return ops
}

// fixElems brings the kernel's elements of keys to their winners (the winner's
// verdict, in the winner's table; nowhere else); deletions of a key come before its
// addition.
func (p *Planner) fixElems(keys []ElemKey) []Op {
	var ops []Op
	for _, k := range keys {
		want, ok := p.winner(k)
		var keep []placed
		for _, cur := range p.elems[k] {
			if ok && cur == want {
				keep = append(keep, cur)
				continue
			}
			ops = append(ops, Op{Kind: OpDelElem, Table: cur.table, Key: k})
		}
		if ok && len(keep) == 0 {
			ops = append(ops, p.lazyOps(want.table, k.Map)...)
			ops = append(ops, Op{Kind: OpAddElem, Table: want.table, Key: k, Verdict: want.verdict})
			keep = []placed{want}
		}
		if len(keep) == 0 {
			delete(p.elems, k)
		} else {
			p.elems[k] = keep
		}
	}
	return ops
}

// lazyOps creates table t's lazy base chains for map m if it has none yet.
func (p *Planner) lazyOps(t int, m uint8) []Op {
	bs := p.layout(t).lazyFor(m)
	if len(bs) == 0 || p.table(t).hasLazy(m) {
		return nil
	}
	p.markLazy(t, m)
	var ops []Op
	for i := range bs {
		ops = append(ops, baseChainOps(&bs[i], t)...)
	}
	return ops
}

func (p *Planner) markLazy(t int, m uint8) {
	tt := p.table(t)
	if tt.lazy == nil {
		tt.lazy = map[uint8]bool{}
	}
	tt.lazy[m] = true
}

func (p *Planner) winner(k ElemKey) (placed, bool) {
	cs := p.owners[k]
	if len(cs) == 0 {
		return placed{}, false
	}
	return cs[len(cs)-1].placed, true
}

func (p *Planner) claim(k ElemKey, port string, v placed) {
	cs := p.owners[k]
	i := sort.Search(len(cs), func(i int) bool { return cs[i].port >= port })
	if i < len(cs) && cs[i].port == port {
		cs[i].placed = v
		return
	}
	cs = append(cs, claimant{})
	copy(cs[i+1:], cs[i:])
	cs[i] = claimant{port: port, placed: v}
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
		for _, cur := range p.elems[k] {
			ops = append(ops, Op{Kind: OpDelElem, Table: cur.table, Key: k})
		}
		delete(p.elems, k)
	}
	// what the resync found in the endpoint maps: new ranges were allocated above it,
	// so nothing uses it once every Service is rewritten (its old rules possibly in
	// this very batch: it goes stale, see staleEP)
	// (as one set: at 10,000 Services that is 50,000 elements, too many to move one by
	// one in the call; no range is ever allocated over them, so they just go when due)
	if len(p.leftoverEP) > 0 {
		p.retiring = append(p.retiring, retiringSet{keys: p.leftoverEP, since: now})
		p.noteStale(now)
	}
	p.leftoverEP = map[epKey]bool{}
	for _, c := range sortedRefs(p.leftover) {
		ops = append(ops, Op{Kind: OpFlushChain, Table: c.table, Name: c.name})
		p.stale[c] = now
		p.noteStale(now)
	}
	for _, s := range sortedRefs(p.leftoverSets) {
		p.staleSets[s] = now
		p.noteStale(now)
	}
	p.leftover, p.leftoverSets, p.leftoverAt = map[tref]bool{}, map[tref]bool{}, map[string]int{}
	p.before, p.unsure = nil, false
	// lazy base chains of maps left empty go (they hold only a lookup of the map)
	used := map[tref]bool{}
	for k, ps := range p.elems {
		for _, pl := range ps {
			used[tref{pl.table, mapNames[k.Map]}] = true
		}
	}
	for i, tt := range p.tables {
		for _, m := range sortedMaps(tt.lazy) {
			if used[tref{i, mapNames[m]}] {
				continue
			}
			bs := p.layout(i).lazyFor(m)
			for j := range bs {
				ops = append(ops, Op{Kind: OpFlushChain, Table: i, Name: bs[j].Name}, Op{Kind: OpDelChain, Table: i, Name: bs[j].Name})
			}
			delete(tt.lazy, m)
		}
	}
	return ops
}

func sortedMaps(m map[uint8]bool) []uint8 {
	var out []uint8
	for k, ok := range m {
		if ok {
			out = append(out, k)
		}
	}
	sort.Slice(out, func(i, j int) bool { return out[i] < out[j] })
	return out
}

// Expired returns the deletions of chains and sets flushed at least StaleDelay ago,
// and forgets them.
func (p *Planner) Expired(now time.Time) []Op {
	ops, _ := p.ExpiredN(now, 0)
	return ops
}

// ExpiredN is Expired bounded to max operations (0: all); more tells that deletions
// that are due remain (a resync leaves tens of thousands of endpoint map elements: one
// batch of them would hold the changes behind it for a fifth of a second).
func (p *Planner) ExpiredN(now time.Time, max int) (ops []Op, more bool) {
	room := func() bool { return max <= 0 || len(ops) < max }
	for len(p.retiring) > 0 && now.Sub(p.retiring[0].since) >= StaleDelay {
		r := p.retiring[0]
		var keys []epKey
		for k := range r.keys {
			if max > 0 && len(ops)+len(keys) >= max {
				break
			}
			keys = append(keys, k)
		}
		sortEPKeys(keys)
		for _, k := range keys {
			delete(r.keys, k)
			if _, ok := p.ep[k]; ok {
				ops = append(ops, Op{Kind: OpDelEPElem, Table: p.shard(k.shard).table, Name: shardName(k.shard), Index: k.index})
				delete(p.ep, k)
			}
		}
		if len(r.keys) > 0 {
			more = true
			break
		}
		p.retiring = p.retiring[1:]
	}
	var keys []epKey
	for k, t := range p.staleEP {
		if now.Sub(t) >= StaleDelay {
			keys = append(keys, k)
		}
	}
	sortEPKeys(keys)
	for _, k := range keys {
		if !room() {
			more = true
			break
		}
		ops = append(ops, Op{Kind: OpDelEPElem, Table: p.shard(k.shard).table, Name: shardName(k.shard), Index: k.index})
		delete(p.ep, k)
		delete(p.staleEP, k)
	}
	// (a range reused before all its old elements are deleted is fine: Plan replaces
	// the elements it finds in p.ep)
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
	for _, c := range sortedRefs(p.stale) {
		if now.Sub(p.stale[c]) >= StaleDelay {
			if !room() {
				more = true
				break
			}
			ops = append(ops, Op{Kind: OpDelChain, Table: c.table, Name: c.name})
			delete(p.stale, c)
		}
	}
	for _, s := range sortedRefs(p.staleSets) {
		if now.Sub(p.staleSets[s]) >= StaleDelay {
			if !room() {
				more = true
				break
			}
			ops = append(ops, Op{Kind: OpDelSet, Table: s.table, Name: s.name})
			delete(p.staleSets, s)
		}
	}
	// the oldest of what is left
	p.firstStale = time.Time{}
	if len(p.retiring) > 0 {
		p.noteStale(p.retiring[0].since)
	}
	for _, m := range []map[tref]time.Time{p.stale, p.staleSets} {
		for _, t := range m {
			p.noteStale(t)
		}
	}
	for _, t := range p.staleEP {
		p.noteStale(t)
	}
	return ops, more
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
	if len(p.retiring) > 0 && now.Sub(p.retiring[0].since) > d {
		return true
	}
	return false
}

// StaleCount is how many chains and sets wait for deletion.
func (p *Planner) StaleCount() int {
	n := len(p.stale) + len(p.staleSets) + len(p.staleEP)
	for _, r := range p.retiring {
		n += len(r.keys)
	}
	return n
}

func sortEPKeys(keys []epKey) {
	sort.Slice(keys, func(i, j int) bool {
		if keys[i].shard != keys[j].shard {
			return keys[i].shard < keys[j].shard
		}
		return keys[i].index < keys[j].index
	})
}

// TableOps writes table t with its maps and the fixed chains of layout l (a repair of
// them too); of the lazy base chains those of the maps has tells (none if nil).
func TableOps(l Layout, t int, has func(m uint8) bool) []Op {
	ops := []Op{{Kind: OpAddTable, Table: t}}
	for _, m := range l.Maps {
		ops = append(ops, Op{Kind: OpAddMap, Table: t, Map: m})
	}
	for _, c := range l.Chains {
		ops = append(ops, Op{Kind: OpAddChain, Table: t, Name: c.Name}, Op{Kind: OpFlushChain, Table: t, Name: c.Name})
	}
	l = l.Present(has)
	for i := range l.Base {
		ops = append(ops, Op{Kind: OpAddBaseChain, Table: t, Base: &l.Base[i]}, Op{Kind: OpFlushChain, Table: t, Name: l.Base[i].Name})
	}
	for _, c := range l.Chains {
		for i := range c.Rules {
			ops = append(ops, Op{Kind: OpAddRule, Table: t, Name: c.Name, Rule: &c.Rules[i]})
		}
	}
	for _, b := range l.Base {
		for i := range b.Rules {
			ops = append(ops, Op{Kind: OpAddRule, Table: t, Name: b.Name, Rule: &b.Rules[i]})
		}
	}
	return ops
}

// baseChainOps writes one base chain of table t with its rules.
func baseChainOps(b *BaseChain, t int) []Op {
	ops := []Op{{Kind: OpAddBaseChain, Table: t, Base: b}, {Kind: OpFlushChain, Table: t, Name: b.Name}}
	for i := range b.Rules {
		ops = append(ops, Op{Kind: OpAddRule, Table: t, Name: b.Name, Rule: &b.Rules[i]})
	}
	return ops
}

func sortedRefs[V any](m map[tref]V) []tref {
	out := make([]tref, 0, len(m))
	for k := range m {
		out = append(out, k)
	}
	sort.Slice(out, func(i, j int) bool {
		if out[i].table != out[j].table {
			return out[i].table < out[j].table
		}
		return out[i].name < out[j].name
	})
	return out
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
