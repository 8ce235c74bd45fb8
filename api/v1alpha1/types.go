// Package v1alpha1 holds nodekeeper's versioned configuration file format.
//
// A configuration file looks like:
//
//	apiVersion: nodekeeper.io/v1alpha1
//	kind: AgentConfiguration
//	nodeName: node-1
//	containerRuntimeEndpoint: unix:///run/containerd/containerd.sock
//	systemReserved: {cpu: 100m, memory: 256Mi}
//	evictionHard: {memory.available: 100Mi, nodefs.available: "10%"}
//
// Load reads such a file strictly (unknown fields are errors), SetDefaults fills what
// was left out, and Validate reports every bad field by its path.
package v1alpha1

import (
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
)

const (
	// GroupVersion is the apiVersion a configuration file must carry.
	GroupVersion = "nodekeeper.io/v1alpha1"
	// Kind is the kind a configuration file must carry.
	Kind = "AgentConfiguration"
)

// ProxyMode selects the kernel backend the ServiceReconciler programs.
type ProxyMode string

const (
	ProxyModeIPTables ProxyMode = "iptables"
	ProxyModeNFTables ProxyMode = "nftables"
	ProxyModeIPVS     ProxyMode = "ipvs"
)

// AgentConfiguration is the whole configuration of one nodekeeper agent.
// Field meanings follow the upstream KubeletConfiguration and KubeProxyConfiguration
// where a field exists there; the upstream name is given in brackets.
type AgentConfiguration struct {
	metav1.TypeMeta `json:",inline"`

	// NodeName is the name of the Node object this agent owns [--hostname-override].
	// Defaults to the machine's hostname, lower-cased.
	NodeName string `json:"nodeName,omitempty"`
	// NodeIP is the address reported as the node's InternalIP [--node-ip].
	// Empty means the first global unicast address of the host.
	NodeIP string `json:"nodeIP,omitempty"`
	// NodeLabels are added to the Node at registration [--node-labels].
	NodeLabels map[string]string `json:"nodeLabels,omitempty"`
	// RegisterWithTaints are set on the Node at registration [registerWithTaints].
	RegisterWithTaints []corev1.Taint `json:"registerWithTaints,omitempty"`

	// ContainerRuntimeEndpoint is the CRI socket [containerRuntimeEndpoint].
	ContainerRuntimeEndpoint string `json:"containerRuntimeEndpoint,omitempty"`
	// RootDir is where the agent keeps per-pod state [--root-dir]; its filesystem is
	// the "nodefs" that ephemeral-storage capacity and disk pressure are measured on.
	RootDir string `json:"rootDir,omitempty"`
	// StaticPodPath is the folder of static pod manifests [staticPodPath]. Empty disables them.
	StaticPodPath string `json:"staticPodPath,omitempty"`
	// MaxPods is the pod capacity of the node [maxPods].
	MaxPods int32 `json:"maxPods,omitempty"`
	// PodCIDR is this node's pod range, written to spec.podCIDR [podCIDR].
	PodCIDR string `json:"podCIDR,omitempty"`
	// ClusterDNS are the nameserver addresses given to pods with ClusterFirst DNS [clusterDNS].
	ClusterDNS []string `json:"clusterDNS,omitempty"`
	// ClusterDomain is the cluster's DNS domain [clusterDomain].
	ClusterDomain string `json:"clusterDomain,omitempty"`
	// ResolvConf is the resolver file whose nameservers, searches and options pods with
	// the Default DNS policy get, and whose searches ClusterFirst pods get after the
	// cluster's [resolvConf]. Default /etc/resolv.conf; "" gives such pods the node's
	// loopback as their only nameserver, as upstream.
	ResolvConf *string `json:"resolvConf,omitempty"`
	// AllowedUnsafeSysctls are the sysctls (or "prefix*" patterns) pods may set beyond
	// the safe ones, which are always allowed [allowedUnsafeSysctls]; a pod with any
	// other is rejected (SysctlForbidden).
	AllowedUnsafeSysctls []string `json:"allowedUnsafeSysctls,omitempty"`
	// PodLogsDir is where containers' logs are written, one folder per pod
	// (<ns>_<name>_<uid>/<container>/<restart>.log) [podLogsDir]. Default /var/log/pods.
	PodLogsDir string `json:"podLogsDir,omitempty"`
	// ContainerLogsDir holds a symbolic link to each container's log,
	// <pod>_<ns>_<container>-<containerID>.log, for log collectors (the kubelet's fixed
	// /var/log/containers). Default /var/log/containers.
	ContainerLogsDir string `json:"containerLogsDir,omitempty"`
	// ContainerLogMaxSize is the size at which a container's log file is rotated
	// [containerLogMaxSize]. Default 10Mi.
	ContainerLogMaxSize string `json:"containerLogMaxSize,omitempty"`
	// ContainerLogMaxFiles is how many log files a container keeps, the current one
	// included [containerLogMaxFiles]. Default 5, at least 2.
	ContainerLogMaxFiles int32 `json:"containerLogMaxFiles,omitempty"`
	// CgroupsPerQOS puts each pod in its own cgroup under a QoS-class cgroup
	// (<cgroupRoot>/kubepods[/burstable|/besteffort]/pod<uid>) that carries the pod's
	// CPU and memory limits [cgroupsPerQOS]. Default true.
	CgroupsPerQOS *bool `json:"cgroupsPerQOS,omitempty"`
	// CgroupRoot is where the kubepods cgroup goes [cgroupRoot]. Default "/".
	CgroupRoot string `json:"cgroupRoot,omitempty"`
	// CgroupDriver is how cgroups are named [cgroupDriver]: only "cgroupfs" (the
	// default) runs, and the runtime must use it too. "systemd" is refused at start-up
	// with the reason (no systemd as PID 1, or no D-Bus unit management yet), never
	// silently replaced by cgroupfs.
	CgroupDriver string `json:"cgroupDriver,omitempty"`
	// ImageCredentialProviderConfig is a CredentialProviderConfig file
	// (kubelet.config.k8s.io/v1) naming exec plugins that give registry credentials
	// [--image-credential-provider-config]; they are asked after the pod's
	// imagePullSecrets and the node's docker config, as upstream. Empty: none.
	ImageCredentialProviderConfig string `json:"imageCredentialProviderConfig,omitempty"`
	// ImageCredentialProviderBinDir is the folder of the plugins' binaries
	// [--image-credential-provider-bin-dir].
	ImageCredentialProviderBinDir string `json:"imageCredentialProviderBinDir,omitempty"`
	// ImagePullCredentialsVerificationPolicy decides which images present on the node a
	// pod must show credentials for before using them [imagePullCredentialsVerificationPolicy]:
	// NeverVerify, NeverVerifyPreloadedImages (default: images the agent pulled with a
	// pull secret), NeverVerifyAllowlistedImages (all but
	// preloadedImagesVerificationAllowlist's), AlwaysVerify.
	ImagePullCredentialsVerificationPolicy string `json:"imagePullCredentialsVerificationPolicy,omitempty"`
	// PreloadedImagesVerificationAllowlist: image names (no tag or digest) or "<prefix>/*"
	// never verified under NeverVerifyAllowlistedImages [preloadedImagesVerificationAllowlist].
	PreloadedImagesVerificationAllowlist []string `json:"preloadedImagesVerificationAllowlist,omitempty"`
	// DevicePluginDir is the folder of the device plugin Registration service
	// (kubelet.sock) and of the plugins' sockets. Default /var/lib/kubelet/device-plugins,
	// the path device plugins (and upstream's kubelet, which does not let it change) use.
	DevicePluginDir string `json:"devicePluginDir,omitempty"`

	// SystemReserved is held back for OS daemons [systemReserved]: resource name to quantity.
	SystemReserved map[string]string `json:"systemReserved,omitempty"`
	// KubeReserved is held back for Kubernetes daemons, this agent included [kubeReserved].
	KubeReserved map[string]string `json:"kubeReserved,omitempty"`
	// EvictionHard maps a signal (memory.available, nodefs.available, nodefs.inodesFree,
	// imagefs.available, imagefs.inodesFree, pid.available) to a threshold: a quantity
	// or a percentage of capacity [evictionHard]. When the field is given, it replaces the
	// defaults as a whole, as upstream does.
	EvictionHard map[string]string `json:"evictionHard,omitempty"`

	// KubeAPIQPS is the agent's request rate to the API server, in queries per second
	// [kubeAPIQPS]. Default 50 (the kubelet's); 0 leaves client-go's own default (5), as
	// upstream.
	KubeAPIQPS *int32 `json:"kubeAPIQPS,omitempty"`
	// KubeAPIBurst is the burst above KubeAPIQPS the agent may send [kubeAPIBurst].
	// Default 100 (the kubelet's).
	KubeAPIBurst int32 `json:"kubeAPIBurst,omitempty"`

	// NodeStatusUpdateFrequency is how often the node's status is computed [nodeStatusUpdateFrequency].
	NodeStatusUpdateFrequency metav1.Duration `json:"nodeStatusUpdateFrequency,omitempty"`
	// NodeStatusReportFrequency is how often the status is written when nothing changed
	// [nodeStatusReportFrequency].
	NodeStatusReportFrequency metav1.Duration `json:"nodeStatusReportFrequency,omitempty"`
	// NodeLeaseDurationSeconds is the duration of the node Lease; it is renewed every
	// quarter of it [nodeLeaseDurationSeconds].
	NodeLeaseDurationSeconds int32 `json:"nodeLeaseDurationSeconds,omitempty"`

	// ProxyMode is the kernel backend for Services [mode]: iptables, nftables or ipvs.
	ProxyMode ProxyMode `json:"proxyMode,omitempty"`
	// ClusterCIDR is the range of pod addresses in the cluster [clusterCIDR]; traffic to a
	// Service from outside it is masqueraded.
	ClusterCIDR string `json:"clusterCIDR,omitempty"`
	// ServiceCIDR is the range Service ClusterIPs come from [--service-cluster-ip-range].
	ServiceCIDR string `json:"serviceCIDR,omitempty"`

	// IPTablesVariant picks the iptables binaries in iptables mode: "legacy", "nft", or
	// "" for the distribution's default iptables command.
	IPTablesVariant string `json:"iptablesVariant,omitempty"`
	// MasqueradeAll masquerades all traffic to ClusterIPs [masqueradeAll].
	MasqueradeAll bool `json:"masqueradeAll,omitempty"`
	// NodePortAddresses limits NodePorts to local addresses in these CIDRs
	// [nodePortAddresses]; empty means all local addresses, "primary" the node's IPs.
	NodePortAddresses []string `json:"nodePortAddresses,omitempty"`
	// LocalhostNodePorts lets NodePorts answer on 127.0.0.1 [iptables.localhostNodePorts].
	// Off by default in nodekeeper (upstream defaults it on).
	LocalhostNodePorts bool `json:"localhostNodePorts,omitempty"`
	// ProxySyncPeriod is how often all rules are rewritten and repaired [syncPeriod].
	ProxySyncPeriod metav1.Duration `json:"proxySyncPeriod,omitempty"`
	// ProxyHealthzBindAddress serves kube-proxy's /healthz [healthzBindAddress of
	// KubeProxyConfiguration]; "0" disables.
	ProxyHealthzBindAddress string `json:"proxyHealthzBindAddress,omitempty"`

	// KubeletPort serves the kubelet API (HTTPS: /containerLogs, /pods, /healthz)
	// [port]; -1 disables it. Default 10250.
	KubeletPort int32 `json:"kubeletPort,omitempty"`
	// ReadOnlyPort serves the kubelet's read-only API over plain HTTP without
	// authentication: /healthz, /pods, /stats/summary, /metrics, /metrics/probes,
	// /metrics/resource [readOnlyPort]. Default 0: off, as upstream.
	ReadOnlyPort int32 `json:"readOnlyPort,omitempty"`
	// TLSCertFile and TLSPrivateKeyFile are the kubelet API's serving certificate
	// [tlsCertFile, tlsPrivateKeyFile]; empty means a self-signed one.
	TLSCertFile       string `json:"tlsCertFile,omitempty"`
	TLSPrivateKeyFile string `json:"tlsPrivateKeyFile,omitempty"`
	// ServerTLSBootstrap makes the kubelet API get its serving certificate from the
	// certificates API [serverTLSBootstrap]: a CertificateSigningRequest with signer
	// kubernetes.io/kubelet-serving for CN=system:node:<nodeName>, O=system:nodes and the
	// node's addresses, kept under <rootDir>/pki and renewed before it expires. The CSR
	// must be approved (by an administrator or an approver; kube-controller-manager
	// approves no serving certificates) and signed; until a certificate is issued the
	// kubelet API completes no TLS handshake (as upstream). When tlsCertFile and
	// tlsPrivateKeyFile are given too, that pair is served until it is due for rotation
	// (as upstream's file store does). Default false.
	ServerTLSBootstrap bool `json:"serverTLSBootstrap,omitempty"`
	// RotateCertificates renews the agent's client certificate (from the bootstrap
	// kubeconfig's CertificateSigningRequest) before it expires [rotateCertificates].
	RotateCertificates bool `json:"rotateCertificates,omitempty"`
	// ClientCAFile verifies client certificates of kubelet API callers
	// [authentication.x509.clientCAFile]; bearer tokens go through TokenReview.
	ClientCAFile string `json:"clientCAFile,omitempty"`

	// HealthzBindAddress serves /healthz and /readyz [healthzBindAddress]; "0" disables.
	HealthzBindAddress string `json:"healthzBindAddress,omitempty"`
	// MetricsBindAddress serves Prometheus /metrics [metricsBindAddress]; "0" disables.
	MetricsBindAddress string `json:"metricsBindAddress,omitempty"`
	// EnableProfiling serves Go's /debug/pprof/ handlers on the metrics address
	// [enableProfiling, as kube-proxy's]; off by default.
	EnableProfiling bool `json:"enableProfiling,omitempty"`
}
