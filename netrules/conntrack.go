package netrules

import (
	"net/netip"
	"sort"

	corev1 "k8s.io/api/core/v1"
)

// ConntrackFlow selects conntrack entries to delete.
//
// A UDP flow (Unanswered false) selects UDP entries whose original destination is
// OrigDst (and port OrigPort, when set), or whose original destination port is OrigPort
// on any local address (NodePorts, OrigDst invalid), and that were NATed to DstNAT (when
// valid).
//
// An Unanswered flow selects TCP entries to OrigDst:OrigPort that were never DNATed
// (the reply tuple still comes from the original destination) and never answered (state
// SYN_SENT): connection attempts made before the Service had rules. Retransmitted SYNs do
// not renew such an entry, but it lives 120 s and a later connection that happens to
// reuse the client's source port matches it and bypasses the DNAT rules (seen as a SYN
// unanswered for 2 s in the churn traffic test). Upstream kube-proxy leaves them alone;
// deleting them is safe: the next SYN of such a connection is DNATed like any new one.
type ConntrackFlow struct {
	Family     Family
	OrigDst    netip.Addr
	OrigPort   int32
	DstNAT     netip.Addr
	Unanswered bool
}

// StaleConntrack lists the conntrack entries that would keep sending a client to an
// endpoint that is gone (UDP: the DNS black-hole kube-proxy fixes), and entries made
// while a Service had no endpoints (or was not programmed yet) once it has some: all UDP
// ones to its addresses, as upstream, and TCP connection attempts that bypassed its
// DNAT and got no answer (see ConntrackFlow). Pure.
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
	// a Service that had no endpoints (or did not exist) and now has some: packets sent
	// meanwhile left entries that bypass the new DNAT rules
	if next != nil {
		for _, n := range next.Ports {
			if len(n.ClusterEndpoints) == 0 || (n.Protocol != corev1.ProtocolUDP && n.Protocol != corev1.ProtocolTCP) {
				continue
			}
			if p := prevBy[n.Key()]; p != nil && len(p.ClusterEndpoints) > 0 {
				continue
			}
			tcp := n.Protocol == corev1.ProtocolTCP
			for _, vip := range append(append([]netip.Addr{n.ClusterIP}, n.ExternalIPs...), n.LoadBalancerIPs...) {
				out = append(out, ConntrackFlow{Family: next.Family, OrigDst: vip, OrigPort: n.Port, Unanswered: tcp})
			}
			// a TCP SYN to a node port without rules meets the node's own RST: its entry
			// closes by itself
			if n.NodePort != 0 && !tcp {
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
