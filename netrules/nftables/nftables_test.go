package nftables

import (
	"context"
	"fmt"
	"math/rand"
	"net/netip"
	"os"
	"os/exec"
	"regexp"
	"sort"
	"strconv"
	"strings"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	discoveryv1 "k8s.io/api/discovery/v1"

	"github.com/nodekeeper/nodekeeper/netrules"
)

var testNode = netrules.Node{Name: "n1", ClusterCIDRs: []netip.Prefix{netip.MustParsePrefix("10.244.0.0/16")}}

func scenario() ([]*corev1.Service, []*discoveryv1.EndpointSlice) {
	web := netrules.MakeService("default", "web", "10.96.0.10", 80)
	webEPs := netrules.MakeSlice(web, "web-1", 8080, netrules.SliceEndpoint{IP: "10.244.0.11", Node: "n1"}, netrules.SliceEndpoint{IP: "10.244.0.12", Node: "n2"})
	empty := netrules.MakeService("default", "empty", "10.96.0.11", 80)
	np := netrules.MakeService("default", "np", "10.96.0.12", 80)
	np.Spec.Type = corev1.ServiceTypeNodePort
	np.Spec.Ports[0].NodePort = 30080
	np.Spec.ExternalTrafficPolicy = corev1.ServiceExternalTrafficPolicyLocal
	npEPs := netrules.MakeSlice(np, "np-1", 8080, netrules.SliceEndpoint{IP: "10.244.0.11", Node: "n1"}, netrules.SliceEndpoint{IP: "10.244.0.13", Node: "n2"})
	lb := netrules.MakeService("default", "lb", "10.96.0.13", 443)
	lb.Spec.Type = corev1.ServiceTypeLoadBalancer
	lb.Spec.Ports[0].NodePort = 30443
	lb.Spec.LoadBalancerSourceRanges = []string{"203.0.113.0/24"}
	lb.Status.LoadBalancer.Ingress = []corev1.LoadBalancerIngress{{IP: "198.51.100.7"}}
	lb.Spec.SessionAffinity = corev1.ServiceAffinityClientIP
	lbEPs := netrules.MakeSlice(lb, "lb-1", 8443, netrules.SliceEndpoint{IP: "10.244.0.12", Node: "n1"})
	udp := netrules.MakeService("kube-system", "dns", "10.96.0.14", 53)
	udp.Spec.Ports[0].Protocol = corev1.ProtocolUDP
	udp.Spec.ExternalIPs = []string{"198.51.100.9"}
	udpEPs := netrules.MakeSlice(udp, "dns-1", 5353, netrules.SliceEndpoint{IP: "10.244.1.2", Node: "n2"}, netrules.SliceEndpoint{IP: "10.244.1.3", Node: "n2"}, netrules.SliceEndpoint{IP: "10.244.1.4", Node: "n2"})
	return []*corev1.Service{web, empty, np, lb, udp}, []*discoveryv1.EndpointSlice{webEPs, npEPs, lbEPs, udpEPs}
}

// stateOf fills a State from a Ruleset, Service by Service.
func stateOf(rs *netrules.Ruleset) *netrules.State {
	st := netrules.NewState(rs.Family, rs.Node)
	by := map[string][]*netrules.ServicePort{}
	for _, p := range rs.Ports {
		k := p.Namespace + "/" + p.Name
		by[k] = append(by[k], p)
	}
	for k, ps := range by {
		st.Set(k, ps)
	}
	return st
}

// Render (the union of per-port artifacts, shared keys to the last port) gives exactly
// the whole-table text rendering nodekeeper used before.
func TestRenderMatchesOracle(t *testing.T) {
	nodes := []netrules.Node{
		{Name: "me", ClusterCIDRs: []netip.Prefix{netip.MustParsePrefix("10.244.0.0/16"), netip.MustParsePrefix("fd01::/48")}},
		{Name: "me", MasqueradeAll: true},
		{Name: "me", ClusterCIDRs: []netip.Prefix{netip.MustParsePrefix("10.244.0.0/16"), netip.MustParsePrefix("10.245.0.0/16")}},
		{Name: "me"},
	}
	for seed := int64(0); seed < 300; seed++ {
		r := rand.New(rand.NewSource(seed))
		w := netrules.NewWorld("me")
		for i := 0; i < 40; i++ {
			w.Step(r)
		}
		svcs, slices := w.Objects()
		node := nodes[int(seed)%len(nodes)]
		for fam, rs := range netrules.Build(svcs, slices, node) {
			got, want := Render(rs), oracleRender(rs)
			ipf := ipFamily(fam)
			if len(got.Chains) != len(want.Chains) {
				t.Fatalf("seed %d IPv%d: %d chains, oracle %d", seed, fam, len(got.Chains), len(want.Chains))
			}
			for c, rules := range want.Chains {
				var texts []string
				for i := range got.Chains[c] {
					texts = append(texts, got.Chains[c][i].Text(ipf))
				}
				if strings.Join(texts, "\n") != strings.Join(rules, "\n") {
					t.Fatalf("seed %d chain %s:\n%s\noracle:\n%s", seed, c, strings.Join(texts, "\n"), strings.Join(rules, "\n"))
				}
			}
			n := 0
			for m, elems := range want.Elements {
				for k, v := range elems {
					n++
					found := false
					for gk, gv := range got.Elements {
						if mapNames[gk.Map] == m && gk.KeyText() == k {
							found = true
							if gv.String() != v {
								t.Fatalf("seed %d %s[%s] = %s, oracle %s", seed, m, k, gv, v)
							}
						}
					}
					if !found {
						t.Fatalf("seed %d: %s[%s] missing", seed, m, k)
					}
				}
			}
			if n != len(got.Elements) {
				t.Fatalf("seed %d: %d elements, oracle %d", seed, len(got.Elements), n)
			}
			if fmt.Sprint(got.Sets) != fmt.Sprint(want.Sets) {
				t.Fatalf("seed %d sets %v, oracle %v", seed, got.Sets, want.Sets)
			}
		}
	}
}

// --- kernel tests (root, in throwaway network namespaces) ---

func needRoot(t *testing.T) {
	t.Helper()
	if os.Geteuid() != 0 {
		t.Skip("needs root (network namespaces)")
	}
	if _, err := exec.LookPath("nft"); err != nil {
		t.Skip("nft not installed")
	}
}

func netns(t *testing.T) string {
	t.Helper()
	prefix := "nk-nft"
	if p := os.Getenv("NK_TEST_NETNS_PREFIX"); p != "" {
		prefix = p
	}
	name := fmt.Sprintf("%s-%d-%d", prefix, os.Getpid(), rand.Int63()%1000000)
	if out, err := exec.Command("ip", "netns", "add", name).CombinedOutput(); err != nil {
		t.Fatalf("ip netns add: %v: %s", err, out)
	}
	t.Cleanup(func() { _ = exec.Command("ip", "netns", "del", name).Run() })
	return name
}

func nft(t *testing.T, ns string, stdin string, args ...string) string {
	t.Helper()
	cmd := exec.Command("ip", append([]string{"netns", "exec", ns, "nft"}, args...)...)
	if stdin != "" {
		cmd.Stdin = strings.NewReader(stdin)
	}
	out, err := cmd.CombinedOutput()
	if err != nil {
		t.Fatalf("nft %v: %v: %s", args, err, out)
	}
	return string(out)
}

// tableNames lists nodekeeper's tables of the family in the namespace, main first.
func tableNames(t *testing.T, ns string, fam netrules.Family) []string {
	t.Helper()
	var idx []int
	for _, l := range strings.Split(nft(t, ns, "", "list", "tables", ipFamily(fam)), "\n") {
		f := strings.Fields(l)
		if len(f) == 3 && f[0] == "table" {
			if i, ok := ParseTableName(f[2]); ok {
				idx = append(idx, i)
			}
		}
	}
	sort.Ints(idx)
	var out []string
	for _, i := range idx {
		out = append(out, ShardTableName(i))
	}
	return out
}

// listTable is `nft list table` of each of nodekeeper's tables of the family, in order.
func listTable(t *testing.T, ns string, fam netrules.Family) string {
	var b strings.Builder
	for _, name := range tableNames(t, ns, fam) {
		b.WriteString(nft(t, ns, "", "list", "table", ipFamily(fam), name))
	}
	return b.String()
}

// perTable is NormalizeListing of each table on its own, the table's name leading.
func perTable(s string) string {
	var out []string
	for _, part := range strings.SplitAfter(s, "\n}\n") {
		if strings.TrimSpace(part) == "" {
			continue
		}
		head, _, _ := strings.Cut(strings.TrimSpace(part), "\n")
		out = append(out, head+"\n"+NormalizeListing(part))
	}
	return strings.Join(out, "\n")
}

// mergedListing is NormalizeListing of several tables' listings as one table: blocks
// that two tables hold alike once (a shard's fixed chains), a map's elements over all
// its tables together (how Services fall into shards is the Planner's business; what
// the kernel does with them is the same).
//
// The shards' fixed chains are left out (the golden test checks them): a shard left
// empty by deletions stays, so two tables with the same Services may have different
// numbers of shards; so are maps and sets without elements.
func mergedListing(s string) string {
	shard := ShardLayout(netrules.IPv4, netrules.Node{})
	var blocks []string
	for _, part := range strings.SplitAfter(s, "\n}\n") {
		head, _, _ := strings.Cut(strings.TrimSpace(part), "\n")
		f := strings.Fields(head)
		inShard := false
		if len(f) >= 3 {
			i, ok := ParseTableName(f[2])
			inShard = ok && i > 0
		}
		lines := strings.Split(NormalizeListing(part), "\n")
		for i := 0; i < len(lines); i++ {
			l := lines[i]
			name, isChain := strings.CutPrefix(l, "chain ")
			name = strings.TrimSuffix(name, " {")
			drop := isChain && inShard && shard.fixedName(name)
			isSet := strings.HasPrefix(l, "map ") || strings.HasPrefix(l, "set ")
			j := i + 1
			hasElems := false
			for ; j < len(lines) && lines[j] != "}"; j++ {
				hasElems = hasElems || strings.HasPrefix(lines[j], "elements = {")
			}
			if drop || isSet && !hasElems {
				i = j
				continue
			}
			if l != "" {
				blocks = append(blocks, l)
			}
		}
	}
	// NormalizeListing joins each block's lines with "\n": split on block heads again
	var groups [][]string
	for _, l := range blocks {
		if strings.HasSuffix(l, "{") && !strings.HasPrefix(l, "elements") && (strings.HasPrefix(l, "chain ") || strings.HasPrefix(l, "map ") || strings.HasPrefix(l, "set ")) {
			groups = append(groups, []string{l})
			continue
		}
		if len(groups) > 0 {
			groups[len(groups)-1] = append(groups[len(groups)-1], l)
		}
	}
	type merged struct {
		rest  []string
		elems map[string]bool
	}
	byHead := map[string]*merged{}
	var heads []string
	for _, g := range groups {
		if strings.HasPrefix(g[0], "chain ") {
			// a chain: the same block in several tables once (the main table and a
			// shard may both have a chain of a name, with different rules)
			whole := strings.Join(g, "\n")
			if byHead[whole] == nil {
				byHead[whole] = &merged{elems: map[string]bool{}}
				heads = append(heads, whole)
			}
			continue
		}
		m := byHead[g[0]]
		if m == nil {
			m = &merged{elems: map[string]bool{}}
			byHead[g[0]] = m
			heads = append(heads, g[0])
		}
		var rest []string
		for _, l := range g[1:] {
			if inner, ok := strings.CutPrefix(l, "elements = { "); ok {
				for _, e := range strings.Split(strings.TrimSuffix(inner, " }"), ", ") {
					m.elems[e] = true
				}
				continue
			}
			rest = append(rest, l)
		}
		if m.rest == nil || strings.Join(m.rest, "\n") == strings.Join(rest, "\n") {
			m.rest = rest
		} else {
			m.rest = append(m.rest, rest...) // differs: shown
		}
	}
	sort.Strings(heads)
	var out []string
	for _, h := range heads {
		m := byHead[h]
		out = append(out, h)
		if len(m.elems) > 0 {
			out = append(out, "elements = { "+strings.Join(sortedKeys(m.elems), ", ")+" }")
		}
		out = append(out, m.rest...)
	}
	return strings.Join(out, "\n")
}

func nsProxier(t *testing.T, ns string, fam netrules.Family, maxOps int, epMaps bool) *Proxier {
	return nsProxierShards(t, ns, fam, maxOps, epMaps, 0)
}

// nsProxierShards is nsProxier with tablePorts Service ports per shard table (0: the
// default).
func nsProxierShards(t *testing.T, ns string, fam netrules.Family, maxOps int, epMaps bool, tablePorts int) *Proxier {
	t.Helper()
	p, err := New(Options{Family: fam, NetNS: "/run/netns/" + ns, MaxOps: maxOps, Spread: spreadOf(epMaps), ShardPorts: shardPortsForTest(), TablePorts: tablePorts})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { p.Close() })
	return p
}

// syncAll calls SyncState until no work is pending.
func syncAll(t *testing.T, p *Proxier, st *netrules.State, changed []string, full bool) {
	t.Helper()
	for i := 0; ; i++ {
		stats, err := p.SyncState(context.Background(), st, changed, full)
		if err != nil {
			t.Fatal(err)
		}
		if stats.Pending == 0 {
			return
		}
		if i > 100000 {
			t.Fatal("sync never finishes")
		}
		changed, full = nil, false
	}
}

// fullText is the script of the tables a fresh full sync of rs writes (the main table
// and the shards, as a fresh Planner fills them in the Proxier's order).
func fullText(rs *netrules.Ruleset, epMaps bool, tablePorts int) string {
	env := EnvOf(rs.Family, rs.Node)
	env.Spread = spreadOf(epMaps)
	env.ShardPorts, env.TablePorts = shardPortsForTest(), tablePorts
	p := NewPlanner(env)
	p.Main, p.Shard = FixedLayout(rs.Family, rs.Node), ShardLayout(rs.Family, rs.Node)
	p.BaseOps() // (the main table is there from the first batch on)
	byService := map[string][]*netrules.ServicePort{}
	for _, sp := range rs.Ports {
		k := sp.Namespace + "/" + sp.Name
		byService[k] = append(byService[k], sp)
	}
	ds := map[int]*Desired{}
	d := func(i int) *Desired {
		if ds[i] == nil {
			ds[i] = &Desired{Chains: map[string][]Rule{}, Elements: map[ElemKey]Verdict{}, Sets: map[string]int32{}, Endpoints: map[string]map[uint32]netip.AddrPort{}}
		}
		return ds[i]
	}
	d(0)
	for _, k := range sortedKeys(byService) {
		for _, op := range p.Plan(k, byService[k], false, time.Unix(0, 0)) {
			t := d(op.Table)
			switch op.Kind {
			case OpAddChain, OpFlushChain:
				if !p.layout(op.Table).fixedName(op.Name) {
					t.Chains[op.Name] = []Rule{}
				}
			case OpAddRule:
				if !p.layout(op.Table).fixedName(op.Name) {
					t.Chains[op.Name] = append(t.Chains[op.Name], *op.Rule)
				}
			case OpAddSet:
				t.Sets[op.Name] = op.Timeout
			case OpAddElem:
				t.Elements[op.Key] = op.Verdict
			case OpDelElem:
				delete(t.Elements, op.Key)
			case OpAddEPMap:
				t.Endpoints[op.Name] = map[uint32]netip.AddrPort{}
			case OpAddEPElem:
				t.Endpoints[op.Name][op.Index] = op.Endpoint
			case OpDelEPElem:
				delete(t.Endpoints[op.Name], op.Index)
			}
		}
	}
	var b strings.Builder
	for _, i := range p.Tables() {
		b.WriteString(TableText(rs.Family, ShardTableName(i), p.layout(i).Present(p.table(i).hasLazy), *d(i)))
	}
	return b.String()
}

// The netlink encoding is what nft generates for the same rules: a table programmed
// over netlink lists exactly like one loaded from the rule text by nft.
func TestGoldenAgainstNft(t *testing.T) {
	needRoot(t)
	svcs, slices := scenario()
	v6 := netrules.MakeService("default", "v6", "fd00::10", 80)
	v6.Spec.ClusterIPs = []string{"fd00::10"}
	v6.Spec.Type = corev1.ServiceTypeLoadBalancer
	v6.Spec.Ports[0].NodePort = 30090
	v6.Status.LoadBalancer.Ingress = []corev1.LoadBalancerIngress{{IP: "2001:db8::7"}}
	v6.Spec.LoadBalancerSourceRanges = []string{"2001:db8:1::/48", "2001:db8:2::/48"}
	v6.Spec.SessionAffinity = corev1.ServiceAffinityClientIP
	svcs = append(svcs, v6)
	slices = append(slices, netrules.MakeSlice(v6, "v6-1", 8080, netrules.SliceEndpoint{IP: "fd00:244::2", Node: "n1"}, netrules.SliceEndpoint{IP: "fd00:244::3"}))
	v6b := netrules.MakeService("default", "v6b", "fd00::11", 53)
	v6b.Spec.ClusterIPs = []string{"fd00::11"}
	v6b.Spec.Ports[0].Protocol = corev1.ProtocolUDP
	svcs = append(svcs, v6b)
	slices = append(slices, netrules.MakeSlice(v6b, "v6b-1", 5353, netrules.SliceEndpoint{IP: "fd00:244::4"}, netrules.SliceEndpoint{IP: "fd00:244::5"}, netrules.SliceEndpoint{IP: "fd00:244::6"}))
	nodes := []netrules.Node{
		{Name: "n1", ClusterCIDRs: []netip.Prefix{netip.MustParsePrefix("10.244.0.0/16"), netip.MustParsePrefix("10.250.0.0/20"), netip.MustParsePrefix("fd00:244::/64")}},
		{Name: "n1", MasqueradeAll: true, LocalhostNodePorts: true},
	}
	for i, node := range nodes {
		for fam, rs := range netrules.Build(svcs, slices, node) {
			for _, c := range []struct {
				epMaps     bool
				tablePorts int
			}{{false, 0}, {true, 0}, {true, 2}} {
				epMaps := c.epMaps
				t.Run(fmt.Sprintf("node%d/IPv%d/maps=%v/tablePorts=%d", i, fam, epMaps, c.tablePorts), func(t *testing.T) {
					byNetlink, byNft := netns(t), netns(t)
					syncAll(t, nsProxierShards(t, byNetlink, fam, 0, epMaps, c.tablePorts), stateOf(rs), nil, true)
					text := fullText(rs, epMaps, c.tablePorts)
					nft(t, byNft, text, "-f", "-")
					got, want := listTable(t, byNetlink, fam), listTable(t, byNft, fam)
					g, w := perTable(epMapType.ReplaceAllString(got, "ENDPOINT-MAP-TYPE")), perTable(epMapType.ReplaceAllString(want, "ENDPOINT-MAP-TYPE"))
					if g != w {
						t.Errorf("netlink table differs from nft's:\n%s\n--- nft:\n%s\n--- diff:\n%s", got, want, lineDiff(g, w))
					}
					if !strings.Contains(got, "goto service-") && len(rs.Ports) > 0 {
						t.Errorf("no dispatch in\n%s", got)
					}
					if epMaps && !strings.Contains(got, " map @endpoints-") {
						t.Errorf("no endpoint map in\n%s", got)
					}
				})
			}
		}
	}
}

// epMapType is an endpoint map's type line, which the listing takes from the set's
// user data: nft's text loads it with `typeof numgen … : ip daddr . tcp dport` (a
// display hint nft stores as user data, which google/nftables cannot send), netlink
// creates the same kernel set (32-bit integer key, address . service data) whose
// listing then says "type 0 : ipv4_addr . inet_service". The elements and the rules
// using the map must list alike.
var epMapType = regexp.MustCompile(`(typeof numgen random mod 1 : ip6? daddr \. (tcp|udp|sctp) dport|typeof numgen random mod 1 : ip6? daddr \. th dport|type 0 : ipv[46]_addr \. inet_service)`)

func lineDiff(a, b string) string {
	in := func(s string) map[string]bool {
		m := map[string]bool{}
		for _, l := range strings.Split(s, "\n") {
			m[l] = true
		}
		return m
	}
	ma, mb := in(a), in(b)
	var out []string
	for l := range ma {
		if !mb[l] {
			out = append(out, "- "+l)
		}
	}
	for l := range mb {
		if !ma[l] {
			out = append(out, "+ "+l)
		}
	}
	return strings.Join(out, "\n")
}

// spreadOf is the layout of a test: the endpoint maps, or the canonical form
// (NK_NFT_CASCADE=1: the cascade).
func spreadOf(epMaps bool) Spread {
	switch {
	case epMaps:
		return SpreadEndpointMaps
	case os.Getenv("NK_NFT_CASCADE") == "1":
		return SpreadCascade
	}
	return SpreadAnonymous
}

// shardPortsForTest: NK_NFT_SHARD sets the ports per endpoint map (default: the
// proxier's own).
func shardPortsForTest() int {
	n, _ := strconv.Atoi(os.Getenv("NK_NFT_SHARD"))
	return n
}
