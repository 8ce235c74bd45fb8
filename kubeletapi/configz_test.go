package kubeletapi

import (
	"encoding/json"
	"net/http/httptest"
	"reflect"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	kubeletconfig "k8s.io/kubelet/config/v1beta1"

	"github.com/nodekeeper/nodekeeper/api/v1alpha1"
)

// /configz answers upstream's shape: a kubelet's reader decodes it into the upstream
// KubeletConfiguration type and finds the agent's values.
func TestConfigzRoundTrip(t *testing.T) {
	cfg := &v1alpha1.AgentConfiguration{NodeName: "n1", StaticPodPath: "/etc/kubernetes/manifests", ClusterDNS: []string{"10.96.0.10"},
		MaxPods: 42, PodCIDR: "10.244.1.0/24", KubeletPort: 10250, ReadOnlyPort: 10255, ClientCAFile: "/pki/ca.crt",
		SystemReserved: map[string]string{"cpu": "500m"}, EvictionHard: map[string]string{"memory.available": "100Mi"},
		RegisterWithTaints:        []corev1.Taint{{Key: "k", Value: "v", Effect: corev1.TaintEffectNoSchedule}},
		NodeStatusUpdateFrequency: metav1.Duration{Duration: 7 * time.Second}, HealthzBindAddress: "127.0.0.1:10248", CgroupRoot: "/nk"}
	v1alpha1.SetDefaults(cfg)
	rec := httptest.NewRecorder()
	(&Server{Config: cfg}).configz(rec, httptest.NewRequest("GET", "/configz", nil))
	var got struct {
		KubeletConfig kubeletconfig.KubeletConfiguration `json:"kubeletconfig"`
	}
	dec := json.NewDecoder(rec.Body)
	dec.DisallowUnknownFields() // every field served is one of upstream's
	if err := dec.Decode(&got); err != nil {
		t.Fatal(err)
	}
	kc := got.KubeletConfig
	if kc.Kind != "KubeletConfiguration" || kc.APIVersion != "kubelet.config.k8s.io/v1beta1" {
		t.Errorf("type %s/%s", kc.APIVersion, kc.Kind)
	}
	for name, pair := range map[string][2]any{
		"staticPodPath":             {kc.StaticPodPath, cfg.StaticPodPath},
		"clusterDNS":                {kc.ClusterDNS, cfg.ClusterDNS},
		"clusterDomain":             {kc.ClusterDomain, "cluster.local"},
		"maxPods":                   {kc.MaxPods, int32(42)},
		"podCIDR":                   {kc.PodCIDR, cfg.PodCIDR},
		"port":                      {kc.Port, int32(10250)},
		"readOnlyPort":              {kc.ReadOnlyPort, int32(10255)},
		"systemReserved":            {kc.SystemReserved, cfg.SystemReserved},
		"evictionHard":              {kc.EvictionHard, cfg.EvictionHard},
		"registerWithTaints":        {kc.RegisterWithTaints, cfg.RegisterWithTaints},
		"nodeStatusUpdateFrequency": {kc.NodeStatusUpdateFrequency.Duration, 7 * time.Second},
		"healthzBindAddress":        {kc.HealthzBindAddress, "127.0.0.1"},
		"healthzPort":               {*kc.HealthzPort, int32(10248)},
		"cgroupRoot":                {kc.CgroupRoot, "/nk"},
		"containerLogMaxSize":       {kc.ContainerLogMaxSize, "10Mi"},
		"containerLogMaxFiles":      {*kc.ContainerLogMaxFiles, int32(5)},
		"cgroupDriver":              {kc.CgroupDriver, "cgroupfs"},
		"cgroupsPerQOS":             {*kc.CgroupsPerQOS, true},
		"resolvConf":                {*kc.ResolverConfig, "/etc/resolv.conf"},
		"x509.clientCAFile":         {kc.Authentication.X509.ClientCAFile, "/pki/ca.crt"},
		"anonymous":                 {*kc.Authentication.Anonymous.Enabled, false},
		"authorization":             {kc.Authorization.Mode, kubeletconfig.KubeletAuthorizationModeWebhook},
	} {
		if !reflect.DeepEqual(pair[0], pair[1]) {
			t.Errorf("%s = %v, want %v", name, pair[0], pair[1])
		}
	}
}
