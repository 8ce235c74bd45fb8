package netrules

import (
	"fmt"
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
