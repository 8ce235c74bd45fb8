package nftables

import (
	"fmt"
	"net/netip"
	"strings"

	"github.com/nodekeeper/nodekeeper/netrules"
)

// The whole-table text rendering nodekeeper used before per-port compilation, kept as
// the test oracle: Render (union of Compile) must give exactly this. Changes since:
// a one-element address set is written without braces, as nft itself prints it; the
// flat layout (service chains DNAT themselves, endpoint chains only with affinity,
// the masquerade mark set inline, hairpin through the set of local endpoints).

type oracleDesired struct {
	Chains   map[string][]string
	Elements map[string]map[string]string // map name -> "k1 . k2 . k3" -> verdict
	Sets     map[string]int32             // affinity sets -> timeout seconds
}

type fam struct {
	ip, addrType, any string
}

func famOf(f netrules.Family) fam {
	if f == netrules.IPv6 {
		return fam{ip: "ip6", addrType: "ipv6_addr", any: "::/0"}
	}
	return fam{ip: "ip", addrType: "ipv4_addr", any: "0.0.0.0/0"}
}

func braces(xs []string) string {
	if len(xs) == 1 {
		return xs[0]
	}
	return "{ " + strings.Join(xs, ", ") + " }"
}

// Render computes the desired per-Service chains and map elements. Pure.
func oracleRender(rs *netrules.Ruleset) oracleDesired {
	f := famOf(rs.Family)
	d := oracleDesired{Chains: map[string][]string{}, Sets: map[string]int32{}, Elements: map[string]map[string]string{
		mapServiceIPs: {}, mapNodePorts: {}, mapNoEndpointIPs: {}, mapNoEndpointNPs: {}, mapFirewallIPs: {}, setHairpin: {}, setMasqKeys: {},
	}}
	mark := "mark set mark or " + masqBit
	hairpin := func(p *netrules.ServicePort, eps []netrules.Endpoint) {
		for _, e := range eps {
			if e.Local {
				d.Elements[setHairpin][fmt.Sprintf("%s . %s . %s . %d", e.IP, e.IP, proto(p), e.Port)] = ""
			}
		}
	}
	var clusterCIDRs []string
	for _, c := range rs.Node.ClusterCIDRs {
		if c.Addr().Is4() == (rs.Family == netrules.IPv4) {
			clusterCIDRs = append(clusterCIDRs, c.String())
		}
	}
	key := func(a netip.Addr, p *netrules.ServicePort, port int32) string {
		return fmt.Sprintf("%s . %s . %d", a, proto(p), port)
	}
	for _, p := range rs.Ports {
		pr := proto(p)
		svc := serviceChain(p)
		hasCluster := len(p.ClusterEndpoints) > 0
		if hasCluster {
			d.Elements[mapServiceIPs][key(p.ClusterIP, p, p.Port)] = "goto " + svc
			var rules []string
			if rs.Node.MasqueradeAll || len(clusterCIDRs) > 0 {
				d.Elements[setMasqKeys][key(p.ClusterIP, p, p.Port)] = ""
			}
			d.Chains[svc] = append(rules, oracleSpread(&d, f, p, p.ClusterEndpoints)...)
			hairpin(p, p.ClusterEndpoints)
		} else {
			verdict := "goto " + chainReject
			if p.InternalLocal && len(p.AllEndpoints) > 0 {
				verdict = "drop"
			}
			d.Elements[mapNoEndpointIPs][key(p.ClusterIP, p, p.Port)] = verdict
		}
		if !p.HasExternal() {
			continue
		}
		extEPs := p.ClusterEndpoints
		if p.ExternalLocal {
			extEPs = p.LocalEndpoints
		}
		vips := append(append([]netip.Addr(nil), p.ExternalIPs...), p.LoadBalancerIPs...)
		if len(extEPs) == 0 {
			verdict := "goto " + chainReject
			if p.ExternalLocal && len(p.AllEndpoints) > 0 {
				verdict = "drop"
			}
			for _, a := range vips {
				d.Elements[mapNoEndpointIPs][key(a, p, p.Port)] = verdict
			}
			if p.NodePort != 0 {
				d.Elements[mapNoEndpointNPs][fmt.Sprintf("%s . %d", pr, p.NodePort)] = verdict
			}
			if !hasCluster || !p.ExternalLocal {
				continue
			}
		}
		ext := externalChain(p)
		for _, a := range p.ExternalIPs {
			d.Elements[mapServiceIPs][key(a, p, p.Port)] = "goto " + ext
		}
		for _, a := range p.LoadBalancerIPs {
			d.Elements[mapServiceIPs][key(a, p, p.Port)] = "goto " + ext
		}
		if len(p.LoadBalancerSourceRanges) > 0 && len(p.LoadBalancerIPs) > 0 {
			fw := firewallChain(p)
			var allowed []string
			for _, r := range p.LoadBalancerSourceRanges {
				allowed = append(allowed, r.String())
			}
			for _, a := range p.LoadBalancerIPs {
				allowed = append(allowed, a.String()) // the node reaching its own LB IP
				d.Elements[mapFirewallIPs][key(a, p, p.Port)] = "goto " + fw
			}
			d.Chains[fw] = []string{fmt.Sprintf("%s saddr != %s drop", f.ip, braces(allowed))}
		}
		if p.NodePort != 0 {
			d.Elements[mapNodePorts][fmt.Sprintf("%s . %d", pr, p.NodePort)] = "goto " + ext
		}
		var rules []string
		if !p.ExternalLocal {
			rules = []string{mark, "goto " + svc}
		} else {
			if hasCluster && len(clusterCIDRs) > 0 {
				rules = append(rules, fmt.Sprintf("%s saddr %s goto %s", f.ip, braces(clusterCIDRs), svc))
			}
			rules = append(rules, "fib saddr type local "+mark)
			if hasCluster {
				rules = append(rules, "fib saddr type local goto "+svc)
			}
			if len(p.LocalEndpoints) > 0 {
				lc := localChain(p)
				rules = append(rules, "goto "+lc)
				d.Chains[lc] = oracleSpread(&d, f, p, p.LocalEndpoints)
				hairpin(p, p.LocalEndpoints)
			}
		}
		d.Chains[ext] = rules
	}
	return d
}

// spread picks an endpoint at random (or the client's previous one, with affinity):
// without affinity the chain DNATs itself, with it each endpoint has a chain and a set.
func oracleSpread(d *oracleDesired, f fam, p *netrules.ServicePort, eps []netrules.Endpoint) []string {
	dst := func(e netrules.Endpoint) string {
		if e.IP.Is6() {
			return fmt.Sprintf("[%s]:%d", e.IP, e.Port)
		}
		return fmt.Sprintf("%s:%d", e.IP, e.Port)
	}
	var rules []string
	// as upstream: one rule, numgen indexing an anonymous map of the endpoints
	if p.AffinitySeconds <= 0 && len(eps) > 1 {
		var es []string
		for i, e := range eps {
			es = append(es, fmt.Sprintf("%d : %s . %d", i, e.IP, e.Port))
		}
		return []string{fmt.Sprintf("meta l4proto %s dnat %s addr . port to numgen random mod %d map { %s }", proto(p), f.ip, len(eps), strings.Join(es, ", "))}
	}
	if p.AffinitySeconds <= 0 {
		for i, e := range eps {
			r := fmt.Sprintf("meta l4proto %s dnat to %s", proto(p), dst(e))
			if left := len(eps) - i; left > 1 {
				r = fmt.Sprintf("numgen random mod %d 0 ", left) + r
			}
			rules = append(rules, r)
		}
		return rules
	}
	for _, e := range eps {
		rules = append(rules, fmt.Sprintf("%s saddr @%s goto %s", f.ip, affinitySet(p, e), endpointChain(p, e)))
	}
	for i, e := range eps {
		if left := len(eps) - i; left > 1 {
			rules = append(rules, fmt.Sprintf("numgen random mod %d 0 goto %s", left, endpointChain(p, e)))
		} else {
			rules = append(rules, "goto "+endpointChain(p, e))
		}
		ec := endpointChain(p, e)
		if _, done := d.Chains[ec]; done {
			continue
		}
		set := affinitySet(p, e)
		d.Sets[set] = p.AffinitySeconds
		d.Chains[ec] = []string{
			fmt.Sprintf("update @%s { %s saddr }", set, f.ip),
			fmt.Sprintf("meta l4proto %s dnat to %s", proto(p), dst(e)),
		}
	}
	return rules
}
