package v1alpha1

import (
	"os"
	"path/filepath"
	"strings"
	"testing"

	corev1 "k8s.io/api/core/v1"
	"sigs.k8s.io/yaml"
)

// kubeadmKubelet is kubeadm's config.yaml with cgroupDriver as the operator may set it
// (kubeadm keeps what KubeletConfiguration in its config says).
func kubeadmKubelet(t *testing.T, driver string) []byte {
	t.Helper()
	b, err := os.ReadFile("testdata/kubeadm-kubelet-config.yaml")
	if err != nil {
		t.Fatal(err)
	}
	return []byte(strings.Replace(string(b), "cgroupDriver: systemd", "cgroupDriver: "+driver, 1))
}

func TestKubeadmKubeletConfig(t *testing.T) {
	cfg, err := ParseKubelet(kubeadmKubelet(t, "cgroupfs"))
	if err != nil {
		t.Fatal(err)
	}
	SetDefaults(cfg)
	if err := Validate(cfg); err != nil {
		t.Fatal(err)
	}
	check := func(name string, got, want any) {
		t.Helper()
		if !equal(got, want) {
			t.Errorf("%s = %v, want %v", name, got, want)
		}
	}
	check("staticPodPath", cfg.StaticPodPath, "/etc/kubernetes/manifests")
	check("clusterDNS", cfg.ClusterDNS, []string{"10.96.0.10"})
	check("clusterDomain", cfg.ClusterDomain, "cluster.local")
	check("clientCAFile", cfg.ClientCAFile, "/etc/kubernetes/pki/ca.crt")
	check("resolvConf", *cfg.ResolvConf, "/run/systemd/resolve/resolv.conf")
	check("rotateCertificates", cfg.RotateCertificates, true)
	check("healthzBindAddress (healthzBindAddress + healthzPort)", cfg.HealthzBindAddress, "127.0.0.1:10248")
	check("kubeletPort (upstream default)", cfg.KubeletPort, int32(10250))
	check("readOnlyPort", cfg.ReadOnlyPort, int32(0))
	check("nodeStatusUpdateFrequency (0s: default)", cfg.NodeStatusUpdateFrequency.Duration.String(), "10s")
	check("cgroupDriver", cfg.CgroupDriver, "cgroupfs")
	check("containerRuntimeEndpoint (\"\": default)", cfg.ContainerRuntimeEndpoint, DefaultCRIEndpoint)
}

// kubeadm's own default driver is systemd, which nodekeeper does not have yet: the file
// is refused, naming the field.
func TestKubeadmKubeletConfigSystemdDriverRefused(t *testing.T) {
	cfg, err := ParseKubelet(kubeadmKubelet(t, "systemd"))
	if err != nil {
		t.Fatal(err)
	}
	SetDefaults(cfg)
	err = Validate(cfg)
	if err == nil || !strings.Contains(err.Error(), `cgroupDriver: Invalid value: "systemd": the systemd cgroup driver`) {
		t.Errorf("want cgroupDriver refused, got %v", err)
	}
}

func TestKubeletConfigRefusesUnsupportedFieldsByName(t *testing.T) {
	for _, tc := range []struct{ yaml, want string }{
		{"cpuManagerPolicy: static", "cpuManagerPolicy: Forbidden: not supported by nodekeeper"},
		{"syncFrequency: 30s", "syncFrequency: Forbidden"},
		{"featureGates: {InPlacePodVerticalScaling: true}", "featureGates: Forbidden"},
		{"authentication: {anonymous: {enabled: true}}", "authentication.anonymous.enabled: Forbidden"},
		{"authentication: {webhook: {enabled: false}}", "authentication.webhook.enabled: Forbidden"},
		{"authorization: {mode: AlwaysAllow}", `authorization.mode: Unsupported value: "AlwaysAllow"`},
		{"registerNode: false", "registerNode: Forbidden"},
		{"address: 192.0.2.1", "address: Forbidden"},
		{"logging: {verbosity: 4}", "logging.verbosity: Forbidden"},
		{"eventRecordQPS: 5", "eventRecordQPS: Forbidden"},
	} {
		_, err := ParseKubelet([]byte("apiVersion: kubelet.config.k8s.io/v1beta1\nkind: KubeletConfiguration\n" + tc.yaml + "\n"))
		if err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("%s: got %v, want %q", tc.yaml, err, tc.want)
		}
	}
	// a typo is an unknown field, as the kubelet's strict decoding says
	if _, err := ParseKubelet([]byte("apiVersion: kubelet.config.k8s.io/v1beta1\nkind: KubeletConfiguration\nmaxPod: 3\n")); err == nil || !strings.Contains(err.Error(), "maxPod") {
		t.Errorf("unknown field: %v", err)
	}
}

func TestKubeletConfigMapsFields(t *testing.T) {
	cfg, err := ParseKubelet([]byte(`apiVersion: kubelet.config.k8s.io/v1beta1
kind: KubeletConfiguration
maxPods: 50
podCIDR: 10.1.0.0/24
systemReserved: {cpu: 100m}
kubeReserved: {memory: 256Mi}
evictionHard: {memory.available: 200Mi}
healthzPort: 0
port: 10260
readOnlyPort: 10255
cgroupsPerQOS: false
cgroupRoot: /nk
resolvConf: ""
containerLogMaxSize: 5Mi
containerLogMaxFiles: 3
nodeLeaseDurationSeconds: 20
registerWithTaints: [{key: a, value: b, effect: NoSchedule}]
containerRuntimeEndpoint: unix:///run/k3s/containerd.sock
serverTLSBootstrap: true
tlsCertFile: /c
tlsPrivateKeyFile: /k
kubeAPIQPS: 20
kubeAPIBurst: 40
`))
	if err != nil {
		t.Fatal(err)
	}
	if cfg.MaxPods != 50 || cfg.PodCIDR != "10.1.0.0/24" || cfg.SystemReserved["cpu"] != "100m" || cfg.KubeReserved["memory"] != "256Mi" ||
		cfg.EvictionHard["memory.available"] != "200Mi" || cfg.HealthzBindAddress != "0" || cfg.KubeletPort != 10260 || cfg.ReadOnlyPort != 10255 ||
		*cfg.CgroupsPerQOS || cfg.CgroupRoot != "/nk" || *cfg.ResolvConf != "" || cfg.ContainerLogMaxSize != "5Mi" || cfg.ContainerLogMaxFiles != 3 ||
		cfg.NodeLeaseDurationSeconds != 20 || len(cfg.RegisterWithTaints) != 1 || cfg.RegisterWithTaints[0].Effect != corev1.TaintEffectNoSchedule ||
		cfg.ContainerRuntimeEndpoint != "unix:///run/k3s/containerd.sock" || !cfg.ServerTLSBootstrap || cfg.TLSCertFile != "/c" ||
		cfg.KubeAPIQPS == nil || *cfg.KubeAPIQPS != 20 || cfg.KubeAPIBurst != 40 {
		t.Errorf("mapped: %+v", cfg)
	}
}

// mergeDefaultEvictionSettings: the defaults fill the signals evictionHard leaves out.
func TestKubeletMergeDefaultEvictionSettings(t *testing.T) {
	cfg, err := ParseKubelet([]byte("apiVersion: kubelet.config.k8s.io/v1beta1\nkind: KubeletConfiguration\n" +
		"evictionHard: {memory.available: 300Mi}\nmergeDefaultEvictionSettings: true\n"))
	if err != nil {
		t.Fatal(err)
	}
	if cfg.EvictionHard["memory.available"] != "300Mi" || cfg.EvictionHard["nodefs.available"] != "10%" || cfg.EvictionHard["imagefs.inodesFree"] != "5%" {
		t.Errorf("evictionHard %v", cfg.EvictionHard)
	}
	only, err := ParseKubelet([]byte("apiVersion: kubelet.config.k8s.io/v1beta1\nkind: KubeletConfiguration\nevictionHard: {memory.available: 300Mi}\n"))
	if err != nil || len(only.EvictionHard) != 1 {
		t.Errorf("without merging the file's thresholds replace the defaults: %v %v", err, only.EvictionHard)
	}
}

func TestKubeletImagePullCredentialsVerificationPolicy(t *testing.T) {
	cfg, err := ParseKubelet([]byte("apiVersion: kubelet.config.k8s.io/v1beta1\nkind: KubeletConfiguration\n" +
		"imagePullCredentialsVerificationPolicy: NeverVerifyAllowlistedImages\npreloadedImagesVerificationAllowlist: [registry.k8s.io/*]\n"))
	if err != nil {
		t.Fatal(err)
	}
	cfg.NodeName = "n"
	SetDefaults(cfg)
	if err := Validate(cfg); err != nil || cfg.ImagePullCredentialsVerificationPolicy != "NeverVerifyAllowlistedImages" || cfg.PreloadedImagesVerificationAllowlist[0] != "registry.k8s.io/*" {
		t.Errorf("%v %+v", err, cfg)
	}
	cfg.PreloadedImagesVerificationAllowlist = []string{"registry.k8s.io/pause:3.10"}
	if err := Validate(cfg); err == nil || !strings.Contains(err.Error(), "preloadedImagesVerificationAllowlist[0]") {
		t.Errorf("a tag in the allowlist: %v", err)
	}
	cfg.ImagePullCredentialsVerificationPolicy = "Sometimes"
	if err := Validate(cfg); err == nil || !strings.Contains(err.Error(), "imagePullCredentialsVerificationPolicy") {
		t.Errorf("unknown policy: %v", err)
	}
}

func kubeProxyConf(t *testing.T) []byte {
	t.Helper()
	b, err := os.ReadFile("testdata/kubeadm-kube-proxy-configmap.yaml")
	if err != nil {
		t.Fatal(err)
	}
	var cm corev1.ConfigMap
	if err := yaml.Unmarshal(b, &cm); err != nil {
		t.Fatal(err)
	}
	return []byte(cm.Data["config.conf"])
}

func TestKubeadmKubeProxyConfigMap(t *testing.T) {
	cfg := &AgentConfiguration{}
	kubeconfig, err := ParseKubeProxy(kubeProxyConf(t), cfg)
	if err != nil {
		t.Fatal(err)
	}
	SetDefaults(cfg)
	if err := Validate(cfg); err != nil {
		t.Fatal(err)
	}
	if kubeconfig != "/var/lib/kube-proxy/kubeconfig.conf" {
		t.Errorf("kubeconfig %q", kubeconfig)
	}
	if cfg.ProxyMode != ProxyModeIPTables || cfg.ClusterCIDR != "10.244.0.0/16" {
		t.Errorf("mode %q clusterCIDR %q", cfg.ProxyMode, cfg.ClusterCIDR)
	}
	// kube-proxy's defaults for what the file leaves out
	if !cfg.LocalhostNodePorts || cfg.ProxyHealthzBindAddress != "0.0.0.0:10256" || cfg.ProxySyncPeriod.Duration.String() != "30s" || len(cfg.NodePortAddresses) != 0 {
		t.Errorf("defaults: localhostNodePorts %v healthz %q syncPeriod %v", cfg.LocalhostNodePorts, cfg.ProxyHealthzBindAddress, cfg.ProxySyncPeriod)
	}
}

func TestKubeProxyConfigMapsAndRefuses(t *testing.T) {
	cfg := &AgentConfiguration{}
	_, err := ParseKubeProxy([]byte(`apiVersion: kubeproxy.config.k8s.io/v1alpha1
kind: KubeProxyConfiguration
mode: nftables
hostnameOverride: Node-1
healthzBindAddress: 127.0.0.1
metricsBindAddress: 0.0.0.0:10249
nodePortAddresses: [primary]
iptables: {localhostNodePorts: false, syncPeriod: 10s}
nftables: {syncPeriod: 20s, masqueradeAll: true}
`), cfg)
	if err != nil {
		t.Fatal(err)
	}
	if cfg.ProxyMode != ProxyModeNFTables || cfg.NodeName != "node-1" || cfg.ProxyHealthzBindAddress != "127.0.0.1:10256" ||
		cfg.MetricsBindAddress != "0.0.0.0:10249" || cfg.NodePortAddresses[0] != "primary" || cfg.LocalhostNodePorts ||
		cfg.ProxySyncPeriod.Duration.String() != "20s" || !cfg.MasqueradeAll {
		t.Errorf("mapped: %+v", cfg)
	}
	SetDefaults(cfg)
	if err := Validate(cfg); err != nil {
		t.Errorf("nodePortAddresses primary: %v", err)
	}
	// nftables mode without nodePortAddresses: kube-proxy's default is the node's IPs
	nft := &AgentConfiguration{}
	if _, err := ParseKubeProxy([]byte("apiVersion: kubeproxy.config.k8s.io/v1alpha1\nkind: KubeProxyConfiguration\nmode: nftables\n"), nft); err != nil ||
		len(nft.NodePortAddresses) != 1 || nft.NodePortAddresses[0] != "primary" {
		t.Errorf("nftables default nodePortAddresses: %v %v", err, nft.NodePortAddresses)
	}
	kw := &AgentConfiguration{NodeName: "n", NodePortAddresses: []string{"localhost", "all", "10.0.0.0/8"}}
	SetDefaults(kw)
	if err := Validate(kw); err != nil {
		t.Errorf("keywords: %v", err)
	}
	for _, tc := range []struct{ yaml, want string }{
		{"conntrack: {maxPerCore: 32768}", "conntrack.maxPerCore: Forbidden"},
		{"ipvs: {scheduler: wrr}", "ipvs.scheduler: Forbidden"},
		{"detectLocalMode: InterfaceNamePrefix", "detectLocalMode: Forbidden"},
		{"iptables: {masqueradeBit: 15}", "iptables.masqueradeBit: Unsupported value: 15"},
		{"iptables: {minSyncPeriod: 10s}", "iptables.minSyncPeriod: Forbidden"},
		{"clientConnection: {qps: 100}", "clientConnection.qps: Forbidden"},
		{"oomScoreAdj: -999", "oomScoreAdj: Forbidden"},
	} {
		_, err := ParseKubeProxy([]byte("apiVersion: kubeproxy.config.k8s.io/v1alpha1\nkind: KubeProxyConfiguration\n"+tc.yaml+"\n"), &AgentConfiguration{})
		if err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("%s: got %v, want %q", tc.yaml, err, tc.want)
		}
	}
}

func TestLoadAnyDispatchesOnKind(t *testing.T) {
	dir := t.TempDir()
	p := filepath.Join(dir, "config.yaml")
	if err := os.WriteFile(p, kubeadmKubelet(t, "cgroupfs"), 0o644); err != nil {
		t.Fatal(err)
	}
	cfg, err := LoadAny(p)
	if err != nil || cfg.StaticPodPath != "/etc/kubernetes/manifests" || cfg.Kind != Kind {
		t.Errorf("kubelet config: %v %+v", err, cfg)
	}
	if err := os.WriteFile(p, kubeProxyConf(t), 0o644); err != nil {
		t.Fatal(err)
	}
	if _, err := LoadAny(p); err == nil || !strings.Contains(err.Error(), "--proxy-config") {
		t.Errorf("a KubeProxyConfiguration as --config: %v", err)
	}
}

func equal(a, b any) bool {
	ja, _ := yaml.Marshal(a)
	jb, _ := yaml.Marshal(b)
	return string(ja) == string(jb)
}
