package ipvs

import (
	"context"
	"errors"
	"net/netip"
	"reflect"
	"strings"
	"testing"

	libipvs "github.com/moby/ipvs"
	corev1 "k8s.io/api/core/v1"
	discoveryv1 "k8s.io/api/discovery/v1"

	"github.com/nodekeeper/nodekeeper/netrules"
	"github.com/nodekeeper/nodekeeper/netrules/iptables"
)

var node = netrules.Node{Name: "n1", ClusterCIDRs: []netip.Prefix{netip.MustParsePrefix("10.244.0.0/16")},
	NodeIPs: []netip.Addr{netip.MustParseAddr("192.0.2.1")}}

func build(webEPs ...string) *netrules.Ruleset {
	web := netrules.MakeService("default", "web", "10.96.0.10", 80)
	web.Spec.Type = corev1.ServiceTypeNodePort
	web.Spec.Ports[0].NodePort = 30080
	web.Spec.SessionAffinity = corev1.ServiceAffinityClientIP
	dns := netrules.MakeService("kube-system", "dns", "10.96.0.53", 53)
	dns.Spec.Ports[0].Protocol = corev1.ProtocolUDP
	var eps []netrules.SliceEndpoint
	for _, ip := range webEPs {
		eps = append(eps, netrules.SliceEndpoint{IP: ip})
	}
	return netrules.Build([]*corev1.Service{web, dns}, []*discoveryv1.EndpointSlice{
		netrules.MakeSlice(web, "web-1", 8080, eps...),
		netrules.MakeSlice(dns, "dns-1", 53, netrules.SliceEndpoint{IP: "10.244.0.20"}),
	}, node)[netrules.IPv4]
}

func TestSyncAgainstFakeHandle(t *testing.T) {
	ctx := context.Background()
	h := NewFake()
	p := New(h, nil)
	if _, err := p.Sync(ctx, build("10.244.0.11", "10.244.0.12"), true); err != nil {
		t.Fatal(err)
	}
	want := []string{
		"tcp/10.96.0.10:80 rr persistent 10800 -> [10.244.0.11:8080 10.244.0.12:8080]",
		"tcp/192.0.2.1:30080 rr persistent 10800 -> [10.244.0.11:8080 10.244.0.12:8080]",
		"udp/10.96.0.53:53 rr -> [10.244.0.20:53]",
	}
	if got := h.Dump(); !reflect.DeepEqual(got, want) {
		t.Fatalf("ipvs state:\n%s\nwant\n%s", strings.Join(got, "\n"), strings.Join(want, "\n"))
	}
	calls := h.Calls
	if _, err := p.Sync(ctx, build("10.244.0.11", "10.244.0.12"), false); err != nil {
		t.Fatal(err)
	}
	if h.Calls != calls {
		t.Errorf("an unchanged sync made %d kernel changes", h.Calls-calls)
	}
	// one endpoint replaced: exactly one real server removed and one added per VIP
	if _, err := p.Sync(ctx, build("10.244.0.11", "10.244.0.13"), false); err != nil {
		t.Fatal(err)
	}
	if n := h.Calls - calls; n != 4 {
		t.Errorf("replacing one endpoint took %d calls, want 4 (2 VIPs × del+add)", n)
	}
	if got := h.Dump()[0]; got != "tcp/10.96.0.10:80 rr persistent 10800 -> [10.244.0.11:8080 10.244.0.13:8080]" {
		t.Errorf("after replace: %s", got)
	}
	// a virtual server added by hand that is not desired is removed; one deleted by hand is restored
	_ = h.NewService(toService(VirtualServer{Addr: netip.MustParseAddr("10.96.9.9"), Protocol: corev1.ProtocolTCP, Port: 1}))
	_ = h.DelService(toService(VirtualServer{Addr: netip.MustParseAddr("10.96.0.53"), Protocol: corev1.ProtocolUDP, Port: 53}))
	if _, err := p.Sync(ctx, build("10.244.0.11", "10.244.0.13"), false); err != nil {
		t.Fatal(err)
	}
	if got := h.Dump(); len(got) != 3 || got[2] != "udp/10.96.0.53:53 rr -> [10.244.0.20:53]" {
		t.Errorf("repair failed: %v", got)
	}
}

func TestFakeEnforcesKernelRules(t *testing.T) {
	h := NewFake()
	s := toService(VirtualServer{Addr: netip.MustParseAddr("10.0.0.1"), Protocol: corev1.ProtocolTCP, Port: 80})
	d := toDest(netip.MustParseAddrPort("10.244.0.1:80"))
	if err := h.NewDestination(s, d); err == nil {
		t.Error("a real server was added to a missing virtual server")
	}
	if err := h.NewService(s); err != nil {
		t.Fatal(err)
	}
	if err := h.NewService(s); err == nil {
		t.Error("a duplicate virtual server was accepted")
	}
	if err := h.NewDestination(s, d); err != nil {
		t.Fatal(err)
	}
	if err := h.NewDestination(s, d); err == nil {
		t.Error("a duplicate real server was accepted")
	}
	if err := h.DelService(toService(VirtualServer{Addr: netip.MustParseAddr("10.0.0.2"), Protocol: corev1.ProtocolTCP, Port: 80})); err == nil {
		t.Error("deleting a missing virtual server succeeded")
	}
}

func TestIPSetsAndNATRules(t *testing.T) {
	rs := build("10.244.0.11")
	sets := IPSets(rs)
	if got := sets[SetClusterIP]; !reflect.DeepEqual(got, []string{"10.96.0.10,tcp:80", "10.96.0.53,udp:53"}) {
		t.Errorf("cluster IP set = %v", got)
	}
	if got := sets[SetNodePortTCP]; !reflect.DeepEqual(got, []string{"30080"}) {
		t.Errorf("node port set = %v", got)
	}
	if got := sets[SetLoopBack]; !reflect.DeepEqual(got, []string{"10.244.0.11,tcp:8080,10.244.0.11", "10.244.0.20,udp:53,10.244.0.20"}) {
		t.Errorf("loopback set = %v", got)
	}
	in := IPSetRestore(sets, netrules.IPv4)
	if !strings.Contains(in, "create KUBE-CLUSTER-IP hash:ip,port family inet -exist\n") || !strings.Contains(in, "swap KUBE-CLUSTER-IP-TMP KUBE-CLUSTER-IP\n") {
		t.Errorf("ipset input:\n%s", in)
	}
	// the nat rules load into the stateful iptables fake (every jump target exists)
	f := iptables.NewFake()
	c := Companion{Runner: fakeWithIPSet{f}, Family: netrules.IPv4}
	if err := c.Sync(context.Background(), rs); err != nil {
		t.Fatal(err)
	}
	if d := f.Dump("nat"); !strings.Contains(d, "--match-set KUBE-CLUSTER-IP dst,dst ! -s 10.244.0.0/16 -j KUBE-MARK-MASQ") {
		t.Errorf("nat table:\n%s", d)
	}
}

// fakeWithIPSet accepts ipset calls and passes iptables ones to the iptables fake.
type fakeWithIPSet struct{ *iptables.Fake }

func (f fakeWithIPSet) Run(ctx context.Context, stdin []byte, name string, args ...string) ([]byte, error) {
	if name == "ipset" {
		return nil, nil
	}
	return f.Fake.Run(ctx, stdin, name, args...)
}

// Plan is pure: the exact changes from an observed kernel to the wanted virtual servers.
func TestPlanOps(t *testing.T) {
	vs := func(key string, reals ...string) VirtualServer {
		proto, ap, _ := strings.Cut(key, "/")
		a := netip.MustParseAddrPort(ap)
		v := VirtualServer{Protocol: corev1.Protocol(strings.ToUpper(proto)), Addr: a.Addr(), Port: a.Port()}
		for _, r := range reals {
			v.Reals = append(v.Reals, netip.MustParseAddrPort(r))
		}
		return v
	}
	observed := func(vss ...VirtualServer) Observed {
		obs := Observed{Services: map[string]*libipvs.Service{}, Dests: map[string]map[netip.AddrPort]*libipvs.Destination{}, DestErr: map[string]error{}}
		for _, v := range vss {
			obs.Services[v.Key()] = toService(v)
			obs.Dests[v.Key()] = map[netip.AddrPort]*libipvs.Destination{}
			for _, r := range v.Reals {
				obs.Dests[v.Key()][r] = toDest(r)
			}
		}
		return obs
	}
	text := func(ops []Op) string {
		var out []string
		for _, o := range ops {
			out = append(out, o.String())
		}
		return strings.Join(out, "\n")
	}
	web := vs("tcp/10.96.0.10:80", "10.244.0.11:8080", "10.244.0.12:8080")
	cases := []struct {
		name string
		want []VirtualServer
		obs  Observed
		ops  string
	}{
		{"empty kernel", []VirtualServer{web}, observed(),
			"add tcp/10.96.0.10:80\nadd tcp/10.96.0.10:80 -> 10.244.0.11:8080\nadd tcp/10.96.0.10:80 -> 10.244.0.12:8080"},
		{"in step: nothing", []VirtualServer{web}, observed(web), ""},
		{"a real server replaced", []VirtualServer{vs("tcp/10.96.0.10:80", "10.244.0.11:8080", "10.244.0.13:8080")}, observed(web),
			"add tcp/10.96.0.10:80 -> 10.244.0.13:8080\ndelete tcp/10.96.0.10:80 -> 10.244.0.12:8080"},
		{"not wanted any more, first", []VirtualServer{vs("udp/10.96.0.53:53", "10.244.0.20:53")}, observed(web),
			"delete tcp/10.96.0.10:80\nadd udp/10.96.0.53:53\nadd udp/10.96.0.53:53 -> 10.244.0.20:53"},
		{"affinity set: updated in place", []VirtualServer{func() VirtualServer { v := web; v.PersistentSeconds = 10800; return v }()}, observed(web),
			"update tcp/10.96.0.10:80"},
		{"real servers unreadable: left for the next sync", []VirtualServer{vs("tcp/10.96.0.10:80", "10.244.0.13:8080")},
			func() Observed { o := observed(web); o.DestErr[web.Key()] = errors.New("boom"); return o }(), ""},
	}
	for _, c := range cases {
		if got := text(Plan(c.want, c.obs)); got != c.ops {
			t.Errorf("%s:\n%s\nwant\n%s", c.name, got, c.ops)
		}
	}
}
