package kubeletapi

import (
	"encoding/json"
	"net"
	"net/http"
	"strconv"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	kubeletconfig "k8s.io/kubelet/config/v1beta1"
	"k8s.io/utils/ptr"

	"github.com/nodekeeper/nodekeeper/api/v1alpha1"
)

// KubeletConfiguration is the agent's configuration in upstream's
// kubelet.config.k8s.io/v1beta1 KubeletConfiguration, the fields nodekeeper has (what
// /configz serves, so tools reading a kubelet's /configz read nodekeeper's).
func KubeletConfiguration(c *v1alpha1.AgentConfiguration) *kubeletconfig.KubeletConfiguration {
	kc := &kubeletconfig.KubeletConfiguration{
		TypeMeta:                  metav1.TypeMeta{Kind: "KubeletConfiguration", APIVersion: kubeletconfig.SchemeGroupVersion.String()},
		StaticPodPath:             c.StaticPodPath,
		ClusterDomain:             c.ClusterDomain,
		ClusterDNS:                c.ClusterDNS,
		MaxPods:                   c.MaxPods,
		PodCIDR:                   c.PodCIDR,
		Port:                      c.KubeletPort,
		ReadOnlyPort:              c.ReadOnlyPort,
		TLSCertFile:               c.TLSCertFile,
		TLSPrivateKeyFile:         c.TLSPrivateKeyFile,
		ServerTLSBootstrap:        c.ServerTLSBootstrap,
		ContainerRuntimeEndpoint:  c.ContainerRuntimeEndpoint,
		CgroupDriver:              c.CgroupDriver,
		CgroupRoot:                c.CgroupRoot,
		CgroupsPerQOS:             c.CgroupsPerQOS,
		SystemReserved:            c.SystemReserved,
		KubeReserved:              c.KubeReserved,
		EvictionHard:              c.EvictionHard,
		NodeStatusUpdateFrequency: c.NodeStatusUpdateFrequency,
		NodeStatusReportFrequency: c.NodeStatusReportFrequency,
		NodeLeaseDurationSeconds:  c.NodeLeaseDurationSeconds,
		RegisterWithTaints:        c.RegisterWithTaints,
		ContainerLogMaxSize:       c.ContainerLogMaxSize,
		PodLogsDir:                c.PodLogsDir,
		Authentication: kubeletconfig.KubeletAuthentication{
			X509:      kubeletconfig.KubeletX509Authentication{ClientCAFile: c.ClientCAFile},
			Webhook:   kubeletconfig.KubeletWebhookAuthentication{Enabled: ptr.To(true)},
			Anonymous: kubeletconfig.KubeletAnonymousAuthentication{Enabled: ptr.To(false)},
		},
		Authorization: kubeletconfig.KubeletAuthorization{Mode: kubeletconfig.KubeletAuthorizationModeWebhook},
	}
	if c.ContainerLogMaxFiles != 0 {
		kc.ContainerLogMaxFiles = ptr.To(c.ContainerLogMaxFiles)
	}
	if c.ResolvConf != nil {
		kc.ResolverConfig = ptr.To(*c.ResolvConf)
	}
	if host, port, err := net.SplitHostPort(c.HealthzBindAddress); err == nil {
		kc.HealthzBindAddress = host
		if p, err := strconv.Atoi(port); err == nil {
			kc.HealthzPort = ptr.To(int32(p))
		}
	} else if c.HealthzBindAddress == "0" {
		kc.HealthzPort = ptr.To(int32(0))
	}
	return kc
}

// configz serves the effective configuration in the upstream /configz shape:
// {"kubeletconfig": KubeletConfiguration}.
func (s *Server) configz(w http.ResponseWriter, _ *http.Request) {
	if s.Config == nil {
		http.Error(w, "no configuration", http.StatusNotFound)
		return
	}
	w.Header().Set("Content-Type", "application/json")
	_ = json.NewEncoder(w).Encode(map[string]any{"kubeletconfig": KubeletConfiguration(s.Config)})
}
