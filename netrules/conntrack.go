package netrules

import (
	"net/netip"
	"sort"

	corev1 "k8s.io/api/core/v1"
)

// ConntrackFlow selects UDP conntrack entries to delete: those whose original
// destination is OrigDst (and port OrigPort, when set), or whose original destination
// port is OrigPort on any local address (NodePorts, OrigDst invalid), and that were
// NATed to DstNAT (when valid).
type ConntrackFlow struct {
	Family   Family
	OrigDst  netip.Addr
	OrigPort int32
	DstNAT   netip.Addr
}

// StaleConntrack lists the UDP conntrack entries that would keep sending a client to
// an endpoint that is gone (the DNS black-hole kube-proxy fixes), and entries made while
// a Service had no endpoints (or was not programmed yet) once it has some. Pure.
func StaleConntrack(prev, next *Ruleset) []ConntrackFlow {
	prevBy := map[string]*ServicePort{}
	if prev != nil {
		for _, p := range prev.Ports {
			prevBy[p.Key()] = p
		}
	}
	nextBy := map[string]*ServicePort{}
	if next != nil {
		for _, p := range next.Ports {
			nextBy[p.Key()] = p
		}
	}
	var out []ConntrackFlow
	// a UDP Service that had no endpoints (or did not exist) and now has some: packets
	// sent meanwhile left entries that bypass the new DNAT rules
	if next != nil {
		for _, n := range next.Ports {
			if n.Protocol != corev1.ProtocolUDP || len(n.ClusterEndpoints) == 0 {
				continue
			}
			if p := prevBy[n.Key()]; p != nil && len(p.ClusterEndpoints) > 0 {
				continue
			}
			for _, vip := range append(append([]netip.Addr{n.ClusterIP}, n.ExternalIPs...), n.LoadBalancerIPs...) {
				out = append(out, ConntrackFlow{Family: next.Family, OrigDst: vip, OrigPort: n.Port})
			}
			if n.NodePort != 0 {
				out = append(out, ConntrackFlow{Family: next.Family, OrigPort: n.NodePort})
			}
		}
	}
	if prev == nil {
		return out
	}
	for _, p := range prev.Ports {
		if p.Protocol != corev1.ProtocolUDP {
			continue
		}
		n := nextBy[p.Key()]
		still := map[netip.Addr]bool{}
		if n != nil {
			for _, e := range append(append([]Endpoint(nil), n.ClusterEndpoints...), n.LocalEndpoints...) {
				still[e.IP] = true
			}
		}
		gone := map[netip.Addr]bool{}
		for _, e := range append(append([]Endpoint(nil), p.ClusterEndpoints...), p.LocalEndpoints...) {
			if !still[e.IP] {
				gone[e.IP] = true
			}
		}
		var goneList []netip.Addr
		for a := range gone {
			goneList = append(goneList, a)
		}
		sort.Slice(goneList, func(i, j int) bool { return goneList[i].Less(goneList[j]) })
		vips := append(append([]netip.Addr{p.ClusterIP}, p.ExternalIPs...), p.LoadBalancerIPs...)
		for _, ep := range goneList {
			for _, vip := range vips {
				out = append(out, ConntrackFlow{Family: prev.Family, OrigDst: vip, OrigPort: p.Port, DstNAT: ep})
			}
			if p.NodePort != 0 {
				out = append(out, ConntrackFlow{Family: prev.Family, OrigPort: p.NodePort, DstNAT: ep})
			}
		}
	}
	return out
}
