package helm

import (
	"encoding/json"
	"os"
	"path/filepath"
	"reflect"
	"sort"
	"strings"
	"testing"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/labels"

	"github.com/nodekeeper/nodekeeper/api/v1alpha1"
)

// values.schema.json validates `config` field by field: it names exactly the
// AgentConfiguration's fields (nodeName excepted: --node-name sets it), so a field added
// to the API without the schema, or a schema entry for a field that does not exist, fails.
func TestConfigSchemaCoversAgentConfiguration(t *testing.T) {
	b, err := os.ReadFile(filepath.Join(repoRoot, chartRel, "values.schema.json"))
	if err != nil {
		t.Fatal(err)
	}
	var schema struct {
		Properties map[string]struct {
			AdditionalProperties *bool                      `json:"additionalProperties"`
			Properties           map[string]json.RawMessage `json:"properties"`
		} `json:"properties"`
	}
	if err := json.Unmarshal(b, &schema); err != nil {
		t.Fatal(err)
	}
	cfg := schema.Properties["config"]
	if cfg.AdditionalProperties == nil || *cfg.AdditionalProperties {
		t.Error("config must refuse unknown fields (additionalProperties: false), as the agent does")
	}
	var inSchema, inAPI []string
	for k := range cfg.Properties {
		inSchema = append(inSchema, k)
	}
	ty := reflect.TypeOf(v1alpha1.AgentConfiguration{})
	for i := 0; i < ty.NumField(); i++ {
		name, _, _ := strings.Cut(ty.Field(i).Tag.Get("json"), ",")
		if name == "" || name == "nodeName" {
			continue
		}
		inAPI = append(inAPI, name)
	}
	sort.Strings(inSchema)
	sort.Strings(inAPI)
	if !reflect.DeepEqual(inSchema, inAPI) {
		t.Errorf("values.schema.json config fields\n %v\nAgentConfiguration fields\n %v", inSchema, inAPI)
	}
	// and valid values of every kind pass
	render(t, "schema-ok", `config:
  maxPods: 64
  nodeLabels: {a: b}
  registerWithTaints: [{key: k, value: v, effect: NoSchedule}]
  proxySyncPeriod: 30s
  cgroupsPerQOS: true
  clusterDNS: [10.96.0.10]
  iptablesVariant: legacy
`)
}

func TestNameOverrides(t *testing.T) {
	r := render(t, "rel", "fullnameOverride: agent\n")
	if r.DaemonSet.Name != "agent" || r.ConfigMap.Name != "agent-config" || r.ServiceAccount.Name != "agent" || r.ClusterRole.Name != "agent" {
		t.Errorf("fullnameOverride: names %s %s %s %s", r.DaemonSet.Name, r.ConfigMap.Name, r.ServiceAccount.Name, r.ClusterRole.Name)
	}
	r = render(t, "rel", "nameOverride: nk2\n")
	if r.DaemonSet.Name != "rel-nk2" || r.DaemonSet.Spec.Selector.MatchLabels["app.kubernetes.io/name"] != "nk2" {
		t.Errorf("nameOverride: name %s, selector %v", r.DaemonSet.Name, r.DaemonSet.Spec.Selector.MatchLabels)
	}
	checkWiring(t, r)
}

// The ports are values; an address of 0.0.0.0 makes the probes dial the pod (node) IP.
func TestPortsAreConfigurable(t *testing.T) {
	r := render(t, "ports", "healthz: {address: 0.0.0.0, port: 10300}\nmetrics: {port: 10301}\nproxyHealthz: {port: 0}\n")
	cfg, err := v1alpha1.Parse([]byte(r.ConfigMap.Data["config.yaml"]))
	if err != nil {
		t.Fatal(err)
	}
	if cfg.HealthzBindAddress != "0.0.0.0:10300" || cfg.MetricsBindAddress != "127.0.0.1:10301" || cfg.ProxyHealthzBindAddress != "0" {
		t.Errorf("healthz %q metrics %q proxyHealthz %q", cfg.HealthzBindAddress, cfg.MetricsBindAddress, cfg.ProxyHealthzBindAddress)
	}
	c := r.DaemonSet.Spec.Template.Spec.Containers[0]
	if p := c.LivenessProbe.HTTPGet; p.Host != "" || p.Port.IntValue() != 10300 {
		t.Errorf("liveness probe %+v: want the pod IP and port 10300", p)
	}
	if strings.Contains(strings.Join(r.TestPod.Spec.Containers[0].Args, " "), ":10256") {
		t.Error("the helm test still checks the disabled proxy healthz")
	}
}

func TestServiceMonitor(t *testing.T) {
	r := render(t, "sm", "")
	if r.ServiceMonitor != nil || r.MetricsService != nil {
		t.Error("a ServiceMonitor without serviceMonitor.enabled")
	}
	r = render(t, "sm", "serviceMonitor: {enabled: true, interval: 15s, labels: {release: prom}}\n")
	if r.ServiceMonitor == nil || r.MetricsService == nil {
		t.Fatalf("serviceMonitor.enabled rendered no ServiceMonitor/Service:\n%s", r.raw)
	}
	if r.ServiceMonitor.GetLabels()["release"] != "prom" {
		t.Errorf("ServiceMonitor labels %v", r.ServiceMonitor.GetLabels())
	}
	sel, _, _ := unstructuredMap(r.ServiceMonitor.Object, "spec", "selector", "matchLabels")
	for k, v := range sel {
		if r.MetricsService.Labels[k] != v || r.DaemonSet.Spec.Template.Labels[k] != v {
			t.Errorf("ServiceMonitor selects %s=%v, which the Service (%v) or the pods (%v) lack", k, v, r.MetricsService.Labels, r.DaemonSet.Spec.Template.Labels)
		}
	}
	for k, v := range r.MetricsService.Spec.Selector {
		if r.DaemonSet.Spec.Template.Labels[k] != v {
			t.Errorf("the metrics Service selects %s=%s, the pods are %v", k, v, r.DaemonSet.Spec.Template.Labels)
		}
	}
	if p := r.MetricsService.Spec.Ports; len(p) != 1 || p[0].Name != "metrics" || p[0].TargetPort.String() != "metrics" {
		t.Errorf("metrics Service ports %+v", p)
	}
	cfg, err := v1alpha1.Parse([]byte(r.ConfigMap.Data["config.yaml"]))
	if err != nil {
		t.Fatal(err)
	}
	if cfg.MetricsBindAddress != "0.0.0.0:10249" {
		t.Errorf("scraped metrics must listen beyond loopback, got %q", cfg.MetricsBindAddress)
	}
}

func unstructuredMap(obj map[string]any, path ...string) (map[string]any, bool, error) {
	cur := obj
	for _, p := range path {
		next, ok := cur[p].(map[string]any)
		if !ok {
			return nil, false, nil
		}
		cur = next
	}
	return cur, true, nil
}

// `helm test`: a host-network pod fetching the agent's and the proxy's /healthz.
func TestHelmTestHook(t *testing.T) {
	r := render(t, "ht", "test: {image: docker.io/library/busybox:local}\n")
	p := r.TestPod
	if p == nil {
		t.Fatalf("no helm test pod:\n%s", r.raw)
	}
	if p.Annotations["helm.sh/hook"] != "test" || !p.Spec.HostNetwork || p.Spec.RestartPolicy != "Never" {
		t.Errorf("test pod %+v", p.ObjectMeta.Annotations)
	}
	script := strings.Join(p.Spec.Containers[0].Args, " ")
	for _, want := range []string{"http://127.0.0.1:10264/healthz", "http://127.0.0.1:10256/healthz"} {
		if !strings.Contains(script, want) {
			t.Errorf("the test does not fetch %s:\n%s", want, script)
		}
	}
	if p.Spec.Containers[0].Image != "docker.io/library/busybox:local" {
		t.Errorf("test image %s", p.Spec.Containers[0].Image)
	}
	// the DaemonSet's selector must not match the test pod: its controller would adopt it
	// and delete it as a surplus daemon pod (killed mid-test, or gone before --logs)
	sel, err := metav1.LabelSelectorAsSelector(r.DaemonSet.Spec.Selector)
	if err != nil {
		t.Fatal(err)
	}
	if sel.Matches(labels.Set(p.Labels)) {
		t.Errorf("the DaemonSet's selector %s matches the test pod's labels %v", sel, p.Labels)
	}
	if p.Labels["app.kubernetes.io/instance"] != "ht" || p.Labels["app.kubernetes.io/component"] != "test" {
		t.Errorf("test pod labels %v: want the release's instance and component test", p.Labels)
	}
}
