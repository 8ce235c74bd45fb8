package nftables

import (
	"context"
	"net/netip"
	"strings"
	"testing"

	corev1 "k8s.io/api/core/v1"
	discoveryv1 "k8s.io/api/discovery/v1"
	"sigs.k8s.io/knftables"

	"github.com/nodekeeper/nodekeeper/netrules"
)

var testNode = netrules.Node{Name: "n1", ClusterCIDRs: []netip.Prefix{netip.MustParsePrefix("10.244.0.0/16")}}

// recording wraps the fake and keeps each transaction's text.
type recording struct {
	*knftables.Fake
	txs []string
}

func (r *recording) Run(ctx context.Context, tx *knftables.Transaction) error {
	r.txs = append(r.txs, tx.String())
	return r.Fake.Run(ctx, tx)
}

func scenario() ([]*corev1.Service, []*discoveryv1.EndpointSlice) {
	web := netrules.MakeService("default", "web", "10.96.0.10", 80)
	webEPs := netrules.MakeSlice(web, "web-1", 8080, netrules.SliceEndpoint{IP: "10.244.0.11", Node: "n1"}, netrules.SliceEndpoint{IP: "10.244.0.12", Node: "n2"})
	empty := netrules.MakeService("default", "empty", "10.96.0.11", 80)
	np := netrules.MakeService("default", "np", "10.96.0.12", 80)
	np.Spec.Type = corev1.ServiceTypeNodePort
	np.Spec.Ports[0].NodePort = 30080
	np.Spec.ExternalTrafficPolicy = corev1.ServiceExternalTrafficPolicyLocal
	npEPs := netrules.MakeSlice(np, "np-1", 8080, netrules.SliceEndpoint{IP: "10.244.0.11", Node: "n1"}, netrules.SliceEndpoint{IP: "10.244.0.13", Node: "n2"})
	lb := netrules.MakeService("default", "lb", "10.96.0.13", 443)
	lb.Spec.Type = corev1.ServiceTypeLoadBalancer
	lb.Spec.Ports[0].NodePort = 30443
	lb.Spec.LoadBalancerSourceRanges = []string{"203.0.113.0/24"}
	lb.Status.LoadBalancer.Ingress = []corev1.LoadBalancerIngress{{IP: "198.51.100.7"}}
	lb.Spec.SessionAffinity = corev1.ServiceAffinityClientIP
	lbEPs := netrules.MakeSlice(lb, "lb-1", 8443, netrules.SliceEndpoint{IP: "10.244.0.12", Node: "n1"})
	return []*corev1.Service{web, empty, np, lb}, []*discoveryv1.EndpointSlice{webEPs, npEPs, lbEPs}
}

func TestSyncAgainstFake(t *testing.T) {
	ctx := context.Background()
	fake := &recording{Fake: knftables.NewFake(knftables.IPv4Family, TableName)}
	p := New(fake, netrules.IPv4)
	svcs, slices := scenario()
	rs := netrules.Build(svcs, slices, testNode)[netrules.IPv4]
	st, err := p.Sync(ctx, rs, false)
	if err != nil {
		t.Fatal(err)
	}
	if !st.Full {
		t.Error("first sync must be full")
	}
	dump := fake.Dump()
	two := rs.Ports[3] // web: two endpoints, one chosen by the first rule half the time
	if len(two.ClusterEndpoints) != 2 {
		t.Fatalf("scenario changed: %d endpoints", len(two.ClusterEndpoints))
	}
	for _, want := range []string{
		"add element ip nodekeeper service-ips { 10.96.0.10 . tcp . 80 : goto " + serviceChain(rs.Ports[3]) + " }",
		"add element ip nodekeeper no-endpoint-services { 10.96.0.11 . tcp . 80 : goto reject-chain }",
		"add element ip nodekeeper service-nodeports { tcp . 30080 : goto " + externalChain(rs.Ports[2]) + " }",
		"add element ip nodekeeper firewall-ips { 198.51.100.7 . tcp . 443 : goto " + firewallChain(rs.Ports[1]) + " }",
		"dnat to 10.244.0.11:8080",
		"numgen random mod 2 0 goto " + endpointChain(two, two.ClusterEndpoints[0]) + "\n",
		"goto " + endpointChain(two, two.ClusterEndpoints[1]) + "\n",
		"ip saddr != { 203.0.113.0/24, 198.51.100.7 } drop",
		"update @" + affinitySet(rs.Ports[1], rs.Ports[1].ClusterEndpoints[0]) + " { ip saddr }",
	} {
		if !strings.Contains(dump, want) {
			t.Errorf("table lacks %q:\n%s", want, dump)
		}
	}

	// unchanged: the transaction touches no per-Service chain
	if _, err := p.Sync(ctx, rs, false); err != nil {
		t.Fatal(err)
	}
	if last := fake.txs[len(fake.txs)-1]; strings.Contains(last, "chain ip nodekeeper service-") || strings.Contains(last, "element") {
		t.Errorf("an unchanged partial sync wrote:\n%s", last)
	}

	// web loses an endpoint: only web's chains change, the stale endpoint chain goes
	slices[0] = netrules.MakeSlice(svcs[0], "web-1", 8080, netrules.SliceEndpoint{IP: "10.244.0.11", Node: "n1"})
	rs2 := netrules.Build(svcs, slices, testNode)[netrules.IPv4]
	st, err = p.Sync(ctx, rs2, false)
	if err != nil {
		t.Fatal(err)
	}
	last := fake.txs[len(fake.txs)-1]
	gone := endpointChain(rs.Ports[3], rs.Ports[3].ClusterEndpoints[1])
	if st.Full || st.ChainsWritten != 1 || st.ChainsDeleted != 1 || !strings.Contains(last, "delete chain ip nodekeeper "+gone) {
		t.Errorf("partial sync stats %+v, tx:\n%s", st, last)
	}
	if strings.Contains(last, serviceChain(rs.Ports[2])) {
		t.Errorf("np's chain was rewritten although it did not change:\n%s", last)
	}
	// the web Service goes away entirely: its map element and chains go too
	rs3 := netrules.Build(svcs[1:], slices[1:], testNode)[netrules.IPv4]
	if _, err := p.Sync(ctx, rs3, false); err != nil {
		t.Fatal(err)
	}
	if d := fake.Dump(); strings.Contains(d, "10.96.0.10") || strings.Contains(d, "default/web/") {
		t.Errorf("web's rules survived its deletion:\n%s", d)
	}
	// a full sync after the partial ones gives the same table as a fresh full sync
	if _, err := p.Sync(ctx, rs3, true); err != nil {
		t.Fatal(err)
	}
	fresh := &recording{Fake: knftables.NewFake(knftables.IPv4Family, TableName)}
	if _, err := New(fresh, netrules.IPv4).Sync(ctx, rs3, true); err != nil {
		t.Fatal(err)
	}
	if a, b := fake.Dump(), fresh.Dump(); a != b {
		t.Errorf("incremental state differs from a fresh full sync:\n%s", lineDiff(a, b))
	}
}

func TestRenderIPv6(t *testing.T) {
	svc := netrules.MakeService("default", "v6", "fd00::10", 80)
	svc.Spec.ClusterIPs = []string{"fd00::10"}
	s := netrules.MakeSlice(svc, "v6-1", 8080, netrules.SliceEndpoint{IP: "fd00:244::2"})
	rs := netrules.Build([]*corev1.Service{svc}, []*discoveryv1.EndpointSlice{s}, testNode)[netrules.IPv6]
	fake := knftables.NewFake(knftables.IPv6Family, TableName)
	if _, err := New(fake, netrules.IPv6).Sync(context.Background(), rs, true); err != nil {
		t.Fatal(err)
	}
	if d := fake.Dump(); !strings.Contains(d, "dnat to [fd00:244::2]:8080") || !strings.Contains(d, "fd00::10 . tcp . 80") {
		t.Errorf("IPv6 table:\n%s", d)
	}
}

func lineDiff(a, b string) string {
	in := func(s string) map[string]bool {
		m := map[string]bool{}
		for _, l := range strings.Split(s, "\n") {
			m[l] = true
		}
		return m
	}
	ma, mb := in(a), in(b)
	var out []string
	for l := range ma {
		if !mb[l] {
			out = append(out, "- "+l)
		}
	}
	for l := range mb {
		if !ma[l] {
			out = append(out, "+ "+l)
		}
	}
	return strings.Join(out, "\n")
}
