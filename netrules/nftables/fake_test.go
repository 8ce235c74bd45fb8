package nftables

import (
	"errors"
	"fmt"
	"math/rand"
	"net/netip"
	"os"
	"reflect"
	"slices"
	"sort"
	"strconv"
	"strings"
	"testing"
	"time"

	discoveryv1 "k8s.io/api/discovery/v1"

	"github.com/nodekeeper/nodekeeper/netrules"
)

// fakeKernel applies Ops to a model of the tables with the kernel's rules: a rule or
// element may only refer to chains and sets of its own table that exist, a chain is
// deleted only empty and unreferenced, an element is added only once and deleted
// only when present. A batch that breaks a rule changes nothing.
type fakeKernel struct {
	ipf    string
	tables map[int]*fakeTable
	gen    uint32
	// failNext makes the next batch fail (after checking it).
	failNext bool
	batches  int
	maxOps   int
	// a read-back running beside batches: the listing when it started, delivered
	// after dumpAfter more kernel calls, each table as it was then or as it is at
	// delivery (a real read-back reads objects at different times)
	dumpCh    chan dumpResult
	dumpAt    []TableDump
	dumpAfter int
	dumpCalls int
	dumpDelay int // kernel calls before a read-back is delivered
}

func (k *fakeKernel) startDump() <-chan dumpResult {
	ch := make(chan dumpResult, 1)
	k.dumpCh = ch
	k.dumpAt, _ = k.dump()
	k.dumpCalls++
	k.dumpAfter = k.dumpDelay
	if k.dumpAfter == 0 {
		k.deliverDump()
	}
	return ch
}

// tick counts a kernel call and delivers a running read-back when it is due.
func (k *fakeKernel) tick() {
	if k.dumpCh == nil {
		return
	}
	k.dumpAfter--
	if k.dumpAfter <= 0 {
		k.deliverDump()
	}
}

func (k *fakeKernel) deliverDump() {
	now, _ := k.dump()
	var out []TableDump
	at := map[int]TableDump{}
	for _, d := range k.dumpAt {
		at[d.Index] = d
	}
	for _, d := range now {
		if old, ok := at[d.Index]; ok && (d.Index+k.dumpCalls)%2 == 0 {
			d = old // this table read before the batches since
		}
		out = append(out, d)
	}
	k.dumpCh <- dumpResult{tables: out}
	k.dumpCh, k.dumpAt = nil, nil
}

// fakeTable is one table of the model.
type fakeTable struct {
	ipf    string
	chains map[string][]string // name -> rule texts
	base   map[string]bool
	refs   map[string][]string // name -> chains/sets its rules refer to
	sets   map[string]bool
	maps   map[uint8]bool // the fixed maps it has
	elems  map[ElemKey]Verdict
	epmaps map[string]map[uint32]netip.AddrPort // endpoint maps (also in sets)
}

func newFakeKernel(fam netrules.Family) *fakeKernel {
	return &fakeKernel{ipf: ipFamily(fam), tables: map[int]*fakeTable{}}
}

func newFakeTable(ipf string) *fakeTable {
	return &fakeTable{ipf: ipf, chains: map[string][]string{}, base: map[string]bool{},
		refs: map[string][]string{}, sets: map[string]bool{}, maps: map[uint8]bool{}, elems: map[ElemKey]Verdict{},
		epmaps: map[string]map[uint32]netip.AddrPort{}}
}

func (k *fakeKernel) clone() *fakeKernel {
	c := *k
	c.tables = map[int]*fakeTable{}
	for i, t := range k.tables {
		c.tables[i] = t.clone()
	}
	return &c
}

// indexes lists the tables, in order.
func (k *fakeKernel) indexes() []int {
	var out []int
	for i := range k.tables {
		out = append(out, i)
	}
	sort.Ints(out)
	return out
}

func (k *fakeTable) clone() *fakeTable {
	c := newFakeTable(k.ipf)
	for n, r := range k.chains {
		c.chains[n] = append([]string(nil), r...)
	}
	for n, r := range k.refs {
		c.refs[n] = append([]string(nil), r...)
	}
	for n := range k.base {
		c.base[n] = true
	}
	for n := range k.sets {
		c.sets[n] = true
	}
	for m := range k.maps {
		c.maps[m] = true
	}
	for e, v := range k.elems {
		c.elems[e] = v
	}
	for n, m := range k.epmaps {
		c.epmaps[n] = map[uint32]netip.AddrPort{}
		for i, e := range m {
			c.epmaps[n][i] = e
		}
	}
	return c
}

func ruleRefs(r *Rule) (chains, sets []string) {
	for _, m := range r.Matches {
		if m.Kind == MatchInSet {
			sets = append(sets, m.Set)
		}
	}
	switch r.Action.Kind {
	case ActUpdateSet:
		sets = append(sets, r.Action.Set)
	case ActDNATMap:
		sets = append(sets, r.Action.Map)
	case ActVerdict:
		if r.Action.Verdict.Chain != "" {
			chains = append(chains, r.Action.Verdict.Chain)
		}
	}
	return chains, sets
}

func (k *fakeTable) referenced(name string, set bool) bool {
	for _, refs := range k.refs {
		for _, r := range refs {
			if r == name || r == "set:"+name && set {
				return true
			}
		}
	}
	if !set {
		for _, v := range k.elems {
			if v.Chain == name {
				return true
			}
		}
	}
	return false
}

func (k *fakeKernel) apply(op Op) error {
	if op.Kind == OpAddTable {
		if k.tables[op.Table] == nil {
			k.tables[op.Table] = newFakeTable(k.ipf)
		}
		return nil
	}
	t := k.tables[op.Table]
	if t == nil {
		return fmt.Errorf("no table %s", ShardTableName(op.Table))
	}
	if err := t.apply(op); err != nil {
		return fmt.Errorf("%s: %w", ShardTableName(op.Table), err)
	}
	return nil
}

func (k *fakeTable) apply(op Op) error {
	switch op.Kind {
	case OpAddMap:
		k.maps[op.Map] = true
	case OpAddBaseChain:
		k.base[op.Base.Name] = true
		if _, ok := k.chains[op.Base.Name]; !ok {
			k.chains[op.Base.Name] = nil
		}
	case OpAddChain:
		if _, ok := k.chains[op.Name]; !ok {
			k.chains[op.Name] = nil
		}
	case OpFlushChain:
		if _, ok := k.chains[op.Name]; !ok {
			return fmt.Errorf("flush: no chain %s", op.Name)
		}
		k.chains[op.Name], k.refs[op.Name] = nil, nil
	case OpAddRule:
		if _, ok := k.chains[op.Name]; !ok {
			return fmt.Errorf("rule: no chain %s", op.Name)
		}
		cs, ss := ruleRefs(op.Rule)
		for _, c := range cs {
			if _, ok := k.chains[c]; !ok {
				return fmt.Errorf("rule in %s: no chain %s", op.Name, c)
			}
			k.refs[op.Name] = append(k.refs[op.Name], c)
		}
		for _, s := range ss {
			if !k.sets[s] {
				return fmt.Errorf("rule in %s: no set %s", op.Name, s)
			}
			k.refs[op.Name] = append(k.refs[op.Name], "set:"+s)
		}
		k.chains[op.Name] = append(k.chains[op.Name], op.Rule.Text(k.ipf))
	case OpDelChain:
		if _, ok := k.chains[op.Name]; !ok {
			return fmt.Errorf("delete: no chain %s", op.Name)
		}
		if len(k.chains[op.Name]) > 0 || k.referenced(op.Name, false) {
			return fmt.Errorf("delete: chain %s busy", op.Name)
		}
		delete(k.chains, op.Name)
	case OpAddSet:
		k.sets[op.Name] = true
	case OpDelSet:
		if !k.sets[op.Name] {
			return fmt.Errorf("delete: no set %s", op.Name)
		}
		if k.referenced(op.Name, true) {
			return fmt.Errorf("delete: set %s busy", op.Name)
		}
		delete(k.sets, op.Name)
		delete(k.epmaps, op.Name)
	case OpAddEPMap:
		if k.sets[op.Name] && k.epmaps[op.Name] == nil {
			return fmt.Errorf("map %s: a set of another type exists", op.Name)
		}
		k.sets[op.Name] = true
		if k.epmaps[op.Name] == nil {
			k.epmaps[op.Name] = map[uint32]netip.AddrPort{}
		}
	case OpAddEPElem:
		m := k.epmaps[op.Name]
		if m == nil {
			return fmt.Errorf("element: no map %s", op.Name)
		}
		if _, ok := m[op.Index]; ok {
			return fmt.Errorf("map %s: element %d exists", op.Name, op.Index)
		}
		m[op.Index] = op.Endpoint
	case OpDelEPElem:
		m := k.epmaps[op.Name]
		if _, ok := m[op.Index]; !ok {
			return fmt.Errorf("map %s: delete: no element %d", op.Name, op.Index)
		}
		delete(m, op.Index)
	case OpAddElem:
		if !k.maps[op.Key.Map] {
			return fmt.Errorf("element %s: no map %s", op.Key.KeyText(), mapNames[op.Key.Map])
		}
		if _, ok := k.elems[op.Key]; ok {
			return fmt.Errorf("element %s exists", op.Key.KeyText())
		}
		if c := op.Verdict.Chain; c != "" {
			if _, ok := k.chains[c]; !ok {
				return fmt.Errorf("element %s: no chain %s", op.Key.KeyText(), c)
			}
		}
		k.elems[op.Key] = op.Verdict
	case OpDelElem:
		if _, ok := k.elems[op.Key]; !ok {
			return fmt.Errorf("delete: no element %s", op.Key.KeyText())
		}
		delete(k.elems, op.Key)
	}
	return nil
}

func (k *fakeKernel) send(ops []Op) error {
	defer k.tick()
	c := k.clone()
	for _, op := range ops {
		if err := c.apply(op); err != nil {
			return err
		}
	}
	for i, ct := range c.tables {
		kt := k.tables[i]
		if kt == nil {
			kt = newFakeTable(k.ipf)
		}
		// (tampering may have broken a range already: only new breakage counts)
		before := kt.incompleteRanges()
		for _, e := range ct.incompleteRanges() {
			if !slices.Contains(before, e) {
				return fmt.Errorf("the batch leaves %s half-programmed: %s", ShardTableName(i), e)
			}
		}
		// a packet that entered a chain before the commit runs the old rules but looks
		// up the new elements: every element the old rules use must survive the batch
		for _, e := range kt.usedElements() {
			if _, ok := ct.epmaps[e.m][e.i]; ok || ct.epmaps[e.m] == nil && kt.epmaps[e.m] == nil {
				continue
			}
			if _, had := kt.epmaps[e.m][e.i]; had {
				return fmt.Errorf("the batch deletes element %d of %s, which the rules before it use (a packet in flight finds nothing)", e.i, e.m)
			}
		}
	}
	if k.failNext {
		k.failNext = false
		return errors.New("injected failure")
	}
	gen := k.gen
	*k = *c
	k.gen = gen + 1
	k.batches++
	if len(ops) > k.maxOps {
		k.maxOps = len(ops)
	}
	return nil
}

func (k *fakeKernel) generation() (uint32, error) {
	k.tick()
	return k.gen, nil
}

func (k *fakeKernel) dump() ([]TableDump, error) {
	var out []TableDump
	for _, i := range k.indexes() {
		c := k.tables[i].clone()
		d := TableDump{Index: i, Chains: sortedKeys(c.chains), Sets: sortedKeys(c.sets), Elems: c.elems, EP: c.epmaps}
		for m := range c.maps {
			d.Sets = append(d.Sets, mapNames[m])
		}
		sort.Strings(d.Sets)
		out = append(out, d)
	}
	return out, nil
}

func (k *fakeKernel) deleteTable() error {
	k.tables = map[int]*fakeTable{}
	return nil
}

func (k *fakeKernel) Close() error { return nil }

// tamper changes a table behind the Proxier's back, as another program would.
func (k *fakeKernel) tamper(r *rand.Rand) {
	idx := k.indexes()
	if len(idx) == 0 {
		return
	}
	ti := idx[r.Intn(len(idx))]
	t := k.tables[ti]
	names := sortedKeys(t.chains)
	switch r.Intn(5) {
	case 0: // flush a chain
		if len(names) > 0 {
			n := names[r.Intn(len(names))]
			t.chains[n], t.refs[n] = nil, nil
		}
	case 1: // a foreign rule in one of our chains
		if len(names) > 0 {
			n := names[r.Intn(len(names))]
			t.chains[n] = append(t.chains[n], "counter")
		}
	case 2: // an element goes
		keys := make([]ElemKey, 0, len(t.elems))
		for e := range t.elems {
			keys = append(keys, e)
		}
		sortElemKeys(keys)
		if len(keys) > 0 {
			delete(t.elems, keys[r.Intn(len(keys))])
		}
	case 4: // an endpoint map element goes
		if names := sortedKeys(t.epmaps); len(names) > 0 {
			delete(t.epmaps[names[r.Intn(len(names))]], 0)
		}
	case 3: // the whole table goes
		delete(k.tables, ti)
	}
	k.gen++
}

// flatten is the tables' content as one table: the main table's, the Services' chains,
// sets and elements of every shard; problems lists what breaks the layout (a shard's
// fixed chains not as ShardLayout, an element in a table its map does not belong to, a
// key in two tables, a name in two shards).
func (k *fakeKernel) flatten(node netrules.Node, fam netrules.Family) (*fakeTable, []string) {
	out := newFakeTable(k.ipf)
	var problems []string
	shard := ShardLayout(fam, node)
	for _, i := range k.indexes() {
		t := k.tables[i]
		for c, rules := range t.chains {
			if i > 0 && shard.fixedName(c) {
				if want := fixedTexts(shard, c, k.ipf); strings.Join(rules, "\n") != strings.Join(want, "\n") {
					problems = append(problems, fmt.Sprintf("%s chain %s: %v, want %v", ShardTableName(i), c, rules, want))
				}
				continue
			}
			if _, dup := out.chains[c]; dup {
				problems = append(problems, fmt.Sprintf("chain %s in two tables", c))
			}
			out.chains[c] = rules
		}
		for e, v := range t.elems {
			if mapInShard(e.Map) != (i > 0) {
				problems = append(problems, fmt.Sprintf("element %s of %s in %s", e.KeyText(), mapNames[e.Map], ShardTableName(i)))
			}
			if _, dup := out.elems[e]; dup {
				problems = append(problems, fmt.Sprintf("element %s of %s in two tables", e.KeyText(), mapNames[e.Map]))
			}
			out.elems[e] = v
		}
		for s := range t.sets {
			if out.sets[s] {
				problems = append(problems, fmt.Sprintf("set %s in two tables", s))
			}
			out.sets[s] = true
		}
		for n, m := range t.epmaps {
			out.epmaps[n] = m
		}
	}
	return out, problems
}

func fixedTexts(l Layout, name, ipf string) []string {
	for _, c := range l.Chains {
		if c.Name == name {
			return texts(c.Rules, ipf)
		}
	}
	for _, b := range l.Base {
		if b.Name == name {
			return texts(b.Rules, ipf)
		}
	}
	return nil
}

// expect is the table a fresh full sync of rs writes.
// (its flattened form: shards' fixed chains left out, see flatten)
func expect(rs *netrules.Ruleset, endpointMaps bool) *fakeTable {
	ipf := ipFamily(rs.Family)
	k := newFakeTable(ipf)
	l := FixedLayout(rs.Family, rs.Node)
	env := EnvOf(rs.Family, rs.Node)
	env.Spread = spreadOf(endpointMaps)
	d := RenderEnv(rs, env)
	for _, c := range l.Chains {
		k.chains[c.Name] = texts(c.Rules, ipf)
	}
	for _, b := range l.Base {
		k.chains[b.Name] = texts(b.Rules, ipf)
	}
	for c, rules := range d.Chains {
		k.chains[c] = texts(rules, ipf)
	}
	for s := range d.Sets {
		k.sets[s] = true
	}
	for e, v := range d.Elements {
		k.elems[e] = v
	}
	return k
}

func texts(rules []Rule, ipf string) []string {
	var out []string
	for i := range rules {
		out = append(out, rules[i].Text(ipf))
	}
	return out
}

func sameTable(t *testing.T, k *fakeKernel, node netrules.Node, fam netrules.Family, want *fakeTable) string {
	t.Helper()
	flat, diffs := k.flatten(node, fam)
	got, unused := canonicalFake(flat)
	if len(unused) > 0 {
		diffs = append(diffs, fmt.Sprintf("endpoint map elements no rule uses: %v", unused))
	}
	for _, c := range sortedKeys(want.chains) {
		if g, ok := got.chains[c]; !ok {
			diffs = append(diffs, "missing chain "+c)
		} else if strings.Join(g, "\n") != strings.Join(want.chains[c], "\n") {
			diffs = append(diffs, fmt.Sprintf("chain %s:\n  %s\nwant\n  %s", c, strings.Join(g, "\n  "), strings.Join(want.chains[c], "\n  ")))
		}
	}
	for _, c := range sortedKeys(got.chains) {
		if _, ok := want.chains[c]; !ok {
			diffs = append(diffs, "extra chain "+c)
		}
	}
	if !reflect.DeepEqual(got.elems, want.elems) {
		diffs = append(diffs, fmt.Sprintf("elements %v\nwant %v", got.elems, want.elems))
	}
	if !reflect.DeepEqual(got.epmaps, want.epmaps) {
		diffs = append(diffs, fmt.Sprintf("endpoint maps %v\nwant %v", got.epmaps, want.epmaps))
	}
	if !reflect.DeepEqual(got.sets, want.sets) {
		diffs = append(diffs, fmt.Sprintf("sets %v, want %v", got.sets, want.sets))
	}
	return strings.Join(diffs, "\n")
}

// touchedBy is the Services an event changes (as the reconciler's tracker finds them).
func touchedBy(ev netrules.Event) []string {
	if ev.Service != nil {
		return []string{ev.Service.Namespace + "/" + ev.Service.Name}
	}
	out := []string{netrules.SliceServiceKey(ev.Slice)}
	if ev.PrevSlice != nil {
		out = append(out, netrules.SliceServiceKey(ev.PrevSlice))
	}
	return out
}

// rebuild updates the States for the touched Services and returns the changed ones per
// family, sorted.
func rebuild(w *netrules.World, states map[netrules.Family]*netrules.State, touched []string, node netrules.Node) map[netrules.Family][]string {
	_, slices := w.Objects()
	changed := map[netrules.Family][]string{}
	for _, key := range touched {
		var mine []*discoveryv1.EndpointSlice
		for _, s := range slices {
			if netrules.SliceServiceKey(s) == key {
				mine = append(mine, s)
			}
		}
		ports := netrules.BuildService(w.Services[key], mine, node)
		for fam, st := range states {
			if st.Set(key, ports[fam]) {
				changed[fam] = append(changed[fam], key)
			}
		}
	}
	for _, ch := range changed {
		sort.Strings(ch)
	}
	return changed
}

// Random Service / EndpointSlice changes, synced incrementally in random batches (with
// periodic full syncs, tampering, injected batch failures and tiny batch bounds that
// force chunked rewrites) always leave the table equal to a fresh full sync of the
// final objects; every batch is one the kernel accepts.
func TestProxierIncrementalEqualsFull(t *testing.T) {
	node := netrules.Node{Name: "me", ClusterCIDRs: []netip.Prefix{netip.MustParsePrefix("10.244.0.0/16"), netip.MustParsePrefix("fd01::/48")}}
	seeds := int64(300)
	if n, err := strconv.Atoi(os.Getenv("SEEDS")); err == nil {
		seeds = int64(n)
	}
	mapSeeds := 0 // endpoint maps in the final tables: the map path was exercised
	defer func() {
		if !t.Failed() && seeds > 10 && os.Getenv("SEED") == "" && mapSeeds == 0 {
			t.Errorf("no seed ended with an endpoint map")
		}
	}()
	for seed := int64(0); seed < seeds; seed++ {
		if os.Getenv("SEED") != "" && os.Getenv("SEED") != fmt.Sprint(seed) {
			continue
		}
		r := rand.New(rand.NewSource(seed))
		var trace []string
		now := time.Unix(1000, 0)
		w := netrules.NewWorld("me")
		states := map[netrules.Family]*netrules.State{netrules.IPv4: netrules.NewState(netrules.IPv4, node), netrules.IPv6: netrules.NewState(netrules.IPv6, node)}
		kernels := map[netrules.Family]*fakeKernel{netrules.IPv4: newFakeKernel(netrules.IPv4), netrules.IPv6: newFakeKernel(netrules.IPv6)}
		proxiers := map[netrules.Family]*Proxier{}
		epMaps := seed%2 == 1 // odd seeds DNAT through endpoint maps
		for _, fam := range []netrules.Family{netrules.IPv4, netrules.IPv6} {
			k := kernels[fam]
			k.dumpDelay = r.Intn(8) // read-backs run beside 0..7 kernel calls
			proxiers[fam] = newProxier(Options{Family: fam, MaxOps: 1 + r.Intn(60), BulkMaxOps: 1 + r.Intn(200), BackstopEvery: 3, Spread: spreadOf(epMaps), ShardPorts: 1 + r.Intn(4), TablePorts: 1 + r.Intn(4), Now: func() time.Time { return now }}, k)
		}
		pending := map[netrules.Family][]string{}
		mustFull := map[netrules.Family]bool{}
		meddled := map[netrules.Family]bool{} // tampered with or failed on purpose: errors may follow
		first := true
		fams := []netrules.Family{netrules.IPv4, netrules.IPv6}
		sync := func(full bool) {
			for _, fam := range fams {
				p := proxiers[fam]
				ch := pending[fam]
				f := full || first || mustFull[fam]
				if f {
					ch = nil
				}
				stats, err := p.SyncState(nil, states[fam], ch, f)
				trace = append(trace, fmt.Sprintf("sync IPv%d full=%v ch=%v -> %+v %v resync=%v need=%v dirty=%v", fam, f, ch, stats, err, p.resyncing, p.needResync, p.dirty))
				for i := 0; err == nil && stats.Pending > 0 && r.Intn(3) > 0; i++ { // sometimes changes come in between
					stats, err = p.SyncState(nil, states[fam], nil, false)
				}
				if err != nil {
					if !meddled[fam] {
						t.Fatalf("seed %d: %v", seed, err)
					}
					mustFull[fam] = true // as the reconciler does
					continue
				}
				pending[fam], mustFull[fam] = nil, false
			}
			first = false
		}
		for step := 0; step < 60; step++ {
			ev := w.Step(r)
			for fam, ch := range rebuild(w, states, touchedBy(ev), node) {
				pending[fam] = mergeSorted(pending[fam], ch)
			}
			switch x := r.Intn(10); {
			case x < 4:
				now = now.Add(time.Duration(r.Intn(1500)) * time.Millisecond)
				sync(false)
			case x == 4:
				now = now.Add(time.Second)
				sync(true)
			case x == 5 && r.Intn(4) == 0:
				kernels[netrules.IPv4].tamper(r)
				meddled[netrules.IPv4] = true
			case x == 6 && r.Intn(4) == 0:
				kernels[netrules.IPv4].failNext = true
				meddled[netrules.IPv4] = true
			}
		}
		// settle: a full sync (repairs tampering) then partial calls until nothing is pending
		now = now.Add(2 * time.Second)
		for _, fam := range fams {
			p := proxiers[fam]
			kernels[fam].failNext = false
			full := true
			for i := 0; ; i++ {
				stats, err := p.SyncState(nil, states[fam], pending[fam], full)
				if err != nil && meddled[fam] && i < 20 {
					// a change sent while a read-back runs meets the tampered table
					// before the rewrite does: the reconciler retries in full
					full = true
					continue
				}
				if err != nil {
					t.Fatalf("seed %d: %v", seed, err)
				}
				pending[fam], full = nil, false
				if stats.Pending == 0 {
					break
				}
				if i > 10000 {
					t.Fatalf("seed %d: never settles", seed)
				}
			}
			now = now.Add(2 * time.Second)
			for i := 0; ; i++ { // stale chains go (MaxOps at a time)
				stats, err := p.SyncState(nil, states[fam], nil, false)
				if err != nil {
					t.Fatal(err)
				}
				if stats.Pending == 0 {
					break
				}
				if i > 10000 {
					t.Fatalf("seed %d: stale objects never all deleted", seed)
				}
			}
			svcs, slices := w.Objects()
			want := expect(netrules.Build(svcs, slices, node)[fam], epMaps)
			for _, tab := range kernels[fam].tables {
				for _, m := range tab.epmaps {
					if epMaps && len(m) > 0 {
						mapSeeds++
						break
					}
				}
			}
			if d := sameTable(t, kernels[fam], node, fam, want); d != "" {
				t.Fatalf("seed %d IPv%d: table differs from a fresh full sync:\n%s\n%s", seed, fam, d, strings.Join(trace, "\n"))
			}
			// (a resync's first batch rewrites every table's fixed part besides)
			if max := p.opts.BulkMaxOps + 40*len(kernels[fam].tables); kernels[fam].maxOps > max+200 {
				t.Fatalf("seed %d: a batch of %d ops (bound %d)", seed, kernels[fam].maxOps, max)
			}
		}
	}
}

func mergeSorted(a, b []string) []string {
	m := map[string]bool{}
	for _, x := range append(a, b...) {
		m[x] = true
	}
	return sortedKeys(m)
}

type epIndex struct {
	m string
	i uint32
}

// usedElements lists the endpoint map elements the rules look up.
func (k *fakeTable) usedElements() []epIndex {
	var out []epIndex
	for _, rules := range k.chains {
		for _, r := range rules {
			for _, g := range epLookup.FindAllStringSubmatch(r, -1) {
				n, _ := strconv.Atoi(g[3])
				off, _ := strconv.Atoi(g[4])
				for i := 0; i < n; i++ {
					out = append(out, epIndex{g[5], uint32(off + i)})
				}
			}
		}
	}
	return out
}

// incompleteRanges lists the rules going through an endpoint map that miss one of
// their indexes there: a lookup that misses would leave a connection un-DNATed.
func (k *fakeTable) incompleteRanges() []string {
	var out []string
	for name, rules := range k.chains {
		for _, r := range rules {
			for _, g := range epLookup.FindAllStringSubmatch(r, -1) {
				n, _ := strconv.Atoi(g[3])
				off, _ := strconv.Atoi(g[4])
				for i := 0; i < n; i++ {
					if _, ok := k.epmaps[g[5]][uint32(off+i)]; !ok {
						out = append(out, fmt.Sprintf("chain %s: %q: no element %d in %s", name, r, off+i, g[5]))
					}
				}
			}
		}
	}
	return out
}
