package bench

import (
	"context"
	"fmt"
	"io"
	"math/rand/v2"
	"net"
	"net/http"
	"slices"
	"sync"
	"sync/atomic"
	"time"

	"github.com/nodekeeper/nodekeeper/internal/netnstest"
)

// Metric names both agents export (kube-proxy's; nodekeeper uses the same).
const (
	MetricLastSync      = "kubeproxy_sync_proxy_rules_last_timestamp_seconds"
	MetricFullSyncCount = "kubeproxy_sync_full_proxy_rules_duration_seconds_count"
	MetricFullSyncSum   = "kubeproxy_sync_full_proxy_rules_duration_seconds_sum"
)

// RepairChanges are the changes aimed at one periodic full sync.
const RepairChanges = 10

// RunOptions configure one agent run at one size.
type RunOptions struct {
	AgentOptions
	NetNS   string
	APIAddr string // the apiserver's host:port (loopback), forwarded into the namespace
	World   *World
	// Watch, when set, is the reference watch that splits each latency into the API
	// server's part and the agent's.
	Watch *Watcher
	// Changes timed per phase, spread over Phase; Churn background endpoint moves per
	// second in the second phase (0: no churn phase).
	Changes int
	Phase   time.Duration
	Churn   float64
	// RepairRounds: periodic full syncs to aim RepairChanges changes at each, in a last
	// "repair" phase (0: none).
	RepairRounds     int
	ChangeTimeout    time.Duration
	FirstSyncTimeout time.Duration
	Logf             func(format string, args ...any)
}

// Change is one timed change.
type Change struct {
	Kind    string  `json:"kind"`
	Service string  `json:"service"`
	Latency float64 `json:"latencySeconds"` // API write sent → probe saw the kernel state
	// TimedOut: not seen within the change timeout (Latency is then the timeout).
	TimedOut bool `json:"timedOut,omitempty"`
	// DuringFull: the change was in flight while the agent ran a full sync (from its
	// kubeproxy_sync_full_proxy_rules_duration_seconds).
	DuringFull bool `json:"duringFullSync,omitempty"`
	// Written: API write sent → the write returned; Watched: → the reference watch got
	// the event (0: not seen). Latency − Watched is the agent's part.
	// At is when the write was sent (Unix seconds), to line a change up with logs.
	At         float64 `json:"at,omitempty"`
	Written    float64 `json:"writtenSeconds,omitempty"`
	Watched    float64 `json:"watchedSeconds,omitempty"`
	start, end time.Time
}

// Phase is one measured phase.
type Phase struct {
	Name    string   `json:"name"` // "idle", "churn" or "repair"
	Changes []Change `json:"changes"`
	Churn   int      `json:"churnChanges"` // background changes made
	// ChurnSeconds is how long the churn ran (the phase then waits for its changes).
	ChurnSeconds float64 `json:"churnSeconds,omitempty"`
	Duration     float64 `json:"seconds"`
	CPU          float64 `json:"cpuSeconds"` // agent utime+stime (+ reaped children) over the phase
}

// CPUPerChange is the agent's CPU over the phase divided by every change made in it.
func (p Phase) CPUPerChange() float64 {
	if n := len(p.Changes) + p.Churn; n > 0 {
		return p.CPU / float64(n)
	}
	return 0
}

// Window is one full sync seen in the agent's metrics.
type Window struct{ Start, End time.Time }

// Result is one agent at one size in one mode.
type Result struct {
	Agent    string `json:"agent"`
	Mode     string `json:"mode"`
	Services int    `json:"services"`
	Layout   string `json:"layout"`
	// FirstSync: agent start → end of its first sync (its last-sync metric), checked
	// against the kernel (every Service's chain present).
	FirstSync float64 `json:"firstSyncSeconds"`
	// FirstSyncSeen: agent start → the probe saw every Service's chain.
	FirstSyncSeen float64 `json:"firstSyncSeenSeconds"`
	Counts        Counts  `json:"kernelObjects"`
	Phases        []Phase `json:"phases"`
	FullSyncs     int     `json:"fullSyncsDuringPhases"`
	Memory        Memory  `json:"memory"` // at the end: VmRSS, VmHWM
	// ProbeRound is the mean time of one probe round (the latency resolution).
	ProbeRound float64 `json:"probeRoundSeconds"`
	Error      string  `json:"error,omitempty"`
}

type scrape struct {
	t                time.Time
	last, fullN, sum float64
	ok               bool
}

// scraper polls the agent's metrics inside its namespace.
type scraper struct {
	client *http.Client
	url    string
	mu     sync.Mutex
	s      []scrape
}

func newScraper(netns string) *scraper {
	tr := &http.Transport{DialContext: func(ctx context.Context, network, addr string) (net.Conn, error) {
		return netnstest.InNetns(netns, func() (net.Conn, error) {
			var d net.Dialer
			return d.DialContext(ctx, network, addr)
		})
	}, MaxIdleConns: 1}
	return &scraper{client: &http.Client{Transport: tr, Timeout: 5 * time.Second}, url: "http://" + MetricsAddr + "/metrics"}
}

func (s *scraper) once() scrape {
	sc := scrape{t: time.Now()}
	resp, err := s.client.Get(s.url)
	if err != nil {
		return sc
	}
	b, err := io.ReadAll(resp.Body)
	resp.Body.Close()
	if err != nil {
		return sc
	}
	m, err := ParseMetrics(string(b))
	if err != nil {
		return sc
	}
	sc.last, sc.ok = IPv4Value(m, MetricLastSync)
	sc.fullN, _ = IPv4Value(m, MetricFullSyncCount)
	sc.sum, _ = IPv4Value(m, MetricFullSyncSum)
	sc.t = time.Now()
	return sc
}

func (s *scraper) run(ctx context.Context, every time.Duration) {
	t := time.NewTicker(every)
	defer t.Stop()
	for {
		sc := s.once()
		s.mu.Lock()
		s.s = append(s.s, sc)
		s.mu.Unlock()
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
	}
}

func (s *scraper) latest() scrape {
	s.mu.Lock()
	defer s.mu.Unlock()
	for i := len(s.s) - 1; i >= 0; i-- {
		if s.s[i].ok {
			return s.s[i]
		}
	}
	return scrape{}
}

// FullSyncWindows turns successive scrapes into full-sync windows: when the count of
// full syncs grew, one ended at most one scrape interval before, lasting the growth of
// the duration sum.
func fullSyncWindows(ss []scrape) []Window {
	var out []Window
	var prev *scrape
	for i := range ss {
		s := &ss[i]
		if !s.ok {
			continue
		}
		if prev != nil && s.fullN > prev.fullN {
			d := time.Duration((s.sum - prev.sum) * float64(time.Second))
			out = append(out, Window{Start: prev.t.Add(-d), End: s.t})
		}
		prev = s
	}
	return out
}

// prober watches pending changes until the kernel shows them.
type prober struct {
	p       Probe
	timeout time.Duration
	mu      sync.Mutex
	pending []*pendingChange
	rounds  int
	busy    time.Duration
	err     error
}

type pendingChange struct {
	c      Change
	expect Expect
	done   func(Change)
	// seen: the kernel showed it (or it timed out) before its write returned; it is
	// done when written says how long the write took
	seen, writeReturned bool
}

// add starts watching for a change whose write is about to be sent.
func (pr *prober) add(c Change, e Expect, done func(Change)) *pendingChange {
	p := &pendingChange{c: c, expect: e, done: done}
	pr.mu.Lock()
	pr.pending = append(pr.pending, p)
	pr.mu.Unlock()
	return p
}

// written records how long the change's write took; a change already seen is done.
func (pr *prober) written(p *pendingChange, seconds float64) {
	pr.mu.Lock()
	p.c.Written = seconds
	p.writeReturned = true
	finish := p.seen
	if finish {
		pr.pending = slices.DeleteFunc(pr.pending, func(q *pendingChange) bool { return q == p })
	}
	pr.mu.Unlock()
	if finish {
		p.done(p.c)
	}
}

// drop forgets a change whose write failed; it reports whether it was still pending
// (its done was not called).
func (pr *prober) drop(p *pendingChange) bool {
	pr.mu.Lock()
	defer pr.mu.Unlock()
	n := len(pr.pending)
	pr.pending = slices.DeleteFunc(pr.pending, func(q *pendingChange) bool { return q == p })
	return len(pr.pending) < n
}

func (pr *prober) run(ctx context.Context) {
	for ctx.Err() == nil {
		pr.mu.Lock()
		var ps []*pendingChange
		for _, p := range pr.pending {
			if !p.seen {
				ps = append(ps, p)
			}
		}
		pr.mu.Unlock()
		if len(ps) == 0 {
			time.Sleep(2 * time.Millisecond)
			continue
		}
		es := make([]Expect, len(ps))
		for i, p := range ps {
			es[i] = p.expect
		}
		t0 := time.Now()
		ok, err := pr.p.Check(es)
		now := time.Now()
		pr.mu.Lock()
		pr.rounds++
		pr.busy += now.Sub(t0)
		if err != nil && pr.err == nil {
			pr.err = err
		}
		var finished []*pendingChange
		kept := pr.pending[:0]
		for _, p := range pr.pending {
			idx := -1
			for i, q := range ps {
				if q == p {
					idx = i
				}
			}
			switch {
			case p.seen:
				kept = append(kept, p) // waiting for its write to return
				continue
			case idx >= 0 && err == nil && ok[idx]:
			case now.Sub(p.c.start) > pr.timeout:
				p.c.TimedOut = true
			default:
				kept = append(kept, p)
				continue
			}
			p.c.end = now
			p.c.Latency = now.Sub(p.c.start).Seconds()
			if p.writeReturned {
				finished = append(finished, p)
			} else {
				p.seen = true
				kept = append(kept, p)
			}
		}
		pr.pending = kept
		pr.mu.Unlock()
		for _, p := range finished {
			p.done(p.c)
		}
		time.Sleep(time.Millisecond)
	}
}

// Run runs one agent in a fresh node namespace: first sync, kernel object count, an
// idle phase and a churn phase of timed changes. The namespace and the agent are gone
// when it returns; the World is restored by the caller.
func Run(ctx context.Context, o RunOptions) (res Result) {
	res = Result{Agent: o.Agent, Mode: o.Mode, Services: o.World.N}
	fail := func(err error) Result {
		res.Error = err.Error()
		return res
	}
	layouts, err := Layouts(o.Mode, o.Agent)
	if err != nil {
		return fail(err)
	}
	if err := NodeNS(o.NetNS); err != nil {
		return fail(err)
	}
	defer DeleteNS(o.NetNS)
	fwd, err := Forward(o.NetNS, o.APIAddr, o.APIAddr)
	if err != nil {
		return fail(err)
	}
	defer fwd.Close()

	agent, err := StartAgent(o.AgentOptions, o.NetNS)
	if err != nil {
		return fail(err)
	}
	defer agent.Stop()
	pid := agent.PID()
	rctx, cancel := context.WithCancel(ctx)
	defer cancel()
	sc := newScraper(o.NetNS)
	go sc.run(rctx, 200*time.Millisecond)

	// ---- first sync ----
	o.Logf("  %s %s: started (pid %d), waiting for the first sync of %d Services", o.Agent, o.Mode, pid, o.World.N)
	n := o.World.N
	var layout Layout
	var probe Probe
	deadline := time.Now().Add(o.FirstSyncTimeout)
	var seenTS float64
	lastLog := time.Now()
	for {
		if err := agent.Exited(); err != nil {
			return fail(err)
		}
		if time.Now().After(deadline) {
			return fail(fmt.Errorf("no complete first sync within %s (log %s)", o.FirstSyncTimeout, agent.Log))
		}
		if err := ctx.Err(); err != nil {
			return fail(err)
		}
		if time.Since(lastLog) > 30*time.Second {
			o.Logf("  %s %s: still waiting for the first sync (%.0fs)", o.Agent, o.Mode, time.Since(agent.Start).Seconds())
			lastLog = time.Now()
		}
		s := sc.latest()
		if !s.ok || s.last == 0 || s.last == seenTS {
			time.Sleep(100 * time.Millisecond)
			continue
		}
		seenTS = s.last
		if probe == nil {
			// the naming: the first layout whose chain for Service 0 exists
			for _, l := range layouts {
				p, err := NewProbe(o.NetNS, l)
				if err != nil {
					return fail(err)
				}
				e := Edit{Kind: KindCreated, Service: ServiceName(0), Endpoint: EndpointIP(0, 0)}.Expect(l)
				ok, err := p.Check([]Expect{e})
				if err == nil && ok[0] {
					layout, probe = l, p
					break
				}
				p.Close()
			}
			if probe == nil {
				continue // not Service 0 yet (or an unknown naming: the deadline tells)
			}
			defer probe.Close()
			res.Layout = layout.Desc
		}
		names := make([]string, 0, n)
		for i := 0; i < n; i++ {
			names = append(names, layout.ServiceChain(Port(ServiceName(i))))
		}
		miss, err := probe.Missing(names)
		if err != nil {
			return fail(err)
		}
		if miss == 0 {
			res.FirstSync = seenTS - float64(agent.Start.UnixNano())/1e9
			res.FirstSyncSeen = time.Since(agent.Start).Seconds()
			break
		}
		o.Logf("  %s %s: a sync ended with %d of %d Services missing; waiting for the next", o.Agent, o.Mode, miss, n)
	}
	mem, _ := ProcMemory(pid)
	o.Logf("  %s %s: first sync %.2fs (probe saw it at %.2fs), RSS %d MiB; %s", o.Agent, o.Mode, res.FirstSync, res.FirstSyncSeen, mem.RSSKiB/1024, layout.Desc)
	if c, err := CountKernel(o.NetNS, o.Mode); err != nil {
		o.Logf("  counting kernel objects: %v", err)
	} else {
		res.Counts = c
	}
	time.Sleep(3 * time.Second) // let follow-up syncs pass

	// ---- phases ----
	pr := &prober{p: probe, timeout: o.ChangeTimeout}
	go pr.run(rctx)
	phaseStart := time.Now()
	phases := []string{"idle"}
	if o.Churn > 0 {
		phases = append(phases, "churn")
	}
	if o.RepairRounds > 0 {
		phases = append(phases, "repair")
	}
	for _, name := range phases {
		if err := agent.Exited(); err != nil {
			return fail(err)
		}
		var times []time.Time
		stopTamper := func() {}
		if name == "repair" {
			if o.Agent == "nodekeeper" && o.Mode == "nftables" {
				// its periodic syncs are generation checks; one after a foreign commit is a
				// full rewrite, the repair the changes are aimed at
				stopTamper = o.tamper(rctx, sc)
			}
			sc.mu.Lock()
			ws := fullSyncWindows(sc.s)
			sc.mu.Unlock()
			times = repairSchedule(ws, agent.Start, time.Now(), o.SyncPeriod, o.RepairRounds, RepairChanges)
		} else {
			times = uniform(time.Now(), o.Changes, o.Phase)
		}
		ph, err := runPhase(rctx, o, name, times, name == "churn", layout, pr, pid)
		stopTamper()
		res.Phases = append(res.Phases, ph)
		if err != nil {
			return fail(err)
		}
		o.Logf("  %s %s %s: %d changes, %d churn, p50 %.3fs p99 %.3fs max %.3fs, CPU %.2fs", o.Agent, o.Mode, name,
			len(ph.Changes), ph.Churn, Summarize(latencies(ph.Changes)).P50, Summarize(latencies(ph.Changes)).P99,
			Summarize(latencies(ph.Changes)).Max, ph.CPU)
	}
	if pr.err != nil {
		return fail(pr.err)
	}
	if err := agent.Exited(); err != nil {
		return fail(err)
	}
	res.Memory, _ = ProcMemory(pid)
	pr.mu.Lock()
	if pr.rounds > 0 {
		res.ProbeRound = pr.busy.Seconds() / float64(pr.rounds)
	}
	pr.mu.Unlock()
	// which changes were in flight during a full sync
	sc.mu.Lock()
	ws := fullSyncWindows(sc.s)
	sc.mu.Unlock()
	for _, w := range ws {
		if w.End.After(phaseStart) {
			res.FullSyncs++
		}
	}
	for pi := range res.Phases {
		for ci := range res.Phases[pi].Changes {
			c := &res.Phases[pi].Changes[ci]
			for _, w := range ws {
				if w.Start.Before(c.end) && w.End.After(c.start) {
					c.DuringFull = true
				}
			}
		}
	}
	return res
}

func latencies(cs []Change) []float64 {
	out := make([]float64, 0, len(cs))
	for _, c := range cs {
		out = append(out, c.Latency)
	}
	return out
}

// tamper commits to nf_tables in the node's netns from outside the agent every few
// seconds (a table of its own, added and deleted: the agent's tables are not touched, but
// the ruleset generation moves, so the agent's next periodic sync is a full rewrite, as
// after tampering), and waits until a full sync shows in the agent's metrics (at most two
// sync periods), so the repair phase can aim at the next. The returned func stops it.
func (o RunOptions) tamper(ctx context.Context, sc *scraper) func() {
	tctx, cancel := context.WithCancel(ctx)
	done := make(chan struct{})
	commit := func() {
		if err := netnstest.Run(o.NetNS, "nft", "add table ip nkbench-tamper; delete table ip nkbench-tamper"); err != nil {
			o.Logf("  tampering: %v", err)
		}
	}
	go func() {
		defer close(done)
		t := time.NewTicker(5 * time.Second)
		defer t.Stop()
		for {
			commit()
			select {
			case <-tctx.Done():
				return
			case <-t.C:
			}
		}
	}()
	from := time.Now()
	for deadline := from.Add(2*o.SyncPeriod + 10*time.Second); time.Now().Before(deadline) && ctx.Err() == nil; time.Sleep(500 * time.Millisecond) {
		sc.mu.Lock()
		ws := fullSyncWindows(sc.s)
		sc.mu.Unlock()
		if len(ws) > 0 && ws[len(ws)-1].End.After(from) {
			o.Logf("  %s %s: a full rewrite after a foreign commit took %.2fs", o.Agent, o.Mode, ws[len(ws)-1].End.Sub(ws[len(ws)-1].Start).Seconds())
			break
		}
	}
	return func() { cancel(); <-done }
}

// uniform spreads n change times over d from t0, one at a random point of each slot.
func uniform(t0 time.Time, n int, d time.Duration) []time.Time {
	rng := rand.New(rand.NewPCG(uint64(t0.UnixNano()), 7))
	slot := d / time.Duration(max(n, 1))
	out := make([]time.Time, n)
	for k := range out {
		out[k] = t0.Add(time.Duration(k)*slot + time.Duration((0.1+0.8*rng.Float64())*float64(slot)))
	}
	return out
}

// repairSchedule aims changes at the agent's next periodic full syncs: from the last full
// sync seen (start S, length d) the next one is due at S + k·period; per round, changes
// are spread over [due − 0.3 s, due + 2d + 0.3 s]. Without a full sync seen (kube-proxy
// runs one only at start and hourly) they are spread over one period.
func repairSchedule(ws []Window, after, now time.Time, period time.Duration, rounds, perRound int) []time.Time {
	var last *Window
	for i := range ws {
		if ws[i].Start.After(after) {
			last = &ws[i]
		}
	}
	if last == nil {
		return uniform(now.Add(time.Second), rounds*perRound, time.Duration(rounds)*period)
	}
	d := last.End.Sub(last.Start)
	due := last.Start.Add(period)
	for due.Add(-300 * time.Millisecond).Before(now.Add(500 * time.Millisecond)) {
		due = due.Add(period)
	}
	var out []time.Time
	for r := 0; r < rounds; r++ {
		from := due.Add(time.Duration(r)*period - 300*time.Millisecond)
		out = append(out, uniform(from, perRound, 2*d+600*time.Millisecond)...)
	}
	return out
}

// runPhase makes timed changes at the given times (with background churn when churn is
// set) and waits for them all to be seen or to time out.
func runPhase(ctx context.Context, o RunOptions, name string, times []time.Time, churn bool, l Layout, pr *prober, pid int) (Phase, error) {
	ph := Phase{Name: name}
	var mu sync.Mutex
	cpu0, err := ProcCPU(pid)
	if err != nil {
		return ph, err
	}
	t0 := time.Now()
	cctx, stopChurn := context.WithCancel(ctx)
	var churnWG sync.WaitGroup
	var churnErr error
	if churn {
		churnWG.Add(1)
		go func() {
			defer churnWG.Done()
			tick := time.NewTicker(time.Duration(float64(time.Second) / o.Churn))
			defer tick.Stop()
			for {
				select {
				case <-cctx.Done():
					return
				case <-tick.C:
				}
				e, err := o.World.Do(cctx, KindMoved, func(Edit) {})
				if err != nil {
					if cctx.Err() == nil && churnErr == nil {
						churnErr = err
					}
					continue
				}
				o.World.Release(e.Service)
				mu.Lock()
				ph.Churn++
				mu.Unlock()
			}
		}()
	}
	var writeErr error
	var inFlight atomic.Int64
	for _, at := range times {
		if ctx.Err() != nil {
			break
		}
		time.Sleep(time.Until(at))
		kind := o.World.Kind()
		var start time.Time
		var pc *pendingChange
		// the probe watches from the moment the write is sent: a change the agent puts
		// in the kernel before the API server's answer arrives counts from the write
		_, err := o.World.Do(ctx, kind, func(e Edit) {
			start = time.Now()
			inFlight.Add(1)
			pc = pr.add(Change{Kind: kind, Service: e.Service, start: start, At: float64(start.UnixNano()) / 1e9}, e.Expect(l), func(c Change) {
				o.World.Release(c.Service)
				mu.Lock()
				ph.Changes = append(ph.Changes, c)
				mu.Unlock()
				inFlight.Add(-1)
			})
		})
		if err != nil {
			if pc != nil && pr.drop(pc) {
				inFlight.Add(-1)
			}
			writeErr = err
			break
		}
		pr.written(pc, time.Since(start).Seconds())
	}
	stopChurn()
	churnWG.Wait()
	if churn {
		ph.ChurnSeconds = time.Since(t0).Seconds()
	}
	for inFlight.Load() > 0 && ctx.Err() == nil {
		time.Sleep(20 * time.Millisecond)
	}
	cpu1, _ := ProcCPU(pid)
	ph.CPU = cpu1 - cpu0
	mu.Lock()
	for i := range ph.Changes {
		c := &ph.Changes[i]
		if at, ok := o.Watch.After(watchKeyOf(*c), c.start); ok {
			c.Watched = at.Sub(c.start).Seconds()
		}
	}
	mu.Unlock()
	ph.Duration = time.Since(t0).Seconds()
	if writeErr == nil {
		writeErr = churnErr
	}
	return ph, writeErr
}
