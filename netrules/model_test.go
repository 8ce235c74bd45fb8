package netrules

import (
	"net/netip"
	"reflect"
	"testing"

	corev1 "k8s.io/api/core/v1"
	discoveryv1 "k8s.io/api/discovery/v1"
	"k8s.io/utils/ptr"
)

func ips(eps []Endpoint) []string {
	var out []string
	for _, e := range eps {
		out = append(out, e.String())
	}
	return out
}

var node = Node{Name: "n1", Zone: "a", ClusterCIDRs: []netip.Prefix{netip.MustParsePrefix("10.244.0.0/16")}}

func TestBuildSkips(t *testing.T) {
	headless := MakeService("ns", "headless", "None", 80)
	external := MakeService("ns", "ext", "", 80)
	external.Spec.Type = corev1.ServiceTypeExternalName
	other := MakeService("ns", "other", "10.96.0.3", 80)
	other.Labels = map[string]string{LabelServiceProxyName: "someone-else"}
	kept := MakeService("ns", "kept", "10.96.0.4", 80)
	rs := Build([]*corev1.Service{headless, external, other, kept}, nil, node)
	if len(rs[IPv4].Ports) != 1 || rs[IPv4].Ports[0].Name != "kept" {
		t.Fatalf("want only ns/kept, got %v", rs[IPv4].Ports)
	}
	if p := rs[IPv4].Ports[0]; len(p.ClusterEndpoints) != 0 {
		t.Errorf("no slices, but endpoints %v", p.ClusterEndpoints)
	}
}

func TestBuildEndpointSelection(t *testing.T) {
	local := func(ip string) SliceEndpoint { return SliceEndpoint{IP: ip, Node: "n1"} }
	remote := func(ip string) SliceEndpoint { return SliceEndpoint{IP: ip, Node: "n2"} }
	termServing := func(ip, node string) SliceEndpoint {
		return SliceEndpoint{IP: ip, Node: node, NotReady: true, Serving: true, Terminating: true}
	}
	termNotServing := func(ip, node string) SliceEndpoint {
		return SliceEndpoint{IP: ip, Node: node, NotReady: true, Serving: false, Terminating: true}
	}
	tests := []struct {
		name        string
		tweak       func(*corev1.Service)
		eps         []SliceEndpoint
		wantCluster []string
		wantLocal   []string
		// the local endpoints are the serving-terminating fallback
		wantLocalTerminating bool
	}{
		{name: "ready endpoints, sorted", eps: []SliceEndpoint{remote("10.244.1.3"), local("10.244.0.2")},
			wantCluster: []string{"10.244.0.2:8080", "10.244.1.3:8080"}},
		{name: "not-ready endpoints are left out", eps: []SliceEndpoint{local("10.244.0.2"), {IP: "10.244.0.3", NotReady: true}},
			wantCluster: []string{"10.244.0.2:8080"}},
		{name: "falls back to serving terminating endpoints when none are ready",
			eps:         []SliceEndpoint{termServing("10.244.0.2", "n1"), termNotServing("10.244.0.3", "n1")},
			wantCluster: []string{"10.244.0.2:8080"}},
		{name: "no fallback while a ready endpoint exists", eps: []SliceEndpoint{termServing("10.244.0.2", "n1"), remote("10.244.1.9")},
			wantCluster: []string{"10.244.1.9:8080"}},
		{name: "eTP=Local keeps cluster endpoints for pods and local ones for outside",
			tweak: func(s *corev1.Service) {
				s.Spec.Type = corev1.ServiceTypeNodePort
				s.Spec.Ports[0].NodePort = 30080
				s.Spec.ExternalTrafficPolicy = corev1.ServiceExternalTrafficPolicyLocal
			},
			eps:         []SliceEndpoint{local("10.244.0.2"), remote("10.244.1.3")},
			wantCluster: []string{"10.244.0.2:8080", "10.244.1.3:8080"}, wantLocal: []string{"10.244.0.2:8080"}},
		{name: "eTP=Local with only remote endpoints has no local ones",
			tweak: func(s *corev1.Service) {
				s.Spec.Type = corev1.ServiceTypeNodePort
				s.Spec.Ports[0].NodePort = 30080
				s.Spec.ExternalTrafficPolicy = corev1.ServiceExternalTrafficPolicyLocal
			},
			eps: []SliceEndpoint{remote("10.244.1.3")}, wantCluster: []string{"10.244.1.3:8080"}},
		{name: "eTP=Local with only a terminating local endpoint falls back to it, marked",
			tweak: func(s *corev1.Service) {
				s.Spec.Type = corev1.ServiceTypeNodePort
				s.Spec.Ports[0].NodePort = 30080
				s.Spec.ExternalTrafficPolicy = corev1.ServiceExternalTrafficPolicyLocal
			},
			eps:         []SliceEndpoint{termServing("10.244.0.2", "n1"), remote("10.244.1.3")},
			wantCluster: []string{"10.244.1.3:8080"}, wantLocal: []string{"10.244.0.2:8080"}, wantLocalTerminating: true},
		{name: "iTP=Local uses only local endpoints for cluster traffic",
			tweak: func(s *corev1.Service) {
				s.Spec.InternalTrafficPolicy = ptr.To(corev1.ServiceInternalTrafficPolicyLocal)
			},
			eps: []SliceEndpoint{local("10.244.0.2"), remote("10.244.1.3")}, wantCluster: []string{"10.244.0.2:8080"}},
		{name: "topology hints narrow to this zone when every endpoint has hints",
			tweak:       func(s *corev1.Service) { s.Spec.TrafficDistribution = ptr.To("PreferClose") },
			eps:         []SliceEndpoint{{IP: "10.244.0.2", Zones: []string{"a"}}, {IP: "10.244.1.3", Zones: []string{"b"}}},
			wantCluster: []string{"10.244.0.2:8080"}},
		{name: "hints ignored when one endpoint has none",
			tweak:       func(s *corev1.Service) { s.Spec.TrafficDistribution = ptr.To("PreferClose") },
			eps:         []SliceEndpoint{{IP: "10.244.0.2", Zones: []string{"a"}}, {IP: "10.244.1.3"}},
			wantCluster: []string{"10.244.0.2:8080", "10.244.1.3:8080"}},
		{name: "hints ignored when none is for this zone",
			tweak:       func(s *corev1.Service) { s.Annotations = map[string]string{AnnotationTopologyMode: "Auto"} },
			eps:         []SliceEndpoint{{IP: "10.244.0.2", Zones: []string{"b"}}, {IP: "10.244.1.3", Zones: []string{"c"}}},
			wantCluster: []string{"10.244.0.2:8080", "10.244.1.3:8080"}},
		{name: "hints ignored when the Service does not ask",
			eps:         []SliceEndpoint{{IP: "10.244.0.2", Zones: []string{"a"}}, {IP: "10.244.1.3", Zones: []string{"b"}}},
			wantCluster: []string{"10.244.0.2:8080", "10.244.1.3:8080"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			svc := MakeService("ns", "web", "10.96.0.10", 80)
			if tt.tweak != nil {
				tt.tweak(svc)
			}
			rs := Build([]*corev1.Service{svc}, []*discoveryv1.EndpointSlice{MakeSlice(svc, "web-1", 8080, tt.eps...)}, node)
			p := rs[IPv4].Ports[0]
			if got := ips(p.ClusterEndpoints); !reflect.DeepEqual(got, tt.wantCluster) {
				t.Errorf("cluster endpoints = %v, want %v", got, tt.wantCluster)
			}
			if got := ips(p.LocalEndpoints); !reflect.DeepEqual(got, tt.wantLocal) {
				t.Errorf("local endpoints = %v, want %v", got, tt.wantLocal)
			}
			if p.LocalTerminating != tt.wantLocalTerminating {
				t.Errorf("local endpoints terminating = %v, want %v", p.LocalTerminating, tt.wantLocalTerminating)
			}
		})
	}
}

func TestBuildServiceShape(t *testing.T) {
	svc := MakeService("ns", "lb", "10.96.0.20", 80, 53)
	svc.Spec.Ports[1].Protocol = corev1.ProtocolUDP
	svc.Spec.Type = corev1.ServiceTypeLoadBalancer
	svc.Spec.Ports[0].NodePort = 30080
	svc.Spec.Ports[1].NodePort = 30053
	svc.Spec.ExternalIPs = []string{"192.0.2.50", "2001:db8::50"}
	svc.Spec.LoadBalancerSourceRanges = []string{"203.0.113.0/24", " 2001:db8:1::/48"}
	svc.Status.LoadBalancer.Ingress = []corev1.LoadBalancerIngress{{IP: "198.51.100.7"}, {IP: "198.51.100.8", IPMode: ptr.To(corev1.LoadBalancerIPModeProxy)}}
	svc.Spec.SessionAffinity = corev1.ServiceAffinityClientIP
	svc.Spec.ClusterIPs = []string{"10.96.0.20", "fd00::20"}
	svc.Spec.IPFamilies = []corev1.IPFamily{corev1.IPv4Protocol, corev1.IPv6Protocol}
	s4 := MakeSlice(svc, "lb-v4", 8080, SliceEndpoint{IP: "10.244.0.2", Node: "n1"})
	s6 := MakeSlice(svc, "lb-v6", 8080, SliceEndpoint{IP: "fd00:244::2", Node: "n1"})
	rs := Build([]*corev1.Service{svc}, []*discoveryv1.EndpointSlice{s6, s4}, node)

	v4, v6 := rs[IPv4].Ports, rs[IPv6].Ports
	if len(v4) != 2 || len(v6) != 2 {
		t.Fatalf("want 2 ports per family, got %d/%d", len(v4), len(v6))
	}
	// sorted by key: ns/lb:p53/udp before ns/lb:p80/tcp
	if v4[0].Protocol != corev1.ProtocolUDP || v4[0].NodePort != 30053 || v4[1].Port != 80 {
		t.Errorf("v4 ports = %+v %+v", v4[0], v4[1])
	}
	p := v4[1]
	if p.ClusterIP.String() != "10.96.0.20" || p.AffinitySeconds != 10800 {
		t.Errorf("clusterIP %s affinity %d", p.ClusterIP, p.AffinitySeconds)
	}
	if len(p.ExternalIPs) != 1 || p.ExternalIPs[0].String() != "192.0.2.50" {
		t.Errorf("v4 externalIPs = %v", p.ExternalIPs)
	}
	if len(p.LoadBalancerIPs) != 1 || p.LoadBalancerIPs[0].String() != "198.51.100.7" {
		t.Errorf("LB IPs = %v (an ipMode Proxy ingress must be skipped)", p.LoadBalancerIPs)
	}
	if len(p.LoadBalancerSourceRanges) != 1 || p.LoadBalancerSourceRanges[0].String() != "203.0.113.0/24" {
		t.Errorf("source ranges = %v", p.LoadBalancerSourceRanges)
	}
	if ips(p.ClusterEndpoints)[0] != "10.244.0.2:8080" {
		t.Errorf("v4 endpoints %v", p.ClusterEndpoints)
	}
	q := v6[1]
	if q.ClusterIP.String() != "fd00::20" || len(q.ExternalIPs) != 1 || q.ExternalIPs[0].String() != "2001:db8::50" ||
		ips(q.ClusterEndpoints)[0] != "[fd00:244::2]:8080" || q.LoadBalancerSourceRanges[0].String() != "2001:db8:1::/48" {
		t.Errorf("v6 port = %+v", q)
	}
}

func TestBuildIsDeterministic(t *testing.T) {
	var svcs []*corev1.Service
	var slices []*discoveryv1.EndpointSlice
	for i := 0; i < 20; i++ {
		s := MakeService("ns", "s"+string(rune('a'+i)), "10.96.1."+string(rune('0'+i%10)), 80)
		svcs = append(svcs, s)
		slices = append(slices, MakeSlice(s, s.Name+"-x", 80, SliceEndpoint{IP: "10.244.0.9"}, SliceEndpoint{IP: "10.244.0.3"}))
	}
	a := Build(svcs, slices, node)
	rev := func(in []*corev1.Service) []*corev1.Service {
		out := make([]*corev1.Service, len(in))
		for i := range in {
			out[len(in)-1-i] = in[i]
		}
		return out
	}
	b := Build(rev(svcs), slices, node)
	if !reflect.DeepEqual(a, b) {
		t.Error("Build depends on input order")
	}
}

func TestDuplicateAddressesAcrossSlicesCountOnce(t *testing.T) {
	svc := MakeService("ns", "web", "10.96.0.10", 80)
	rs := Build([]*corev1.Service{svc}, []*discoveryv1.EndpointSlice{
		MakeSlice(svc, "a", 8080, SliceEndpoint{IP: "10.244.0.2"}),
		MakeSlice(svc, "b", 8080, SliceEndpoint{IP: "10.244.0.2"}, SliceEndpoint{IP: "10.244.0.3"}),
	}, node)
	if got := ips(rs[IPv4].Ports[0].ClusterEndpoints); len(got) != 2 {
		t.Errorf("endpoints = %v", got)
	}
}
