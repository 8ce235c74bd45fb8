package v1alpha1

import (
	"errors"
	"fmt"
	"net"
	"os"
	"sort"
	"strconv"
	"strings"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/util/validation/field"
	kubeproxyv1alpha1 "k8s.io/kube-proxy/config/v1alpha1"
	kubeletv1beta1 "k8s.io/kubelet/config/v1beta1"
	"sigs.k8s.io/yaml"
)

// Upstream configuration files nodekeeper reads besides its own AgentConfiguration: the
// kubelet's KubeletConfiguration (kubelet.config.k8s.io/v1beta1, e.g. the
// /var/lib/kubelet/config.yaml kubeadm writes) and kube-proxy's KubeProxyConfiguration
// (kubeproxy.config.k8s.io/v1alpha1, e.g. config.conf of kubeadm's kube-proxy ConfigMap).
// Every field nodekeeper has is mapped onto the AgentConfiguration, with the upstream
// component's default where the file leaves it out; every other field that is set is
// refused by its name. A field counts as set when its value is not the zero value (what
// a file written by marshalling the type, as kubeadm's, holds for what it leaves alone),
// or, for the few booleans whose upstream default is true, when it is false.
const (
	KubeletGroupVersion   = "kubelet.config.k8s.io/v1beta1"
	KubeletKind           = "KubeletConfiguration"
	KubeProxyGroupVersion = "kubeproxy.config.k8s.io/v1alpha1"
	KubeProxyKind         = "KubeProxyConfiguration"
)

// LoadAny reads a configuration file of any kind nodekeeper accepts for --config: its
// own AgentConfiguration or a KubeletConfiguration.
func LoadAny(path string) (*AgentConfiguration, error) {
	data, err := os.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("reading config file: %w", err)
	}
	switch apiVersion, kind := typeOf(data); {
	case apiVersion == KubeletGroupVersion && kind == KubeletKind:
		return ParseKubelet(data)
	case apiVersion == KubeProxyGroupVersion && kind == KubeProxyKind:
		return nil, errors.New("a KubeProxyConfiguration goes to --proxy-config")
	}
	return Parse(data)
}

func typeOf(data []byte) (string, string) {
	var tm struct {
		APIVersion string `json:"apiVersion"`
		Kind       string `json:"kind"`
	}
	_ = yaml.Unmarshal(data, &tm)
	return tm.APIVersion, tm.Kind
}

// upstream kubelet defaults that differ from nodekeeper's own
const (
	kubeletDefaultHealthzAddress = "127.0.0.1"
	kubeletDefaultHealthzPort    = 10248
	kubeletDefaultPort           = 10250
)

// ParseKubelet maps a KubeletConfiguration onto an AgentConfiguration (not defaulted).
func ParseKubelet(data []byte) (*AgentConfiguration, error) {
	kc := &kubeletv1beta1.KubeletConfiguration{}
	set, err := decodeUpstream(data, kc, &kc.TypeMeta, KubeletGroupVersion, KubeletKind, "config", kubeletObjects)
	if err != nil {
		return nil, err
	}
	cfg := &AgentConfiguration{TypeMeta: typeMeta()}
	refused := refusals{kind: KubeletKind}
	unsupported := refused.unsupported
	// booleans whose upstream default is true: false is a setting
	for path, v := range map[string]*bool{"enableServer": kc.EnableServer, "registerNode": kc.RegisterNode,
		"enableDebuggingHandlers": kc.EnableDebuggingHandlers, "authentication.webhook.enabled": kc.Authentication.Webhook.Enabled,
		"localStorageCapacityIsolation": kc.LocalStorageCapacityIsolation, "enableSystemLogHandler": kc.EnableSystemLogHandler} {
		if v != nil && !*v {
			unsupported(path, ": it always does what true does")
		}
	}
	for _, path := range set {
		switch path {
		case "staticPodPath":
			cfg.StaticPodPath = kc.StaticPodPath
		case "podLogsDir":
			cfg.PodLogsDir = kc.PodLogsDir
		case "port":
			cfg.KubeletPort = kc.Port
		case "readOnlyPort":
			cfg.ReadOnlyPort = kc.ReadOnlyPort
		case "tlsCertFile":
			cfg.TLSCertFile = kc.TLSCertFile
		case "tlsPrivateKeyFile":
			cfg.TLSPrivateKeyFile = kc.TLSPrivateKeyFile
		case "rotateCertificates":
			cfg.RotateCertificates = kc.RotateCertificates
		case "serverTLSBootstrap":
			cfg.ServerTLSBootstrap = kc.ServerTLSBootstrap
		case "authentication.x509.clientCAFile":
			cfg.ClientCAFile = kc.Authentication.X509.ClientCAFile
		case "authentication.webhook.enabled", "enableServer", "registerNode", "enableDebuggingHandlers",
			"localStorageCapacityIsolation", "enableSystemLogHandler":
			// true: what nodekeeper always does (false was refused above)
		case "authentication.anonymous.enabled":
			if kc.Authentication.Anonymous.Enabled != nil && *kc.Authentication.Anonymous.Enabled {
				unsupported(path, ": anonymous requests are always refused")
			}
		case "authentication.webhook.cacheTTL", "authorization.webhook.cacheAuthorizedTTL", "authorization.webhook.cacheUnauthorizedTTL":
			// reviews are not cached: every request is reviewed (stricter than any TTL)
		case "authorization.mode":
			if kc.Authorization.Mode != kubeletv1beta1.KubeletAuthorizationModeWebhook {
				refused.notSupported(path, kc.Authorization.Mode, string(kubeletv1beta1.KubeletAuthorizationModeWebhook))
			}
		case "address":
			if ip := net.ParseIP(kc.Address); ip == nil || !ip.IsUnspecified() {
				unsupported(path, ": the kubelet API listens on all addresses")
			}
		case "healthzBindAddress", "healthzPort":
			// joined below
		case "clusterDomain":
			cfg.ClusterDomain = kc.ClusterDomain
		case "clusterDNS":
			cfg.ClusterDNS = kc.ClusterDNS
		case "resolvConf":
			// taken below ("" is a setting)
		case "nodeStatusUpdateFrequency":
			cfg.NodeStatusUpdateFrequency = kc.NodeStatusUpdateFrequency
		case "nodeStatusReportFrequency":
			cfg.NodeStatusReportFrequency = kc.NodeStatusReportFrequency
		case "nodeLeaseDurationSeconds":
			cfg.NodeLeaseDurationSeconds = kc.NodeLeaseDurationSeconds
		case "cgroupRoot":
			cfg.CgroupRoot = kc.CgroupRoot
		case "cgroupsPerQOS":
			// taken below (false is a setting)
		case "cgroupDriver":
			cfg.CgroupDriver = kc.CgroupDriver
		case "maxPods":
			cfg.MaxPods = kc.MaxPods
		case "kubeAPIQPS":
			cfg.KubeAPIQPS = kc.KubeAPIQPS
		case "kubeAPIBurst":
			cfg.KubeAPIBurst = kc.KubeAPIBurst
		case "podCIDR":
			cfg.PodCIDR = kc.PodCIDR
		case "evictionHard":
			cfg.EvictionHard = kc.EvictionHard
		case "mergeDefaultEvictionSettings":
			// merged below: the default thresholds for the signals evictionHard leaves out
		case "systemReserved":
			cfg.SystemReserved = kc.SystemReserved
		case "kubeReserved":
			cfg.KubeReserved = kc.KubeReserved
		case "containerLogMaxSize":
			cfg.ContainerLogMaxSize = kc.ContainerLogMaxSize
		case "containerLogMaxFiles":
			if kc.ContainerLogMaxFiles != nil {
				cfg.ContainerLogMaxFiles = *kc.ContainerLogMaxFiles
			}
		case "allowedUnsafeSysctls":
			cfg.AllowedUnsafeSysctls = kc.AllowedUnsafeSysctls
		case "registerWithTaints":
			cfg.RegisterWithTaints = kc.RegisterWithTaints
		case "containerRuntimeEndpoint":
			cfg.ContainerRuntimeEndpoint = kc.ContainerRuntimeEndpoint
		case "imageServiceEndpoint":
			if kc.ImageServiceEndpoint != kc.ContainerRuntimeEndpoint {
				unsupported(path, ": images are served by the container runtime's endpoint")
			}
		case "enableProfilingHandler":
			cfg.EnableProfiling = kc.EnableProfilingHandler != nil && *kc.EnableProfilingHandler
		case "imagePullCredentialsVerificationPolicy":
			cfg.ImagePullCredentialsVerificationPolicy = string(kc.ImagePullCredentialsVerificationPolicy)
		case "preloadedImagesVerificationAllowlist":
			cfg.PreloadedImagesVerificationAllowlist = kc.PreloadedImagesVerificationAllowlist
		case "failSwapOn", "failCgroupV1":
			// nodekeeper starts with swap on and on cgroup v1 (what false does); true is
			// upstream's default, accepted so that default files load
		default:
			unsupported(path, "")
		}
	}
	cfg.CgroupsPerQOS = kc.CgroupsPerQOS
	cfg.ResolvConf = kc.ResolverConfig
	if kc.MergeDefaultEvictionSettings != nil && *kc.MergeDefaultEvictionSettings && cfg.EvictionHard != nil {
		for signal, v := range map[string]string{SignalMemoryAvailable: defaultEvictionMemory, SignalNodeFsAvailable: defaultEvictionNodeFs,
			SignalNodeFsInodesFree: defaultEvictionNodeInode, SignalImageFsAvailable: defaultEvictionImageFs, SignalImageFsInodesFree: defaultEvictionNodeInode} {
			if _, ok := cfg.EvictionHard[signal]; !ok {
				cfg.EvictionHard[signal] = v
			}
		}
	}
	// healthz: upstream splits address and port (port 0 turns it off)
	if kc.HealthzPort != nil && *kc.HealthzPort == 0 {
		cfg.HealthzBindAddress = "0"
	} else {
		addr, port := kc.HealthzBindAddress, int32(kubeletDefaultHealthzPort)
		if addr == "" {
			addr = kubeletDefaultHealthzAddress
		}
		if kc.HealthzPort != nil {
			port = *kc.HealthzPort
		}
		cfg.HealthzBindAddress = net.JoinHostPort(addr, strconv.Itoa(int(port)))
	}
	if cfg.KubeletPort == 0 {
		cfg.KubeletPort = kubeletDefaultPort
	}
	if err := refused.err(); err != nil {
		return nil, err
	}
	return cfg, nil
}

// ParseKubeProxy reads a KubeProxyConfiguration into cfg (what the file sets, and
// kube-proxy's defaults for what nodekeeper has and the file leaves out) and returns
// the kubeconfig it names (clientConnection.kubeconfig).
func ParseKubeProxy(data []byte, cfg *AgentConfiguration) (string, error) {
	pc := &kubeproxyv1alpha1.KubeProxyConfiguration{}
	set, err := decodeUpstream(data, pc, &pc.TypeMeta, KubeProxyGroupVersion, KubeProxyKind, "proxy config", kubeProxyObjects)
	if err != nil {
		return "", err
	}
	refused := refusals{kind: KubeProxyKind}
	unsupported := refused.unsupported
	// kube-proxy's defaults (pkg/proxy/apis/config/v1alpha1/defaults.go) for what
	// nodekeeper has
	cfg.ProxyHealthzBindAddress = "0.0.0.0:10256"
	cfg.LocalhostNodePorts = true
	if cfg.ProxyMode == "" {
		cfg.ProxyMode = ProxyModeIPTables
	}
	syncPeriods := map[ProxyMode]string{ProxyModeIPTables: "iptables.syncPeriod", ProxyModeNFTables: "nftables.syncPeriod", ProxyModeIPVS: "ipvs.syncPeriod"}
	kubeconfig := ""
	for _, path := range set {
		switch path {
		case "mode":
			cfg.ProxyMode = ProxyMode(pc.Mode)
		case "clusterCIDR":
			cfg.ClusterCIDR = pc.ClusterCIDR
		case "hostnameOverride":
			cfg.NodeName = strings.ToLower(strings.TrimSpace(pc.HostnameOverride))
		case "healthzBindAddress":
			cfg.ProxyHealthzBindAddress = appendPort(pc.HealthzBindAddress, 10256)
		case "metricsBindAddress":
			cfg.MetricsBindAddress = appendPort(pc.MetricsBindAddress, 10249)
		case "enableProfiling":
			cfg.EnableProfiling = pc.EnableProfiling
		case "nodePortAddresses":
			cfg.NodePortAddresses = pc.NodePortAddresses
		case "clientConnection.kubeconfig":
			kubeconfig = pc.ClientConnection.Kubeconfig
		case "bindAddress":
			if ip := net.ParseIP(pc.BindAddress); ip == nil || !ip.IsUnspecified() {
				unsupported(path, ": the node's IPs come from nodeIP")
			}
		case "iptables.masqueradeAll", "nftables.masqueradeAll":
			cfg.MasqueradeAll = cfg.MasqueradeAll || pc.IPTables.MasqueradeAll || pc.NFTables.MasqueradeAll
		case "iptables.localhostNodePorts":
			// taken below (false is a setting)
		case "iptables.syncPeriod", "nftables.syncPeriod", "ipvs.syncPeriod":
			// the mode's own sync period is taken below
		case "iptables.minSyncPeriod", "nftables.minSyncPeriod", "ipvs.minSyncPeriod":
			// rules are written as soon as a change is seen; kube-proxy's default (1s)
			// and shorter are what that does
			if d := minSync(pc, path); d > 1 {
				unsupported(path, ": rules are written as soon as a change is seen")
			}
		case "iptables.masqueradeBit", "nftables.masqueradeBit":
			if b := masqBit(pc, path); b != 14 {
				refused.notSupported(path, b, "14")
			}
		case "configSyncPeriod":
			// informers resync nothing: a watch keeps them current
		default:
			unsupported(path, "")
		}
	}
	if pc.IPTables.LocalhostNodePorts != nil {
		cfg.LocalhostNodePorts = *pc.IPTables.LocalhostNodePorts
	}
	if cfg.ProxyMode == "" {
		cfg.ProxyMode = ProxyModeIPTables
	}
	if cfg.ProxyMode == ProxyModeNFTables && len(cfg.NodePortAddresses) == 0 {
		// kube-proxy's platformApplyDefaults: nftables mode serves NodePorts on the node's IPs only
		cfg.NodePortAddresses = []string{NodePortAddressesPrimary}
	}
	for _, path := range set {
		if path == syncPeriods[cfg.ProxyMode] {
			switch cfg.ProxyMode {
			case ProxyModeIPTables:
				cfg.ProxySyncPeriod = pc.IPTables.SyncPeriod
			case ProxyModeNFTables:
				cfg.ProxySyncPeriod = pc.NFTables.SyncPeriod
			case ProxyModeIPVS:
				cfg.ProxySyncPeriod = pc.IPVS.SyncPeriod
			}
		}
	}
	if err := refused.err(); err != nil {
		return "", err
	}
	return kubeconfig, nil
}

// decodeUpstream decodes an upstream component config (what, e.g. "proxy config", names
// it in errors) strictly into obj, whose TypeMeta is meta and must be gv/kind, and lists
// the paths of the fields the file sets (setFields).
func decodeUpstream(data []byte, obj any, meta *metav1.TypeMeta, gv, kind, what string, objects map[string]bool) ([]string, error) {
	if err := yaml.UnmarshalStrict(data, obj); err != nil {
		return nil, fmt.Errorf("decoding %s: %w", kind, err)
	}
	if meta.APIVersion != gv || meta.Kind != kind {
		return nil, fmt.Errorf("decoding %s: apiVersion/kind must be %s/%s, got %q/%q", what, gv, kind, meta.APIVersion, meta.Kind)
	}
	return setFields(data, objects)
}

// refusals collects the fields of an upstream config of kind that nodekeeper refuses.
type refusals struct {
	kind string
	errs field.ErrorList
}

// unsupported refuses the field at path (why, when given, starts with ": ").
func (r *refusals) unsupported(path, why string) {
	r.errs = append(r.errs, field.Forbidden(field.NewPath(path), "not supported by nodekeeper"+why))
}

// notSupported refuses the value v of the field at path, naming the values accepted.
func (r *refusals) notSupported(path string, v any, valid ...string) {
	r.errs = append(r.errs, field.NotSupported(field.NewPath(path), v, valid))
}

// err is every refusal as one error, nil when there is none.
func (r *refusals) err() error {
	if len(r.errs) == 0 {
		return nil
	}
	return fmt.Errorf("%s: %w", r.kind, r.errs.ToAggregate())
}

func minSync(pc *kubeproxyv1alpha1.KubeProxyConfiguration, path string) float64 {
	switch path {
	case "iptables.minSyncPeriod":
		return pc.IPTables.MinSyncPeriod.Seconds()
	case "nftables.minSyncPeriod":
		return pc.NFTables.MinSyncPeriod.Seconds()
	}
	return pc.IPVS.MinSyncPeriod.Seconds()
}

func masqBit(pc *kubeproxyv1alpha1.KubeProxyConfiguration, path string) int32 {
	p := pc.IPTables.MasqueradeBit
	if path == "nftables.masqueradeBit" {
		p = pc.NFTables.MasqueradeBit
	}
	if p == nil {
		return 14
	}
	return *p
}

// appendPort is kube-proxy's AppendPortIfNeeded: an address without a port gets the default one.
func appendPort(addr string, port int) string {
	if _, _, err := net.SplitHostPort(addr); err == nil {
		return addr
	}
	if ip := net.ParseIP(addr); ip != nil {
		return net.JoinHostPort(addr, strconv.Itoa(port))
	}
	return addr
}

func typeMeta() metav1.TypeMeta { return metav1.TypeMeta{APIVersion: GroupVersion, Kind: Kind} }

// kubeletObjects and kubeProxyObjects are the fields that are objects of the type
// itself (walked into), as opposed to maps of user data (systemReserved, featureGates)
// that are one field.
var (
	kubeletObjects = map[string]bool{"authentication": true, "authentication.x509": true, "authentication.webhook": true,
		"authentication.anonymous": true, "authorization": true, "authorization.webhook": true, "logging": true,
		"logging.options": true, "logging.options.json": true, "logging.options.text": true, "crashLoopBackOff": true,
		"memorySwap": true, "tracing": true}
	kubeProxyObjects = map[string]bool{"clientConnection": true, "logging": true, "logging.options": true, "logging.options.json": true,
		"logging.options.text": true, "iptables": true, "ipvs": true, "nftables": true, "winkernel": true, "conntrack": true, "detectLocal": true}
)

// setFields lists the paths of the fields data sets to a non-zero value, sorted.
func setFields(data []byte, objects map[string]bool) ([]string, error) {
	var raw map[string]any
	if err := yaml.Unmarshal(data, &raw); err != nil {
		return nil, err
	}
	var out []string
	var walk func(prefix string, m map[string]any)
	walk = func(prefix string, m map[string]any) {
		for k, v := range m {
			path := k
			if prefix != "" {
				path = prefix + "." + k
			}
			if prefix == "" && (k == "apiVersion" || k == "kind") {
				continue
			}
			if sub, ok := v.(map[string]any); ok && objects[path] {
				walk(path, sub)
				continue
			}
			if !zero(v) {
				out = append(out, path)
			}
		}
	}
	walk("", raw)
	sort.Strings(out)
	return out, nil
}

func zero(v any) bool {
	switch x := v.(type) {
	case nil:
		return true
	case string:
		return x == "" || x == "0s" || x == "0"
	case float64:
		return x == 0
	case bool:
		return !x
	case []any:
		return len(x) == 0
	case map[string]any:
		return len(x) == 0
	}
	return false
}
