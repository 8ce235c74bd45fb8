package nftables

import (
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"net/netip"
	"os"
	"sort"
	"strings"
	"syscall"
	"time"

	"github.com/google/nftables"
	"github.com/mdlayher/netlink"
	"golang.org/x/sys/unix"

	"github.com/nodekeeper/nodekeeper/netrules"
)

// Options configure a Proxier.
type Options struct {
	Family netrules.Family
	// NetNS is the path of the network namespace to program ("" = the current one).
	NetNS string
	// MaxOps bounds the operations of one batch (default 500, ~50 Services of a
	// rewrite, 5-10 ms at 10,000 Services): big rewrites go in several batches, so a
	// changed Service waits for one batch at most, and the kernel's acknowledgements
	// fit the socket buffer.
	MaxOps int
	// BulkMaxOps bounds the batches of a resync into a table that holds no Service
	// yet (the first sync, default 20000): every batch costs the kernel a validation
	// walk of the whole table built so far, so fewer, bigger batches are cheaper, and
	// no programmed Service waits behind them.
	BulkMaxOps int
	// BackstopEvery: every BackstopEvery-th full sync rewrites everything even when
	// nothing looks tampered with (default 10).
	BackstopEvery int
	// Spread: how a service chain picks an endpoint (see Env.Spread; default: the
	// shared endpoint maps).
	Spread Spread
	// ShardPorts: ports per endpoint map (0: ShardPorts).
	ShardPorts int
	// TablePorts: Service ports per shard table (0: TablePorts).
	TablePorts int
	Now        func() time.Time
}

// Proxier programs one family's "nodekeeper" table over netlink, incrementally. It
// implements controllers.RulesBackend.
//
// A partial sync plans the changed Services only and sends one batch. A full sync
// first checks, cheaply, whether anything but nodekeeper committed to nf_tables since
// its last batch (the ruleset generation, read before and after each of its batches):
// if not, it only catches up with Services whose ports differ from what was applied.
// If so — or at the first sync, after a failed batch, after a node change, and every
// BackstopEvery-th full sync — it resyncs: it reads the table's chains, sets and map
// elements, then rewrites every Service in bounded batches (Pending tells the caller
// to come back at once), changed Services going first, and finally removes what no
// Service claimed.
type Proxier struct {
	opts Options
	k    kernel

	planner *Planner
	envKey  string

	needResync bool
	resyncing  bool
	bulk       bool // resyncing into a table without Services
	baseDue    bool
	repair     []string
	done       map[string]bool
	inRepair   map[string]bool
	dirty      []string
	isDirty    map[string]bool

	// a read-back of the tables running beside the worker (a resync of a table with
	// Services: changes keep going through the planner as before meanwhile), and the
	// operations committed since it started (replayed over it)
	dumping     <-chan prepared
	dumpLog     []Op
	dumpForeign bool // someone else committed while it ran

	lastGen    uint32
	haveGen    bool
	suspicious bool
	fulls      int

	holdRepair bool // the rewrite of unchanged Services waits for the next call
	heldLast   bool // the last call held it

	// how long this call's batches and the last Reset took (for the scale figures)
	lastMainSend, lastExpiredSend, lastReset time.Duration
}

// StaleFlushAfter: stale chains are deleted in calls without changes, or in any call
// once the oldest has waited this long.
const StaleFlushAfter = 10 * time.Second

// New opens the netlink sockets for the family's table.
func New(opts Options) (*Proxier, error) {
	tf := nftables.TableFamilyIPv4
	if opts.Family == netrules.IPv6 {
		tf = nftables.TableFamilyIPv6
	}
	nk := &nlKernel{fam: opts.Family, tf: tf, tables: map[int]*nftables.Table{}, nsFd: -1}
	var nopts []nftables.ConnOption
	cfg := &netlink.Config{}
	if opts.NetNS != "" {
		f, err := os.Open(opts.NetNS)
		if err != nil {
			return nil, fmt.Errorf("nftables: %w", err)
		}
		fd, err := unix.Dup(int(f.Fd()))
		f.Close()
		if err != nil {
			return nil, fmt.Errorf("nftables: %w", err)
		}
		nk.nsFd = fd
		nopts = append(nopts, nftables.WithNetNSFd(fd))
		cfg.NetNS = fd
	}
	nopts = append(nopts, nftables.AsLasting(), nftables.WithSockOptions(bigBuffers))
	conn, err := nftables.New(nopts...)
	if err != nil {
		nk.Close()
		return nil, fmt.Errorf("nftables: netlink: %w", err)
	}
	nk.conn = conn
	if nk.dconn, err = nftables.New(nopts...); err != nil {
		nk.Close()
		return nil, fmt.Errorf("nftables: netlink: %w", err)
	}
	g, err := netlink.Dial(unix.NETLINK_NETFILTER, cfg)
	if err != nil {
		nk.Close()
		return nil, fmt.Errorf("nftables: netlink: %w", err)
	}
	nk.gconn = g
	return newProxier(opts, nk), nil
}

func newProxier(opts Options, k kernel) *Proxier {
	if opts.MaxOps <= 0 {
		opts.MaxOps = 500
	}
	if opts.BulkMaxOps <= 0 {
		opts.BulkMaxOps = 20000
	}
	if opts.BulkMaxOps < opts.MaxOps {
		opts.BulkMaxOps = opts.MaxOps
	}
	if opts.BackstopEvery <= 0 {
		opts.BackstopEvery = 10
	}
	if opts.Now == nil {
		opts.Now = time.Now
	}
	return &Proxier{opts: opts, k: k, needResync: true, isDirty: map[string]bool{}}
}

// dumpResult is a read-back of the tables.
type dumpResult struct {
	tables []TableDump
	err    error
}

// prepared is a fresh Planner Reset from a read-back, off the worker.
type prepared struct {
	planner *Planner
	err     error
}

// kernel is the Proxier's only I/O: batches, the generation, and reading the table.
type kernel interface {
	// startDump reads the tables as dump does, beside the caller (on a socket of its
	// own), while batches keep going; the result comes on the channel.
	startDump() <-chan dumpResult
	// send applies ops as one batch, all or nothing.
	send(ops []Op) error
	generation() (uint32, error)
	// dump reads what the tables (the main one and the shards) hold: chains, sets,
	// map elements, and the endpoint maps' elements by map (nothing when absent).
	dump() ([]TableDump, error)
	// deleteTable deletes the main table and the shards.
	deleteTable() error
	Close() error
}

// nlKernel is the kernel over netlink.
type nlKernel struct {
	fam    netrules.Family
	tf     nftables.TableFamily
	tables map[int]*nftables.Table
	nsFd   int
	conn   *nftables.Conn
	dconn  *nftables.Conn // for read-backs beside batches (startDump)
	gconn  *netlink.Conn  // for generation reads
	// lastSend is how long the last batch took (for the scale figures)
	lastSend time.Duration
}

// table is the netlink value of table i.
func (n *nlKernel) table(i int) *nftables.Table {
	t := n.tables[i]
	if t == nil {
		t = &nftables.Table{Name: ShardTableName(i), Family: n.tf}
		n.tables[i] = t
	}
	return t
}

// NewReal is New for the current network namespace.
func NewReal(fam netrules.Family) (*Proxier, error) { return New(Options{Family: fam}) }

// bigBuffers lets a batch of MaxOps messages and their acknowledgements through
// without ENOBUFS (root may exceed the sysctl limits with the FORCE options).
func bigBuffers(c *netlink.Conn) error {
	rc, err := c.SyscallConn()
	if err != nil {
		return err
	}
	const size = 32 << 20
	var serr error
	if err := rc.Control(func(fd uintptr) {
		for _, o := range []int{unix.SO_SNDBUFFORCE, unix.SO_RCVBUFFORCE} {
			if e := unix.SetsockoptInt(int(fd), unix.SOL_SOCKET, o, size); e != nil {
				// without CAP_NET_ADMIN: as much as the sysctls allow
				_ = unix.SetsockoptInt(int(fd), unix.SOL_SOCKET, o-(unix.SO_SNDBUFFORCE-unix.SO_SNDBUF), size)
			}
		}
		_ = unix.SetsockoptInt(int(fd), unix.SOL_NETLINK, unix.NETLINK_EXT_ACK, 1)
	}); err != nil {
		return err
	}
	return serr
}

// Close releases the sockets.
func (p *Proxier) Close() error { return p.k.Close() }

func (n *nlKernel) Close() error {
	if n.conn != nil {
		_ = n.conn.CloseLasting()
	}
	if n.dconn != nil {
		_ = n.dconn.CloseLasting()
	}
	if n.gconn != nil {
		_ = n.gconn.Close()
	}
	if n.nsFd >= 0 {
		_ = unix.Close(n.nsFd)
		n.nsFd = -1
	}
	return nil
}

// generation reads nf_tables' ruleset generation (bumped by every commit, anyone's).
func (n *nlKernel) generation() (uint32, error) {
	msg := netlink.Message{
		Header: netlink.Header{Type: netlink.HeaderType(unix.NFNL_SUBSYS_NFTABLES<<8 | unix.NFT_MSG_GETGEN), Flags: netlink.Request},
		Data:   []byte{unix.AF_UNSPEC, unix.NFNETLINK_V0, 0, 0},
	}
	replies, err := n.gconn.Execute(msg)
	if err != nil {
		return 0, fmt.Errorf("reading the nf_tables generation: %w", err)
	}
	for _, r := range replies {
		if len(r.Data) < 4 {
			continue
		}
		ad, err := netlink.NewAttributeDecoder(r.Data[4:])
		if err != nil {
			return 0, err
		}
		ad.ByteOrder = binary.BigEndian
		for ad.Next() {
			if ad.Type() == unix.NFTA_GEN_ID {
				return ad.Uint32(), nil
			}
		}
	}
	return 0, errors.New("no generation in the kernel's answer")
}

func (p *Proxier) envFingerprint(node netrules.Node) string {
	return fmt.Sprint(p.env(node), node.LocalhostNodePorts)
}

// SyncState implements controllers.RulesBackend.
func (p *Proxier) SyncState(ctx context.Context, st *netrules.State, changed []string, full bool) (netrules.SyncStats, error) {
	now := p.opts.Now()
	stats := netrules.SyncStats{}
	if k := p.envFingerprint(st.Node); k != p.envKey {
		p.envKey = k
		p.needResync = true
	}
	if full && p.dumping != nil {
		p.catchUp(st) // a resync is reading the tables: changes go on meanwhile
	} else if full && !p.needResync {
		g, err := p.k.generation()
		if err != nil {
			return stats, fmt.Errorf("nftables: %w", err)
		}
		if !p.haveGen || g != p.lastGen {
			p.suspicious = true // someone else committed since our last batch
		}
		switch {
		case p.resyncing && p.suspicious:
			p.needResync = true // tampered with during the rewrite: start it again
		case p.resyncing:
			p.catchUp(st) // full calls come without changes
		default:
			p.fulls++
			if p.suspicious || p.fulls%p.opts.BackstopEvery == 0 {
				p.needResync = true
			} else {
				p.catchUp(st)
			}
		}
	}
	if p.needResync && p.dumping == nil {
		stats.Full = true
		if p.planner == nil || len(p.planner.applied) == 0 {
			// nothing programmed that a change could wait behind: read the tables now
			tables, err := p.k.dump()
			if err != nil {
				return stats, fmt.Errorf("nftables: %w", err)
			}
			p.startResync(st, tables)
		} else {
			// read the tables and Reset a fresh planner from them beside the worker
			np, raw, ch := p.newPlanner(st.Node), p.k.startDump(), make(chan prepared, 1)
			go func() {
				r := <-raw
				if r.err == nil {
					np.Reset(r.tables)
				}
				ch <- prepared{np, r.err}
			}()
			p.dumping, p.dumpLog, p.needResync = ch, nil, false
			p.catchUp(st) // a full call brings no changes: those since the last call go now
		}
	}
	for _, k := range changed {
		p.markDirty(k)
	}
	if p.dumping != nil {
		var r prepared
		got := false
		if len(p.dirty) == 0 {
			// nothing to do but watch the generation and wait a little (then the
			// caller comes back)
			g, err := p.k.generation()
			if err != nil {
				return stats, fmt.Errorf("nftables: %w", err)
			}
			if !p.haveGen || g != p.lastGen {
				p.dumpForeign = true
			}
			select {
			case r = <-p.dumping:
				got = true
			case <-time.After(dumpPoll):
			}
		} else {
			select {
			case r = <-p.dumping:
				got = true
			default:
			}
		}
		if got {
			log := p.dumpLog
			p.dumping, p.dumpLog = nil, nil
			if r.err != nil {
				p.needResync = true
				return stats, fmt.Errorf("nftables: %w", r.err)
			}
			// Services changed while the tables were read go first in the rewrite;
			// this call sends only them (and the fixed chains): Reset took its time
			t0 := time.Now()
			p.install(st, r.planner, log)
			p.lastReset, p.holdRepair = time.Since(t0), true
			// a foreign commit while the tables were read may not be in the listing:
			// the next full sync looks again
			p.suspicious, p.dumpForeign = p.dumpForeign, false
		}
	}
	ops, services := p.nextBatch(st, now)
	p.lastMainSend, p.lastExpiredSend = 0, 0
	if len(ops) > 0 {
		t0 := time.Now()
		err := p.send(ops)
		p.lastMainSend = time.Since(t0)
		if err != nil {
			p.needResync, p.resyncing = true, false
			return stats, fmt.Errorf("nftables: applying %d operations for %d Services: %w", len(ops), services, err)
		}
	}
	countOps(&stats, ops)
	// deleting chains costs the kernel a grace period: not in a call that carries
	// changes, unless they have waited long
	if len(ops) > 0 && !p.planner.StaleOlderThan(now, StaleFlushAfter) {
		stats.Pending = len(p.dirty) + len(p.repair)
		if (p.resyncing || p.dumping != nil) && stats.Pending == 0 {
			stats.Pending = 1
		}
		p.callAfter(&stats, now)
		return stats, nil
	}
	// (in small batches: deleting a resync's leftovers, tens of thousands of endpoint
	// map elements, must not hold the changes behind it)
	exp, moreExp := p.planner.ExpiredN(now, max(p.opts.MaxOps/4, 1))
	if len(exp) > 0 {
		t0 := time.Now()
		err := p.send(exp)
		p.lastExpiredSend = time.Since(t0)
		if err != nil {
			// something holds on to them (a foreign rule?): the next resync looks again
			p.suspicious = true
		} else {
			countOps(&stats, exp)
		}
	}
	stats.Pending = len(p.dirty) + len(p.repair)
	if (p.resyncing || p.dumping != nil || moreExp) && stats.Pending == 0 {
		stats.Pending = 1 // Finish, the read-back, or more deletions due
	}
	p.callAfter(&stats, now)
	return stats, nil
}

// callAfter asks the caller back when stale objects fall due (a call without changes
// deletes them), so that they do not wait for the next change and then hold it.
func (p *Proxier) callAfter(stats *netrules.SyncStats, now time.Time) {
	if stats.Pending > 0 {
		return
	}
	if d, ok := p.planner.StaleDue(now); ok {
		stats.CallAfter = max(d, time.Millisecond)
	}
}

// dumpPoll: how long a call with nothing to do waits for a running read-back.
const dumpPoll = 5 * time.Millisecond

func countOps(st *netrules.SyncStats, ops []Op) {
	for _, op := range ops {
		switch op.Kind {
		case OpAddRule:
			st.Rules++
		case OpFlushChain:
			st.ChainsWritten++
		case OpDelChain:
			st.ChainsDeleted++
		}
	}
}

func (p *Proxier) markDirty(k string) {
	if !p.isDirty[k] {
		p.isDirty[k] = true
		p.dirty = append(p.dirty, k)
	}
}

// catchUp marks dirty every Service whose State differs from what was applied
// (during a resync: of those already rewritten; the others are written from the State).
func (p *Proxier) catchUp(st *netrules.State) {
	st.Each(func(k string, ports []*netrules.ServicePort) {
		if p.resyncing && !p.done[k] && p.inRepair[k] {
			return // still to be written from the State
		}
		if !SamePorts(p.planner.Applied(k), ports) {
			p.markDirty(k)
		}
	})
	for _, k := range p.planner.AppliedServices() {
		if st.Ports(k) == nil {
			p.markDirty(k)
		}
	}
	for k := range p.planner.before {
		if st.Ports(k) == nil {
			p.markDirty(k) // deleted before its rewrite
		}
	}
}

// startResync starts over from what the tables hold and queues every Service for a
// rewrite; Services that differ from what was applied go first.
func (p *Proxier) startResync(st *netrules.State, tables []TableDump) {
	np := p.newPlanner(st.Node)
	np.Reset(tables)
	p.install(st, np, nil)
}

// newPlanner is an empty Planner for the node's environment and layouts.
func (p *Proxier) newPlanner(node netrules.Node) *Planner {
	env := p.env(node)
	np := &Planner{Env: env, Main: FixedLayout(p.opts.Family, node), Shard: ShardLayout(p.opts.Family, node)}
	np.Reset(nil)
	return np
}

// install makes np (Reset from a read-back) the planner, with the batches committed
// since the read-back began (log) replayed over it, and queues every Service.
func (p *Proxier) install(st *netrules.State, np *Planner, log []Op) {
	if p.planner != nil {
		st.Each(func(k string, ports []*netrules.ServicePort) {
			if !SamePorts(p.planner.Applied(k), ports) {
				p.markDirty(k)
			}
		})
		for _, k := range p.planner.AppliedServices() {
			if st.Ports(k) == nil {
				p.markDirty(k)
			}
		}
	}
	np.Adopt(p.planner, log)
	p.planner = np
	p.repair = st.Services()
	p.done, p.inRepair = make(map[string]bool, len(p.repair)), make(map[string]bool, len(p.repair))
	for _, k := range p.repair {
		p.inRepair[k] = true
	}
	p.needResync, p.resyncing, p.baseDue, p.suspicious = false, true, true, false
	p.bulk = !np.Resyncing() && len(np.elems) == 0 && len(np.ep) == 0
}

// nextBatch plans up to MaxOps operations: the base layout when due, dirty Services,
// then Services waiting for their rewrite, then the end of a resync.
func (p *Proxier) nextBatch(st *netrules.State, now time.Time) ([]Op, int) {
	var ops []Op
	n := 0
	limit := p.opts.MaxOps
	if p.resyncing && p.bulk {
		limit = p.opts.BulkMaxOps
	}
	if p.baseDue {
		ops = append(ops, p.planner.BaseOps()...)
		p.baseDue = false
	}
	for len(p.dirty) > 0 && len(ops) < limit {
		k := p.dirty[0]
		p.dirty = p.dirty[1:]
		delete(p.isDirty, k)
		ops = append(ops, p.planner.Plan(k, st.Ports(k), false, now)...)
		if p.done != nil {
			p.done[k] = true
		}
		n++
	}
	if len(p.dirty) == 0 {
		p.dirty = nil
	}
	// a batch with changes carries only them: the rewrite's next chunk waits for the
	// next call, so a change costs one small batch, not a chunk
	// (every other call at least: a steady stream of changes must not starve it)
	hold := p.holdRepair || n > 0 && !p.heldLast
	p.holdRepair, p.heldLast = false, hold && !p.holdRepair
	for p.resyncing && !hold && len(p.repair) > 0 && len(ops) < limit {
		k := p.repair[0]
		p.repair = p.repair[1:]
		if p.done[k] {
			continue
		}
		p.done[k] = true
		ops = append(ops, p.planner.Plan(k, st.Ports(k), true, now)...)
		n++
	}
	if p.resyncing && !hold && len(p.repair) == 0 && len(p.dirty) == 0 && len(ops) < limit {
		ops = append(ops, p.planner.Finish(now)...)
		p.resyncing, p.done, p.inRepair, p.bulk = false, nil, nil, false
	}
	return ops, n
}

// send applies ops as one batch (all or nothing), watching the generation.
func (p *Proxier) send(ops []Op) error {
	g0, err := p.k.generation()
	if err != nil {
		return err
	}
	if p.haveGen && g0 != p.lastGen {
		p.suspicious = true
		p.dumpForeign = p.dumpForeign || p.dumping != nil
	}
	if err := p.k.send(ops); err != nil {
		p.haveGen = false
		return err
	}
	g1, err := p.k.generation()
	if err != nil {
		p.haveGen = false
		return err
	}
	if g1 != g0+1 {
		p.suspicious = true
		p.dumpForeign = p.dumpForeign || p.dumping != nil
	}
	p.lastGen, p.haveGen = g1, true
	if p.dumping != nil {
		p.dumpLog = append(p.dumpLog, ops...)
	}
	return nil
}

func (n *nlKernel) send(ops []Op) error {
	start := time.Now()
	defer func() { n.lastSend = time.Since(start) }()
	if err := queueOps(n.conn, n.fam, n.table, ops); err != nil {
		_ = n.conn.Flush() // drop what was queued: it cannot be sent half
		return err
	}
	return n.conn.Flush()
}

func (n *nlKernel) startDump() <-chan dumpResult {
	ch := make(chan dumpResult, 1)
	go func() {
		t, err := n.dumpWith(n.dconn)
		ch <- dumpResult{t, err}
	}()
	return ch
}

func (n *nlKernel) dump() ([]TableDump, error) { return n.dumpWith(n.conn) }

// dumpWith reads the tables over conn (safe beside batches on another socket).
func (n *nlKernel) dumpWith(conn *nftables.Conn) ([]TableDump, error) {
	tabs, err := conn.ListTablesOfFamily(n.tf)
	if err != nil {
		return nil, fmt.Errorf("listing tables: %w", err)
	}
	var out []TableDump
	byName := map[string]int{}
	for _, t := range tabs {
		if i, ok := ParseTableName(t.Name); ok {
			byName[t.Name] = len(out)
			out = append(out, TableDump{Index: i, Elems: map[ElemKey]Verdict{}, EP: map[string]map[uint32]netip.AddrPort{}})
		}
	}
	if len(out) == 0 {
		return nil, nil
	}
	all, err := conn.ListChainsOfTableFamily(n.tf)
	if err != nil {
		return nil, fmt.Errorf("listing chains: %w", err)
	}
	for _, c := range all {
		if c.Table == nil {
			continue
		}
		if i, ok := byName[c.Table.Name]; ok {
			out[i].Chains = append(out[i].Chains, c.Name)
		}
	}
	for i := range out {
		d := &out[i]
		ss, err := conn.GetSets(&nftables.Table{Name: ShardTableName(d.Index), Family: n.tf})
		if err != nil {
			if errors.Is(err, syscall.ENOENT) || strings.Contains(err.Error(), "no such file") {
				continue // deleted meanwhile: the next resync sees it
			}
			return nil, fmt.Errorf("listing sets of %s: %w", ShardTableName(d.Index), err)
		}
		for _, s := range ss {
			if s.Anonymous || strings.HasPrefix(s.Name, "__") {
				continue
			}
			d.Sets = append(d.Sets, s.Name)
			m, fixed := mapIndex(s.Name)
			_, isEP := parseShardName(s.Name)
			if !fixed && !isEP {
				continue
			}
			es, err := conn.GetSetElements(s)
			if err != nil {
				return nil, fmt.Errorf("listing %s of %s: %w", s.Name, ShardTableName(d.Index), err)
			}
			if isEP {
				d.EP[s.Name] = map[uint32]netip.AddrPort{}
				for _, e := range es {
					if idx, v, ok := parseEndpointElem(e); ok {
						d.EP[s.Name][idx] = v
					}
				}
				continue
			}
			for _, e := range es {
				k, ok := parseElemKey(m, e.Key)
				v, vok := parseVerdict(e.VerdictData)
				if ok && vok {
					d.Elems[k] = v
				} else if ok {
					d.Elems[k] = Verdict{Kind: VerdictNone} // unknown: replaced
				}
			}
		}
		sort.Strings(d.Chains)
		sort.Strings(d.Sets)
	}
	return out, nil
}

// Cleanup deletes the whole table.
func (p *Proxier) Cleanup(ctx context.Context) error {
	p.needResync = true
	return p.k.deleteTable()
}

func (n *nlKernel) deleteTable() error {
	tabs, err := n.conn.ListTablesOfFamily(n.tf)
	if err != nil {
		return fmt.Errorf("listing tables: %w", err)
	}
	n.conn.AddTable(n.table(0))
	n.conn.DelTable(n.table(0))
	for _, t := range tabs {
		if i, ok := ParseTableName(t.Name); ok && i > 0 {
			n.conn.DelTable(n.table(i))
		}
	}
	return n.conn.Flush()
}

// env is the compile environment of the node with the Proxier's options.
func (p *Proxier) env(node netrules.Node) Env {
	e := EnvOf(p.opts.Family, node)
	e.Spread = p.opts.Spread
	e.ShardPorts = p.opts.ShardPorts
	e.TablePorts = p.opts.TablePorts
	return e
}
