// Package netrules is the pure heart of the ServiceReconciler: Build turns Services,
// EndpointSlices and this node's facts into a backend-neutral Ruleset (sorted, no clock,
// no randomness). Backends (netrules/iptables, …) render it and apply it in one call.
package netrules

import (
	"fmt"
	"net/netip"
	"sort"
	"strings"
	"time"

	corev1 "k8s.io/api/core/v1"
	discoveryv1 "k8s.io/api/discovery/v1"
)

// Labels and annotations kube-proxy honours.
const (
	LabelServiceProxyName   = "service.kubernetes.io/service-proxy-name"
	LabelHeadless           = "service.kubernetes.io/headless"
	AnnotationTopologyMode  = "service.kubernetes.io/topology-mode"
	AnnotationTopologyHints = "service.kubernetes.io/topology-aware-hints"
)

// Family is an IP family.
type Family int

const (
	IPv4 Family = 4
	IPv6 Family = 6
)

// Node is what Build needs to know about this node.
type Node struct {
	Name string
	// Zone is the node's topology.kubernetes.io/zone label ("" = none).
	Zone string
	// ClusterCIDRs: traffic to a ClusterIP from outside them is masqueraded.
	ClusterCIDRs []netip.Prefix
	// MasqueradeAll masquerades all traffic to ClusterIPs.
	MasqueradeAll bool
	// NodePortAddresses restricts NodePorts to local addresses in these ranges; empty
	// means every local address.
	NodePortAddresses []netip.Prefix
	// LocalhostNodePorts lets NodePorts answer on 127.0.0.0/8 (IPv4 only, as upstream).
	LocalhostNodePorts bool
	// NodeIPs are the node's addresses; the IPVS backend binds NodePorts to them.
	NodeIPs []netip.Addr
}

// Endpoint is one backend address of a service port.
type Endpoint struct {
	IP   netip.Addr
	Port int32
	// Local is true when the endpoint runs on this node.
	Local bool
}

// String is ip:port (with brackets for IPv6).
func (e Endpoint) String() string { return netip.AddrPortFrom(e.IP, uint16(e.Port)).String() }

// ServicePort is the rules-relevant view of one port of one Service in one family.
type ServicePort struct {
	// Namespace/Name:PortName, kube-proxy's ServicePortName.
	Namespace, Name, PortName string
	Protocol                  corev1.Protocol
	ClusterIP                 netip.Addr
	Port                      int32
	NodePort                  int32
	ExternalIPs               []netip.Addr
	LoadBalancerIPs           []netip.Addr
	LoadBalancerSourceRanges  []netip.Prefix
	// AffinitySeconds > 0 means sessionAffinity ClientIP with that timeout.
	AffinitySeconds int32
	// ExternalLocal is externalTrafficPolicy: Local (for NodePort/LB/externalIPs).
	ExternalLocal bool
	// InternalLocal is internalTrafficPolicy: Local.
	InternalLocal       bool
	HealthCheckNodePort int32
	// ClusterEndpoints serve traffic to the ClusterIP (and external traffic when
	// !ExternalLocal). LocalEndpoints serve external traffic when ExternalLocal.
	ClusterEndpoints []Endpoint
	LocalEndpoints   []Endpoint
	// LocalTerminating: LocalEndpoints are the serving-and-terminating fallback (no local
	// endpoint is ready), which a health check node port does not count.
	LocalTerminating bool
	// AllEndpoints is every endpoint considered, for conntrack cleanup.
	AllEndpoints []Endpoint
}

// Key is "namespace/name:port/protocol", unique within a family.
func (p *ServicePort) Key() string {
	return fmt.Sprintf("%s/%s:%s/%s", p.Namespace, p.Name, p.PortName, strings.ToLower(string(p.Protocol)))
}

// NameString is "namespace/name:port" as kube-proxy prints it in rule comments
// ("namespace/name" when the port is unnamed).
func (p *ServicePort) NameString() string {
	if p.PortName == "" {
		return p.Namespace + "/" + p.Name
	}
	return p.Namespace + "/" + p.Name + ":" + p.PortName
}

// HasExternal tells whether the port is reachable from outside the cluster network.
func (p *ServicePort) HasExternal() bool {
	return p.NodePort != 0 || len(p.ExternalIPs) > 0 || len(p.LoadBalancerIPs) > 0
}

// SyncStats tells what one backend sync did.
type SyncStats struct {
	Full          bool
	ChainsWritten int
	ChainsDeleted int
	Rules         int
	// Pending is work the backend left for its next call (e.g. Services of a bounded
	// full rewrite not written yet): the caller should call again soon.
	Pending int
	// CallAfter > 0: the backend has work due then (stale objects to delete): the
	// caller should call again after it, with or without changes.
	CallAfter time.Duration
}

// Ruleset is the desired state for one family, ports sorted by Key.
type Ruleset struct {
	Family Family
	Node   Node
	Ports  []*ServicePort
}

// Build computes the desired rules for each family from the cluster's Services and
// EndpointSlices. It is pure: same input, same output. It is BuildService over every
// Service, sorted: the incremental path (State) must always agree with it.
func Build(services []*corev1.Service, slices []*discoveryv1.EndpointSlice, node Node) map[Family]*Ruleset {
	bySvc := map[string][]*discoveryv1.EndpointSlice{}
	for _, s := range slices {
		if k := SliceServiceKey(s); k != "" {
			bySvc[k] = append(bySvc[k], s)
		}
	}
	out := map[Family]*Ruleset{IPv4: {Family: IPv4, Node: node}, IPv6: {Family: IPv6, Node: node}}
	for _, svc := range services {
		for fam, ports := range BuildService(svc, bySvc[svc.Namespace+"/"+svc.Name], node) {
			out[fam].Ports = append(out[fam].Ports, ports...)
		}
	}
	for _, rs := range out {
		sort.Slice(rs.Ports, func(i, j int) bool { return rs.Ports[i].Key() < rs.Ports[j].Key() })
	}
	return out
}

// SliceServiceKey is "namespace/service" of the Service an EndpointSlice belongs to
// (its kubernetes.io/service-name label), or "" when it names none.
func SliceServiceKey(s *discoveryv1.EndpointSlice) string {
	svc := s.Labels[discoveryv1.LabelServiceName]
	if svc == "" {
		return ""
	}
	return s.Namespace + "/" + svc
}

// BuildService computes the desired ports of one Service in each family from the
// Service and its EndpointSlices (those whose service-name label names it). Ports of
// one family are sorted by Key; a Service nodekeeper does not program has none. Pure.
func BuildService(svc *corev1.Service, slices []*discoveryv1.EndpointSlice, node Node) map[Family][]*ServicePort {
	if svc == nil || !ShouldProgram(svc) {
		return nil
	}
	out := map[Family][]*ServicePort{}
	for _, cip := range clusterIPs(svc) {
		fam := familyOf(cip)
		for i := range svc.Spec.Ports {
			sp := servicePort(svc, &svc.Spec.Ports[i], cip, fam)
			eps := endpointsFor(slices, &svc.Spec.Ports[i], fam, node.Name)
			categorize(sp, svc, eps, node)
			out[fam] = append(out[fam], sp)
		}
	}
	for _, ports := range out {
		sort.Slice(ports, func(i, j int) bool { return ports[i].Key() < ports[j].Key() })
	}
	return out
}

// ShouldProgram tells whether nodekeeper owns rules for the Service: not headless, not
// ExternalName, and not claimed by another proxy through service-proxy-name.
func ShouldProgram(svc *corev1.Service) bool {
	if _, ok := svc.Labels[LabelServiceProxyName]; ok {
		return false
	}
	if svc.Spec.Type == corev1.ServiceTypeExternalName {
		return false
	}
	if svc.Spec.ClusterIP == "" || svc.Spec.ClusterIP == corev1.ClusterIPNone {
		return false
	}
	return true
}

func clusterIPs(svc *corev1.Service) []netip.Addr {
	ips := svc.Spec.ClusterIPs
	if len(ips) == 0 {
		ips = []string{svc.Spec.ClusterIP}
	}
	var out []netip.Addr
	for _, s := range ips {
		if a, err := netip.ParseAddr(s); err == nil {
			out = append(out, a.Unmap())
		}
	}
	return out
}

func familyOf(a netip.Addr) Family {
	if a.Is4() {
		return IPv4
	}
	return IPv6
}

func servicePort(svc *corev1.Service, p *corev1.ServicePort, cip netip.Addr, fam Family) *ServicePort {
	sp := &ServicePort{
		Namespace: svc.Namespace, Name: svc.Name, PortName: p.Name,
		Protocol: p.Protocol, ClusterIP: cip, Port: p.Port,
	}
	if sp.Protocol == "" {
		sp.Protocol = corev1.ProtocolTCP
	}
	if svc.Spec.Type == corev1.ServiceTypeNodePort || svc.Spec.Type == corev1.ServiceTypeLoadBalancer {
		sp.NodePort = p.NodePort
	}
	for _, s := range svc.Spec.ExternalIPs {
		if a, err := netip.ParseAddr(s); err == nil && familyOf(a.Unmap()) == fam {
			sp.ExternalIPs = append(sp.ExternalIPs, a.Unmap())
		}
	}
	if svc.Spec.Type == corev1.ServiceTypeLoadBalancer {
		for _, ing := range svc.Status.LoadBalancer.Ingress {
			if ing.IPMode != nil && *ing.IPMode == corev1.LoadBalancerIPModeProxy {
				continue // the load balancer delivers to the node, not to the VIP
			}
			if a, err := netip.ParseAddr(ing.IP); err == nil && familyOf(a.Unmap()) == fam {
				sp.LoadBalancerIPs = append(sp.LoadBalancerIPs, a.Unmap())
			}
		}
		for _, r := range svc.Spec.LoadBalancerSourceRanges {
			if pr, err := netip.ParsePrefix(strings.TrimSpace(r)); err == nil && familyOf(pr.Addr()) == fam {
				sp.LoadBalancerSourceRanges = append(sp.LoadBalancerSourceRanges, pr.Masked())
			}
		}
	}
	if svc.Spec.SessionAffinity == corev1.ServiceAffinityClientIP {
		sp.AffinitySeconds = corev1.DefaultClientIPServiceAffinitySeconds
		if c := svc.Spec.SessionAffinityConfig; c != nil && c.ClientIP != nil && c.ClientIP.TimeoutSeconds != nil {
			sp.AffinitySeconds = *c.ClientIP.TimeoutSeconds
		}
	}
	if sp.HasExternal() && svc.Spec.ExternalTrafficPolicy == corev1.ServiceExternalTrafficPolicyLocal {
		sp.ExternalLocal = true
		sp.HealthCheckNodePort = svc.Spec.HealthCheckNodePort
	}
	if svc.Spec.InternalTrafficPolicy != nil && *svc.Spec.InternalTrafficPolicy == corev1.ServiceInternalTrafficPolicyLocal {
		sp.InternalLocal = true
	}
	return sp
}

// endpointInfo carries the EndpointSlice conditions of one endpoint.
type endpointInfo struct {
	Endpoint
	ready, serving, terminating bool
	zoneHints                   []string
	hasHints                    bool
}

// endpointsFor collects the endpoints of one service port, deduplicated by address
// (an address in several slices counts once; the first slice by name wins).
func endpointsFor(slices []*discoveryv1.EndpointSlice, p *corev1.ServicePort, fam Family, nodeName string) []endpointInfo {
	sorted := append([]*discoveryv1.EndpointSlice(nil), slices...)
	sort.Slice(sorted, func(i, j int) bool { return sorted[i].Name < sorted[j].Name })
	seen := map[netip.AddrPort]bool{}
	var out []endpointInfo
	for _, s := range sorted {
		if (fam == IPv4 && s.AddressType != discoveryv1.AddressTypeIPv4) || (fam == IPv6 && s.AddressType != discoveryv1.AddressTypeIPv6) {
			continue
		}
		var port *discoveryv1.EndpointPort
		for i := range s.Ports {
			sp := &s.Ports[i]
			name := ""
			if sp.Name != nil {
				name = *sp.Name
			}
			proto := corev1.ProtocolTCP
			if sp.Protocol != nil {
				proto = *sp.Protocol
			}
			want := p.Protocol
			if want == "" {
				want = corev1.ProtocolTCP
			}
			if name == p.Name && proto == want && sp.Port != nil {
				port = sp
				break
			}
		}
		if port == nil {
			continue
		}
		for _, ep := range s.Endpoints {
			if len(ep.Addresses) == 0 {
				continue
			}
			a, err := netip.ParseAddr(ep.Addresses[0])
			if err != nil {
				continue
			}
			ap := netip.AddrPortFrom(a.Unmap(), uint16(*port.Port))
			if seen[ap] {
				continue
			}
			seen[ap] = true
			// upstream: nil ready means ready; nil serving means the same as ready;
			// nil terminating means not terminating
			ready := ep.Conditions.Ready == nil || *ep.Conditions.Ready
			serving := ready
			if ep.Conditions.Serving != nil {
				serving = *ep.Conditions.Serving
			}
			terminating := ep.Conditions.Terminating != nil && *ep.Conditions.Terminating
			ei := endpointInfo{
				Endpoint: Endpoint{IP: a.Unmap(), Port: *port.Port, Local: ep.NodeName != nil && *ep.NodeName == nodeName},
				ready:    ready, serving: serving, terminating: terminating,
			}
			if ep.Hints != nil {
				ei.hasHints = len(ep.Hints.ForZones) > 0
				for _, z := range ep.Hints.ForZones {
					ei.zoneHints = append(ei.zoneHints, z.Name)
				}
			}
			out = append(out, ei)
		}
	}
	sort.Slice(out, func(i, j int) bool {
		return netip.AddrPortFrom(out[i].IP, uint16(out[i].Port)).Compare(netip.AddrPortFrom(out[j].IP, uint16(out[j].Port))) < 0
	})
	return out
}

// categorize picks the endpoints for cluster and local traffic, as kube-proxy's
// CategorizeEndpoints: ready ones (narrowed by topology hints when usable), falling
// back to serving-and-terminating ones when none are ready.
func categorize(sp *ServicePort, svc *corev1.Service, eps []endpointInfo, node Node) {
	for _, e := range eps {
		sp.AllEndpoints = append(sp.AllEndpoints, e.Endpoint)
	}
	useTopology := topologyUsable(svc, eps, node.Zone)
	pick := func(keep func(endpointInfo) bool) []Endpoint {
		var out []Endpoint
		for _, e := range eps {
			if keep(e) {
				out = append(out, e.Endpoint)
			}
		}
		return out
	}
	inZone := func(e endpointInfo) bool {
		if !useTopology {
			return true
		}
		for _, z := range e.zoneHints {
			if z == node.Zone {
				return true
			}
		}
		return false
	}
	if sp.InternalLocal {
		sp.ClusterEndpoints = pick(func(e endpointInfo) bool { return e.Local && e.ready })
		if len(sp.ClusterEndpoints) == 0 {
			sp.ClusterEndpoints = pick(func(e endpointInfo) bool { return e.Local && e.serving && e.terminating })
		}
	} else {
		sp.ClusterEndpoints = pick(func(e endpointInfo) bool { return e.ready && inZone(e) })
		if len(sp.ClusterEndpoints) == 0 {
			sp.ClusterEndpoints = pick(func(e endpointInfo) bool { return e.serving && e.terminating })
		}
	}
	if sp.ExternalLocal {
		sp.LocalEndpoints = pick(func(e endpointInfo) bool { return e.Local && e.ready })
		if len(sp.LocalEndpoints) == 0 {
			sp.LocalEndpoints = pick(func(e endpointInfo) bool { return e.Local && e.serving && e.terminating })
			sp.LocalTerminating = len(sp.LocalEndpoints) > 0
		}
	}
}

// topologyUsable: hints are used when the Service asks for them (topology-mode Auto,
// or trafficDistribution PreferClose/PreferSameZone), the node has a zone, every ready
// endpoint carries zone hints, and at least one hint names this node's zone.
func topologyUsable(svc *corev1.Service, eps []endpointInfo, zone string) bool {
	asked := false
	if m := svc.Annotations[AnnotationTopologyMode]; m != "" && m != "Disabled" {
		asked = true
	}
	if h := strings.ToLower(svc.Annotations[AnnotationTopologyHints]); h == "auto" {
		asked = true
	}
	if td := svc.Spec.TrafficDistribution; td != nil && (*td == "PreferClose" || *td == "PreferSameZone") {
		asked = true
	}
	if !asked || zone == "" {
		return false
	}
	found := false
	for _, e := range eps {
		if !e.ready {
			continue
		}
		if !e.hasHints {
			return false
		}
		for _, z := range e.zoneHints {
			if z == zone {
				found = true
			}
		}
	}
	return found
}
