package v1alpha1

import (
	"strings"
	"testing"
	"time"
)

const header = "apiVersion: nodekeeper.io/v1alpha1\nkind: AgentConfiguration\n"

func TestParseDefaultValidate(t *testing.T) {
	cfg, err := Parse([]byte(header + `
nodeName: node-1
systemReserved: {cpu: 100m, memory: 256Mi}
evictionHard: {memory.available: 200Mi}
nodeStatusUpdateFrequency: 2s
registerWithTaints:
- {key: example.com/dedicated, value: x, effect: NoSchedule}
`))
	if err != nil {
		t.Fatal(err)
	}
	SetDefaults(cfg)
	if err := Validate(cfg); err != nil {
		t.Fatal(err)
	}
	if cfg.ContainerRuntimeEndpoint != DefaultCRIEndpoint || cfg.MaxPods != 110 || cfg.NodeLeaseDurationSeconds != 40 || cfg.ProxyMode != ProxyModeIPTables {
		t.Errorf("defaults not applied: %+v", cfg)
	}
	if len(cfg.EvictionHard) != 1 {
		t.Errorf("an explicit evictionHard must replace the defaults, got %v", cfg.EvictionHard)
	}
	if cfg.NodeStatusReportFrequency.Duration != 2*time.Second {
		t.Errorf("report frequency follows an explicit update frequency, got %v", cfg.NodeStatusReportFrequency)
	}
}

func TestDefaultsEviction(t *testing.T) {
	cfg := &AgentConfiguration{NodeName: "n"}
	SetDefaults(cfg)
	want := map[string]string{"memory.available": "100Mi", "nodefs.available": "10%", "nodefs.inodesFree": "5%", "imagefs.available": "15%", "imagefs.inodesFree": "5%"}
	for k, v := range want {
		if cfg.EvictionHard[k] != v {
			t.Errorf("evictionHard[%s] = %q, want %q", k, cfg.EvictionHard[k], v)
		}
	}
	if cfg.NodeStatusReportFrequency.Duration != 5*time.Minute || cfg.NodeStatusUpdateFrequency.Duration != 10*time.Second {
		t.Errorf("frequencies: %v %v", cfg.NodeStatusUpdateFrequency, cfg.NodeStatusReportFrequency)
	}
	// the kubelet's API client limits, not client-go's 5/10
	if cfg.KubeAPIQPS == nil || *cfg.KubeAPIQPS != 50 || cfg.KubeAPIBurst != 100 {
		t.Errorf("kubeAPIQPS/kubeAPIBurst: %v %d", cfg.KubeAPIQPS, cfg.KubeAPIBurst)
	}
	// an explicit 0 is kept (client-go's own default then applies, as upstream)
	zero := int32(0)
	cfg = &AgentConfiguration{NodeName: "n", KubeAPIQPS: &zero}
	SetDefaults(cfg)
	if *cfg.KubeAPIQPS != 0 {
		t.Errorf("kubeAPIQPS 0 was replaced by %d", *cfg.KubeAPIQPS)
	}
}

func TestBadConfigNamesTheField(t *testing.T) {
	tests := []struct {
		name, yaml, want string
	}{
		{"unknown field", "nodeName: n\nbogusField: 1\n", `unknown field "bogusField"`},
		{"bad quantity", "nodeName: n\nsystemReserved: {memory: lots}\n", "systemReserved[memory]"},
		{"negative reserved", "nodeName: n\nkubeReserved: {cpu: -1}\n", "kubeReserved[cpu]"},
		{"unknown reserved resource", "nodeName: n\nkubeReserved: {gpu: 1}\n", "kubeReserved[gpu]"},
		{"negative duration", "nodeName: n\nnodeStatusUpdateFrequency: -5s\n", "nodeStatusUpdateFrequency"},
		{"bad duration", "nodeName: n\nnodeStatusReportFrequency: soon\n", "soon"},
		{"bad threshold", "nodeName: n\nevictionHard: {memory.available: 120%}\n", "evictionHard[memory.available]"},
		{"unknown signal", "nodeName: n\nevictionHard: {cpu.available: 1}\n", "evictionHard[cpu.available]"},
		{"bad proxy mode", "nodeName: n\nproxyMode: userspace\n", "proxyMode"},
		{"bad cidr", "nodeName: n\nclusterCIDR: 10.0.0.0/33\n", "clusterCIDR"},
		{"bad node name", "nodeName: Node_1\n", "nodeName"},
		{"bad taint effect", "nodeName: n\nregisterWithTaints: [{key: a, effect: Sometimes}]\n", "registerWithTaints[0].effect"},
		{"negative qps", "nodeName: n\nkubeAPIQPS: -1\n", "kubeAPIQPS: Invalid value: -1: must not be negative"},
		{"negative burst", "nodeName: n\nkubeAPIBurst: -1\n", "kubeAPIBurst: Invalid value: -1: must not be negative"},
		{"negative lease", "nodeName: n\nnodeLeaseDurationSeconds: -1\n", "nodeLeaseDurationSeconds"},
		{"bad bind address", "nodeName: n\nmetricsBindAddress: nowhere\n", "metricsBindAddress"},
		{"read-only port out of range", "nodeName: n\nreadOnlyPort: 70000\n", "readOnlyPort: Invalid value: 70000: must be a port, or 0 to disable"},
		{"sysctl not namespaced", "nodeName: n\nallowedUnsafeSysctls: [net.core.somaxconn, kernel.panic]\n", "allowedUnsafeSysctls[1]: Invalid value: \"kernel.panic\": the sysctl is not known to be namespaced"},
		{"bad sysctl pattern", "nodeName: n\nallowedUnsafeSysctls: [\"net.*.x\"]\n", "allowedUnsafeSysctls[0]"},
		{"relative log folder", "nodeName: n\npodLogsDir: logs\n", "podLogsDir: Invalid value: \"logs\": must be an absolute path"},
		{"negative read-only port", "nodeName: n\nreadOnlyPort: -1\n", "readOnlyPort: Invalid value: -1"},
		{"read-only port on the kubelet port", "nodeName: n\nreadOnlyPort: 10250\n", "readOnlyPort: Invalid value: 10250: must differ from kubeletPort"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			cfg, err := Parse([]byte(header + tt.yaml))
			if err == nil {
				SetDefaults(cfg)
				err = Validate(cfg)
			}
			if err == nil {
				t.Fatalf("no error for %q", tt.yaml)
			}
			if !strings.Contains(err.Error(), tt.want) {
				t.Errorf("error %q does not mention %q", err, tt.want)
			}
		})
	}
}

func TestParseRequiresKind(t *testing.T) {
	if _, err := Parse([]byte("nodeName: n\n")); err == nil || !strings.Contains(err.Error(), "apiVersion/kind") {
		t.Errorf("want an apiVersion/kind error, got %v", err)
	}
	if _, err := Parse(nil); err != nil {
		t.Errorf("empty input: %v", err)
	}
}

func TestThresholdValue(t *testing.T) {
	th, err := ParseThreshold("10%")
	if err != nil {
		t.Fatal(err)
	}
	capacity, _ := ParseThreshold("100Gi")
	if v := th.Value(*capacity.Quantity); v.Value() != 10*1024*1024*1024 {
		t.Errorf("10%% of 100Gi = %d", v.Value())
	}
}

func TestServerTLSBootstrap(t *testing.T) {
	cfg, err := Parse([]byte(header + "nodeName: n\nserverTLSBootstrap: true\n"))
	if err != nil {
		t.Fatal(err)
	}
	SetDefaults(cfg)
	if err := Validate(cfg); err != nil {
		t.Fatal(err)
	}
	if !cfg.ServerTLSBootstrap {
		t.Error("serverTLSBootstrap: true was not read")
	}
	off := &AgentConfiguration{NodeName: "n"}
	SetDefaults(off)
	if off.ServerTLSBootstrap {
		t.Error("serverTLSBootstrap must default to false, as upstream")
	}
}
