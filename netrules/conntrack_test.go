package netrules

import (
	"testing"

	corev1 "k8s.io/api/core/v1"
	discoveryv1 "k8s.io/api/discovery/v1"
)

func TestStaleConntrack(t *testing.T) {
	dns := MakeService("kube-system", "dns", "10.96.0.53", 53)
	dns.Spec.Ports[0].Protocol = corev1.ProtocolUDP
	dns.Spec.Type = corev1.ServiceTypeNodePort
	dns.Spec.Ports[0].NodePort = 30053
	web := MakeService("default", "web", "10.96.0.10", 80) // TCP: only unanswered attempts, when it gets endpoints
	build := func(dnsIPs ...string) *Ruleset {
		var eps []SliceEndpoint
		for _, ip := range dnsIPs {
			eps = append(eps, SliceEndpoint{IP: ip})
		}
		return Build([]*corev1.Service{dns, web}, []*discoveryv1.EndpointSlice{
			MakeSlice(dns, "dns-1", 53, eps...),
			MakeSlice(web, "web-1", 80, SliceEndpoint{IP: "10.244.0.5"}),
		}, node)[IPv4]
	}
	webOnly := func(webIPs ...string) *Ruleset {
		var eps []SliceEndpoint
		for _, ip := range webIPs {
			eps = append(eps, SliceEndpoint{IP: ip})
		}
		return Build([]*corev1.Service{web}, []*discoveryv1.EndpointSlice{MakeSlice(web, "web-1", 80, eps...)}, node)[IPv4]
	}
	// a TCP Service gets its first endpoints (or appears with some): connection attempts
	// made before its rules existed are cleared, nothing else about it ever is
	for _, prev := range []*Ruleset{nil, webOnly()} {
		got := StaleConntrack(prev, webOnly("10.244.0.5"))
		if len(got) != 1 || !got[0].Unanswered || got[0].OrigDst.String() != "10.96.0.10" || got[0].OrigPort != 80 || got[0].DstNAT.IsValid() {
			t.Errorf("TCP Service from %v to one endpoint: want one Unanswered flow for 10.96.0.10:80, got %+v", prev, got)
		}
	}
	if got := StaleConntrack(webOnly("10.244.0.5"), webOnly("10.244.0.6")); len(got) != 0 {
		t.Errorf("TCP endpoint replaced: nothing to clear (TCP flows are never cut), got %+v", got)
	}
	if got := StaleConntrack(webOnly("10.244.0.5"), webOnly()); len(got) != 0 {
		t.Errorf("TCP Service loses its endpoints: nothing to clear, got %+v", got)
	}
	if got := StaleConntrack(nil, build("10.244.0.2")); len(got) != 3 || !got[0].Unanswered || got[0].OrigDst.String() != "10.96.0.10" || got[1].DstNAT.IsValid() || got[1].Unanswered || got[2].OrigPort != 30053 {
		t.Errorf("a new UDP Service with endpoints (and a new TCP one): want the UDP VIP and NodePort flows cleared and the TCP VIP's unanswered attempts, got %v", got)
	}
	if got := StaleConntrack(build("10.244.0.2"), build("10.244.0.2")); len(got) != 0 {
		t.Errorf("nothing changed, but %v", got)
	}
	got := StaleConntrack(build("10.244.0.2", "10.244.0.3"), build("10.244.0.3", "10.244.0.4"))
	if len(got) != 2 {
		t.Fatalf("want the ClusterIP and NodePort flows of 10.244.0.2, got %v", got)
	}
	if got[0].OrigDst.String() != "10.96.0.53" || got[0].OrigPort != 53 || got[0].DstNAT.String() != "10.244.0.2" {
		t.Errorf("cluster IP flow = %+v", got[0])
	}
	if got[1].OrigDst.IsValid() || got[1].OrigPort != 30053 || got[1].DstNAT.String() != "10.244.0.2" {
		t.Errorf("node port flow = %+v", got[1])
	}
	// from no endpoints to some: clear what was rejected meanwhile
	got = StaleConntrack(build(), build("10.244.0.2"))
	if len(got) != 2 || got[0].DstNAT.IsValid() || got[0].OrigDst.String() != "10.96.0.53" {
		t.Errorf("want flows for the VIP without a NAT filter, got %v", got)
	}
	// Service removed: its endpoints are gone
	gone := Build([]*corev1.Service{web}, nil, node)[IPv4]
	if got := StaleConntrack(build("10.244.0.2"), gone); len(got) != 2 {
		t.Errorf("removed Service: %v", got)
	}
}
