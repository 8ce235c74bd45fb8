// Package iptables renders a netrules.Ruleset as iptables-restore input in kube-proxy's
// well-known chain layout and applies it with one iptables-restore --noflush per table
// set, rewriting only the per-Service chains that changed since the last sync.
package iptables

import (
	"crypto/sha256"
	"encoding/base32"
	"fmt"
	"net/netip"
	"sort"
	"strings"

	"github.com/nodekeeper/nodekeeper/netrules"
)

// Fixed chain names, as kube-proxy.
const (
	ChainServices         = "KUBE-SERVICES"
	ChainExternalServices = "KUBE-EXTERNAL-SERVICES"
	ChainNodePorts        = "KUBE-NODEPORTS"
	ChainPostrouting      = "KUBE-POSTROUTING"
	ChainMarkMasq         = "KUBE-MARK-MASQ"
	ChainForward          = "KUBE-FORWARD"
	ChainProxyFirewall    = "KUBE-PROXY-FIREWALL"
	masqMark              = "0x4000/0x4000"
)

// ownedPrefixes are the per-Service chain prefixes nodekeeper creates and deletes.
var ownedPrefixes = []string{"KUBE-SVC-", "KUBE-SVL-", "KUBE-EXT-", "KUBE-FW-", "KUBE-SEP-"}

// IsServiceChain tells whether a chain is a per-Service chain of ours.
func IsServiceChain(name string) bool {
	for _, p := range ownedPrefixes {
		if strings.HasPrefix(name, p) {
			return true
		}
	}
	return false
}

// Table is the rendered content of one table: fixed chains (always rewritten, in
// order) and per-Service chains by name.
type Table struct {
	Name    string
	Fixed   []Chain
	Service map[string][]string
}

// Chain is a chain and its rules, each rule an "-A CHAIN ..." line.
type Chain struct {
	Name  string
	Rules []string
}

// Rendered is the whole desired state of one family.
type Rendered struct {
	Filter, NAT Table
}

// hash16 is kube-proxy's portProtoHash: base32(sha256(s))[:16].
func hash16(s string) string {
	h := sha256.Sum256([]byte(s))
	return base32.StdEncoding.EncodeToString(h[:])[:16]
}

func proto(p *netrules.ServicePort) string { return strings.ToLower(string(p.Protocol)) }

// SvcChain and friends name the per-Service chains as kube-proxy does.
func SvcChain(p *netrules.ServicePort) string { return "KUBE-SVC-" + hash16(p.NameString()+proto(p)) }
func SvlChain(p *netrules.ServicePort) string { return "KUBE-SVL-" + hash16(p.NameString()+proto(p)) }
func ExtChain(p *netrules.ServicePort) string { return "KUBE-EXT-" + hash16(p.NameString()+proto(p)) }
func FwChain(p *netrules.ServicePort) string  { return "KUBE-FW-" + hash16(p.NameString()+proto(p)) }
func SepChain(p *netrules.ServicePort, e netrules.Endpoint) string {
	return "KUBE-SEP-" + hash16(p.NameString()+proto(p)+e.String())
}

type renderer struct {
	fam         netrules.Family
	node        netrules.Node
	natRules    map[string][]string
	filterRules map[string][]string
	natSvc      []string // rules of nat KUBE-SERVICES
	natNP       []string
	filterSvc   []string
	filterExt   []string
	filterNP    []string
	filterFW    []string
}

func (r *renderer) host(a netip.Addr) string {
	if r.fam == netrules.IPv6 {
		return a.String() + "/128"
	}
	return a.String() + "/32"
}

func comment(s string) string { return fmt.Sprintf("-m comment --comment %q", s) }

func match(p *netrules.ServicePort) string { return fmt.Sprintf("-m %s -p %s", proto(p), proto(p)) }

// Render turns a Ruleset into iptables chains. It is pure and deterministic.
func Render(rs *netrules.Ruleset) Rendered { return RenderCached(rs, nil) }

// RenderCache keeps each Service port's rendered rules between syncs, keyed by the
// port's content, so a sync re-renders only the ports that changed.
type RenderCache struct {
	node  string
	ports map[string]*renderer
}

// RenderCached is Render reusing (and refreshing) cache; a nil cache renders everything.
// The result is the same as Render's.
func RenderCached(rs *netrules.Ruleset, cache *RenderCache) Rendered {
	r := &renderer{fam: rs.Family, node: rs.Node, natRules: map[string][]string{}, filterRules: map[string][]string{}}
	var next map[string]*renderer
	nodeKey := fmt.Sprintf("%d/%+v", rs.Family, rs.Node)
	if cache != nil {
		next = make(map[string]*renderer, len(rs.Ports))
		if cache.node != nodeKey {
			cache.ports = nil
		}
	}
	for _, p := range rs.Ports {
		if cache == nil {
			r.port(p)
			continue
		}
		key := fmt.Sprintf("%+v", *p)
		pr, ok := cache.ports[key]
		if !ok {
			pr = &renderer{fam: rs.Family, node: rs.Node, natRules: map[string][]string{}, filterRules: map[string][]string{}}
			pr.port(p)
		}
		next[key] = pr
		r.natSvc = append(r.natSvc, pr.natSvc...)
		r.natNP = append(r.natNP, pr.natNP...)
		r.filterSvc = append(r.filterSvc, pr.filterSvc...)
		r.filterExt = append(r.filterExt, pr.filterExt...)
		r.filterNP = append(r.filterNP, pr.filterNP...)
		r.filterFW = append(r.filterFW, pr.filterFW...)
		for c, rules := range pr.natRules {
			r.natRules[c] = rules
		}
		for c, rules := range pr.filterRules {
			r.filterRules[c] = rules
		}
	}
	if cache != nil {
		cache.node, cache.ports = nodeKey, next
	}
	localDst := "-m addrtype --dst-type LOCAL"
	var npJumps []string
	if len(rs.Node.NodePortAddresses) == 0 {
		switch {
		case rs.Family == netrules.IPv6:
			localDst += " ! -d ::1/128"
		case !rs.Node.LocalhostNodePorts:
			localDst += " ! -d 127.0.0.0/8"
		}
		npJumps = append(npJumps, fmt.Sprintf("-A %s %s %s -j %s", ChainServices,
			comment("kubernetes service nodeports; NOTE: this must be the last rule in this chain"), localDst, ChainNodePorts))
	} else {
		for _, pfx := range rs.Node.NodePortAddresses {
			if (pfx.Addr().Is4()) != (rs.Family == netrules.IPv4) {
				continue
			}
			npJumps = append(npJumps, fmt.Sprintf("-A %s %s -d %s -j %s", ChainServices,
				comment("kubernetes service nodeports; NOTE: this must be the last rule in this chain"), pfx.String(), ChainNodePorts))
		}
	}
	out := Rendered{
		Filter: Table{Name: "filter", Service: r.filterRules, Fixed: []Chain{
			{ChainNodePorts, r.filterNP},
			{ChainServices, r.filterSvc},
			{ChainExternalServices, r.filterExt},
			{ChainForward, []string{
				"-A KUBE-FORWARD -m conntrack --ctstate INVALID -j DROP",
				"-A KUBE-FORWARD " + comment("kubernetes forwarding rules") + " -m mark --mark " + masqMark + " -j ACCEPT",
				"-A KUBE-FORWARD " + comment("kubernetes forwarding conntrack rule") + " -m conntrack --ctstate RELATED,ESTABLISHED -j ACCEPT",
			}},
			{ChainProxyFirewall, r.filterFW},
		}},
		NAT: Table{Name: "nat", Service: r.natRules, Fixed: []Chain{
			{ChainServices, append(r.natSvc, npJumps...)},
			{ChainNodePorts, r.natNP},
			{ChainPostrouting, []string{
				"-A KUBE-POSTROUTING -m mark ! --mark " + masqMark + " -j RETURN",
				"-A KUBE-POSTROUTING -j MARK --xor-mark 0x4000",
				"-A KUBE-POSTROUTING " + comment("kubernetes service traffic requiring SNAT") + " -j MASQUERADE --random-fully",
			}},
			{ChainMarkMasq, []string{"-A KUBE-MARK-MASQ -j MARK --or-mark 0x4000"}},
		}},
	}
	return out
}

func (r *renderer) port(p *netrules.ServicePort) {
	name := p.NameString()
	m := match(p)
	svc := SvcChain(p)
	hasCluster := len(p.ClusterEndpoints) > 0
	extEPs := p.ClusterEndpoints
	if p.ExternalLocal {
		extEPs = p.LocalEndpoints
	}

	// ClusterIP
	if hasCluster {
		r.natSvc = append(r.natSvc, fmt.Sprintf("-A %s %s %s -d %s --dport %d -j %s",
			ChainServices, comment(name+" cluster IP"), m, r.host(p.ClusterIP), p.Port, svc))
	} else {
		target, why := "REJECT", name+" has no endpoints"
		if p.InternalLocal && len(p.AllEndpoints) > 0 {
			target, why = "DROP", name+" has no local endpoints"
		}
		r.filterSvc = append(r.filterSvc, fmt.Sprintf("-A %s %s %s -d %s --dport %d -j %s",
			ChainServices, comment(why), m, r.host(p.ClusterIP), p.Port, target))
	}
	if hasCluster {
		r.endpointChain(p, svc, p.ClusterEndpoints, true)
	}

	if p.HealthCheckNodePort != 0 {
		r.filterNP = append(r.filterNP, fmt.Sprintf("-A %s %s -m tcp -p tcp --dport %d -j ACCEPT",
			ChainNodePorts, comment(name+" health check node port"), p.HealthCheckNodePort))
	}
	if !p.HasExternal() {
		return
	}
	if len(extEPs) == 0 {
		// nothing can answer external traffic: REJECT when there are no endpoints at all,
		// DROP when only remote ones exist (eTP=Local), as upstream
		target, why := "REJECT", name+" has no endpoints"
		if p.ExternalLocal && len(p.AllEndpoints) > 0 {
			target, why = "DROP", name+" has no local endpoints"
		}
		for _, ip := range p.ExternalIPs {
			r.filterExt = append(r.filterExt, fmt.Sprintf("-A %s %s %s -d %s --dport %d -j %s",
				ChainExternalServices, comment(why), m, r.host(ip), p.Port, target))
		}
		for _, ip := range p.LoadBalancerIPs {
			r.filterExt = append(r.filterExt, fmt.Sprintf("-A %s %s %s -d %s --dport %d -j %s",
				ChainExternalServices, comment(why), m, r.host(ip), p.Port, target))
		}
		if p.NodePort != 0 {
			r.filterExt = append(r.filterExt, fmt.Sprintf("-A %s %s -m addrtype --dst-type LOCAL %s --dport %d -j %s",
				ChainExternalServices, comment(why), m, p.NodePort, target))
		}
		if !hasCluster || !p.ExternalLocal {
			return
		}
	}

	ext := ExtChain(p)
	for _, ip := range p.ExternalIPs {
		r.natSvc = append(r.natSvc, fmt.Sprintf("-A %s %s %s -d %s --dport %d -j %s",
			ChainServices, comment(name+" external IP"), m, r.host(ip), p.Port, ext))
	}
	lbTarget := ext
	if len(p.LoadBalancerSourceRanges) > 0 && len(p.LoadBalancerIPs) > 0 {
		fw := FwChain(p)
		lbTarget = fw
		var rules []string
		for _, src := range p.LoadBalancerSourceRanges {
			rules = append(rules, fmt.Sprintf("-A %s %s -s %s -j %s", fw, comment(name+" loadbalancer IP"), src.String(), ext))
		}
		// the node itself reaching the load balancer IP is allowed, as upstream
		for _, ip := range p.LoadBalancerIPs {
			rules = append(rules, fmt.Sprintf("-A %s %s -s %s -j %s", fw, comment(name+" loadbalancer IP"), r.host(ip), ext))
		}
		r.natRules[fw] = rules
		for _, ip := range p.LoadBalancerIPs {
			r.filterFW = append(r.filterFW, fmt.Sprintf("-A %s %s %s -d %s --dport %d -j DROP",
				ChainProxyFirewall, comment(name+" traffic not accepted by "+fw), m, r.host(ip), p.Port))
		}
	}
	for _, ip := range p.LoadBalancerIPs {
		r.natSvc = append(r.natSvc, fmt.Sprintf("-A %s %s %s -d %s --dport %d -j %s",
			ChainServices, comment(name+" loadbalancer IP"), m, r.host(ip), p.Port, lbTarget))
	}
	if p.NodePort != 0 {
		r.natNP = append(r.natNP, fmt.Sprintf("-A %s %s %s --dport %d -j %s",
			ChainNodePorts, comment(name), m, p.NodePort, ext))
	}

	var extRules []string
	if !p.ExternalLocal {
		extRules = []string{
			fmt.Sprintf("-A %s %s -j %s", ext, comment("masquerade traffic for "+name+" external destinations"), ChainMarkMasq),
			fmt.Sprintf("-A %s -j %s", ext, svc),
		}
	} else {
		// pods and the node itself keep using every endpoint; outside clients only the
		// local ones, with their source address kept
		for _, cidr := range r.node.ClusterCIDRs {
			if cidr.Addr().Is4() == (r.fam == netrules.IPv4) && hasCluster {
				extRules = append(extRules, fmt.Sprintf("-A %s %s -s %s -j %s", ext,
					comment("pod traffic for "+name+" external destinations"), cidr.String(), svc))
			}
		}
		extRules = append(extRules, fmt.Sprintf("-A %s %s -m addrtype --src-type LOCAL -j %s", ext,
			comment("masquerade LOCAL traffic for "+name+" external destinations"), ChainMarkMasq))
		if hasCluster {
			extRules = append(extRules, fmt.Sprintf("-A %s %s -m addrtype --src-type LOCAL -j %s", ext,
				comment("route LOCAL traffic for "+name+" external destinations"), svc))
		}
		if len(p.LocalEndpoints) > 0 {
			svl := SvlChain(p)
			extRules = append(extRules, fmt.Sprintf("-A %s -j %s", ext, svl))
			r.endpointChain(p, svl, p.LocalEndpoints, false)
		}
	}
	r.natRules[ext] = extRules
}

// endpointChain writes a KUBE-SVC/KUBE-SVL chain spreading over eps, and the KUBE-SEP
// chain of each endpoint.
func (r *renderer) endpointChain(p *netrules.ServicePort, chain string, eps []netrules.Endpoint, cluster bool) {
	name := p.NameString()
	m := match(p)
	var rules []string
	if cluster {
		switch {
		case r.node.MasqueradeAll:
			rules = append(rules, fmt.Sprintf("-A %s %s %s -d %s --dport %d -j %s",
				chain, comment(name+" cluster IP"), m, r.host(p.ClusterIP), p.Port, ChainMarkMasq))
		default:
			for _, cidr := range r.node.ClusterCIDRs {
				if cidr.Addr().Is4() == (r.fam == netrules.IPv4) {
					rules = append(rules, fmt.Sprintf("-A %s %s %s -d %s --dport %d ! -s %s -j %s",
						chain, comment(name+" cluster IP"), m, r.host(p.ClusterIP), p.Port, cidr.String(), ChainMarkMasq))
				}
			}
		}
	}
	if p.AffinitySeconds > 0 {
		for _, e := range eps {
			sep := SepChain(p, e)
			rules = append(rules, fmt.Sprintf("-A %s %s -m recent --name %s --rcheck --seconds %d --reap -j %s",
				chain, comment(name+" -> "+e.String()), sep, p.AffinitySeconds, sep))
		}
	}
	for i, e := range eps {
		sep := SepChain(p, e)
		if left := len(eps) - i; left > 1 {
			rules = append(rules, fmt.Sprintf("-A %s %s -m statistic --mode random --probability %0.10f -j %s",
				chain, comment(name+" -> "+e.String()), 1.0/float64(left), sep))
		} else {
			rules = append(rules, fmt.Sprintf("-A %s %s -j %s", chain, comment(name+" -> "+e.String()), sep))
		}
		if _, done := r.natRules[sep]; done {
			continue
		}
		sepRules := []string{fmt.Sprintf("-A %s %s -s %s -j %s", sep, comment(name), r.host(e.IP), ChainMarkMasq)}
		dnat := fmt.Sprintf("-A %s %s", sep, comment(name))
		if p.AffinitySeconds > 0 {
			dnat += fmt.Sprintf(" -m recent --name %s --set", sep)
		}
		dnat += fmt.Sprintf(" %s -j DNAT --to-destination %s", m, e.String())
		r.natRules[sep] = append(sepRules, dnat)
	}
	r.natRules[chain] = rules
}

// Input assembles iptables-restore input for one table: the fixed chains, the
// per-Service chains in write (sorted), and -X for the chains in del (sorted).
func Input(t Table, write, del []string) string {
	var b strings.Builder
	b.WriteString("*" + t.Name + "\n")
	ws := append([]string(nil), write...)
	sort.Strings(ws)
	ds := append([]string(nil), del...)
	sort.Strings(ds)
	for _, c := range t.Fixed {
		fmt.Fprintf(&b, ":%s - [0:0]\n", c.Name)
	}
	for _, c := range ws {
		fmt.Fprintf(&b, ":%s - [0:0]\n", c)
	}
	for _, c := range ds {
		fmt.Fprintf(&b, ":%s - [0:0]\n", c)
	}
	for _, c := range t.Fixed {
		for _, r := range c.Rules {
			b.WriteString(r + "\n")
		}
	}
	for _, c := range ws {
		for _, r := range t.Service[c] {
			b.WriteString(r + "\n")
		}
	}
	for _, c := range ds {
		fmt.Fprintf(&b, "-X %s\n", c)
	}
	b.WriteString("COMMIT\n")
	return b.String()
}

// ServiceChains returns the sorted names of a table's per-Service chains.
func (t Table) ServiceChains() []string {
	out := make([]string, 0, len(t.Service))
	for c := range t.Service {
		out = append(out, c)
	}
	sort.Strings(out)
	return out
}
