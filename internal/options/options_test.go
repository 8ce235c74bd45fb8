package options

import (
	"io"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

func writeConfig(t *testing.T, body string) string {
	t.Helper()
	p := filepath.Join(t.TempDir(), "config.yaml")
	if err := os.WriteFile(p, []byte("apiVersion: nodekeeper.io/v1alpha1\nkind: AgentConfiguration\n"+body), 0o600); err != nil {
		t.Fatal(err)
	}
	return p
}

func TestFlagsOverrideFile(t *testing.T) {
	p := writeConfig(t, "nodeName: from-file\nproxyMode: nftables\nnodeLabels: {a: b}\n")
	o, err := Parse([]string{"--config", p, "--node-name", "from-flag", "--node-labels", "c=d"}, io.Discard)
	if err != nil {
		t.Fatal(err)
	}
	if o.Config.NodeName != "from-flag" {
		t.Errorf("nodeName = %q", o.Config.NodeName)
	}
	if o.Config.ProxyMode != "nftables" {
		t.Errorf("a flag that was not given overrode the file: proxyMode = %q", o.Config.ProxyMode)
	}
	if o.Config.NodeLabels["a"] != "b" || o.Config.NodeLabels["c"] != "d" {
		t.Errorf("labels = %v", o.Config.NodeLabels)
	}
}

func TestErrors(t *testing.T) {
	bad := writeConfig(t, "nodeName: n\nsystemReserved: {memory: lots}\n")
	tests := []struct {
		args []string
		want string
	}{
		{[]string{"--config", bad}, "systemReserved[memory]"},
		{[]string{"--config", "/nonexistent.yaml"}, "no such file"},
		{[]string{"--node-name", "n", "--proxy-mode", "bogus"}, "proxyMode"},
		{[]string{"--node-name", "n", "--reconcilers", "kitchen"}, `unknown reconciler "kitchen"`},
		{[]string{"--node-name", "n", "--node-labels", "novalue"}, "--node-labels"},
		{[]string{"--no-such-flag"}, "no-such-flag"},
	}
	for _, tt := range tests {
		_, err := Parse(tt.args, io.Discard)
		if err == nil || !strings.Contains(err.Error(), tt.want) {
			t.Errorf("Parse(%v) = %v, want error containing %q", tt.args, err, tt.want)
		}
	}
}

// --profiling turns on enableProfiling (kube-proxy's flag); off by default.
func TestProfilingFlag(t *testing.T) {
	o, err := Parse([]string{"--node-name", "n"}, io.Discard)
	if err != nil {
		t.Fatal(err)
	}
	if o.Config.EnableProfiling {
		t.Error("profiling on by default")
	}
	if o, err = Parse([]string{"--node-name", "n", "--profiling"}, io.Discard); err != nil {
		t.Fatal(err)
	}
	if !o.Config.EnableProfiling {
		t.Error("--profiling did not turn enableProfiling on")
	}
}

// --config takes kubeadm's KubeletConfiguration and --proxy-config a
// KubeProxyConfiguration; the proxy file's kubeconfig is used when --kubeconfig is not given.
func TestUpstreamConfigFiles(t *testing.T) {
	dir := t.TempDir()
	kubelet := filepath.Join(dir, "config.yaml")
	b, err := os.ReadFile("../../api/v1alpha1/testdata/kubeadm-kubelet-config.yaml")
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(kubelet, []byte(strings.Replace(string(b), "cgroupDriver: systemd", "cgroupDriver: cgroupfs", 1)), 0o600); err != nil {
		t.Fatal(err)
	}
	proxy := filepath.Join(dir, "proxy.yaml")
	if err := os.WriteFile(proxy, []byte("apiVersion: kubeproxy.config.k8s.io/v1alpha1\nkind: KubeProxyConfiguration\nmode: nftables\n"+
		"clusterCIDR: 10.244.0.0/16\nclientConnection: {kubeconfig: /var/lib/kube-proxy/kubeconfig.conf}\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	o, err := Parse([]string{"--config", kubelet, "--proxy-config", proxy, "--node-name", "n", "--bootstrap-kubeconfig", "/etc/kubernetes/bootstrap-kubelet.conf"}, io.Discard)
	if err != nil {
		t.Fatal(err)
	}
	if o.Config.StaticPodPath != "/etc/kubernetes/manifests" || o.Config.ProxyMode != "nftables" || o.Config.ClusterCIDR != "10.244.0.0/16" ||
		o.Kubeconfig != "/var/lib/kube-proxy/kubeconfig.conf" || o.BootstrapKubeconfig != "/etc/kubernetes/bootstrap-kubelet.conf" || !o.Config.RotateCertificates {
		t.Errorf("options %+v config %+v", o, o.Config)
	}
	if _, err := Parse([]string{"--config", kubelet, "--proxy-config", kubelet, "--node-name", "n"}, io.Discard); err == nil || !strings.Contains(err.Error(), "KubeProxyConfiguration") {
		t.Errorf("a KubeletConfiguration as --proxy-config: %v", err)
	}
}
