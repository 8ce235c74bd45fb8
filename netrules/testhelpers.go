package netrules

import (
	"fmt"
	"math/rand"
	"net/netip"

	corev1 "k8s.io/api/core/v1"
	discoveryv1 "k8s.io/api/discovery/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/utils/ptr"
)

// Constructors for tests and benchmarks of this package and its backends.

// MakeService returns a ClusterIP Service with TCP ports named p<port>.
func MakeService(ns, name, clusterIP string, ports ...int32) *corev1.Service {
	svc := &corev1.Service{
		ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: name},
		Spec:       corev1.ServiceSpec{Type: corev1.ServiceTypeClusterIP, ClusterIP: clusterIP, ClusterIPs: []string{clusterIP}},
	}
	for _, p := range ports {
		svc.Spec.Ports = append(svc.Spec.Ports, corev1.ServicePort{Name: fmt.Sprintf("p%d", p), Port: p, Protocol: corev1.ProtocolTCP})
	}
	return svc
}

// SliceEndpoint describes one endpoint of MakeSlice.
type SliceEndpoint struct {
	IP                             string
	Node                           string
	NotReady, Serving, Terminating bool
	Zones                          []string
}

// MakeSlice returns an IPv4 (or IPv6, by the first address) EndpointSlice for svc with
// ports named p<port> -> targetPort.
func MakeSlice(svc *corev1.Service, name string, targetPort int32, eps ...SliceEndpoint) *discoveryv1.EndpointSlice {
	at := discoveryv1.AddressTypeIPv4
	if len(eps) > 0 {
		if a, err := netip.ParseAddr(eps[0].IP); err == nil && a.Is6() {
			at = discoveryv1.AddressTypeIPv6
		}
	}
	s := &discoveryv1.EndpointSlice{
		ObjectMeta: metav1.ObjectMeta{Namespace: svc.Namespace, Name: name,
			Labels: map[string]string{discoveryv1.LabelServiceName: svc.Name}},
		AddressType: at,
	}
	for _, p := range svc.Spec.Ports {
		s.Ports = append(s.Ports, discoveryv1.EndpointPort{Name: ptr.To(p.Name), Port: ptr.To(targetPort), Protocol: ptr.To(p.Protocol)})
	}
	for _, e := range eps {
		ep := discoveryv1.Endpoint{Addresses: []string{e.IP}, Conditions: discoveryv1.EndpointConditions{Ready: ptr.To(!e.NotReady)}}
		if e.NotReady {
			ep.Conditions.Serving = ptr.To(e.Serving)
			ep.Conditions.Terminating = ptr.To(e.Terminating)
		}
		if e.Node != "" {
			ep.NodeName = ptr.To(e.Node)
		}
		if len(e.Zones) > 0 {
			ep.Hints = &discoveryv1.EndpointHints{}
			for _, z := range e.Zones {
				ep.Hints.ForZones = append(ep.Hints.ForZones, discoveryv1.ForZone{Name: z})
			}
		}
		s.Endpoints = append(s.Endpoints, ep)
	}
	return s
}

// World is a small cluster under random change, for property tests: incremental
// updates driven by its Events must end where a full Build of Objects ends.
type World struct {
	Node     string // the node name endpoints are local to
	Services map[string]*corev1.Service
	Slices   map[string]*discoveryv1.EndpointSlice // "ns/slice-name" -> slice
}

// Event is one change of a World: a Service or an EndpointSlice created/updated, or
// deleted (Gone). Objects are never modified after an Event hands them out.
type Event struct {
	Service *corev1.Service
	Slice   *discoveryv1.EndpointSlice
	// PrevSlice is the slice's previous version on an update (its label may differ)
	PrevSlice *discoveryv1.EndpointSlice
	Gone      bool
}

// NewWorld returns an empty World whose local node is node.
func NewWorld(node string) *World {
	return &World{Node: node, Services: map[string]*corev1.Service{}, Slices: map[string]*discoveryv1.EndpointSlice{}}
}

// Objects returns the World's current objects.
func (w *World) Objects() ([]*corev1.Service, []*discoveryv1.EndpointSlice) {
	var svcs []*corev1.Service
	for _, s := range w.Services {
		svcs = append(svcs, s)
	}
	var slices []*discoveryv1.EndpointSlice
	for _, s := range w.Slices {
		slices = append(slices, s)
	}
	return svcs, slices
}

// Step makes one random change and returns it. Services come from a pool of 12 names in
// two namespaces; external IPs, load-balancer IPs and node ports come from small pools
// so that Services collide on them; slices move between Services by relabelling.
func (w *World) Step(r *rand.Rand) Event {
	ns := []string{"a", "b"}[r.Intn(2)]
	switch r.Intn(10) {
	case 0, 1, 2: // a Service created or changed
		name := fmt.Sprintf("s%d", r.Intn(6))
		svc := randomService(r, ns, name)
		w.Services[ns+"/"+name] = svc
		return Event{Service: svc}
	case 3: // a Service deleted
		name := fmt.Sprintf("s%d", r.Intn(6))
		if svc, ok := w.Services[ns+"/"+name]; ok {
			delete(w.Services, ns+"/"+name)
			return Event{Service: svc, Gone: true}
		}
		return w.Step(r)
	case 4: // a slice deleted
		name := fmt.Sprintf("e%d", r.Intn(8))
		if s, ok := w.Slices[ns+"/"+name]; ok {
			delete(w.Slices, ns+"/"+name)
			return Event{Slice: s, Gone: true}
		}
		return w.Step(r)
	default: // a slice created, changed or relabelled to another Service
		name := fmt.Sprintf("e%d", r.Intn(8))
		s := randomSlice(r, ns, name, fmt.Sprintf("s%d", r.Intn(6)), w.Node)
		prev := w.Slices[ns+"/"+name]
		w.Slices[ns+"/"+name] = s
		return Event{Slice: s, PrevSlice: prev}
	}
}

func randomService(r *rand.Rand, ns, name string) *corev1.Service {
	ip := fmt.Sprintf("10.96.%d.%d", map[string]int{"a": 1, "b": 2}[ns], 10+int(name[1]-'0'))
	if r.Intn(8) == 0 { // an IPv6 or dual-stack Service
		ip6 := fmt.Sprintf("fd00::%d:%d", map[string]int{"a": 1, "b": 2}[ns], 10+int(name[1]-'0'))
		svc := MakeService(ns, name, ip6, 80)
		if r.Intn(2) == 0 {
			svc.Spec.ClusterIPs = []string{ip6, ip}
		}
		return svc
	}
	var ports []int32
	for i := 0; i <= r.Intn(2); i++ {
		ports = append(ports, int32(80+i))
	}
	svc := MakeService(ns, name, ip, ports...)
	if r.Intn(4) == 0 {
		svc.Spec.Ports[0].Protocol = corev1.ProtocolUDP
	}
	if r.Intn(10) == 0 {
		svc.Spec.ClusterIP, svc.Spec.ClusterIPs = corev1.ClusterIPNone, nil // headless
	}
	switch r.Intn(4) {
	case 1:
		svc.Spec.Type = corev1.ServiceTypeNodePort
		for i := range svc.Spec.Ports {
			svc.Spec.Ports[i].NodePort = int32(30000 + r.Intn(4)) // collisions on purpose
		}
	case 2:
		svc.Spec.Type = corev1.ServiceTypeLoadBalancer
		for i := range svc.Spec.Ports {
			svc.Spec.Ports[i].NodePort = int32(30010 + r.Intn(4))
		}
		svc.Status.LoadBalancer.Ingress = []corev1.LoadBalancerIngress{{IP: fmt.Sprintf("192.0.2.%d", r.Intn(3))}}
		if r.Intn(3) == 0 {
			svc.Spec.LoadBalancerSourceRanges = []string{"203.0.113.0/24"}
		}
	}
	if r.Intn(3) == 0 {
		svc.Spec.ExternalIPs = []string{fmt.Sprintf("198.51.100.%d", r.Intn(3))}
	}
	if svc.Spec.Type != corev1.ServiceTypeClusterIP && r.Intn(3) == 0 {
		svc.Spec.ExternalTrafficPolicy = corev1.ServiceExternalTrafficPolicyLocal
		svc.Spec.HealthCheckNodePort = int32(32000 + r.Intn(3))
	}
	if r.Intn(5) == 0 {
		svc.Spec.InternalTrafficPolicy = ptr.To(corev1.ServiceInternalTrafficPolicyLocal)
	}
	if r.Intn(5) == 0 {
		svc.Spec.SessionAffinity = corev1.ServiceAffinityClientIP
	}
	return svc
}

func randomSlice(r *rand.Rand, ns, name, svcName, node string) *discoveryv1.EndpointSlice {
	svc := MakeService(ns, svcName, "10.96.0.1", 80, 81)
	if r.Intn(4) == 0 {
		svc.Spec.Ports[0].Protocol = corev1.ProtocolUDP
	}
	var eps []SliceEndpoint
	v6 := r.Intn(8) == 0
	for i := 0; i < r.Intn(4); i++ {
		e := SliceEndpoint{IP: fmt.Sprintf("10.244.%d.%d", r.Intn(2), 1+r.Intn(6)), Node: []string{node, "other"}[r.Intn(2)]}
		if v6 {
			e.IP = fmt.Sprintf("fd01::%d", 1+r.Intn(6))
		}
		if r.Intn(4) == 0 {
			e.NotReady, e.Serving, e.Terminating = true, r.Intn(2) == 0, r.Intn(2) == 0
		}
		eps = append(eps, e)
	}
	return MakeSlice(svc, name, int32(8080+r.Intn(2)), eps...)
}
