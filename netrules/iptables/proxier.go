package iptables

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"os/exec"
	"reflect"
	"slices"
	"sort"
	"strings"
	"time"

	"github.com/nodekeeper/nodekeeper/netrules"
)

// Runner runs a command with optional stdin and returns its combined output. It is the
// seam between the proxier and the iptables binaries; Exec runs them for real.
type Runner interface {
	Run(ctx context.Context, stdin []byte, name string, args ...string) ([]byte, error)
}

// Exec runs commands, optionally behind a prefix such as
// ["nsenter", "--net=/run/netns/node"] (used by tests to program a namespace).
type Exec struct{ Prefix []string }

// Run implements Runner.
func (e Exec) Run(ctx context.Context, stdin []byte, name string, args ...string) ([]byte, error) {
	argv := append(append(append([]string(nil), e.Prefix...), name), args...)
	cmd := exec.CommandContext(ctx, argv[0], argv[1:]...)
	if stdin != nil {
		cmd.Stdin = bytes.NewReader(stdin)
	}
	out, err := cmd.CombinedOutput()
	if err != nil {
		return out, fmt.Errorf("%s: %w: %s", strings.Join(argv, " "), err, bytes.TrimSpace(out))
	}
	return out, nil
}

// Variant selects the iptables binaries: "legacy", "nft", or "" for the distribution's
// default (iptables, iptables-restore, …).
type Variant string

// Options configure a Proxier.
type Options struct {
	Family  netrules.Family
	Variant Variant
	Runner  Runner
	// ChunkChains: when a full sync has more new chains than this, they are created and
	// filled beforehand in restores of this many chains, while nothing jumps to them
	// yet, and the last restore only links them in. <0: never; 0: 1000, on the
	// nf_tables backend only. One big --noflush restore is super-linear on iptables-nft
	// (10,000 Services: 72 s, chunked 18 s here), while iptables-legacy rewrites the
	// whole table on every restore (chunked: 4 s → 43 s).
	ChunkChains int
	// FullResyncPeriod is upstream's proxyutil.FullSyncPeriod (default 1 hour): a
	// periodic sync (SyncState with full set, every proxySyncPeriod) is a full rewrite
	// only when this long has passed since the last full one, and never in the large
	// cluster mode, as kube-proxy's syncProxyRules. Otherwise it is partial: it writes
	// the Services that differ from what was applied, rewrites the fixed chains (as
	// every kube-proxy sync does: a flushed KUBE-SERVICES is repaired), and reads the
	// built-in chains: a missing jump (a wiped or flushed table) makes it full.
	// <0: every periodic sync is full.
	FullResyncPeriod time.Duration
	// Now is the clock (time.Now when nil).
	Now func() time.Time
}

// DefaultFullResyncPeriod is upstream's proxyutil.FullSyncPeriod.
const DefaultFullResyncPeriod = time.Hour

// Proxier applies one family's rules. It keeps what it last applied, per Service, so
// that a partial sync renders only the changed Services and writes only their chains
// and the bucket chains their dispatch rules live in. It is not safe for concurrent use
// (the ServiceReconciler syncs from one worker).
type Proxier struct {
	opts     Options
	needFull bool
	nfTables *bool // the binaries are iptables-nft (known after the first check)

	// what the last successful sync applied (valid while !needFull)
	opt     renderOpts
	nodeKey string
	svcs    map[string]*svcRules
	nEPs    int // endpoints of every Service, for the large cluster mode
	buckets buckets
	applied map[[2]string]string // table, bucket or fixed chain -> its rules as applied
	// lastFull is when the last full sync succeeded
	lastFull time.Time
}

// svcRules is one Service's ports and their rendering.
type svcRules struct {
	ports    []*netrules.ServicePort // as handed in by the State (never modified)
	rendered []*PortRules
	eps      int
}

func (p *Proxier) chunk() int {
	if p.opts.ChunkChains > 0 {
		return p.opts.ChunkChains
	}
	return 1000
}

// chunking tells whether big full syncs are chunked: asked for, or by default on the
// nf_tables backend.
func (p *Proxier) chunking(ctx context.Context) bool {
	switch {
	case p.opts.ChunkChains < 0:
		return false
	case p.opts.ChunkChains > 0:
		return true
	}
	return p.isNFT(ctx)
}

// isNFT tells whether the binaries are iptables-nft: Variant nft, or the default
// binaries reporting nf_tables.
func (p *Proxier) isNFT(ctx context.Context) bool {
	if p.nfTables == nil {
		nf := p.opts.Variant == "nft"
		if p.opts.Variant == "" {
			out, err := p.opts.Runner.Run(ctx, nil, p.bin(""), "--version")
			nf = err == nil && strings.Contains(string(out), "nf_tables")
		}
		p.nfTables = &nf
	}
	return *p.nfTables
}

// New returns a proxier; its first sync is always full.
func New(opts Options) *Proxier {
	if opts.FullResyncPeriod == 0 {
		opts.FullResyncPeriod = DefaultFullResyncPeriod
	}
	if opts.Now == nil {
		opts.Now = time.Now
	}
	return &Proxier{opts: opts, needFull: true}
}

func (p *Proxier) bin(tool string) string {
	base := "iptables"
	if p.opts.Family == netrules.IPv6 {
		base = "ip6tables"
	}
	if p.opts.Variant != "" {
		base += "-" + string(p.opts.Variant)
	}
	if tool != "" {
		base += "-" + tool
	}
	return base
}

// SyncStats tells what a sync did.
type SyncStats = netrules.SyncStats

// jumps are the rules kube-proxy keeps in the built-in chains.
var jumps = []struct{ table, chain, rule string }{
	{"filter", "INPUT", `-m conntrack --ctstate NEW -m comment --comment "kubernetes load balancer firewall" -j KUBE-PROXY-FIREWALL`},
	{"filter", "INPUT", `-m comment --comment "kubernetes health check service ports" -j KUBE-NODEPORTS`},
	{"filter", "INPUT", `-m conntrack --ctstate NEW -m comment --comment "kubernetes externally-visible service portals" -j KUBE-EXTERNAL-SERVICES`},
	{"filter", "FORWARD", `-m conntrack --ctstate NEW -m comment --comment "kubernetes load balancer firewall" -j KUBE-PROXY-FIREWALL`},
	{"filter", "FORWARD", `-m comment --comment "kubernetes forwarding rules" -j KUBE-FORWARD`},
	{"filter", "FORWARD", `-m conntrack --ctstate NEW -m comment --comment "kubernetes service portals" -j KUBE-SERVICES`},
	{"filter", "FORWARD", `-m conntrack --ctstate NEW -m comment --comment "kubernetes externally-visible service portals" -j KUBE-EXTERNAL-SERVICES`},
	{"filter", "OUTPUT", `-m conntrack --ctstate NEW -m comment --comment "kubernetes load balancer firewall" -j KUBE-PROXY-FIREWALL`},
	{"filter", "OUTPUT", `-m conntrack --ctstate NEW -m comment --comment "kubernetes service portals" -j KUBE-SERVICES`},
	{"nat", "PREROUTING", `-m comment --comment "kubernetes service portals" -j KUBE-SERVICES`},
	{"nat", "OUTPUT", `-m comment --comment "kubernetes service portals" -j KUBE-SERVICES`},
	{"nat", "POSTROUTING", `-m comment --comment "kubernetes postrouting rules" -j KUBE-POSTROUTING`},
}

// splitRule splits a rule into argv words, honouring double quotes.
func splitRule(s string) []string {
	var out []string
	var cur strings.Builder
	inQ, had := false, false
	for _, r := range s {
		switch {
		case r == '"':
			inQ, had = !inQ, true
		case r == ' ' && !inQ:
			if had || cur.Len() > 0 {
				out = append(out, cur.String())
			}
			cur.Reset()
			had = false
		default:
			cur.WriteRune(r)
		}
	}
	if had || cur.Len() > 0 {
		out = append(out, cur.String())
	}
	return out
}

// ruleWords is a rule as a sorted multiset of words: iptables-save may print a rule's
// matches in another order than they were written.
func ruleWords(rule string) string {
	w := splitRule(rule)
	sort.Strings(w)
	return strings.Join(w, "\x00")
}

// saved is what one iptables-save told: per table, its chains and the rules of its
// built-in chains.
type saved struct {
	chains  map[string][]string        // table -> chain names
	builtin map[string]map[string]bool // table -> "chain\x00words" of built-in chain rules
}

// save reads the chains of both tables and the rules of their built-in chains. On the
// nf_tables backend iptables-save costs ~16 s of CPU at 10,000 Services (it decodes
// every rule), so there the chain names come from one `nft list chains` (names only)
// and the built-in chains' rules from `iptables -S <chain>` (a filtered, cheap read);
// without the nft binary it falls back to iptables-save.
func (p *Proxier) save(ctx context.Context) (*saved, error) {
	if p.isNFT(ctx) {
		if s, err := p.saveNFT(ctx); err == nil {
			return s, nil
		}
	}
	return p.saveAll(ctx)
}

// saveNFT is save for the nf_tables backend.
func (p *Proxier) saveNFT(ctx context.Context) (*saved, error) {
	fam := "ip"
	if p.opts.Family == netrules.IPv6 {
		fam = "ip6"
	}
	out, err := p.opts.Runner.Run(ctx, nil, "nft", "list", "chains", fam)
	if err != nil {
		return nil, err
	}
	s := &saved{chains: map[string][]string{}, builtin: map[string]map[string]bool{}}
	table := ""
	for _, line := range strings.Split(string(out), "\n") {
		f := strings.Fields(line)
		switch {
		case len(f) >= 3 && f[0] == "table" && f[1] == fam:
			table = f[2]
		case len(f) >= 2 && f[0] == "chain" && table != "":
			s.chains[table] = append(s.chains[table], f[1])
		}
	}
	if err := p.readBuiltin(ctx, s); err != nil {
		return nil, err
	}
	return s, nil
}

// readBuiltin reads the rules of the built-in chains the jumps live in, one
// `iptables -S <chain>` each (a filtered read).
func (p *Proxier) readBuiltin(ctx context.Context, s *saved) error {
	for _, table := range tables {
		s.builtin[table] = map[string]bool{}
		seen := map[string]bool{}
		for _, j := range jumps {
			if j.table != table || seen[j.chain] {
				continue
			}
			seen[j.chain] = true
			out, err := p.opts.Runner.Run(ctx, nil, p.bin(""), "-w", "5", "-t", table, "-S", j.chain)
			if err != nil {
				return err
			}
			s.addRules(table, string(out))
		}
	}
	return nil
}

// jumpsMissing tells whether a jump from a built-in chain is gone (read cheaply).
func (p *Proxier) jumpsMissing(ctx context.Context) (bool, error) {
	s := &saved{builtin: map[string]map[string]bool{}}
	if err := p.readBuiltin(ctx, s); err != nil {
		return false, err
	}
	for _, t := range tables {
		if len(s.missingJumps(t)) > 0 {
			return true, nil
		}
	}
	return false, nil
}

func (s *saved) addRules(table, out string) {
	for _, line := range strings.Split(out, "\n") {
		if !strings.HasPrefix(line, "-A ") {
			continue
		}
		w := strings.SplitN(line[3:], " ", 2)
		if len(w) == 2 && isBuiltin(table, w[0]) {
			s.builtin[table][w[0]+"\x00"+ruleWords(w[1])] = true
		}
	}
}

// saveAll runs iptables-save once for both tables and parses it.
func (p *Proxier) saveAll(ctx context.Context) (*saved, error) {
	out, err := p.opts.Runner.Run(ctx, nil, p.bin("save"))
	if err != nil {
		return nil, err
	}
	s := &saved{chains: map[string][]string{}, builtin: map[string]map[string]bool{}}
	table := ""
	for _, line := range strings.Split(string(out), "\n") {
		switch {
		case strings.HasPrefix(line, "*"):
			table = strings.TrimSpace(line[1:])
			s.builtin[table] = map[string]bool{}
		case strings.HasPrefix(line, ":") && table != "":
			if f := strings.Fields(line[1:]); len(f) > 0 {
				s.chains[table] = append(s.chains[table], f[0])
			}
		case strings.HasPrefix(line, "-A ") && table != "":
			w := strings.SplitN(line[3:], " ", 2)
			if len(w) == 2 && isBuiltin(table, w[0]) {
				s.builtin[table][w[0]+"\x00"+ruleWords(w[1])] = true
			}
		}
	}
	return s, nil
}

// missingJumps are "-I" lines for the jumps of table that are not in the kernel.
func (s *saved) missingJumps(table string) []string {
	var out []string
	for _, j := range jumps {
		if j.table == table && !s.builtin[table][j.chain+"\x00"+ruleWords(j.rule)] {
			out = append(out, "-I "+j.chain+" "+j.rule)
		}
	}
	return out
}

// prefill writes the chains of a big full sync ahead of it, in small restores: first
// every new chain (and new fixed chain) is declared empty, then the chains in write are
// filled chunk by chunk, leaves first (endpoint chains, then service chains, then the
// chains jumping to them, buckets last), so a chain is filled only after every chain it
// jumps to. New chains are not linked in until the final restore writes the dispatch
// chains, so traffic never sees a half-programmed new Service; an existing chain is
// replaced atomically, pointing at chains that are already complete. If a chunk fails,
// the next full sync finds the leftovers as existing chains and rewrites or deletes
// them. It returns the chains it filled.
func (p *Proxier) prefill(ctx context.Context, t Table, write []string, existing map[string]bool) ([]string, error) {
	chunk := p.chunk()
	sort.Slice(write, func(i, j int) bool {
		ri, rj := fillRank(write[i]), fillRank(write[j])
		if ri != rj {
			return ri < rj
		}
		return write[i] < write[j]
	})
	var decl []string
	for _, c := range t.Fixed {
		if !existing[c.Name] {
			decl = append(decl, c.Name) // new fixed chains: declared empty, written at the end
		}
	}
	for _, c := range write {
		if !existing[c] {
			decl = append(decl, c)
		}
	}
	restore := func(input string) error {
		_, err := p.opts.Runner.Run(ctx, []byte(input), p.bin("restore"), "-w", "5", "--noflush")
		return err
	}
	for i := 0; i < len(decl); i += 5 * chunk {
		var b strings.Builder
		b.WriteString("*" + t.Name + "\n")
		for _, c := range decl[i:min(i+5*chunk, len(decl))] {
			fmt.Fprintf(&b, ":%s - [0:0]\n", c)
		}
		b.WriteString("COMMIT\n")
		if err := restore(b.String()); err != nil {
			return nil, err
		}
	}
	for i := 0; i < len(write); i += chunk {
		if err := restore(Input(Table{Name: t.Name, Service: t.Service}, write[i:min(i+chunk, len(write))], nil)); err != nil {
			return nil, err
		}
	}
	return write, nil
}

// fillRank orders chains so that a chain comes after every chain it jumps to.
func fillRank(chain string) int {
	switch {
	case strings.HasPrefix(chain, "KUBE-SEP-"):
		return 0
	case strings.HasPrefix(chain, "KUBE-SVC-"), strings.HasPrefix(chain, "KUBE-SVL-"):
		return 1
	case strings.HasPrefix(chain, "KUBE-EXT-"):
		return 2
	case strings.HasPrefix(chain, "KUBE-FW-"):
		return 3
	}
	return 4 // buckets
}

// Sync applies a whole Ruleset: Services whose ports differ from the last sync are
// synced as changed (see SyncState). It serves callers that rebuild everything.
func (p *Proxier) Sync(ctx context.Context, rs *netrules.Ruleset, full bool) (SyncStats, error) {
	st := netrules.NewState(rs.Family, rs.Node)
	by := map[string][]*netrules.ServicePort{}
	var order []string
	for _, sp := range rs.Ports {
		k := sp.Namespace + "/" + sp.Name
		if _, ok := by[k]; !ok {
			order = append(order, k)
		}
		by[k] = append(by[k], sp)
	}
	var changed []string
	for _, k := range order {
		ports := by[k]
		if old := p.svcs[k]; old != nil && equalPorts(old.ports, ports) {
			ports = old.ports // unchanged: keep the rendered ones
		} else {
			changed = append(changed, k)
		}
		st.Set(k, ports)
	}
	for k := range p.svcs {
		if _, ok := by[k]; !ok {
			changed = append(changed, k)
		}
	}
	sort.Strings(changed)
	return p.SyncState(ctx, st, changed, full)
}

func equalPorts(a, b []*netrules.ServicePort) bool {
	if len(a) != len(b) {
		return false
	}
	for i := range a {
		if a[i] != b[i] && !reflect.DeepEqual(a[i], b[i]) {
			return false
		}
	}
	return true
}

// SyncState applies st. A full sync (the first, after a failure, when the node's facts
// or the large cluster mode change, when a periodic sync finds a jump from a built-in
// chain missing, and a periodic sync every FullResyncPeriod outside the large cluster
// mode) re-creates the jumps from the built-in chains, rewrites every chain and deletes
// every stale chain of ours found in the kernel. A partial one renders only the
// Services in changed and writes, in one iptables-restore --noflush, only their chains,
// the buckets their dispatch rules are in, and a dispatch chain when one of its buckets
// appears or empties. full asks for a periodic sync (changed is then ignored): see
// Options.FullResyncPeriod. A failed sync leaves each table as it was
// (iptables-restore commits a table atomically) and makes the next sync full.
func (p *Proxier) SyncState(ctx context.Context, st *netrules.State, changed []string, full bool) (SyncStats, error) {
	nodeKey := fmt.Sprintf("%d/%+v", st.Family, st.Node)
	if p.needFull || p.svcs == nil || nodeKey != p.nodeKey {
		return p.syncFull(ctx, st, nodeKey)
	}
	periodic := full
	if periodic {
		if p.fullDue() {
			return p.syncFull(ctx, st, nodeKey)
		}
		if missing, err := p.jumpsMissing(ctx); err != nil || missing {
			return p.syncFull(ctx, st, nodeKey)
		}
		changed = p.differing(st)
	}
	// the large cluster mode changes every endpoint rule: that is a full sync
	nEPs := p.nEPs
	for _, k := range changed {
		if old := p.svcs[k]; old != nil {
			nEPs -= old.eps
		}
		nEPs += Endpoints(st.Ports(k))
	}
	if (nEPs > largeCluster) != p.opt.noComments {
		return p.syncFull(ctx, st, nodeKey)
	}
	stats, err := p.syncPartial(ctx, st, changed, periodic)
	if err != nil {
		p.needFull = true
		return stats, err
	}
	p.nEPs = nEPs
	return stats, nil
}

// fullDue tells whether a periodic sync must be full: FullResyncPeriod has passed
// since the last full sync and the large cluster mode is off (upstream never resyncs
// a large cluster in full on its own).
func (p *Proxier) fullDue() bool {
	if p.opts.FullResyncPeriod < 0 {
		return true
	}
	return !p.opt.noComments && p.opts.Now().Sub(p.lastFull) >= p.opts.FullResyncPeriod
}

// differing lists the Services whose ports in st are not what the last syncs applied
// (sorted).
func (p *Proxier) differing(st *netrules.State) []string {
	var out []string
	keys := st.Services()
	in := make(map[string]bool, len(keys))
	for _, k := range keys {
		in[k] = true
		cur := st.Ports(k)
		if s := p.svcs[k]; s == nil || !slices.Equal(s.ports, cur) {
			if s != nil || len(cur) > 0 {
				out = append(out, k)
			}
		}
	}
	for k := range p.svcs {
		if !in[k] {
			out = append(out, k)
		}
	}
	sort.Strings(out)
	return out
}

func (p *Proxier) render(ports []*netrules.ServicePort) *svcRules {
	s := &svcRules{ports: ports, rendered: make([]*PortRules, len(ports)), eps: Endpoints(ports)}
	for i, sp := range ports {
		s.rendered[i] = p.opt.port(sp)
	}
	return s
}

// tableOf picks the per-Service chains of one table from a port's rendering.
func (pr *PortRules) chains(table string) map[string][]string {
	if table == "nat" {
		return pr.NAT
	}
	return pr.Filter
}

var tables = []string{"filter", "nat"}

// syncPartial writes the chains of the changed Services and the buckets and dispatch
// chains their dispatch rules touch; with rewriteFixed, every fixed chain too (a
// periodic sync). The Proxier's memory is updated as it goes: on
// failure the caller makes the next sync full, which rebuilds it.
func (p *Proxier) syncPartial(ctx context.Context, st *netrules.State, changed []string, rewriteFixed bool) (SyncStats, error) {
	stats := SyncStats{}
	write := map[string]map[string][]string{"filter": {}, "nat": {}} // table -> chain -> rules
	del := map[string]map[string]bool{"filter": {}, "nat": {}}
	touched := map[[2]string]bool{}
	for _, k := range changed {
		old := p.svcs[k]
		var next *svcRules
		if ports := st.Ports(k); len(ports) > 0 {
			next = p.render(ports)
			p.svcs[k] = next
		} else {
			delete(p.svcs, k)
		}
		// per-Service chains: write what is new or different, delete what is gone
		was := map[[2]string][]string{}
		if old != nil {
			for _, pr := range old.rendered {
				for _, t := range tables {
					for c, rules := range pr.chains(t) {
						was[[2]string{t, c}] = rules
					}
				}
				for _, b := range p.buckets.remove(pr) {
					touched[b] = true
				}
			}
		}
		if next != nil {
			for _, pr := range next.rendered {
				for _, t := range tables {
					for c, rules := range pr.chains(t) {
						key := [2]string{t, c}
						if prev, ok := was[key]; !ok || !slices.Equal(prev, rules) {
							write[t][c] = rules
						}
						delete(was, key)
					}
				}
				for _, b := range p.buckets.add(pr) {
					touched[b] = true
				}
			}
		}
		for key := range was {
			if _, rewritten := write[key[0]][key[1]]; !rewritten {
				del[key[0]][key[1]] = true
			}
		}
	}
	// buckets: rewrite the changed ones, delete the emptied ones; a dispatch chain is
	// rewritten when one of its buckets appears or goes. Outside the large cluster mode a
	// periodic sync rewrites every bucket, as kube-proxy's rewrites every dispatch rule of
	// KUBE-SERVICES, KUBE-NODEPORTS and KUBE-EXTERNAL-SERVICES each sync: a jump to a
	// Service chain deleted from outside then fails the restore, and the next sync is
	// full and re-creates it. In the large cluster mode (where all buckets are ~1.3 MB of
	// restore input at 10,000 Services) only the hourly full sync would see it.
	allBuckets := rewriteFixed && !p.opt.noComments
	if allBuckets {
		for key := range p.buckets {
			touched[key] = true
		}
	}
	parents := map[[2]string]bool{}
	for key := range touched {
		_, had := p.applied[key]
		b := p.buckets[key]
		if b == nil {
			if had {
				del[key[0]][key[1]] = true
				delete(p.applied, key)
				parents[[2]string{key[0], parentOf(key[1])}] = true
			}
			continue
		}
		rules := b.lines()
		body := strings.Join(rules, "\n")
		if had && p.applied[key] == body && !allBuckets {
			continue
		}
		write[key[0]][key[1]] = rules
		p.applied[key] = body
		if !had {
			parents[[2]string{key[0], b.ref.parent}] = true
		}
	}
	var in strings.Builder
	for _, t := range tables {
		var fixed []Chain
		if rewriteFixed {
			fixed = fixedChains(p.opt, p.buckets, t)
			for _, c := range fixed {
				if _, static := staticBody(t, c.Name); !static {
					p.applied[[2]string{t, c.Name}] = strings.Join(c.Rules, "\n")
				}
			}
		}
		for _, name := range dispatchChains[t] {
			key := [2]string{t, name}
			if rewriteFixed || !parents[key] {
				continue
			}
			rules := p.buckets.parentRules(p.opt, t, name)
			body := strings.Join(rules, "\n")
			if p.applied[key] == body {
				continue
			}
			p.applied[key] = body
			fixed = append(fixed, Chain{name, rules})
		}
		if len(fixed) == 0 && len(write[t]) == 0 && len(del[t]) == 0 {
			continue
		}
		ws := make([]string, 0, len(write[t]))
		for c, rules := range write[t] {
			ws = append(ws, c)
			stats.Rules += len(rules)
		}
		ds := make([]string, 0, len(del[t]))
		for c := range del[t] {
			ds = append(ds, c)
		}
		for _, c := range fixed {
			stats.Rules += len(c.Rules)
		}
		stats.ChainsWritten += len(ws) + len(fixed)
		stats.ChainsDeleted += len(ds)
		writeInput(&in, Table{Name: t, Fixed: fixed, Service: write[t]}, ws, ds, nil)
	}
	if in.Len() == 0 {
		return stats, nil
	}
	if _, err := p.opts.Runner.Run(ctx, []byte(in.String()), p.bin("restore"), "-w", "5", "--noflush"); err != nil {
		return stats, fmt.Errorf("iptables-restore: %w", err)
	}
	return stats, nil
}

// parentOf is the dispatch chain of a bucket chain.
func parentOf(bucketChain string) string {
	for parent, prefix := range bucketPrefix {
		if strings.HasPrefix(bucketChain, prefix) {
			return parent
		}
	}
	return ""
}

// syncFull renders every Service (reusing the renderings of ports that are the same
// objects as last time) and rewrites everything.
func (p *Proxier) syncFull(ctx context.Context, st *netrules.State, nodeKey string) (SyncStats, error) {
	stats := SyncStats{Full: true}
	p.needFull = true // until this sync succeeds
	keys := st.Services()
	nEPs := 0
	for _, k := range keys {
		nEPs += Endpoints(st.Ports(k))
	}
	opt := renderOpts{fam: st.Family, node: st.Node, noComments: nEPs > largeCluster}
	reuse := p.svcs != nil && nodeKey == p.nodeKey && opt.noComments == p.opt.noComments
	oldSvcs := p.svcs
	p.opt = opt
	svcs := make(map[string]*svcRules, len(keys))
	var ports []*PortRules
	for _, k := range keys {
		cur := st.Ports(k)
		s := oldSvcs[k]
		if !reuse || s == nil || !slices.Equal(s.ports, cur) {
			s = p.render(cur)
		}
		svcs[k] = s
		ports = append(ports, s.rendered...)
	}
	// assemble both tables; keep the buckets for partial syncs
	bs := buckets{}
	for _, pr := range ports {
		bs.add(pr)
	}
	r := assemble(opt, ports)

	kernel, err := p.save(ctx)
	if err != nil {
		return stats, fmt.Errorf("iptables-save: %w", err)
	}
	applied := map[[2]string]string{}
	var input strings.Builder
	for _, t := range []Table{r.Filter, r.NAT} {
		existing := map[string]bool{}
		stale := map[string]bool{}
		for _, c := range kernel.chains[t.Name] {
			existing[c] = true
			if IsServiceChain(c) {
				stale[c] = true
			}
		}
		write := make([]string, 0, len(t.Service))
		for c := range t.Service {
			write = append(write, c)
			delete(stale, c)
		}
		// on iptables-nft one big restore is super-linear: write the chains ahead in
		// chunks, the last restore then holds the dispatch chains and deletions only
		if len(write) > p.chunk() && p.chunking(ctx) {
			filled, err := p.prefill(ctx, t, write, existing)
			if err != nil {
				return stats, fmt.Errorf("iptables-restore (writing %s chains ahead): %w", t.Name, err)
			}
			stats.ChainsWritten += len(filled)
			write = nil
		}
		del := make([]string, 0, len(stale))
		for c := range stale {
			del = append(del, c)
		}
		stats.ChainsWritten += len(write) + len(t.Fixed)
		stats.ChainsDeleted += len(del)
		for _, c := range t.Fixed {
			stats.Rules += len(c.Rules)
			if _, static := staticBody(t.Name, c.Name); !static {
				applied[[2]string{t.Name, c.Name}] = strings.Join(c.Rules, "\n")
			}
		}
		for _, rules := range t.Service {
			stats.Rules += len(rules)
		}
		writeInput(&input, t, write, del, kernel.missingJumps(t.Name))
	}
	for key, b := range bs {
		applied[key] = strings.Join(b.lines(), "\n")
	}
	if _, err := p.opts.Runner.Run(ctx, []byte(input.String()), p.bin("restore"), "-w", "5", "--noflush"); err != nil {
		return stats, fmt.Errorf("iptables-restore: %w", err)
	}
	p.svcs, p.buckets, p.applied, p.nEPs, p.nodeKey = svcs, bs, applied, nEPs, nodeKey
	p.needFull = false
	p.lastFull = p.opts.Now()
	return stats, nil
}

func staticBody(table, chain string) ([]string, bool) {
	for _, c := range staticChains(table) {
		if c.Name == chain {
			return c.Rules, true
		}
	}
	return nil, false
}

// ErrNotAvailable is returned by Check when the iptables binaries cannot be run.
var ErrNotAvailable = errors.New("iptables is not available")

// Check verifies that the chosen binaries run.
func (p *Proxier) Check(ctx context.Context) error {
	if _, err := p.opts.Runner.Run(ctx, nil, p.bin("restore"), "--version"); err != nil {
		return fmt.Errorf("%w: %v", ErrNotAvailable, err)
	}
	return nil
}

// Cleanup removes every rule and chain the proxier owns (used by tests and on mode switch).
func (p *Proxier) Cleanup(ctx context.Context) error {
	var errs []error
	for _, j := range jumps {
		args := append([]string{"-w", "5", "-t", j.table, "-D", j.chain}, splitRule(j.rule)...)
		_, _ = p.opts.Runner.Run(ctx, nil, p.bin(""), args...)
	}
	kernel, err := p.save(ctx)
	if err != nil {
		errs = append(errs, err)
	} else {
		var input bytes.Buffer
		for _, table := range tables {
			var owned []string
			for _, c := range kernel.chains[table] {
				if IsServiceChain(c) {
					owned = append(owned, c)
				}
			}
			var fixed []string
			for _, c := range fixedOrder[table] {
				for _, have := range kernel.chains[table] {
					if have == c {
						fixed = append(fixed, c)
					}
				}
			}
			input.WriteString(Input(Table{Name: table}, nil, append(owned, fixed...)))
		}
		if _, err := p.opts.Runner.Run(ctx, input.Bytes(), p.bin("restore"), "-w", "5", "--noflush"); err != nil {
			errs = append(errs, err)
		}
	}
	p.svcs, p.applied, p.buckets, p.needFull = nil, nil, nil, true
	return errors.Join(errs...)
}
