package podconfig

import (
	"fmt"
	"reflect"
	"strings"
	"testing"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	runtimeapi "k8s.io/cri-api/pkg/apis/runtime/v1"
	"k8s.io/utils/ptr"
)

func TestPodDNS(t *testing.T) {
	const host = "# node resolver\nnameserver 192.0.2.53\nnameserver 192.0.2.54 ; second\nsearch corp.example. .\noptions timeout:2 rotate\n"
	base := DNSInputs{ClusterDNS: []string{"10.96.0.10"}, ClusterDomain: "cluster.local", ResolvConf: "/etc/resolv.conf",
		HostResolv: []byte(host), NodeIPs: []string{"192.0.2.10"}}
	clusterSearch := []string{"ns.svc.cluster.local", "svc.cluster.local", "cluster.local", "corp.example"}
	nodeCfg := &runtimeapi.DNSConfig{Servers: []string{"192.0.2.53", "192.0.2.54"}, Searches: []string{"corp.example"}, Options: []string{"rotate", "timeout:2"}}
	many := func(n int) []string {
		var s []string
		for i := 0; i < n; i++ {
			s = append(s, fmt.Sprintf("%s%02d.example", strings.Repeat("d", 60), i)) // 70 characters
		}
		return s
	}
	for _, tt := range []struct {
		name       string
		spec       corev1.PodSpec
		in         func(DNSInputs) DNSInputs
		want       *runtimeapi.DNSConfig
		wantEvents []string
	}{
		{name: "ClusterFirst (default policy)", want: &runtimeapi.DNSConfig{Servers: []string{"10.96.0.10"}, Searches: clusterSearch, Options: []string{"ndots:5"}}},
		{name: "Default uses the node's resolver", spec: corev1.PodSpec{DNSPolicy: corev1.DNSDefault}, want: nodeCfg},
		{name: "host-network ClusterFirst falls back to Default", spec: corev1.PodSpec{HostNetwork: true}, want: nodeCfg},
		{name: "ClusterFirstWithHostNet", spec: corev1.PodSpec{HostNetwork: true, DNSPolicy: corev1.DNSClusterFirstWithHostNet},
			want: &runtimeapi.DNSConfig{Servers: []string{"10.96.0.10"}, Searches: clusterSearch, Options: []string{"ndots:5"}}},
		{name: "no cluster DNS: Default, with MissingClusterDNS", in: func(i DNSInputs) DNSInputs { i.ClusterDNS = nil; return i },
			want: nodeCfg, wantEvents: []string{"MissingClusterDNS"}},
		{name: "resolvConf empty: loopback", spec: corev1.PodSpec{DNSPolicy: corev1.DNSDefault}, in: func(i DNSInputs) DNSInputs { i.ResolvConf, i.HostResolv = "", nil; return i },
			want: &runtimeapi.DNSConfig{Servers: []string{"127.0.0.1"}, Searches: []string{"."}}},
		{name: "None with dnsConfig", spec: corev1.PodSpec{DNSPolicy: corev1.DNSNone, DNSConfig: &corev1.PodDNSConfig{
			Nameservers: []string{"1.1.1.1"}, Searches: []string{"a.example"}, Options: []corev1.PodDNSConfigOption{{Name: "ndots", Value: ptr.To("2")}, {Name: "edns0"}}}},
			want: &runtimeapi.DNSConfig{Servers: []string{"1.1.1.1"}, Searches: []string{"a.example"}, Options: []string{"edns0", "ndots:2"}}},
		{name: "dnsConfig appended, duplicates dropped, options overridden", spec: corev1.PodSpec{DNSConfig: &corev1.PodDNSConfig{
			Nameservers: []string{"10.96.0.10", "1.1.1.1"}, Searches: []string{"cluster.local", "x.example"}, Options: []corev1.PodDNSConfigOption{{Name: "ndots", Value: ptr.To("1")}}}},
			want: &runtimeapi.DNSConfig{Servers: []string{"10.96.0.10", "1.1.1.1"}, Searches: append(append([]string(nil), clusterSearch...), "x.example"), Options: []string{"ndots:1"}}},
		{name: "more than 3 nameservers", spec: corev1.PodSpec{DNSConfig: &corev1.PodDNSConfig{Nameservers: []string{"1.1.1.1", "2.2.2.2", "3.3.3.3"}}},
			want:       &runtimeapi.DNSConfig{Servers: []string{"10.96.0.10", "1.1.1.1", "2.2.2.2"}, Searches: clusterSearch, Options: []string{"ndots:5"}},
			wantEvents: []string{"DNSConfigForming"}},
		{name: "search list over 2048 characters", spec: corev1.PodSpec{DNSPolicy: corev1.DNSNone, DNSConfig: &corev1.PodDNSConfig{Searches: many(32)}},
			want: &runtimeapi.DNSConfig{Servers: []string{}, Searches: many(32)[:28] /* 28*71-1 = 1987 characters */, Options: []string{}}, wantEvents: []string{"DNSConfigForming"}},
	} {
		t.Run(tt.name, func(t *testing.T) {
			in := base
			if tt.in != nil {
				in = tt.in(in)
			}
			p := &corev1.Pod{ObjectMeta: metav1.ObjectMeta{Name: "p", Namespace: "ns"}, Spec: tt.spec}
			got, events := PodDNS(p, in)
			norm := func(c *runtimeapi.DNSConfig) *runtimeapi.DNSConfig {
				out := &runtimeapi.DNSConfig{Servers: c.Servers, Searches: c.Searches, Options: c.Options}
				for _, f := range []*[]string{&out.Servers, &out.Searches, &out.Options} {
					if len(*f) == 0 {
						*f = nil
					}
				}
				return out
			}
			if !reflect.DeepEqual(norm(got), norm(tt.want)) {
				t.Errorf("got  %v\nwant %v", got, tt.want)
			}
			var reasons []string
			for _, e := range events {
				reasons = append(reasons, e.Reason)
			}
			if !reflect.DeepEqual(reasons, tt.wantEvents) {
				t.Errorf("events %v, want %v", events, tt.wantEvents)
			}
		})
	}
}
