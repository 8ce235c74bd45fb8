package iptables

import (
	"context"
	"flag"
	"net/netip"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	discoveryv1 "k8s.io/api/discovery/v1"

	"github.com/nodekeeper/nodekeeper/netrules"
)

var update = flag.Bool("update", false, "rewrite golden files")

var testNode = netrules.Node{Name: "n1", ClusterCIDRs: []netip.Prefix{netip.MustParsePrefix("10.244.0.0/16")}}

// scenario is a small cluster covering each rule family.
func scenario() ([]*corev1.Service, []*discoveryv1.EndpointSlice) {
	web := netrules.MakeService("default", "web", "10.96.0.10", 80)
	webEPs := netrules.MakeSlice(web, "web-1", 8080,
		netrules.SliceEndpoint{IP: "10.244.0.11", Node: "n1"}, netrules.SliceEndpoint{IP: "10.244.0.12", Node: "n1"},
		netrules.SliceEndpoint{IP: "10.244.0.13", Node: "n2"})
	empty := netrules.MakeService("default", "empty", "10.96.0.11", 80)
	np := netrules.MakeService("default", "np", "10.96.0.12", 80)
	np.Spec.Type = corev1.ServiceTypeNodePort
	np.Spec.Ports[0].NodePort = 30080
	np.Spec.ExternalTrafficPolicy = corev1.ServiceExternalTrafficPolicyLocal
	np.Spec.HealthCheckNodePort = 32000
	npEPs := netrules.MakeSlice(np, "np-1", 8080, netrules.SliceEndpoint{IP: "10.244.0.11", Node: "n1"}, netrules.SliceEndpoint{IP: "10.244.0.13", Node: "n2"})
	lb := netrules.MakeService("default", "lb", "10.96.0.13", 443)
	lb.Spec.Type = corev1.ServiceTypeLoadBalancer
	lb.Spec.Ports[0].NodePort = 30443
	lb.Spec.LoadBalancerSourceRanges = []string{"203.0.113.0/24"}
	lb.Status.LoadBalancer.Ingress = []corev1.LoadBalancerIngress{{IP: "198.51.100.7"}}
	lb.Spec.ExternalIPs = []string{"192.0.2.50"}
	lb.Spec.SessionAffinity = corev1.ServiceAffinityClientIP
	lbEPs := netrules.MakeSlice(lb, "lb-1", 8443, netrules.SliceEndpoint{IP: "10.244.0.12", Node: "n1"})
	dns := netrules.MakeService("kube-system", "dns", "10.96.0.53", 53)
	dns.Spec.Ports[0].Protocol = corev1.ProtocolUDP
	dns.Spec.Ports[0].Name = ""
	dnsEPs := netrules.MakeSlice(dns, "dns-1", 53, netrules.SliceEndpoint{IP: "10.244.0.20"})
	return []*corev1.Service{web, empty, np, lb, dns}, []*discoveryv1.EndpointSlice{webEPs, npEPs, lbEPs, dnsEPs}
}

func TestRenderGolden(t *testing.T) {
	svcs, slices := scenario()
	rs := netrules.Build(svcs, slices, testNode)[netrules.IPv4]
	r := Render(rs)
	got := Input(r.Filter, r.Filter.ServiceChains(), nil) + Input(r.NAT, r.NAT.ServiceChains(), nil)
	golden := filepath.Join("testdata", "scenario.golden")
	if *update {
		if err := os.WriteFile(golden, []byte(got), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	want, err := os.ReadFile(golden)
	if err != nil {
		t.Fatal(err)
	}
	if got != string(want) {
		t.Errorf("rendered rules differ from %s (run with -update after checking):\n%s", golden, got)
	}
}

func TestChainNamesMatchKubeProxy(t *testing.T) {
	// literal names from kube-proxy v1.37.2's pkg/proxy/iptables/proxier_test.go
	svc1 := &netrules.ServicePort{Namespace: "ns1", Name: "svc1", PortName: "p80", Protocol: corev1.ProtocolTCP}
	svc2 := &netrules.ServicePort{Namespace: "ns2", Name: "svc2", PortName: "p80", Protocol: corev1.ProtocolTCP}
	ep := netrules.Endpoint{IP: netip.MustParseAddr("10.180.0.1"), Port: 80}
	for _, c := range []struct{ got, want string }{
		{SvcChain(svc1), "KUBE-SVC-XPGD46QRK7WJZT7O"},
		{SepChain(svc1, ep), "KUBE-SEP-SXIVWICOYRO3J4NJ"},
		{SvcChain(svc2), "KUBE-SVC-GNZBNJ2PO5MGZ6GT"},
		{SvlChain(svc2), "KUBE-SVL-GNZBNJ2PO5MGZ6GT"},
		{ExtChain(svc2), "KUBE-EXT-GNZBNJ2PO5MGZ6GT"},
		{FwChain(svc2), "KUBE-FW-GNZBNJ2PO5MGZ6GT"},
	} {
		if c.got != c.want {
			t.Errorf("chain name %s, kube-proxy's is %s", c.got, c.want)
		}
	}
}

func portNamed(rs *netrules.Ruleset, name string) *netrules.ServicePort {
	for _, p := range rs.Ports {
		if p.Name == name {
			return p
		}
	}
	panic("no port " + name)
}

func newFakeProxier() (*Proxier, *Fake) {
	f := NewFake()
	return New(Options{Family: netrules.IPv4, Runner: f}), f
}

func TestSyncAgainstFake(t *testing.T) {
	ctx := context.Background()
	svcs, slices := scenario()
	p, f := newFakeProxier()
	st, err := p.Sync(ctx, netrules.Build(svcs, slices, testNode)[netrules.IPv4], false)
	if err != nil {
		t.Fatal(err)
	}
	if !st.Full {
		t.Error("first sync must be full")
	}
	nat := f.Dump("nat")
	for _, want := range []string{
		`-A PREROUTING -m comment --comment "kubernetes service portals" -j KUBE-SERVICES`,
		`-A POSTROUTING -m comment --comment "kubernetes postrouting rules" -j KUBE-POSTROUTING`,
		`-j DNAT --to-destination 10.244.0.11:8080`,
	} {
		if !strings.Contains(nat, want) {
			t.Errorf("nat table lacks %q:\n%s", want, nat)
		}
	}
	filter := f.Dump("filter")
	if !strings.Contains(filter, `"default/empty:p80 has no endpoints" -m tcp -p tcp -d 10.96.0.11/32 --dport 80 -j REJECT`) {
		t.Errorf("no REJECT for the Service without endpoints:\n%s", filter)
	}

	// a second sync with nothing changed runs no restore at all
	restores := f.Restores
	if _, err := p.Sync(ctx, netrules.Build(svcs, slices, testNode)[netrules.IPv4], false); err != nil {
		t.Fatal(err)
	}
	if f.Restores != restores {
		t.Errorf("an unchanged sync rewrote chains:\n%s", f.Inputs[len(f.Inputs)-1])
	}

	// one endpoint of web goes away: only web's chains are written, its SEP deleted
	webSvc := svcs[0]
	slices[0] = netrules.MakeSlice(webSvc, "web-1", 8080,
		netrules.SliceEndpoint{IP: "10.244.0.11", Node: "n1"}, netrules.SliceEndpoint{IP: "10.244.0.13", Node: "n2"})
	rs := netrules.Build(svcs, slices, testNode)[netrules.IPv4]
	if _, err := p.Sync(ctx, rs, false); err != nil {
		t.Fatal(err)
	}
	last := f.Inputs[len(f.Inputs)-1]
	webPort := portNamed(rs, "web")
	gone := SepChain(webPort, netrules.Endpoint{IP: netip.MustParseAddr("10.244.0.12"), Port: 8080})
	if !strings.Contains(last, ":"+SvcChain(webPort)) || !strings.Contains(last, "-X "+gone) {
		t.Errorf("partial sync did not rewrite web's chain and delete its stale endpoint:\n%s", last)
	}
	if strings.Contains(last, ":KUBE-SERVICES") || strings.Contains(last, ":KUBE-NODEPORTS") {
		t.Errorf("an endpoint change rewrote the dispatch chains, which did not change:\n%s", last)
	}
	npPort := portNamed(rs, "np")
	if strings.Contains(last, ":"+SvcChain(npPort)) {
		t.Errorf("partial sync rewrote an unchanged Service's chain %s", SvcChain(npPort))
	}
	for _, c := range f.Chains("nat") {
		if c == gone {
			t.Errorf("stale chain %s still present", c)
		}
	}
	// the lb endpoint 10.244.0.12 is still used by the lb Service
	lbPort := portNamed(rs, "lb")
	if rules := f.Rules("nat", SepChain(lbPort, netrules.Endpoint{IP: netip.MustParseAddr("10.244.0.12"), Port: 8443})); len(rules) == 0 {
		t.Error("lb's endpoint chain was lost")
	}
}

func TestFailedSyncChangesNothingAndNextIsFull(t *testing.T) {
	ctx := context.Background()
	svcs, slices := scenario()
	p, f := newFakeProxier()
	if _, err := p.Sync(ctx, netrules.Build(svcs, slices, testNode)[netrules.IPv4], false); err != nil {
		t.Fatal(err)
	}
	before := f.Dump("nat")
	f.FailNext = true
	if _, err := p.Sync(ctx, netrules.Build(svcs[:1], slices[:1], testNode)[netrules.IPv4], false); err == nil {
		t.Fatal("injected failure not reported")
	}
	if f.Dump("nat") != before {
		t.Error("a failed restore changed the table")
	}
	st, err := p.Sync(ctx, netrules.Build(svcs[:1], slices[:1], testNode)[netrules.IPv4], false)
	if err != nil {
		t.Fatal(err)
	}
	if !st.Full {
		t.Error("the sync after a failure must be full")
	}
	for _, c := range f.Chains("nat") {
		if strings.HasPrefix(c, "KUBE-FW-") || strings.HasPrefix(c, "KUBE-SVL-") {
			t.Errorf("stale chain %s survived the full sync", c)
		}
	}
}

func TestFullSyncRepairsHandDeletedRules(t *testing.T) {
	ctx := context.Background()
	svcs, slices := scenario()
	p, f := newFakeProxier()
	rs := netrules.Build(svcs, slices, testNode)[netrules.IPv4]
	if _, err := p.Sync(ctx, rs, false); err != nil {
		t.Fatal(err)
	}
	want := f.Dump("nat")
	// an operator flushes a SEP chain and removes the PREROUTING jump
	web := portNamed(rs, "web")
	sep := SepChain(web, web.ClusterEndpoints[0])
	if _, err := f.Run(ctx, nil, "iptables", "-t", "nat", "-F", sep); err != nil {
		t.Fatal(err)
	}
	if _, err := f.Run(ctx, nil, "iptables", "-t", "nat", "-D", "PREROUTING", "-m", "comment", "--comment", "kubernetes service portals", "-j", "KUBE-SERVICES"); err != nil {
		t.Fatal(err)
	}
	if _, err := p.Sync(ctx, rs, true); err != nil {
		t.Fatal(err)
	}
	if got := f.Dump("nat"); got != want {
		t.Errorf("full sync did not restore the rules:\nwant\n%s\ngot\n%s", want, got)
	}
}

// A periodic sync is partial, as kube-proxy's between its hourly full syncs: it writes
// the Services that differ from what was applied (the caller names none), rewrites the
// fixed chains (repairing a flushed KUBE-SERVICES) and nothing else.
func TestPeriodicSyncIsPartialAndRewritesTheFixedChains(t *testing.T) {
	ctx := context.Background()
	svcs, slices := scenario()
	p, f := newFakeProxier()
	st := netrules.NewState(netrules.IPv4, testNode)
	set := func() {
		rs := netrules.Build(svcs, slices, testNode)[netrules.IPv4]
		by := map[string][]*netrules.ServicePort{}
		for _, sp := range rs.Ports {
			k := sp.Namespace + "/" + sp.Name
			by[k] = append(by[k], sp)
		}
		for _, k := range st.Services() {
			if _, ok := by[k]; !ok {
				st.Set(k, nil)
			}
		}
		for k, ports := range by {
			if old := st.Ports(k); !equalPorts(old, ports) {
				st.Set(k, ports)
			}
		}
	}
	set()
	if s, err := p.SyncState(ctx, st, nil, true); err != nil || !s.Full {
		t.Fatalf("first sync: %+v %v, want full", s, err)
	}
	want := f.Dump("nat")
	if _, err := f.Run(ctx, nil, "iptables", "-t", "nat", "-F", ChainServices); err != nil {
		t.Fatal(err)
	}
	// web's endpoints change; the caller's periodic call names no Service
	slices[0] = netrules.MakeSlice(svcs[0], "web-1", 8080, netrules.SliceEndpoint{IP: "10.244.0.11", Node: "n1"})
	set()
	s, err := p.SyncState(ctx, st, nil, true)
	if err != nil {
		t.Fatal(err)
	}
	if s.Full {
		t.Error("a periodic sync within the hour was full")
	}
	last := f.Inputs[len(f.Inputs)-1]
	web := portNamed(netrules.Build(svcs, slices, testNode)[netrules.IPv4], "web")
	for _, c := range []string{ChainServices, ChainNodePorts, ChainPostrouting, ChainMarkMasq, ChainForward, SvcChain(web)} {
		if !strings.Contains(last, ":"+c+" ") {
			t.Errorf("the periodic sync did not write %s:\n%s", c, last)
		}
	}
	np := portNamed(netrules.Build(svcs, slices, testNode)[netrules.IPv4], "np")
	if strings.Contains(last, ":"+SvcChain(np)+" ") {
		t.Errorf("the periodic sync rewrote an unchanged Service's chains:\n%s", last)
	}
	if !strings.Contains(last, ":KUBE-SVCS-") || !strings.Contains(last, ":KUBE-NPORTS-") {
		t.Errorf("the periodic sync did not rewrite the buckets (every dispatch rule, as kube-proxy's KUBE-SERVICES):\n%s", last)
	}
	fresh, f2 := newFakeProxier()
	if _, err := fresh.SyncState(ctx, st, nil, true); err != nil {
		t.Fatal(err)
	}
	if got, wantNow := f.Dump("nat"), f2.Dump("nat"); got != wantNow {
		t.Errorf("after the periodic sync the nat table is not what a full sync gives:\n%s", lineDiff(got, wantNow))
	}
	if want == f.Dump("nat") {
		t.Error("the change did not reach the table")
	}
}

// Outside the large cluster mode a periodic sync is full once an hour has passed since
// the last full sync; in the large cluster mode never on its own (as upstream); a jump
// missing from a built-in chain makes the next periodic sync full at once.
func TestPeriodicFullSyncPolicy(t *testing.T) {
	defer func(v int) { largeCluster = v }(largeCluster)
	ctx := context.Background()
	svcs, slices := scenario()
	rs := netrules.Build(svcs, slices, testNode)[netrules.IPv4]
	for _, large := range []bool{false, true} {
		largeCluster = LargeClusterEndpoints
		if large {
			largeCluster = 2
		}
		now := time.Unix(1e9, 0)
		f := NewFake()
		p := New(Options{Family: netrules.IPv4, Runner: f, Now: func() time.Time { return now }})
		full := func() bool {
			t.Helper()
			s, err := p.Sync(ctx, rs, true)
			if err != nil {
				t.Fatal(err)
			}
			return s.Full
		}
		if !full() {
			t.Fatal("first sync not full")
		}
		now = now.Add(30 * time.Minute)
		if full() {
			t.Errorf("large=%v: periodic sync after 30 min was full", large)
		}
		now = now.Add(31 * time.Minute)
		if got := full(); got == large {
			t.Errorf("large=%v: periodic sync after 61 min: full=%v", large, got)
		}
		if _, err := f.Run(ctx, nil, "iptables", "-t", "nat", "-D", "PREROUTING", "-m", "comment", "--comment", "kubernetes service portals", "-j", "KUBE-SERVICES"); err != nil {
			t.Fatal(err)
		}
		want := NewFake()
		if _, err := New(Options{Family: netrules.IPv4, Runner: want}).Sync(ctx, rs, true); err != nil {
			t.Fatal(err)
		}
		if !full() {
			t.Errorf("large=%v: a missing jump did not make the periodic sync full", large)
		}
		if a, b := f.Dump("nat"), want.Dump("nat"); a != b {
			t.Errorf("large=%v: not repaired:\n%s", large, lineDiff(a, b))
		}
	}
}

func TestCleanupRemovesEverything(t *testing.T) {
	ctx := context.Background()
	svcs, slices := scenario()
	p, f := newFakeProxier()
	if _, err := p.Sync(ctx, netrules.Build(svcs, slices, testNode)[netrules.IPv4], false); err != nil {
		t.Fatal(err)
	}
	if err := p.Cleanup(ctx); err != nil {
		t.Fatal(err)
	}
	for _, table := range []string{"nat", "filter"} {
		if d := f.Dump(table); strings.Contains(d, "KUBE-") {
			t.Errorf("%s still has our rules:\n%s", table, d)
		}
	}
}

// A big first sync creates and fills the new chains ahead in small restores, and ends
// with exactly the tables one restore gives; a failure half-way is repaired by the next
// (full) sync.
func TestChunkedFullSyncEqualsOneRestore(t *testing.T) {
	ctx := context.Background()
	svcs, slices := scenario()
	rs := netrules.Build(svcs, slices, testNode)[netrules.IPv4]

	whole := NewFake()
	one := New(Options{Family: netrules.IPv4, Runner: whole, ChunkChains: -1})
	if _, err := one.Sync(ctx, rs, false); err != nil {
		t.Fatal(err)
	}
	chunked := NewFake()
	p := New(Options{Family: netrules.IPv4, Runner: chunked, ChunkChains: 2})
	st, err := p.Sync(ctx, rs, false)
	if err != nil {
		t.Fatal(err)
	}
	if chunked.Restores < 4 || whole.Restores != 1 {
		t.Errorf("restores: chunked %d, whole %d", chunked.Restores, whole.Restores)
	}
	for _, table := range []string{"nat", "filter"} {
		if a, b := chunked.Dump(table), whole.Dump(table); a != b {
			t.Errorf("%s differs:\nchunked:\n%s\nwhole:\n%s", table, a, b)
		}
	}
	if st.ChainsWritten == 0 {
		t.Error("no chains counted")
	}
	// only the last restore links the Services in: before it, nothing jumps to them
	last := chunked.Inputs[len(chunked.Inputs)-1]
	if !strings.Contains(last, ":KUBE-SERVICES") || strings.Contains(last, ":KUBE-SEP-") {
		t.Errorf("the last restore should write the dispatch chains only:\n%s", last)
	}
	for _, in := range chunked.Inputs[:len(chunked.Inputs)-1] {
		if strings.Contains(in, "-A KUBE-SERVICES") {
			t.Errorf("a chunk linked Services in early:\n%s", in)
		}
	}

	// the third chunk fails (chains declared, some filled, nothing linked): the error is
	// reported, nothing jumps to the leftovers, and the next (full) sync ends right
	failing := NewFake()
	q := New(Options{Family: netrules.IPv4, Runner: &failNth{Fake: failing, n: 3}, ChunkChains: 2})
	if _, err := q.Sync(ctx, rs, false); err == nil {
		t.Fatal("the failure was not reported")
	}
	if strings.Contains(failing.Dump("nat"), "-A KUBE-SERVICES") {
		t.Error("a failed chunked sync linked Services in")
	}
	if _, err := q.Sync(ctx, rs, false); err != nil {
		t.Fatal(err)
	}
	for _, table := range []string{"nat", "filter"} {
		if a, b := failing.Dump(table), whole.Dump(table); a != b {
			t.Errorf("after a failed chunk, %s differs:\n%s\nwant\n%s", table, a, b)
		}
	}
}

// A periodic full sync on iptables-nft rewrites the existing chains in chunks too; after
// every one of its restores, every chain reachable from the built-in chains jumps only
// to chains that are already complete (no half-programmed Service is ever reachable),
// and it ends where one restore ends.
func TestChunkedPeriodicFullSyncNeverExposesAnEmptyChain(t *testing.T) {
	ctx := context.Background()
	svcs, slices := scenario()
	rs := netrules.Build(svcs, slices, testNode)[netrules.IPv4]
	whole := NewFake()
	if _, err := New(Options{Family: netrules.IPv4, Runner: whole, ChunkChains: -1}).Sync(ctx, rs, true); err != nil {
		t.Fatal(err)
	}
	f := NewFake()
	now := time.Unix(1e9, 0)
	p := New(Options{Family: netrules.IPv4, Runner: f, ChunkChains: 2, Now: func() time.Time { return now }})
	if _, err := p.Sync(ctx, rs, true); err != nil {
		t.Fatal(err)
	}
	// an hour later (a periodic sync is then full) every Service changes (their
	// endpoints move) at once
	now = now.Add(DefaultFullResyncPeriod)
	byName := map[string]*corev1.Service{}
	for _, s := range svcs {
		byName[s.Name] = s
	}
	for i, s := range slices {
		slices[i] = netrules.MakeSlice(byName[s.Labels[discoveryv1.LabelServiceName]], s.Name, 9090, netrules.SliceEndpoint{IP: "10.244.0.31", Node: "n1"}, netrules.SliceEndpoint{IP: "10.244.0.32"})
	}
	// and a new NodePort Service lands in an existing node port bucket
	np2 := netrules.MakeService("default", "np2", "10.96.0.14", 80)
	np2.Spec.Type = corev1.ServiceTypeNodePort
	np2.Spec.Ports[0].NodePort = 30081
	svcs = append(svcs, np2)
	slices = append(slices, netrules.MakeSlice(np2, "np2-1", 8080, netrules.SliceEndpoint{IP: "10.244.0.33"}))
	rs = netrules.Build(svcs, slices, testNode)[netrules.IPv4]
	whole = NewFake()
	if _, err := New(Options{Family: netrules.IPv4, Runner: whole, ChunkChains: -1}).Sync(ctx, rs, true); err != nil {
		t.Fatal(err)
	}
	checked := &checkReachable{Fake: f, t: t}
	p.opts.Runner = checked
	before := f.Restores
	if _, err := p.Sync(ctx, rs, true); err != nil {
		t.Fatal(err)
	}
	if f.Restores-before < 4 {
		t.Errorf("the periodic full sync was not chunked (%d restores)", f.Restores-before)
	}
	if last := f.Inputs[len(f.Inputs)-1]; strings.Contains(last, "-A KUBE-SEP-") || strings.Contains(last, "-A KUBE-SVC-") {
		t.Errorf("the last restore should hold the dispatch chains and deletions only:\n%s", last)
	}
	for _, table := range tables {
		if a, b := f.Dump(table), whole.Dump(table); a != b {
			t.Errorf("%s differs:\n%s", table, lineDiff(a, b))
		}
	}
}

// checkReachable checks after each restore that every chain reachable from the
// built-in chains jumps only to non-empty chains.
type checkReachable struct {
	*Fake
	t *testing.T
}

func (c *checkReachable) Run(ctx context.Context, stdin []byte, name string, args ...string) ([]byte, error) {
	out, err := c.Fake.Run(ctx, stdin, name, args...)
	if err != nil || !strings.HasSuffix(name, "-restore") {
		return out, err
	}
	for _, table := range tables {
		seen := map[string]bool{}
		var walk func(chain string)
		walk = func(chain string) {
			if seen[chain] {
				return
			}
			seen[chain] = true
			for _, r := range c.Fake.Rules(table, chain) {
				tg := target(r)
				if tg == "" || builtinTargets[tg] {
					continue
				}
				if len(c.Fake.Rules(table, tg)) == 0 && IsServiceChain(tg) {
					c.t.Errorf("after restore %d: %s %s jumps to the empty chain %s", c.Fake.Restores, table, chain, tg)
				}
				walk(tg)
			}
		}
		for _, b := range builtinChains[table] {
			walk(b)
		}
	}
	return out, err
}

// failNth fails the n-th restore, as a kernel refusing it would.
type failNth struct {
	*Fake
	n, seen int
}

func (f *failNth) Run(ctx context.Context, stdin []byte, name string, args ...string) ([]byte, error) {
	if strings.HasSuffix(name, "-restore") && len(args) > 0 && args[len(args)-1] == "--noflush" {
		f.seen++
		if f.seen == f.n {
			f.FailNext = true
		}
	}
	return f.Fake.Run(ctx, stdin, name, args...)
}

type versionRunner string

func (v versionRunner) Run(context.Context, []byte, string, ...string) ([]byte, error) {
	return []byte(v), nil
}

// Chunking is for the nf_tables backend: iptables-legacy rewrites the whole table on
// every restore, so many small restores cost more than one.
func TestChunkingOnlyOnNFTables(t *testing.T) {
	ctx := context.Background()
	for _, tt := range []struct {
		variant Variant
		version string
		chunk   int
		want    bool
	}{
		{"legacy", "", 0, false},
		{"nft", "", 0, true},
		{"", "iptables v1.8.9 (nf_tables)", 0, true},
		{"", "iptables v1.8.9 (legacy)", 0, false},
		{"legacy", "", 5, true},
		{"nft", "", -1, false},
	} {
		p := New(Options{Variant: tt.variant, Runner: versionRunner(tt.version), ChunkChains: tt.chunk})
		if got := p.chunking(ctx); got != tt.want {
			t.Errorf("variant %q version %q chunk %d: %v, want %v", tt.variant, tt.version, tt.chunk, got, tt.want)
		}
	}
}

// A Service chain deleted from outside, with the bucket rule jumping to it (what
// `iptables-save | grep -v KUBE-SVC-X | iptables-restore` leaves), is repaired by the
// periodic syncs within the hour: the first rewrites every bucket, as kube-proxy
// rewrites KUBE-SERVICES, and fails on the jump to the missing chain; the next one is
// then full and re-creates it (found by the fault suite, test/fault).
func TestPeriodicSyncRepairsADeletedServiceChain(t *testing.T) {
	ctx := context.Background()
	svcs, slices := scenario()
	p, f := newFakeProxier()
	rs := netrules.Build(svcs, slices, testNode)[netrules.IPv4]
	st := netrules.NewState(netrules.IPv4, testNode)
	for _, sp := range rs.Ports {
		k := sp.Namespace + "/" + sp.Name
		st.Set(k, append(st.Ports(k), sp))
	}
	if s, err := p.SyncState(ctx, st, nil, true); err != nil || !s.Full {
		t.Fatalf("first sync: %+v %v, want full", s, err)
	}
	want := f.Dump("nat")
	svc := SvcChain(portNamed(rs, "web"))
	f.DeleteChain("nat", svc)
	if strings.Contains(f.Dump("nat"), svc) {
		for _, l := range strings.Split(f.Dump("nat"), "\n") {
			if strings.Contains(l, svc) {
				t.Errorf("%s still referenced: %s", svc, l)
			}
		}
		t.FailNow()
	}
	var err error
	for i := 0; i < 2; i++ {
		_, err = p.SyncState(ctx, st, nil, true)
	}
	if err != nil {
		t.Fatalf("second periodic sync: %v", err)
	}
	if got := f.Dump("nat"); got != want {
		t.Errorf("two periodic syncs did not repair the deleted chain:\n%s", lineDiff(got, want))
	}
}
