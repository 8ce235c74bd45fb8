package podconfig

import (
	"reflect"
	"testing"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/utils/ptr"
)

func svc(ns, name, ip string, ports ...corev1.ServicePort) corev1.Service {
	return corev1.Service{ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: name}, Spec: corev1.ServiceSpec{ClusterIP: ip, Ports: ports}}
}

// ServiceEnv gives the variables of upstream's envvars.FromServices for one Service.
func TestServiceEnv(t *testing.T) {
	cases := []struct {
		name string
		svc  corev1.Service
		want []corev1.EnvVar
	}{
		{"no ports", svc("ns", "x", "10.0.0.1"), nil},
		{"one unnamed port, protocol defaulted to TCP", svc("ns", "web", "10.0.0.2", corev1.ServicePort{Port: 80}), []corev1.EnvVar{
			{Name: "WEB_SERVICE_HOST", Value: "10.0.0.2"}, {Name: "WEB_SERVICE_PORT", Value: "80"},
			{Name: "WEB_PORT", Value: "tcp://10.0.0.2:80"},
			{Name: "WEB_PORT_80_TCP", Value: "tcp://10.0.0.2:80"}, {Name: "WEB_PORT_80_TCP_PROTO", Value: "tcp"},
			{Name: "WEB_PORT_80_TCP_PORT", Value: "80"}, {Name: "WEB_PORT_80_TCP_ADDR", Value: "10.0.0.2"}}},
		{"named ports, dashes, UDP, the first port special", svc("ns", "my-db", "10.0.0.3",
			corev1.ServicePort{Name: "sql", Port: 5432, Protocol: corev1.ProtocolTCP}, corev1.ServicePort{Name: "dns-udp", Port: 53, Protocol: corev1.ProtocolUDP}), []corev1.EnvVar{
			{Name: "MY_DB_SERVICE_HOST", Value: "10.0.0.3"}, {Name: "MY_DB_SERVICE_PORT", Value: "5432"},
			{Name: "MY_DB_SERVICE_PORT_SQL", Value: "5432"}, {Name: "MY_DB_SERVICE_PORT_DNS_UDP", Value: "53"},
			{Name: "MY_DB_PORT", Value: "tcp://10.0.0.3:5432"},
			{Name: "MY_DB_PORT_5432_TCP", Value: "tcp://10.0.0.3:5432"}, {Name: "MY_DB_PORT_5432_TCP_PROTO", Value: "tcp"},
			{Name: "MY_DB_PORT_5432_TCP_PORT", Value: "5432"}, {Name: "MY_DB_PORT_5432_TCP_ADDR", Value: "10.0.0.3"},
			{Name: "MY_DB_PORT_53_UDP", Value: "udp://10.0.0.3:53"}, {Name: "MY_DB_PORT_53_UDP_PROTO", Value: "udp"},
			{Name: "MY_DB_PORT_53_UDP_PORT", Value: "53"}, {Name: "MY_DB_PORT_53_UDP_ADDR", Value: "10.0.0.3"}}},
		{"IPv6 in brackets, SCTP", svc("ns", "v6", "fd00::10", corev1.ServicePort{Port: 9, Protocol: corev1.ProtocolSCTP}), []corev1.EnvVar{
			{Name: "V6_SERVICE_HOST", Value: "fd00::10"}, {Name: "V6_SERVICE_PORT", Value: "9"},
			{Name: "V6_PORT", Value: "sctp://[fd00::10]:9"},
			{Name: "V6_PORT_9_SCTP", Value: "sctp://[fd00::10]:9"}, {Name: "V6_PORT_9_SCTP_PROTO", Value: "sctp"},
			{Name: "V6_PORT_9_SCTP_PORT", Value: "9"}, {Name: "V6_PORT_9_SCTP_ADDR", Value: "fd00::10"}}},
	}
	for _, c := range cases {
		if got := ServiceEnv(&c.svc); !reflect.DeepEqual(got, c.want) {
			t.Errorf("%s:\n got  %v\n want %v", c.name, got, c.want)
		}
	}
}

// ServiceLinks picks the Services as upstream's getServiceEnvVarMap.
func TestServiceLinks(t *testing.T) {
	port := corev1.ServicePort{Port: 443}
	all := []corev1.Service{
		svc("default", "kubernetes", "10.96.0.1", port),
		svc("ns", "b", "10.96.0.3", port),
		svc("ns", "a", "10.96.0.2", port),
		svc("ns", "headless", corev1.ClusterIPNone, port),
		svc("ns", "pending", "", port),
		svc("other", "c", "10.96.0.4", port),
		svc("default", "d", "10.96.0.5", port),
	}
	hosts := func(env []corev1.EnvVar) []string {
		var out []string
		for _, e := range env {
			if len(e.Name) > 13 && e.Name[len(e.Name)-13:] == "_SERVICE_HOST" {
				out = append(out, e.Name+"="+e.Value)
			}
		}
		return out
	}
	cases := []struct {
		name  string
		ns    string
		links *bool
		svcs  []corev1.Service
		want  []string
	}{
		{"links on by default, in name order, the master Service always", "ns", nil, all,
			[]string{"A_SERVICE_HOST=10.96.0.2", "B_SERVICE_HOST=10.96.0.3", "KUBERNETES_SERVICE_HOST=10.96.0.1"}},
		{"enableServiceLinks false: the master Service only", "ns", ptr.To(false), all, []string{"KUBERNETES_SERVICE_HOST=10.96.0.1"}},
		{"a pod of the default namespace sees all of it", "default", ptr.To(true), all,
			[]string{"D_SERVICE_HOST=10.96.0.5", "KUBERNETES_SERVICE_HOST=10.96.0.1"}},
		{"the pod's own kubernetes Service replaces the master one", "ns", nil, append([]corev1.Service{svc("ns", "kubernetes", "10.96.9.9", port)}, all...),
			[]string{"A_SERVICE_HOST=10.96.0.2", "B_SERVICE_HOST=10.96.0.3", "KUBERNETES_SERVICE_HOST=10.96.9.9"}},
		{"... also when listed after it", "ns", nil, append(append([]corev1.Service{}, all...), svc("ns", "kubernetes", "10.96.9.9", port)),
			[]string{"A_SERVICE_HOST=10.96.0.2", "B_SERVICE_HOST=10.96.0.3", "KUBERNETES_SERVICE_HOST=10.96.9.9"}},
		{"... but not with links off", "ns", ptr.To(false), append([]corev1.Service{svc("ns", "kubernetes", "10.96.9.9", port)}, all...),
			[]string{"KUBERNETES_SERVICE_HOST=10.96.0.1"}},
		{"no Services", "ns", nil, nil, nil},
	}
	for _, c := range cases {
		pod := &corev1.Pod{ObjectMeta: metav1.ObjectMeta{Namespace: c.ns, Name: "p"}, Spec: corev1.PodSpec{EnableServiceLinks: c.links}}
		if got := hosts(ServiceLinks(pod, c.svcs)); !reflect.DeepEqual(got, c.want) {
			t.Errorf("%s: got %v, want %v", c.name, got, c.want)
		}
	}
}
