// Package nftables is the nftables backend: per family, one "nodekeeper" table and
// shard tables "nodekeeper-1", "nodekeeper-2", … of at most TablePorts Service ports
// each, programmed over netlink (github.com/google/nftables), one atomic batch per sync.
// Dispatch goes through verdict maps keyed by (address, protocol, port), so a change
// to one Service is a few map elements plus its own chains: each service port compiles
// (Compile, pure) to an artifact, a Planner (pure) diffs the applied artifact against
// the new one into Ops, and the Proxier sends them.
//
// Why shards: at commit the kernel validates the whole chain graph of every table a
// batch adds a jump, goto or DNAT rule to (docs/nftables-validation.md), so a Service
// created in one table of 10,000 costs what 10,000 cost; in a shard it costs what
// TablePorts cost. Each shard has its own nat and filter base chains at the same hooks:
// a new connection walks the shards' nat chains until one DNATs it (the first NAT
// binding at a hook ends the walk); the main table keeps what does not name a Service
// chain (masquerading, the no-endpoint rejects, the hairpin set).
package nftables

import (
	"crypto/sha256"
	"encoding/base32"
	"fmt"
	"net/netip"
	"strconv"
	"strings"

	"github.com/nodekeeper/nodekeeper/netrules"
)

// TableName is the main table nodekeeper owns in each family; its shards are
// TableName-1, TableName-2, … (ShardTableName).
const TableName = "nodekeeper"

// TablePorts is how many Service ports a shard table takes before a new one is
// started (Options.TablePorts overrides it): a creation costs the kernel a validation
// walk of its shard (~0.5 ms at 1,000 ports, ~2.5 ms at 5,000: docs/nftables-validation.md),
// and every shard costs a few fixed chains and one more lookup per new connection; at
// 5,000 the table holds fewer objects than kube-proxy's for the same Services.
const TablePorts = 5000

// ShardTableName names table index i: 0 is the main table, i ≥ 1 a shard.
func ShardTableName(i int) string {
	if i == 0 {
		return TableName
	}
	return fmt.Sprintf("%s-%d", TableName, i)
}

// ParseTableName is ShardTableName's inverse.
func ParseTableName(s string) (int, bool) {
	if s == TableName {
		return 0, true
	}
	rest, ok := strings.CutPrefix(s, TableName+"-")
	if !ok {
		return 0, false
	}
	i, err := strconv.Atoi(rest)
	return i, err == nil && i > 0 && ShardTableName(i) == s
}

// Fixed object names.
const (
	chainMasquerading  = "masquerading"
	chainEndpointCheck = "service-endpoints-check"
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

// fixedName tells whether a table's fixed layout names the chain.
func (l Layout) fixedName(c string) bool {
	for _, ch := range l.Chains {
		if ch.Name == c {
			return true
		}
	}
	for _, b := range l.Base {
		if b.Name == c {
			return true
		}
	}
	return false
}

// hasMap tells whether the layout holds the map.
func (l Layout) hasMap(m uint8) bool {
	for _, x := range l.Maps {
		if x == m {
			return true
		}
	}
	return false
}

// BaseChain is a chain attached to a netfilter hook.
type BaseChain struct {
	Name     string
	Type     string // "nat" or "filter"
	Hook     string // prerouting, input, forward, output, postrouting
	Priority int32
	Rules    []Rule
	// Lazy: the chain exists only in a table whose map For holds elements (a shard
	// without node ports has no node port chains): it is created with the table's
	// first such element and kept until a resync finds its map empty.
	Lazy bool
	For  uint8
}

// lazyFor lists the layout's base chains that exist only with elements in map m.
func (l Layout) lazyFor(m uint8) []BaseChain {
	var out []BaseChain
	for _, b := range l.Base {
		if b.Lazy && b.For == m {
			out = append(out, b)
		}
	}
	return out
}

// Present is the layout with only the lazy base chains has tells (none if nil).
func (l Layout) Present(has func(m uint8) bool) Layout {
	out := l
	out.Base = nil
	for _, b := range l.Base {
		if !b.Lazy || has != nil && has(b.For) {
			out.Base = append(out.Base, b)
		}
	}
	return out
}

// lazyMap tells whether a chain of the layout is a lazy one, and of which map.
func (l Layout) lazyMap(c string) (uint8, bool) {
	for _, b := range l.Base {
		if b.Lazy && b.Name == c {
			return b.For, true
		}
	}
	return 0, false
}

// Layout is the fixed part of a table: its maps, the regular chains every Service
// uses, and the base chains that send packets to them.
type Layout struct {
	Maps   []uint8
	Chains []Chain
	Base   []BaseChain
}

func ipFamily(f netrules.Family) string {
	if f == netrules.IPv6 {
		return "ip6"
	}
	return "ip"
}

// mapInShard: the map's elements name Service chains (or are looked up by a rule
// beside such a lookup), so each shard has its own and an element lives in the shard of
// the port that wins its key; the others live in the main table.
func mapInShard(m uint8) bool {
	return m == MapServiceIPs || m == MapNodePorts || m == MapFirewallIPs || m == MapMasqKeys
}

func npLocalMatches(fam netrules.Family, node netrules.Node) []Match {
	m := []Match{{Kind: MatchFibLocal, Addr: Daddr}}
	if fam == netrules.IPv4 && !node.LocalhostNodePorts {
		m = append(m, addrIs(Daddr, true, netip.MustParsePrefix("127.0.0.0/8")))
	} else if fam == netrules.IPv6 {
		m = append(m, addrIs(Daddr, true, netip.MustParsePrefix("::1/128")))
	}
	return m
}

func vmapRule(m string, noAddr bool, ms ...Match) Rule {
	return Rule{Matches: ms, Action: Action{Kind: ActVmap, Map: m, NoAddr: noAddr}}
}

// base chain priorities
const (
	prioDNAT   = -100
	prioSNAT   = 100
	prioFilter = 0
)

// FixedLayout is the fixed part of the main table for a family: masquerading, the
// rejects of Services without endpoints, and the forward filter. Pure.
func FixedLayout(fam netrules.Family, node netrules.Node) Layout {
	newConn := Match{Kind: MatchCtState, CtState: ctStateNew}
	return Layout{
		Maps: []uint8{MapNoEndpointIPs, MapNoEndpointNPs, MapHairpin},
		Chains: []Chain{
			// marked connections, and a local endpoint reaching itself through a Service
			// (hairpin), leave with the node's address
			{Name: chainMasquerading, Rules: []Rule{
				{Matches: []Match{{Kind: MatchMarkBit}}, Action: Action{Kind: ActUnmarkMasquerade}},
				{Matches: []Match{{Kind: MatchCtStatusDNAT}, {Kind: MatchHairpin}}, Action: Action{Kind: ActMasquerade}},
			}},
			{Name: chainReject, Rules: []Rule{{Action: Action{Kind: ActReject}}}},
			{Name: chainEndpointCheck, Rules: []Rule{
				vmapRule(mapNoEndpointIPs, false),
				vmapRule(mapNoEndpointNPs, true, npLocalMatches(fam, node)...),
			}},
		},
		Base: []BaseChain{
			{Name: "nat-postrouting", Type: "nat", Hook: "postrouting", Priority: prioSNAT, Rules: []Rule{verdictRule(jump(chainMasquerading))}},
			{Name: "filter-input", Type: "filter", Hook: "input", Priority: prioFilter - 10, Rules: []Rule{verdictRule(jump(chainEndpointCheck), newConn)}},
			{Name: "filter-forward", Type: "filter", Hook: "forward", Priority: prioFilter - 10, Rules: []Rule{
				verdictRule(jump(chainEndpointCheck), newConn),
				verdictRule(Verdict{Kind: VerdictDrop}, Match{Kind: MatchCtState, CtState: ctStateInvalid}),
				verdictRule(Verdict{Kind: VerdictAccept}, Match{Kind: MatchMarkBit}),
			}},
			{Name: "filter-output", Type: "filter", Hook: "output", Priority: prioFilter - 10, Rules: []Rule{verdictRule(jump(chainEndpointCheck), newConn)}},
		},
	}
}

// ShardLayout is the fixed part of a shard table: the dispatch of its Services, its
// rules straight in base chains (no regular chains: a shard costs the kernel only what
// dispatches). The ClusterIP/external IP dispatch runs at the DNAT priority and the
// node ports one just after it, in every shard, so an address match in any shard wins
// over a node port match in any other, as in one table where the first rule of
// `services` wins; the firewall check runs before DNAT, and in output after the main
// table's endpoint check (as the one table's filter-output ran them). The node port and
// firewall chains are lazy: only shards with such elements have them. Pure.
func ShardLayout(fam netrules.Family, node netrules.Node) Layout {
	newConn := Match{Kind: MatchCtState, CtState: ctStateNew}
	// clients from off the cluster reaching a ClusterIP leave masqueraded
	var masq []Rule
	switch cidrs := EnvOf(fam, node).ClusterCIDRs; {
	case node.MasqueradeAll:
		masq = []Rule{markMasq(Match{Kind: MatchMasqKeys})}
	case len(cidrs) > 0:
		masq = []Rule{markMasq(addrIs(Saddr, true, cidrs...), Match{Kind: MatchMasqKeys})}
	}
	services := func() []Rule { return append(append([]Rule(nil), masq...), vmapRule(mapServiceIPs, false)) }
	nodePorts := func() []Rule { return []Rule{vmapRule(mapNodePorts, true, npLocalMatches(fam, node)...)} }
	firewall := func() []Rule { return []Rule{vmapRule(mapFirewallIPs, false, newConn)} }
	return Layout{
		Maps: []uint8{MapServiceIPs, MapNodePorts, MapFirewallIPs, MapMasqKeys},
		Base: []BaseChain{
			{Name: "nat-prerouting", Type: "nat", Hook: "prerouting", Priority: prioDNAT, Rules: services()},
			{Name: "nat-output", Type: "nat", Hook: "output", Priority: prioDNAT, Rules: services()},
			{Name: "nat-prerouting-nodeports", Type: "nat", Hook: "prerouting", Priority: prioDNAT + 1, Rules: nodePorts(), Lazy: true, For: MapNodePorts},
			{Name: "nat-output-nodeports", Type: "nat", Hook: "output", Priority: prioDNAT + 1, Rules: nodePorts(), Lazy: true, For: MapNodePorts},
			// load balancer source ranges are checked before DNAT rewrites the destination
			{Name: "filter-prerouting", Type: "filter", Hook: "prerouting", Priority: prioDNAT - 10, Rules: firewall(), Lazy: true, For: MapFirewallIPs},
			{Name: "filter-output", Type: "filter", Hook: "output", Priority: prioFilter - 9, Rules: firewall(), Lazy: true, For: MapFirewallIPs},
		},
	}
}
