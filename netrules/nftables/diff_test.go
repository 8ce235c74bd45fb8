package nftables

import (
	"fmt"
	"net/netip"
	"reflect"
	"slices"
	"sort"
	"strings"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	discoveryv1 "k8s.io/api/discovery/v1"

	"github.com/nodekeeper/nodekeeper/netrules"
)

// opText is an op in nft's words, led by its table unless that is shard 1 ("[main] "
// for the main table, "[nodekeeper-2] " for shard 2, …).
func opText(op Op, ipf string) string {
	switch op.Table {
	case 0:
		return "[main] " + opText1(op, ipf)
	case 1:
		return opText1(op, ipf)
	}
	return "[" + ShardTableName(op.Table) + "] " + opText1(op, ipf)
}

// newTestPlanner is NewPlanner with shard 1 in place (so the first Service's ops do
// not start with the shard's creation).
func newTestPlanner(env Env) *Planner {
	p := NewPlanner(env)
	p.table(1).created = true
	return p
}

func opText1(op Op, ipf string) string {
	switch op.Kind {
	case OpAddTable:
		return "add table"
	case OpAddMap:
		return "add map " + mapNames[op.Map]
	case OpAddBaseChain:
		return "add base chain " + op.Base.Name
	case OpAddChain:
		return "add chain " + op.Name
	case OpFlushChain:
		return "flush chain " + op.Name
	case OpDelChain:
		return "delete chain " + op.Name
	case OpAddRule:
		return "add rule " + op.Name + " " + op.Rule.Text(ipf)
	case OpAddSet:
		return "add set " + op.Name
	case OpDelSet:
		return "delete set " + op.Name
	case OpAddElem:
		if isPlainSet(op.Key.Map) {
			return fmt.Sprintf("add element %s { %s }", mapNames[op.Key.Map], op.Key.KeyText())
		}
		return fmt.Sprintf("add element %s { %s : %s }", mapNames[op.Key.Map], op.Key.KeyText(), op.Verdict)
	case OpDelElem:
		return fmt.Sprintf("delete element %s { %s }", mapNames[op.Key.Map], op.Key.KeyText())
	case OpAddEPMap:
		return "add map " + op.Name
	case OpAddEPElem:
		return fmt.Sprintf("add element %s { %d : %s . %d }", op.Name, op.Index, op.Endpoint.Addr(), op.Endpoint.Port())
	case OpDelEPElem:
		return fmt.Sprintf("delete element %s { %d }", op.Name, op.Index)
	}
	return fmt.Sprint(op.Kind)
}

func opsText(ops []Op) []string {
	var out []string
	for _, op := range ops {
		out = append(out, opText(op, "ip"))
	}
	return out
}

func portsOf(svc *corev1.Service, slices ...*discoveryv1.EndpointSlice) []*netrules.ServicePort {
	return netrules.BuildService(svc, slices, testNode)[netrules.IPv4]
}

// The operations of single changes, exactly.
func TestPlanOps(t *testing.T) {
	env := EnvOf(netrules.IPv4, testNode)
	env.Spread = SpreadAnonymous
	now := time.Unix(100, 0)
	web := netrules.MakeService("default", "web", "10.96.0.10", 80)
	local := netrules.SliceEndpoint{IP: "10.244.0.11", Node: testNode.Name}
	two := portsOf(web, netrules.MakeSlice(web, "w", 8080, local, netrules.SliceEndpoint{IP: "10.244.0.12"}))
	moved := portsOf(web, netrules.MakeSlice(web, "w", 8080, local, netrules.SliceEndpoint{IP: "10.244.0.13"}))
	sp := two[0]
	svcChain := serviceChain(sp)

	p := newTestPlanner(env)
	got := opsText(p.Plan("default/web", two, false, now))
	want := []string{
		"add chain " + svcChain,
		"add rule " + svcChain + " meta l4proto tcp dnat ip addr . port to numgen random mod 2 map { 0 : 10.244.0.11 . 8080, 1 : 10.244.0.12 . 8080 }",
		"add element service-ips { 10.96.0.10 . tcp . 80 : goto " + svcChain + " }",
		"add element masquerade-cluster-ips { 10.96.0.10 . tcp . 80 }",
		"[main] add element hairpin-connections { 10.244.0.11 . 10.244.0.11 . tcp . 8080 }",
	}
	if strings.Join(got, "\n") != strings.Join(want, "\n") {
		t.Errorf("new Service:\n%s\nwant\n%s", strings.Join(got, "\n"), strings.Join(want, "\n"))
	}
	if ops := p.Plan("default/web", two, false, now); len(ops) != 0 {
		t.Errorf("unchanged Service planned %v", opsText(ops))
	}
	// one endpoint moves: only the service chain is rewritten
	got = opsText(p.Plan("default/web", moved, false, now))
	want = []string{
		"flush chain " + svcChain,
		"add rule " + svcChain + " meta l4proto tcp dnat ip addr . port to numgen random mod 2 map { 0 : 10.244.0.11 . 8080, 1 : 10.244.0.13 . 8080 }",
	}
	if strings.Join(got, "\n") != strings.Join(want, "\n") {
		t.Errorf("endpoint moved:\n%s\nwant\n%s", strings.Join(got, "\n"), strings.Join(want, "\n"))
	}
	// the Service goes: elements deleted, its chain flushed
	got = opsText(p.Plan("default/web", nil, false, now))
	want = []string{
		"delete element service-ips { 10.96.0.10 . tcp . 80 }",
		"delete element masquerade-cluster-ips { 10.96.0.10 . tcp . 80 }",
		"[main] delete element hairpin-connections { 10.244.0.11 . 10.244.0.11 . tcp . 8080 }",
		"flush chain " + svcChain,
	}
	if strings.Join(got, "\n") != strings.Join(want, "\n") {
		t.Errorf("Service deleted:\n%s\nwant\n%s", strings.Join(got, "\n"), strings.Join(want, "\n"))
	}
	// the flushed chain is deleted only StaleDelay later, and only once
	if ops := p.Expired(now.Add(StaleDelay - time.Millisecond)); len(ops) != 0 {
		t.Errorf("deleted too early: %v", opsText(ops))
	}
	if got := opsText(p.Expired(now.Add(StaleDelay))); strings.Join(got, ",") != "delete chain "+svcChain {
		t.Errorf("expired: %v", got)
	}
	if ops := p.Expired(now.Add(time.Hour)); len(ops) != 0 {
		t.Errorf("deleted twice: %v", opsText(ops))
	}
}

// With the shared endpoint map, a moved endpoint is an element update only (no rule, so
// no validation of the table by the kernel); a port keeps its range while its endpoints
// fit and moves when they outgrow it; a range freed is reused; nothing leaks.
func TestPlanOpsSharedEndpointMap(t *testing.T) {
	env := EnvOf(netrules.IPv4, testNode)
	env.Spread = SpreadEndpointMaps
	now := time.Unix(100, 0)
	web := netrules.MakeService("default", "web", "10.96.0.10", 80)
	api := netrules.MakeService("default", "api", "10.96.0.11", 80)
	eps := func(ips ...string) []netrules.SliceEndpoint {
		var out []netrules.SliceEndpoint
		for _, ip := range ips {
			out = append(out, netrules.SliceEndpoint{IP: ip})
		}
		return out
	}
	ports := func(svc *corev1.Service, ips ...string) []*netrules.ServicePort {
		return portsOf(svc, netrules.MakeSlice(svc, svc.Name, 8080, eps(ips...)...))
	}
	webChain := serviceChain(ports(web, "10.244.0.1")[0])
	apiChain := serviceChain(ports(api, "10.244.0.1")[0])
	p := newTestPlanner(env)
	check := func(what string, got []Op, want ...string) {
		t.Helper()
		if g := strings.Join(opsText(got), "\n"); g != strings.Join(want, "\n") {
			t.Errorf("%s:\n%s\nwant\n%s", what, g, strings.Join(want, "\n"))
		}
	}
	check("new Service", p.Plan("default/web", ports(web, "10.244.0.1", "10.244.0.2"), false, now),
		"add map endpoints-0",
		"add element endpoints-0 { 0 : 10.244.0.1 . 8080 }",
		"add element endpoints-0 { 1 : 10.244.0.2 . 8080 }",
		"add chain "+webChain,
		"add rule "+webChain+" meta l4proto tcp dnat ip addr . port to numgen random mod 2 map @endpoints-0",
		"add element service-ips { 10.96.0.10 . tcp . 80 : goto "+webChain+" }",
		"add element masquerade-cluster-ips { 10.96.0.10 . tcp . 80 }")
	check("second Service, next range", p.Plan("default/api", ports(api, "10.244.1.1", "10.244.1.2"), false, now),
		"add element endpoints-0 { 4 : 10.244.1.1 . 8080 }",
		"add element endpoints-0 { 5 : 10.244.1.2 . 8080 }",
		"add chain "+apiChain,
		"add rule "+apiChain+" meta l4proto tcp dnat ip addr . port to numgen random mod 2 offset 4 map @endpoints-0",
		"add element service-ips { 10.96.0.11 . tcp . 80 : goto "+apiChain+" }",
		"add element masquerade-cluster-ips { 10.96.0.11 . tcp . 80 }")
	check("endpoint moved: elements only", p.Plan("default/web", ports(web, "10.244.0.1", "10.244.0.3"), false, now),
		"delete element endpoints-0 { 1 }",
		"add element endpoints-0 { 1 : 10.244.0.3 . 8080 }")
	check("grown within its range", p.Plan("default/web", ports(web, "10.244.0.1", "10.244.0.3", "10.244.0.4"), false, now),
		"add element endpoints-0 { 2 : 10.244.0.4 . 8080 }",
		"flush chain "+webChain,
		"add rule "+webChain+" meta l4proto tcp dnat ip addr . port to numgen random mod 3 map @endpoints-0")
	// an element a rule stops using is deleted StaleDelay later, never with the rule
	// change: a packet that entered the chain before the commit still runs the old rule,
	// but its lookup sees the map after it
	check("shrunk within its range: the last element unused, kept", p.Plan("default/web", ports(web, "10.244.0.1", "10.244.0.3"), false, now),
		"flush chain "+webChain,
		"add rule "+webChain+" meta l4proto tcp dnat ip addr . port to numgen random mod 2 map @endpoints-0")
	check("not expired yet", p.Expired(now.Add(StaleDelay/2)))
	check("grown again: the element written in place", p.Plan("default/web", ports(web, "10.244.0.1", "10.244.0.3", "10.244.0.7"), false, now),
		"delete element endpoints-0 { 2 }",
		"add element endpoints-0 { 2 : 10.244.0.7 . 8080 }",
		"flush chain "+webChain,
		"add rule "+webChain+" meta l4proto tcp dnat ip addr . port to numgen random mod 3 map @endpoints-0")
	check("in use again: nothing expires", p.Expired(now.Add(StaleDelay)))
	p.Plan("default/web", ports(web, "10.244.0.1", "10.244.0.3", "10.244.0.4"), false, now)
	got := p.Plan("default/web", ports(web, "10.244.0.1", "10.244.0.3", "10.244.0.4", "10.244.0.5", "10.244.0.6"), false, now)
	check("outgrown: a new range of 8, the old one freed", got,
		"add element endpoints-0 { 8 : 10.244.0.1 . 8080 }",
		"add element endpoints-0 { 9 : 10.244.0.3 . 8080 }",
		"add element endpoints-0 { 10 : 10.244.0.4 . 8080 }",
		"add element endpoints-0 { 11 : 10.244.0.5 . 8080 }",
		"add element endpoints-0 { 12 : 10.244.0.6 . 8080 }",
		"flush chain "+webChain,
		"add rule "+webChain+" meta l4proto tcp dnat ip addr . port to numgen random mod 5 offset 8 map @endpoints-0")
	other := netrules.MakeService("default", "other", "10.96.0.12", 80)
	otherOps := p.Plan("default/other", ports(other, "10.244.2.1", "10.244.2.2"), false, now)
	if g := strings.Join(opsText(otherOps), "\n"); !strings.Contains(g, "add element endpoints-0 { 16 : 10.244.2.1 . 8080 }") {
		t.Errorf("a range whose elements are not deleted yet is reused:\n%s", g)
	}
	later := now.Add(StaleDelay)
	check("a StaleDelay later: the freed range's elements deleted", p.Expired(later),
		"delete element endpoints-0 { 0 }",
		"delete element endpoints-0 { 1 }",
		"delete element endpoints-0 { 2 }")
	third := netrules.MakeService("default", "third", "10.96.0.13", 80)
	thirdOps := p.Plan("default/third", ports(third, "10.244.3.1", "10.244.3.2"), false, later)
	if g := strings.Join(opsText(thirdOps), "\n"); !strings.Contains(g, "add element endpoints-0 { 0 : 10.244.3.1 . 8080 }") || !strings.Contains(g, "mod 2 map @endpoints-0") {
		t.Errorf("the freed range is not reused once its elements are gone:\n%s", g)
	}
	check("one endpoint left: a plain dnat, the range freed", p.Plan("default/api", ports(api, "10.244.1.1"), false, later),
		"flush chain "+apiChain,
		"add rule "+apiChain+" meta l4proto tcp dnat to 10.244.1.1:8080")
	check("and its elements deleted a StaleDelay later", p.Expired(later.Add(StaleDelay)),
		"delete element endpoints-0 { 4 }",
		"delete element endpoints-0 { 5 }")
	for _, svc := range []string{"default/web", "default/api", "default/other", "default/third"} {
		p.Plan(svc, nil, false, later)
	}
	p.Expired(later.Add(StaleDelay))
	if len(p.ep) != 0 {
		t.Errorf("elements left after every Service went: %v", p.ep)
	}
	// a resync: what the kernel holds is kept until Finish, new ranges go above it
	p.Reset([]TableDump{{Index: 0}, {Index: 1, Sets: []string{"endpoints-0"}, EP: map[string]map[uint32]netip.AddrPort{"endpoints-0": {7: netip.MustParseAddrPort("10.9.9.9:80")}}}})
	check("after Reset", p.Plan("default/web", ports(web, "10.244.0.1", "10.244.0.2"), true, now),
		"add element endpoints-0 { 8 : 10.244.0.1 . 8080 }",
		"add element endpoints-0 { 9 : 10.244.0.2 . 8080 }",
		"add chain "+webChain,
		"flush chain "+webChain, // (a listing read during batches may miss a chain: every chain written is flushed until Finish)
		"add rule "+webChain+" meta l4proto tcp dnat ip addr . port to numgen random mod 2 offset 8 map @endpoints-0",
		"add element service-ips { 10.96.0.10 . tcp . 80 : goto "+webChain+" }",
		"add element masquerade-cluster-ips { 10.96.0.10 . tcp . 80 }")
	check("Finish: the old elements go stale (their rules may change in this batch)", p.Finish(now))
	if got := opsText(p.Expired(now.Add(StaleDelay))); !slices.Contains(got, "delete element endpoints-0 { 7 }") {
		t.Errorf("the resync's leftover element is not deleted a StaleDelay after Finish: %v", got)
	}
}

// With session affinity each endpoint keeps its chain and its set; a moved endpoint's
// chain and set go StaleDelay after the change.
func TestPlanOpsAffinity(t *testing.T) {
	env := EnvOf(netrules.IPv4, testNode)
	now := time.Unix(100, 0)
	web := netrules.MakeService("default", "web", "10.96.0.10", 80)
	web.Spec.SessionAffinity = corev1.ServiceAffinityClientIP
	two := portsOf(web, netrules.MakeSlice(web, "w", 8080, netrules.SliceEndpoint{IP: "10.244.0.11"}, netrules.SliceEndpoint{IP: "10.244.0.12"}))
	moved := portsOf(web, netrules.MakeSlice(web, "w", 8080, netrules.SliceEndpoint{IP: "10.244.0.11"}, netrules.SliceEndpoint{IP: "10.244.0.13"}))
	sp := two[0]
	svcChain := serviceChain(sp)
	e := func(ip string) netrules.Endpoint { return netrules.Endpoint{IP: netip.MustParseAddr(ip), Port: 8080} }
	ep := func(ip string) string { return endpointChain(sp, e(ip)) }
	set := func(ip string) string { return affinitySet(sp, e(ip)) }
	p := newTestPlanner(env)
	p.Plan("default/web", two, false, now)
	got := opsText(p.Plan("default/web", moved, false, now))
	want := []string{
		"add set " + set("10.244.0.13"),
		"flush chain " + svcChain,
		"add chain " + ep("10.244.0.13"),
		"add rule " + svcChain + " ip saddr @" + set("10.244.0.11") + " goto " + ep("10.244.0.11"),
		"add rule " + svcChain + " ip saddr @" + set("10.244.0.13") + " goto " + ep("10.244.0.13"),
		"add rule " + svcChain + " numgen random mod 2 0 goto " + ep("10.244.0.11"),
		"add rule " + svcChain + " goto " + ep("10.244.0.13"),
		"add rule " + ep("10.244.0.13") + " update @" + set("10.244.0.13") + " { ip saddr }",
		"add rule " + ep("10.244.0.13") + " meta l4proto tcp dnat to 10.244.0.13:8080",
		"flush chain " + ep("10.244.0.12"),
	}
	if strings.Join(got, "\n") != strings.Join(want, "\n") {
		t.Errorf("endpoint moved:\n%s\nwant\n%s", strings.Join(got, "\n"), strings.Join(want, "\n"))
	}
	got = opsText(p.Expired(now.Add(StaleDelay)))
	if strings.Join(got, ",") != "delete chain "+ep("10.244.0.12")+",delete set "+set("10.244.0.12") {
		t.Errorf("expired: %v", got)
	}
}

// Two Services claiming the same external IP and port: the one last by Key wins (as the
// whole-table rendering), and removing it hands the key to the other.
func TestOwnerIndexHandsKeyOver(t *testing.T) {
	env := EnvOf(netrules.IPv4, testNode)
	now := time.Unix(100, 0)
	mk := func(name, cip string) []*netrules.ServicePort {
		s := netrules.MakeService("default", name, cip, 80)
		s.Spec.ExternalIPs = []string{"198.51.100.1"}
		return portsOf(s, netrules.MakeSlice(s, name, 8080, netrules.SliceEndpoint{IP: "10.244.0.11"}))
	}
	a, b := mk("a", "10.96.0.1"), mk("b", "10.96.0.2")
	ext := func(ps []*netrules.ServicePort) string { return externalChain(ps[0]) }
	key := "service-ips { 198.51.100.1 . tcp . 80"
	for _, order := range [][2]string{{"a", "b"}, {"b", "a"}} {
		p := newTestPlanner(env)
		ports := map[string][]*netrules.ServicePort{"a": a, "b": b}
		var all []string
		for _, n := range order {
			all = append(all, opsText(p.Plan("default/"+n, ports[n], false, now))...)
		}
		if w, _ := p.winner(ElemKey{Map: MapServiceIPs, Addr: netip.MustParseAddr("198.51.100.1"), Proto: 6, Port: 80}); w.verdict.Chain != ext(b) {
			t.Errorf("order %v: winner %v, want b's", order, w)
		}
		// b goes: the key is a's
		got := strings.Join(opsText(p.Plan("default/b", nil, false, now)), "\n")
		if !strings.Contains(got, "delete element "+key+" }") || !strings.Contains(got, "add element "+key+" : goto "+ext(a)+" }") {
			t.Errorf("order %v: removing the winner:\n%s", order, got)
		}
		// and a going leaves nothing behind
		got = strings.Join(opsText(p.Plan("default/a", nil, false, now)), "\n")
		if !strings.Contains(got, "delete element "+key+" }") || len(p.elems) != 0 || len(p.owners) != 0 {
			t.Errorf("order %v: removing the last claimant:\n%s\nelems %v owners %v", order, got, p.elems, p.owners)
		}
	}
}

// Services fill shard tables of TablePorts ports: a new shard starts with its whole
// fixed layout; a key two Services in different shards claim lives in the winner's
// shard only and moves to the other's when the winner goes; a deleted Service's slot is
// reused; Reset puts a Service back into the shard where its chains are.
func TestPlanShardTables(t *testing.T) {
	env := EnvOf(netrules.IPv4, testNode)
	env.Spread, env.TablePorts = SpreadAnonymous, 1
	now := time.Unix(100, 0)
	mk := func(name, cip string) []*netrules.ServicePort {
		s := netrules.MakeService("default", name, cip, 80)
		s.Spec.ExternalIPs = []string{"198.51.100.1"}
		return portsOf(s, netrules.MakeSlice(s, name, 8080, netrules.SliceEndpoint{IP: "10.244.0.11"}))
	}
	a, b, c := mk("a", "10.96.0.1"), mk("b", "10.96.0.2"), mk("c", "10.96.0.3")
	p := NewPlanner(env)
	ops := p.Plan("default/a", a, false, now)
	want := opsText(TableOps(p.Shard, 1, nil))
	if got := opsText(ops); len(got) < len(want) || strings.Join(got[:len(want)], "\n") != strings.Join(want, "\n") {
		t.Fatalf("first Service does not start with shard 1's creation:\n%s", strings.Join(got, "\n"))
	}
	if strings.Join(want, "\n") != strings.Join([]string{
		"add table",
		"add map service-ips", "add map service-nodeports", "add map firewall-ips", "add map masquerade-cluster-ips",
		"add base chain nat-prerouting", "flush chain nat-prerouting", "add base chain nat-output", "flush chain nat-output",
		"add rule nat-prerouting ip saddr != 10.244.0.0/16 ip daddr . meta l4proto . th dport @masquerade-cluster-ips mark set mark or 0x00004000",
		"add rule nat-prerouting ip daddr . meta l4proto . th dport vmap @service-ips",
		"add rule nat-output ip saddr != 10.244.0.0/16 ip daddr . meta l4proto . th dport @masquerade-cluster-ips mark set mark or 0x00004000",
		"add rule nat-output ip daddr . meta l4proto . th dport vmap @service-ips",
	}, "\n") {
		t.Errorf("shard layout:\n%s", strings.Join(want, "\n"))
	}
	got := strings.Join(opsText(p.Plan("default/b", b, false, now)), "\n")
	if !strings.HasPrefix(got, "[nodekeeper-2] add table\n") {
		t.Errorf("second Service not in a new shard 2:\n%s", got)
	}
	key := "service-ips { 198.51.100.1 . tcp . 80"
	if !strings.Contains(got, "[nodekeeper-2] add element "+key+" : goto "+externalChain(b[0])+" }") ||
		!strings.Contains(got, "delete element "+key+" }") {
		t.Errorf("b (last by key) does not take the shared key into its shard:\n%s", got)
	}
	if strings.Contains(got, "[nodekeeper-2] delete element "+key) {
		t.Errorf("deleted from the wrong shard:\n%s", got)
	}
	got = strings.Join(opsText(p.Plan("default/b", nil, false, now)), "\n")
	if !strings.Contains(got, "[nodekeeper-2] delete element "+key+" }") || !strings.Contains(got, "\nadd element "+key+" : goto "+externalChain(a[0])+" }") {
		t.Errorf("b going does not hand the key back to a in shard 1:\n%s", got)
	}
	got = strings.Join(opsText(p.Plan("default/c", c, false, now)), "\n")
	if strings.Contains(got, "add table") || !strings.Contains(got, "[nodekeeper-2] add chain "+serviceChain(c[0])) {
		t.Errorf("c does not reuse shard 2's free slot:\n%s", got)
	}
	// a resync: c's chains are found in shard 2, so c goes back there although shard 1
	// has room
	p.Reset([]TableDump{{Index: 0}, {Index: 1}, {Index: 2, Chains: []string{serviceChain(c[0]), externalChain(c[0])}}})
	got = strings.Join(opsText(p.Plan("default/c", c, true, now)), "\n")
	if !strings.Contains(got, "[nodekeeper-2] flush chain "+serviceChain(c[0])) || strings.Contains(got, "add table") {
		t.Errorf("after Reset c is not rewritten in shard 2:\n%s", got)
	}
	if fin := strings.Join(opsText(p.Finish(now)), "\n"); fin != "" {
		t.Errorf("Finish after a complete rewrite: %s", fin)
	}
}

// A shard gets its node port base chains with its first node port element (before the
// element, in the same batch), a second NodePort Service adds none, and a resync that
// finds the shard's node port map empty deletes them; a shard without node ports never
// has them.
func TestPlanLazyNodePortChains(t *testing.T) {
	env := EnvOf(netrules.IPv4, testNode)
	env.Spread = SpreadAnonymous
	now := time.Unix(100, 0)
	mk := func(name, cip string, np int32) []*netrules.ServicePort {
		s := netrules.MakeService("default", name, cip, 80)
		if np > 0 {
			s.Spec.Type = corev1.ServiceTypeNodePort
			s.Spec.Ports[0].NodePort = np
		}
		return portsOf(s, netrules.MakeSlice(s, name, 8080, netrules.SliceEndpoint{IP: "10.244.0.11"}))
	}
	p := NewPlanner(env)
	count := func(ops []Op, what string) int {
		n := 0
		for _, l := range opsText(ops) {
			if strings.Contains(l, what) {
				n++
			}
		}
		return n
	}
	if ops := p.Plan("default/a", mk("a", "10.96.0.1", 0), false, now); count(ops, "ing-nodeports") != 0 {
		t.Fatalf("a ClusterIP Service made node port chains:\n%s", strings.Join(opsText(ops), "\n"))
	}
	ops := p.Plan("default/b", mk("b", "10.96.0.2", 30080), false, now)
	text := opsText(ops)
	chain, elem := -1, -1
	for i, l := range text {
		if l == "add base chain nat-prerouting-nodeports" && chain < 0 {
			chain = i
		}
		if strings.HasPrefix(l, "add element service-nodeports") {
			elem = i
		}
	}
	if chain < 0 || elem < 0 || chain > elem || count(ops, "add base chain nat-output-nodeports") != 1 ||
		count(ops, "add rule nat-prerouting-nodeports fib daddr type local") != 1 {
		t.Fatalf("first NodePort Service: node port chains not created before its element:\n%s", strings.Join(text, "\n"))
	}
	if ops := p.Plan("default/c", mk("c", "10.96.0.3", 30081), false, now); count(ops, "base chain") != 0 {
		t.Errorf("second NodePort Service created base chains again:\n%s", strings.Join(opsText(ops), "\n"))
	}
	if ops := p.BaseOps(); count(ops, "add base chain nat-prerouting-nodeports") != 1 {
		t.Errorf("BaseOps does not repair the shard's node port chains:\n%s", strings.Join(opsText(ops), "\n"))
	}
	// both NodePort Services go; a resync from what the kernel then holds drops the chains
	p.Plan("default/b", nil, false, now)
	p.Plan("default/c", nil, false, now)
	d := TableDump{Index: 1, Chains: []string{"nat-prerouting", "nat-output", "nat-prerouting-nodeports", "nat-output-nodeports"}, Elems: map[ElemKey]Verdict{}}
	p.Reset([]TableDump{{Index: 0, Elems: map[ElemKey]Verdict{}}, d})
	if ops := p.BaseOps(); count(ops, "add base chain nat-prerouting-nodeports") != 1 {
		t.Errorf("after Reset, BaseOps does not write the node port chains found:\n%s", strings.Join(opsText(ops), "\n"))
	}
	p.Plan("default/a", mk("a", "10.96.0.1", 0), true, now)
	fin := opsText(p.Finish(now))
	if !slices.Contains(fin, "delete chain nat-prerouting-nodeports") || !slices.Contains(fin, "delete chain nat-output-nodeports") {
		t.Errorf("Finish keeps the node port chains of an empty map:\n%s", strings.Join(fin, "\n"))
	}
	if ops := p.BaseOps(); count(ops, "ing-nodeports") != 0 {
		t.Errorf("node port chains still written after Finish:\n%s", strings.Join(opsText(ops), "\n"))
	}
}

// Replay (the oracle of Planner.Adopt) brings a listing of the tables up to date with batches sent (and committed)
// while it was being read: each operation sets an object to a value or removes it, so
// applying them in order over the listing gives what the kernel holds after the last,
// whenever the listing read each object. (Rules are not listed: nothing to do for them.)
func Replay(tables []TableDump, ops []Op) []TableDump {
	if len(ops) == 0 {
		return tables
	}
	byIndex := map[int]*TableDump{}
	for i := range tables {
		byIndex[tables[i].Index] = &tables[i]
	}
	get := func(t int) *TableDump {
		d := byIndex[t]
		if d == nil {
			tables = append(tables, TableDump{Index: t, Elems: map[ElemKey]Verdict{}, EP: map[string]map[uint32]netip.AddrPort{}})
			byIndex = map[int]*TableDump{}
			for i := range tables {
				byIndex[tables[i].Index] = &tables[i]
			}
			d = byIndex[t]
		}
		if d.Elems == nil {
			d.Elems = map[ElemKey]Verdict{}
		}
		if d.EP == nil {
			d.EP = map[string]map[uint32]netip.AddrPort{}
		}
		return d
	}
	add := func(list []string, name string) []string {
		if slices.Contains(list, name) {
			return list
		}
		return append(list, name)
	}
	del := func(list []string, name string) []string {
		return slices.DeleteFunc(list, func(s string) bool { return s == name })
	}
	for _, op := range ops {
		d := get(op.Table)
		switch op.Kind {
		case OpAddMap:
			d.Sets = add(d.Sets, mapNames[op.Map])
		case OpAddBaseChain:
			d.Chains = add(d.Chains, op.Base.Name)
		case OpAddChain:
			d.Chains = add(d.Chains, op.Name)
		case OpDelChain:
			d.Chains = del(d.Chains, op.Name)
		case OpAddSet:
			d.Sets = add(d.Sets, op.Name)
		case OpDelSet:
			d.Sets = del(d.Sets, op.Name)
			delete(d.EP, op.Name)
		case OpAddElem:
			d.Elems[op.Key] = op.Verdict
		case OpDelElem:
			delete(d.Elems, op.Key)
		case OpAddEPMap:
			d.Sets = add(d.Sets, op.Name)
			if d.EP[op.Name] == nil {
				d.EP[op.Name] = map[uint32]netip.AddrPort{}
			}
		case OpAddEPElem:
			if d.EP[op.Name] == nil {
				d.EP[op.Name] = map[uint32]netip.AddrPort{}
			}
			d.EP[op.Name][op.Index] = op.Endpoint
		case OpDelEPElem:
			delete(d.EP[op.Name], op.Index)
		}
	}
	for i := range tables {
		sort.Strings(tables[i].Chains)
		sort.Strings(tables[i].Sets)
	}
	sort.Slice(tables, func(i, j int) bool { return tables[i].Index < tables[j].Index })
	return tables
}

// Replay brings a listing up to date with operations committed while it was read,
// whether the listing saw an object before or after them; Adopt, which replays them over
// a Planner Reset from the listing, gives the Planner Reset from the replayed listing.
func TestReplay(t *testing.T) {
	k := ElemKey{Map: MapServiceIPs, Addr: netip.MustParseAddr("10.96.0.1"), Proto: 6, Port: 80}
	k2 := ElemKey{Map: MapServiceIPs, Addr: netip.MustParseAddr("10.96.0.2"), Proto: 6, Port: 80}
	ep := netip.MustParseAddrPort("10.244.0.1:8080")
	ops := []Op{
		{Kind: OpAddTable, Table: 2},
		{Kind: OpAddMap, Table: 2, Map: MapServiceIPs},
		{Kind: OpAddChain, Table: 1, Name: "service-new"},
		{Kind: OpFlushChain, Table: 1, Name: "service-old"},
		{Kind: OpDelChain, Table: 1, Name: "service-old"},
		{Kind: OpDelElem, Table: 1, Key: k},
		{Kind: OpAddElem, Table: 1, Key: k, Verdict: Verdict{Kind: VerdictGoto, Chain: "service-new"}},
		{Kind: OpDelElem, Table: 1, Key: k2},
		{Kind: OpAddEPMap, Table: 1, Name: "endpoints-1"},
		{Kind: OpAddEPElem, Table: 1, Name: "endpoints-1", Index: 3, Endpoint: ep},
		{Kind: OpDelEPElem, Table: 1, Name: "endpoints-0", Index: 0},
		{Kind: OpDelSet, Table: 1, Name: "affinity-x"},
	}
	before := func() []TableDump { // read before the batches
		return []TableDump{{Index: 0}, {Index: 1, Chains: []string{"nat-prerouting", "service-old"}, Sets: []string{"affinity-x", "endpoints-0"},
			Elems: map[ElemKey]Verdict{k: {Kind: VerdictGoto, Chain: "service-old"}, k2: {Kind: VerdictGoto, Chain: "service-two"}},
			EP:    map[string]map[uint32]netip.AddrPort{"endpoints-0": {0: ep}}}}
	}
	after := func() []TableDump { // read after them (table 2 too)
		return []TableDump{{Index: 0}, {Index: 1, Chains: []string{"nat-prerouting", "service-new"}, Sets: []string{"endpoints-0", "endpoints-1"},
			Elems: map[ElemKey]Verdict{k: {Kind: VerdictGoto, Chain: "service-new"}},
			EP:    map[string]map[uint32]netip.AddrPort{"endpoints-0": {}, "endpoints-1": {3: ep}}},
			{Index: 2, Sets: []string{mapServiceIPs}}}
	}
	show := func(ds []TableDump) string {
		var b strings.Builder
		for _, d := range ds {
			var elems, eps []string
			for k, v := range d.Elems {
				elems = append(elems, k.KeyText()+":"+v.Chain)
			}
			for m, es := range d.EP {
				for i, e := range es {
					eps = append(eps, fmt.Sprintf("%s[%d]=%v", m, i, e))
				}
			}
			sort.Strings(elems)
			sort.Strings(eps)
			fmt.Fprintf(&b, "%d chains %v sets %v elems %v ep %v\n", d.Index, d.Chains, d.Sets, elems, eps)
		}
		return b.String()
	}
	want := show(after())
	if got := show(Replay(before(), ops)); got != want {
		t.Errorf("listing read before the batches, replayed:\n%s\nwant\n%s", got, want)
	}
	if got := show(Replay(after(), ops)); got != want {
		t.Errorf("listing read after the batches, replayed:\n%s\nwant\n%s", got, want)
	}
	env := EnvOf(netrules.IPv4, testNode)
	prev := NewPlanner(env)
	web := netrules.MakeService("default", "web", "10.96.0.10", 80)
	prev.Plan("default/web", portsOf(web, netrules.MakeSlice(web, "w", 8080, netrules.SliceEndpoint{IP: "10.244.0.11"})), false, time.Unix(1, 0))
	for name, read := range map[string]func() []TableDump{"before": before, "after": after} {
		oracle := NewPlanner(env)
		oracle.Reset(Replay(read(), ops))
		oracle.before = prev.applied
		got := NewPlanner(env)
		got.Reset(read())
		got.Adopt(prev, ops)
		for what, pair := range map[string][2]any{
			"elems": {got.elems, oracle.elems}, "leftover": {got.leftover, oracle.leftover}, "leftoverAt": {got.leftoverAt, oracle.leftoverAt},
			"leftoverSets": {got.leftoverSets, oracle.leftoverSets}, "ep": {got.ep, oracle.ep}, "leftoverEP": {got.leftoverEP, oracle.leftoverEP},
			"tables": {got.tables, oracle.tables}, "before": {got.before, oracle.before}, "unsure": {got.unsure, oracle.unsure},
		} {
			if !reflect.DeepEqual(pair[0], pair[1]) {
				t.Errorf("read %s the batches: Adopt's %s %v, Reset of the replayed listing's %v", name, what, pair[0], pair[1])
			}
		}
		// the endpoint maps alike, but for the next index Adopt hands out, which may stay
		// above an element deleted meanwhile (never below one that exists)
		if len(got.shards) != len(oracle.shards) {
			t.Fatalf("read %s: %d endpoint maps, want %d", name, len(got.shards), len(oracle.shards))
		}
		for i, sh := range got.shards {
			o := oracle.shards[i]
			if sh.created != o.created || sh.table != o.table || sh.next < o.next {
				t.Errorf("read %s: endpoint map %d %+v, Reset of the replayed listing's %+v", name, i, *sh, *o)
			}
		}
	}
}

// A Service deleted during a resync, before its rewrite, goes at once: its chains
// found in the kernel are flushed and its ClusterIP's elements deleted (not at Finish).
func TestPlanDeletedBeforeRewrite(t *testing.T) {
	env := EnvOf(netrules.IPv4, testNode)
	env.Spread = SpreadAnonymous
	now := time.Unix(100, 0)
	s := netrules.MakeService("default", "gone", "10.96.0.7", 80)
	ports := portsOf(s, netrules.MakeSlice(s, "gone", 8080, netrules.SliceEndpoint{IP: "10.244.0.11"}))
	p := NewPlanner(env)
	p.Plan("default/gone", ports, false, now)
	chain := serviceChain(ports[0])
	key := ElemKey{Map: MapServiceIPs, Addr: netip.MustParseAddr("10.96.0.7"), Proto: 6, Port: 80}
	masq := ElemKey{Map: MapMasqKeys, Addr: netip.MustParseAddr("10.96.0.7"), Proto: 6, Port: 80}
	p.Reset([]TableDump{{Index: 0, Elems: map[ElemKey]Verdict{}},
		{Index: 1, Chains: []string{"nat-output", "nat-prerouting", chain}, Sets: []string{mapServiceIPs, setMasqKeys},
			Elems: map[ElemKey]Verdict{key: {Kind: VerdictGoto, Chain: chain}, masq: {}}}})
	got := opsText(p.Plan("default/gone", nil, false, now))
	for _, want := range []string{"flush chain " + chain, "delete element service-ips { 10.96.0.7 . tcp . 80 }", "delete element masquerade-cluster-ips { 10.96.0.7 . tcp . 80 }"} {
		if !slices.Contains(got, want) {
			t.Errorf("deleted before its rewrite: no %q in\n%s", want, strings.Join(got, "\n"))
		}
	}
	if fin := opsText(p.Finish(now)); slices.Contains(fin, "flush chain "+chain) || len(fin) != 0 && strings.Contains(strings.Join(fin, "\n"), "10.96.0.7") {
		t.Errorf("Finish removes the deleted Service again:\n%s", strings.Join(fin, "\n"))
	}
}
