package nftables

import (
	"net/netip"
	"sort"
	"strings"

	"github.com/nodekeeper/nodekeeper/netrules"
)

// The verdict maps, by index (ElemKey.Map).
const (
	MapServiceIPs uint8 = iota
	MapNodePorts
	MapNoEndpointIPs
	MapNoEndpointNPs
	MapFirewallIPs
	// MapHairpin is not a map but the set of local endpoints (ip . ip . proto . port)
	// whose connections to themselves through a Service are masqueraded; its
	// "elements" have no verdict. Two Services may share an endpoint: the owner
	// index keeps the element while one claims it.
	MapHairpin
	// MapMasqKeys is not a map either: the ClusterIP keys (ip . proto . port) with
	// endpoints, whose clients from off the cluster are marked for masquerade by one
	// rule before the dispatch (not one rule per Service: every rule reachable from a
	// base chain costs each commit's validation walk).
	MapMasqKeys
	numMaps
)

var mapNames = [numMaps]string{mapServiceIPs, mapNodePorts, mapNoEndpointIPs, mapNoEndpointNPs, mapFirewallIPs, setHairpin, setMasqKeys}

// isPlainSet: the "map" is a set, its elements have no verdict.
func isPlainSet(m uint8) bool { return m == MapHairpin || m == MapMasqKeys }

// mapHasAddr: the map's key is address . protocol . port (else protocol . port).
func mapHasAddr(m uint8) bool { return m != MapNodePorts && m != MapNoEndpointNPs }

// ElemKey is the key of one verdict-map element.
type ElemKey struct {
	Map   uint8
	Addr  netip.Addr // zero for the node port maps
	Proto uint8
	Port  uint16
}

// Claim is a port's wish for one map element.
type Claim struct {
	Key     ElemKey
	Verdict Verdict
}

// Chain is one regular chain and its rules.
type Chain struct {
	Name  string
	Rules []Rule
}

// AffinitySet is a dynamic set of client addresses with a timeout.
type AffinitySet struct {
	Name    string
	Timeout int32
}

// Artifact is everything one service port puts in the table: its chains (each named
// after the port, so no other port writes them), its affinity sets, and its claims on
// map elements (keys other ports may claim too: the owner index picks the winner).
type Artifact struct {
	Chains []Chain
	Sets   []AffinitySet
	Claims []Claim
	Maps   []EndpointMap
}

// EndpointMap is one port's range in the shared endpoint map: the service chain DNATs
// through `numgen random mod N offset <base> map @endpoints`, so an endpoint replaced
// without changing the count is an element update only (no rule changes, hence no
// validation of the whole table by the kernel). Name identifies the range (per port,
// cluster or local endpoints); the Planner allocates its base.
type EndpointMap struct {
	Name  string
	Elems []netip.AddrPort
}

// Env is what compiling a port needs to know besides the port.
type Env struct {
	Family        netrules.Family
	ClusterCIDRs  []netip.Prefix // of the family
	MasqueradeAll bool
	// Spread: how a port without affinity and with more than one endpoint picks one.
	Spread Spread
	// ShardPorts: ports per endpoint map (0: the default, ShardPorts).
	ShardPorts int
	// TablePorts: ports per shard table (0: the default, TablePorts).
	TablePorts int
}

// Spread is how a service chain picks one of several endpoints (without affinity).
type Spread uint8

const (
	// SpreadEndpointMaps: `numgen random mod N offset <base> map @endpoints-<k>`, the
	// port's range of a shared endpoint map (allocated by the Planner): an endpoint
	// replaced is an element update, no rule changes. The default.
	SpreadEndpointMaps Spread = iota
	// SpreadAnonymous: `numgen random mod N map { 0 : ip . port, … }`, an anonymous map
	// in the rule, as upstream (a full sync at 10,000 Services costs the kernel ~13 s:
	// it walks every set of the table for each new set).
	SpreadAnonymous
	// SpreadCascade: a cascade of numgen rules, one per endpoint (5× the rules).
	SpreadCascade
)

// EnvOf derives the Env of a family from the node facts.
func EnvOf(fam netrules.Family, node netrules.Node) Env {
	e := Env{Family: fam, MasqueradeAll: node.MasqueradeAll}
	for _, c := range node.ClusterCIDRs {
		if c.Addr().Is4() == (fam == netrules.IPv4) {
			e.ClusterCIDRs = append(e.ClusterCIDRs, c.Masked())
		}
	}
	return e
}

func protoOf(p *netrules.ServicePort) uint8 { return protoNum(proto(p)) }

// Compile computes the artifact of one service port: the same chains, sets and map
// elements the whole-table rendering gives it. Pure.
func Compile(p *netrules.ServicePort, env Env) *Artifact {
	a := &Artifact{}
	claims := map[ElemKey]int{} // key -> index in a.Claims: a later write replaces
	claim := func(k ElemKey, v Verdict) {
		if i, ok := claims[k]; ok {
			a.Claims[i].Verdict = v
			return
		}
		claims[k] = len(a.Claims)
		a.Claims = append(a.Claims, Claim{Key: k, Verdict: v})
	}
	chains := map[string]bool{}
	addChain := func(name string, rules []Rule) {
		if chains[name] {
			return
		}
		chains[name] = true
		a.Chains = append(a.Chains, Chain{Name: name, Rules: rules})
	}
	pr := protoOf(p)
	key := func(m uint8, addr netip.Addr, port int32) ElemKey {
		return ElemKey{Map: m, Addr: addr, Proto: pr, Port: uint16(port)}
	}
	svc := serviceChain(p)
	hasCluster := len(p.ClusterEndpoints) > 0
	if hasCluster {
		claim(key(MapServiceIPs, p.ClusterIP, p.Port), goTo(svc))
		if env.MasqueradeAll || len(env.ClusterCIDRs) > 0 {
			claim(key(MapMasqKeys, p.ClusterIP, p.Port), Verdict{})
		}
		rules := spread(a, addChain, p, p.ClusterEndpoints, env, endpointMap(p))
		// the service chain goes first, as the whole-table rendering lists it
		a.Chains = append([]Chain{{Name: svc, Rules: rules}}, a.Chains...)
		chains[svc] = true
	} else {
		v := goTo(chainReject)
		if p.InternalLocal && len(p.AllEndpoints) > 0 {
			v = Verdict{Kind: VerdictDrop}
		}
		claim(key(MapNoEndpointIPs, p.ClusterIP, p.Port), v)
	}
	hairpin := func(eps []netrules.Endpoint) {
		for _, e := range eps {
			if e.Local {
				claim(ElemKey{Map: MapHairpin, Addr: e.IP, Proto: pr, Port: uint16(e.Port)}, Verdict{})
			}
		}
	}
	if hasCluster {
		hairpin(p.ClusterEndpoints)
	}
	if !p.HasExternal() {
		return a
	}
	extEPs := p.ClusterEndpoints
	if p.ExternalLocal {
		extEPs = p.LocalEndpoints
	}
	vips := append(append([]netip.Addr(nil), p.ExternalIPs...), p.LoadBalancerIPs...)
	if len(extEPs) == 0 {
		v := goTo(chainReject)
		if p.ExternalLocal && len(p.AllEndpoints) > 0 {
			v = Verdict{Kind: VerdictDrop}
		}
		for _, ip := range vips {
			claim(key(MapNoEndpointIPs, ip, p.Port), v)
		}
		if p.NodePort != 0 {
			claim(key(MapNoEndpointNPs, netip.Addr{}, p.NodePort), v)
		}
		if !hasCluster || !p.ExternalLocal {
			return a
		}
	}
	ext := externalChain(p)
	for _, ip := range vips {
		claim(key(MapServiceIPs, ip, p.Port), goTo(ext))
	}
	if len(p.LoadBalancerSourceRanges) > 0 && len(p.LoadBalancerIPs) > 0 {
		fw := firewallChain(p)
		allowed := append([]netip.Prefix(nil), p.LoadBalancerSourceRanges...)
		for _, ip := range p.LoadBalancerIPs {
			allowed = append(allowed, hostPrefix(ip)) // the node reaching its own LB IP
			claim(key(MapFirewallIPs, ip, p.Port), goTo(fw))
		}
		addChain(fw, []Rule{verdictRule(Verdict{Kind: VerdictDrop}, addrIs(Saddr, true, allowed...))})
	}
	if p.NodePort != 0 {
		claim(key(MapNodePorts, netip.Addr{}, p.NodePort), goTo(ext))
	}
	var rules []Rule
	if !p.ExternalLocal {
		rules = []Rule{markMasq(), verdictRule(goTo(svc))}
	} else {
		if hasCluster && len(env.ClusterCIDRs) > 0 {
			rules = append(rules, verdictRule(goTo(svc), addrIs(Saddr, false, env.ClusterCIDRs...)))
		}
		local := Match{Kind: MatchFibLocal, Addr: Saddr}
		rules = append(rules, markMasq(local))
		if hasCluster {
			rules = append(rules, verdictRule(goTo(svc), local))
		}
		if len(p.LocalEndpoints) > 0 {
			lc := localChain(p)
			rules = append(rules, verdictRule(goTo(lc)))
			addChain(lc, spread(a, addChain, p, p.LocalEndpoints, env, localEndpointMap(p)))
			hairpin(p.LocalEndpoints)
		}
	}
	addChain(ext, rules)
	return a
}

// spread picks an endpoint at random (or, with affinity, the client's previous one).
// Without affinity the chain DNATs itself: a cascade of numgen rules, each taking
// 1/(endpoints left) of what reaches it (iptables' statistic cascade), the last one
// unconditional — no endpoint chains, no jumps, no sets. Upstream's one anonymous map
// per Service (`dnat to numgen random mod N map { … }`) measured slower here (README).
// With Env.EndpointMaps a port with more than one endpoint DNATs through its named
// endpoint map instead (`dnat ip addr . port to numgen random mod N map @endpoints-…`):
// replacing an endpoint is then a map element update, which the kernel does not
// validate; a one-endpoint port keeps its plain `dnat to ip:port` (as upstream).
// With affinity each endpoint has its chain (refresh the client's entry, DNAT) and
// its set, as upstream.
func spread(a *Artifact, addChain func(string, []Rule), p *netrules.ServicePort, eps []netrules.Endpoint, env Env, mapName string) []Rule {
	var rules []Rule
	pr := protoOf(p)
	l4 := Match{Kind: MatchL4Proto, Proto: pr}
	if p.AffinitySeconds <= 0 && env.Spread == SpreadEndpointMaps && len(eps) > 1 {
		m := EndpointMap{Name: mapName}
		for _, e := range eps {
			m.Elems = append(m.Elems, netip.AddrPortFrom(e.IP, uint16(e.Port)))
		}
		a.Maps = append(a.Maps, m)
		return []Rule{{Matches: []Match{l4}, Action: Action{Kind: ActDNATMap, Map: mapEndpoints, Range: mapName, Mod: uint32(len(eps))}}}
	}
	if p.AffinitySeconds <= 0 && env.Spread != SpreadCascade && len(eps) > 1 {
		eps2 := make([]netip.AddrPort, len(eps))
		for i, e := range eps {
			eps2[i] = netip.AddrPortFrom(e.IP, uint16(e.Port))
		}
		return []Rule{{Matches: []Match{l4}, Action: Action{Kind: ActDNATRandom, Endpoints: eps2}}}
	}
	if p.AffinitySeconds <= 0 {
		for i, e := range eps {
			dnat := Action{Kind: ActDNAT, IP: e.IP, Port: uint16(e.Port)}
			if left := len(eps) - i; left > 1 {
				rules = append(rules, Rule{Matches: []Match{{Kind: MatchNumgen, Mod: uint32(left)}, l4}, Action: dnat})
			} else {
				rules = append(rules, Rule{Matches: []Match{l4}, Action: dnat})
			}
		}
		return rules
	}
	for _, e := range eps {
		rules = append(rules, verdictRule(goTo(endpointChain(p, e)), Match{Kind: MatchInSet, Addr: Saddr, Set: affinitySet(p, e)}))
	}
	for i, e := range eps {
		ec := endpointChain(p, e)
		if left := len(eps) - i; left > 1 {
			rules = append(rules, verdictRule(goTo(ec), Match{Kind: MatchNumgen, Mod: uint32(left)}))
		} else {
			rules = append(rules, verdictRule(goTo(ec)))
		}
		set := affinitySet(p, e)
		found := false
		for _, s := range a.Sets {
			found = found || s.Name == set
		}
		if !found {
			a.Sets = append(a.Sets, AffinitySet{Name: set, Timeout: p.AffinitySeconds})
		}
		addChain(ec, []Rule{
			{Action: Action{Kind: ActUpdateSet, Set: set}},
			{Matches: []Match{l4}, Action: Action{Kind: ActDNAT, IP: e.IP, Port: uint16(e.Port)}},
		})
	}
	return rules
}

// Desired is a whole table's per-Service content: what Render gives.
type Desired struct {
	Chains   map[string][]Rule
	Elements map[ElemKey]Verdict
	Sets     map[string]int32
	// Endpoints: the endpoint maps' elements, by map, when rules use them (never from
	// Render, whose form is canonical)
	Endpoints map[string]map[uint32]netip.AddrPort
}

// Render computes the whole table's per-Service content from a Ruleset: every port's
// artifact, shared map keys going to the port last by Key (the owner index's rule).
// Pure; the incremental path must always agree with it.
func Render(rs *netrules.Ruleset) Desired { return RenderEnv(rs, EnvOf(rs.Family, rs.Node)) }

// RenderEnv is Render with the compile options of env. With env.EndpointMaps the
// content is the canonical form: each rule's range of the shared endpoint map shown as
// the anonymous map it stands for (the allocation of ranges is the Planner's, so
// tables are compared after ResolveEndpoints).
func RenderEnv(rs *netrules.Ruleset, env Env) Desired {
	if env.Spread == SpreadEndpointMaps {
		env.Spread = SpreadAnonymous
	}
	d := Desired{Chains: map[string][]Rule{}, Elements: map[ElemKey]Verdict{}, Sets: map[string]int32{}}
	ports := append([]*netrules.ServicePort(nil), rs.Ports...)
	sort.SliceStable(ports, func(i, j int) bool { return ports[i].Key() < ports[j].Key() })
	for _, p := range ports {
		a := Compile(p, env)
		for _, c := range a.Chains {
			d.Chains[c.Name] = c.Rules
		}
		for _, s := range a.Sets {
			d.Sets[s.Name] = s.Timeout
		}
		for _, c := range a.Claims {
			d.Elements[c.Key] = c.Verdict
		}
	}
	return d
}

// KeyText is the element key in nft syntax ("10.0.0.1 . tcp . 80", "tcp . 30080").
func (k ElemKey) KeyText() string {
	parts := []string{protoName(k.Proto), itoa(int(k.Port))}
	if mapHasAddr(k.Map) {
		parts = append([]string{k.Addr.String()}, parts...)
	}
	if k.Map == MapHairpin {
		parts = append([]string{k.Addr.String()}, parts...)
	}
	return strings.Join(parts, " . ")
}

func itoa(i int) string {
	if i == 0 {
		return "0"
	}
	var b [20]byte
	n := len(b)
	for i > 0 {
		n--
		b[n] = byte('0' + i%10)
		i /= 10
	}
	return string(b[n:])
}
