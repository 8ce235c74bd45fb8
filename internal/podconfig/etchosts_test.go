package podconfig

import (
	"testing"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/nodekeeper/nodekeeper/internal/podplan"
)

func TestHostsFileContent(t *testing.T) {
	const local = "# Kubernetes-managed hosts file.\n127.0.0.1\tlocalhost\n::1\tlocalhost ip6-localhost ip6-loopback\n" +
		"fe00::0\tip6-localnet\nfe00::0\tip6-mcastprefix\nfe00::1\tip6-allnodes\nfe00::2\tip6-allrouters\n"
	long := "p1234567890123456789012345678901234567890123456789012345678901-3456789"
	for _, tt := range []struct {
		name    string
		spec    corev1.PodSpec
		podName string
		ips     []string
		node    string
		want    string
	}{
		{"plain", corev1.PodSpec{}, "web", []string{"10.244.0.5"}, "", local + "10.244.0.5\tweb\n"},
		{"name cut to 63, trailing '-' trimmed", corev1.PodSpec{}, long, []string{"10.244.0.5"}, "", local + "10.244.0.5\t" + long[:62] + "\n"},
		{"hostname and subdomain", corev1.PodSpec{Hostname: "h", Subdomain: "s"}, "web", []string{"10.244.0.5", "fd00::5"}, "",
			local + "10.244.0.5\th.s.ns.svc.cluster.local\th\nfd00::5\th.s.ns.svc.cluster.local\th\n"},
		{"aliases", corev1.PodSpec{HostAliases: []corev1.HostAlias{{IP: "1.2.3.4", Hostnames: []string{"a", "b"}}, {IP: "::2", Hostnames: []string{"c"}}}},
			"web", []string{"10.244.0.5"}, "",
			local + "10.244.0.5\tweb\n\n# Entries added by HostAliases.\n1.2.3.4\ta\tb\n::2\tc\n"},
		{"aliases on a pod with a domain", corev1.PodSpec{Hostname: "h", Subdomain: "s",
			HostAliases: []corev1.HostAlias{{IP: "123.45.67.89", Hostnames: []string{"foo", "bar"}}}},
			"web", []string{"10.244.0.5"}, "",
			local + "10.244.0.5\th.s.ns.svc.cluster.local\th\n\n# Entries added by HostAliases.\n123.45.67.89\tfoo\tbar\n"},
		{"host network", corev1.PodSpec{HostNetwork: true, HostAliases: []corev1.HostAlias{{IP: "1.2.3.4", Hostnames: []string{"a"}}}},
			"web", []string{"192.0.2.10"}, "127.0.0.1 localhost\n192.0.2.10 node1\n",
			"# Kubernetes-managed hosts file (host network).\n127.0.0.1 localhost\n192.0.2.10 node1\n\n# Entries added by HostAliases.\n1.2.3.4\ta\n"},
		{"host network, node file kept as it is", corev1.PodSpec{HostNetwork: true},
			"web", []string{"192.0.2.10"}, "127.0.0.1 localhost",
			"# Kubernetes-managed hosts file (host network).\n127.0.0.1 localhost"},
	} {
		t.Run(tt.name, func(t *testing.T) {
			p := &corev1.Pod{ObjectMeta: metav1.ObjectMeta{Name: tt.podName, Namespace: "ns"}, Spec: tt.spec}
			host, domain, err := podplan.PodHostnameAndDomain(p, "cluster.local")
			if err != nil {
				t.Fatal(err)
			}
			if got := string(HostsFile(p, tt.ips, host, domain, []byte(tt.node))); got != tt.want {
				t.Errorf("got\n%s\nwant\n%s", got, tt.want)
			}
		})
	}
}

func TestMountsOwnHosts(t *testing.T) {
	for path, want := range map[string]bool{"/etc/hosts": true, "/etc/hosts/": true, "/etc//hosts": true, "/etc": false, "/etc/hosts.d": false} {
		c := &corev1.Container{VolumeMounts: []corev1.VolumeMount{{Name: "v", MountPath: "/data"}, {Name: "h", MountPath: path}}}
		if got := MountsOwnHosts(c); got != want {
			t.Errorf("%q: %v, want %v", path, got, want)
		}
	}
	if MountsOwnHosts(&corev1.Container{}) {
		t.Errorf("no mounts")
	}
}
