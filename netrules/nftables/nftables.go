// Package nftables is the nftables backend: one "nodekeeper" table per family,
// programmed over netlink (github.com/google/nftables), one atomic batch per sync.
// Dispatch goes through verdict maps keyed by (address, protocol, port), so a change
// to one Service is a few map elements plus its own chains: each service port compiles
// (Compile, pure) to an artifact, a Planner (pure) diffs the applied artifact against
// the new one into Ops, and the Proxier sends them.
package nftables

import (
	"crypto/sha256"
	"encoding/base32"
	"fmt"
	"net/netip"
	"strings"
	"sync"

	"github.com/nodekeeper/nodekeeper/netrules"
)

// TableName is the one table nodekeeper owns in each family.
const TableName = "nodekeeper"

// Fixed object names.
const (
	chainServices      = "services"
	chainMasquerading  = "masquerading"
	chainEndpointCheck = "service-endpoints-check"
	chainFirewallCheck = "firewall-check"
	chainReject        = "reject-chain"
	mapServiceIPs      = "service-ips"
	mapNodePorts       = "service-nodeports"
	mapNoEndpointIPs   = "no-endpoint-services"
	mapNoEndpointNPs   = "no-endpoint-nodeports"
	mapFirewallIPs     = "firewall-ips"
	setHairpin         = "hairpin-connections"
	setMasqKeys        = "masquerade-cluster-ips"
	// mapEndpoints: the shared endpoint map (Env.EndpointMaps), index : address . port
	mapEndpoints = "endpoints"
	masqBit      = "0x00004000"
)

func hash8(s string) string {
	h := sha256.Sum256([]byte(s))
	return strings.ToLower(base32.StdEncoding.EncodeToString(h[:])[:8])
}

func base(p *netrules.ServicePort) string {
	return fmt.Sprintf("%s/%s/%s/%s", p.Namespace, p.Name, strings.ToLower(string(p.Protocol)), p.PortName)
}

// chain names are prefix-hash-readable, truncated to stay well under nft's limits
func name(prefix, readable string) string {
	n := prefix + "-" + hash8(readable) + "-" + readable
	if len(n) > 200 {
		n = n[:200]
	}
	return n
}

func serviceChain(p *netrules.ServicePort) string  { return name("service", base(p)) }
func localChain(p *netrules.ServicePort) string    { return name("local", base(p)) }
func externalChain(p *netrules.ServicePort) string { return name("external", base(p)) }
func firewallChain(p *netrules.ServicePort) string { return name("firewall", base(p)) }

// endpointMap and localEndpointMap name a port's endpoint maps (index -> ip . port).
func endpointMap(p *netrules.ServicePort) string      { return name("endpoints", base(p)) }
func localEndpointMap(p *netrules.ServicePort) string { return name("local-endpoints", base(p)) }

// epName is "ip/port" with IPv6 colons turned into dots: nft names cannot hold ':'.
func epName(e netrules.Endpoint) string {
	return strings.ReplaceAll(e.IP.String(), ":", ".") + "/" + fmt.Sprint(e.Port)
}
func endpointChain(p *netrules.ServicePort, e netrules.Endpoint) string {
	return name("endpoint", base(p)+"__"+epName(e))
}
func affinitySet(p *netrules.ServicePort, e netrules.Endpoint) string {
	return name("affinity", base(p)+"__"+epName(e))
}

func proto(p *netrules.ServicePort) string { return strings.ToLower(string(p.Protocol)) }

// isServiceChain tells a per-Service chain from the fixed ones: any chain the fixed
// layout does not name (so a chain of an older layout is removed by a resync too).
func isServiceChain(c string) bool {
	fixedOnce.Do(func() {
		fixedNames = map[string]bool{}
		l := FixedLayout(netrules.IPv4, netrules.Node{})
		for _, ch := range l.Chains {
			fixedNames[ch.Name] = true
		}
		for _, b := range l.Base {
			fixedNames[b.Name] = true
		}
	})
	return !fixedNames[c]
}

var (
	fixedOnce  sync.Once
	fixedNames map[string]bool
)

// BaseChain is a chain attached to a netfilter hook.
type BaseChain struct {
	Name     string
	Type     string // "nat" or "filter"
	Hook     string // prerouting, input, forward, output, postrouting
	Priority int32
	Rules    []Rule
}

// Layout is the fixed part of the table: regular chains every Service uses, and the
// base chains that send packets to them.
type Layout struct {
	Chains []Chain
	Base   []BaseChain
}

func ipFamily(f netrules.Family) string {
	if f == netrules.IPv6 {
		return "ip6"
	}
	return "ip"
}

// FixedLayout is the fixed part of the table for a family. Pure.
func FixedLayout(fam netrules.Family, node netrules.Node) Layout {
	var npLocal []Match
	if fam == netrules.IPv4 && !node.LocalhostNodePorts {
		npLocal = []Match{addrIs(Daddr, true, netip.MustParsePrefix("127.0.0.0/8"))}
	} else if fam == netrules.IPv6 {
		npLocal = []Match{addrIs(Daddr, true, netip.MustParsePrefix("::1/128"))}
	}
	local := Match{Kind: MatchFibLocal, Addr: Daddr}
	vmap := func(m string, noAddr bool, ms ...Match) Rule {
		return Rule{Matches: ms, Action: Action{Kind: ActVmap, Map: m, NoAddr: noAddr}}
	}
	newConn := Match{Kind: MatchCtState, CtState: ctStateNew}
	// clients from off the cluster reaching a ClusterIP leave masqueraded
	var masq []Rule
	switch cidrs := EnvOf(fam, node).ClusterCIDRs; {
	case node.MasqueradeAll:
		masq = []Rule{markMasq(Match{Kind: MatchMasqKeys})}
	case len(cidrs) > 0:
		masq = []Rule{markMasq(addrIs(Saddr, true, cidrs...), Match{Kind: MatchMasqKeys})}
	}
	l := Layout{Chains: []Chain{
		// marked connections, and a local endpoint reaching itself through a Service
		// (hairpin), leave with the node's address
		{Name: chainMasquerading, Rules: []Rule{
			{Matches: []Match{{Kind: MatchMarkBit}}, Action: Action{Kind: ActUnmarkMasquerade}},
			{Matches: []Match{{Kind: MatchCtStatusDNAT}, {Kind: MatchHairpin}}, Action: Action{Kind: ActMasquerade}},
		}},
		{Name: chainReject, Rules: []Rule{{Action: Action{Kind: ActReject}}}},
		{Name: chainServices, Rules: append(masq,
			vmap(mapServiceIPs, false),
			vmap(mapNodePorts, true, append([]Match{local}, npLocal...)...),
		)},
		{Name: chainEndpointCheck, Rules: []Rule{
			vmap(mapNoEndpointIPs, false),
			vmap(mapNoEndpointNPs, true, append([]Match{local}, npLocal...)...),
		}},
		{Name: chainFirewallCheck, Rules: []Rule{vmap(mapFirewallIPs, false)}},
	}}
	const dnat, snat, filter = -100, 100, 0
	l.Base = []BaseChain{
		{Name: "nat-prerouting", Type: "nat", Hook: "prerouting", Priority: dnat, Rules: []Rule{verdictRule(jump(chainServices))}},
		{Name: "nat-output", Type: "nat", Hook: "output", Priority: dnat, Rules: []Rule{verdictRule(jump(chainServices))}},
		{Name: "nat-postrouting", Type: "nat", Hook: "postrouting", Priority: snat, Rules: []Rule{verdictRule(jump(chainMasquerading))}},
		// load balancer source ranges are checked before DNAT rewrites the destination
		{Name: "filter-prerouting", Type: "filter", Hook: "prerouting", Priority: dnat - 10, Rules: []Rule{verdictRule(jump(chainFirewallCheck), newConn)}},
		{Name: "filter-input", Type: "filter", Hook: "input", Priority: filter - 10, Rules: []Rule{verdictRule(jump(chainEndpointCheck), newConn)}},
		{Name: "filter-forward", Type: "filter", Hook: "forward", Priority: filter - 10, Rules: []Rule{
			verdictRule(jump(chainEndpointCheck), newConn),
			verdictRule(Verdict{Kind: VerdictDrop}, Match{Kind: MatchCtState, CtState: ctStateInvalid}),
			verdictRule(Verdict{Kind: VerdictAccept}, Match{Kind: MatchMarkBit}),
		}},
		{Name: "filter-output", Type: "filter", Hook: "output", Priority: filter - 10, Rules: []Rule{
			verdictRule(jump(chainEndpointCheck), newConn),
			verdictRule(jump(chainFirewallCheck), newConn),
		}},
	}
	return l
}
