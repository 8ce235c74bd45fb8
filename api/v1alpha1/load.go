package v1alpha1

import (
	"fmt"
	"net"
	"os"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"time"

	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/api/resource"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/util/validation"
	"k8s.io/apimachinery/pkg/util/validation/field"

	"github.com/nodekeeper/nodekeeper/internal/credentials"
	"github.com/nodekeeper/nodekeeper/internal/podplan"
	"github.com/nodekeeper/nodekeeper/internal/strictyaml"
)

// Keywords in nodePortAddresses, as kube-proxy's: the node's own IPs, the loopback
// ranges, every address.
const (
	NodePortAddressesPrimary   = "primary"
	NodePortAddressesLocalhost = "localhost"
	NodePortAddressesAll       = "all"
)

// Eviction signals understood in EvictionHard (upstream names).
const (
	SignalMemoryAvailable      = "memory.available"
	SignalNodeFsAvailable      = "nodefs.available"
	SignalNodeFsInodesFree     = "nodefs.inodesFree"
	SignalImageFsAvailable     = "imagefs.available"
	SignalImageFsInodesFree    = "imagefs.inodesFree"
	SignalPIDAvailable         = "pid.available"
	DefaultCRIEndpoint         = "unix:///run/containerd/containerd.sock"
	DefaultRootDir             = "/var/lib/nodekeeper"
	DefaultPodLogsDir          = "/var/log/pods"
	DefaultContainerLogsDir    = "/var/log/containers"
	DefaultClusterDomain       = "cluster.local"
	DefaultResolvConf          = "/etc/resolv.conf"
	DefaultMaxPods             = 110
	DefaultKubeAPIQPS          = 50
	DefaultKubeAPIBurst        = 100
	DefaultLeaseDuration       = 40
	DefaultHealthzAddress      = ":10248"
	DefaultMetricsAddress      = "127.0.0.1:10249"
	DefaultDevicePluginDir     = "/var/lib/kubelet/device-plugins"
	DefaultStatusUpdateFreq    = 10 * time.Second
	DefaultStatusReportFreq    = 5 * time.Minute
	DefaultClusterCIDR         = ""
	DefaultProxySyncPeriod     = 30 * time.Second
	DefaultProxyHealthzAddress = "0.0.0.0:10256"
	DefaultProxyMode           = ProxyModeIPTables
	defaultEvictionMemory      = "100Mi"
	defaultEvictionNodeFs      = "10%"
	defaultEvictionNodeInode   = "5%"
	defaultEvictionImageFs     = "15%"
)

var knownSignals = map[string]bool{
	SignalMemoryAvailable: true, SignalNodeFsAvailable: true, SignalNodeFsInodesFree: true,
	SignalImageFsAvailable: true, SignalImageFsInodesFree: true, SignalPIDAvailable: true,
}

// reservable are the resource names systemReserved/kubeReserved accept (as upstream).
var reservable = map[string]bool{"cpu": true, "memory": true, "ephemeral-storage": true, "pid": true}

// Load reads a configuration file strictly: unknown or duplicate fields are errors.
// It does not default or validate.
func Load(path string) (*AgentConfiguration, error) {
	data, err := os.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("reading config file: %w", err)
	}
	return Parse(data)
}

// Parse decodes configuration YAML or JSON strictly. Empty input gives an empty configuration.
func Parse(data []byte) (*AgentConfiguration, error) {
	cfg := &AgentConfiguration{}
	if err := strictyaml.Unmarshal(data, cfg); err != nil {
		return nil, fmt.Errorf("decoding config: %w", err)
	}
	if len(strings.TrimSpace(string(data))) > 0 {
		if cfg.APIVersion != GroupVersion || cfg.Kind != Kind {
			return nil, fmt.Errorf("decoding config: apiVersion/kind must be %s/%s, got %q/%q",
				GroupVersion, Kind, cfg.APIVersion, cfg.Kind)
		}
	}
	return cfg, nil
}

// SetDefaults fills every field left empty with nodekeeper's default (the upstream one
// where it exists).
func SetDefaults(c *AgentConfiguration) {
	c.APIVersion, c.Kind = GroupVersion, Kind
	if c.NodeName == "" {
		if h, err := os.Hostname(); err == nil {
			c.NodeName = strings.ToLower(h)
		}
	}
	if c.ContainerRuntimeEndpoint == "" {
		c.ContainerRuntimeEndpoint = DefaultCRIEndpoint
	}
	if c.RootDir == "" {
		c.RootDir = DefaultRootDir
	}
	if c.PodLogsDir == "" {
		c.PodLogsDir = DefaultPodLogsDir
	}
	if c.ContainerLogsDir == "" {
		c.ContainerLogsDir = DefaultContainerLogsDir
	}
	if c.MaxPods == 0 {
		c.MaxPods = DefaultMaxPods
	}
	if c.ClusterDomain == "" {
		c.ClusterDomain = DefaultClusterDomain
	}
	if c.ContainerLogMaxSize == "" {
		c.ContainerLogMaxSize = "10Mi"
	}
	if c.ContainerLogMaxFiles == 0 {
		c.ContainerLogMaxFiles = 5
	}
	if c.CgroupsPerQOS == nil {
		t := true
		c.CgroupsPerQOS = &t
	}
	if c.CgroupRoot == "" {
		c.CgroupRoot = "/"
	}
	if c.CgroupDriver == "" {
		c.CgroupDriver = "cgroupfs"
	}
	if c.DevicePluginDir == "" {
		c.DevicePluginDir = DefaultDevicePluginDir
	}
	if c.ResolvConf == nil {
		rc := DefaultResolvConf
		c.ResolvConf = &rc
	}
	if c.EvictionHard == nil {
		c.EvictionHard = map[string]string{
			SignalMemoryAvailable:   defaultEvictionMemory,
			SignalNodeFsAvailable:   defaultEvictionNodeFs,
			SignalNodeFsInodesFree:  defaultEvictionNodeInode,
			SignalImageFsAvailable:  defaultEvictionImageFs,
			SignalImageFsInodesFree: defaultEvictionNodeInode,
		}
	}
	if c.KubeAPIQPS == nil {
		qps := int32(DefaultKubeAPIQPS)
		c.KubeAPIQPS = &qps
	}
	if c.KubeAPIBurst == 0 {
		c.KubeAPIBurst = DefaultKubeAPIBurst
	}
	if c.NodeStatusUpdateFrequency.Duration == 0 {
		c.NodeStatusUpdateFrequency = metav1.Duration{Duration: DefaultStatusUpdateFreq}
	}
	if c.NodeStatusReportFrequency.Duration == 0 {
		// upstream: the report frequency defaults to the update frequency when that was
		// set explicitly, else to 5 minutes
		c.NodeStatusReportFrequency = metav1.Duration{Duration: DefaultStatusReportFreq}
		if c.NodeStatusUpdateFrequency.Duration != DefaultStatusUpdateFreq {
			c.NodeStatusReportFrequency = c.NodeStatusUpdateFrequency
		}
	}
	if c.NodeLeaseDurationSeconds == 0 {
		c.NodeLeaseDurationSeconds = DefaultLeaseDuration
	}
	if c.ProxyMode == "" {
		c.ProxyMode = DefaultProxyMode
	}
	if c.KubeletPort == 0 {
		c.KubeletPort = 10250
	}
	if c.ProxySyncPeriod.Duration == 0 {
		c.ProxySyncPeriod = metav1.Duration{Duration: DefaultProxySyncPeriod}
	}
	if c.ProxyHealthzBindAddress == "" {
		c.ProxyHealthzBindAddress = DefaultProxyHealthzAddress
	}
	if c.HealthzBindAddress == "" {
		c.HealthzBindAddress = DefaultHealthzAddress
	}
	if c.MetricsBindAddress == "" {
		c.MetricsBindAddress = DefaultMetricsAddress
	}
}

// Validate reports every invalid field, each named by its path in the file.
func Validate(c *AgentConfiguration) error {
	var errs field.ErrorList
	if c.NodeName == "" {
		errs = append(errs, field.Required(field.NewPath("nodeName"), "and the hostname could not be read"))
	} else {
		for _, msg := range validation.IsDNS1123Subdomain(c.NodeName) {
			errs = append(errs, field.Invalid(field.NewPath("nodeName"), c.NodeName, msg))
		}
	}
	if c.ContainerLogMaxSize != "" {
		if q, err := resource.ParseQuantity(c.ContainerLogMaxSize); err != nil || q.Sign() <= 0 {
			errs = append(errs, field.Invalid(field.NewPath("containerLogMaxSize"), c.ContainerLogMaxSize, "must be a positive quantity"))
		}
	}
	if c.ContainerLogMaxFiles != 0 && c.ContainerLogMaxFiles < 2 {
		errs = append(errs, field.Invalid(field.NewPath("containerLogMaxFiles"), c.ContainerLogMaxFiles, "must be at least 2"))
	}
	for _, d := range []struct{ name, dir string }{{"podLogsDir", c.PodLogsDir}, {"containerLogsDir", c.ContainerLogsDir}} {
		if d.dir != "" && !filepath.IsAbs(d.dir) {
			errs = append(errs, field.Invalid(field.NewPath(d.name), d.dir, "must be an absolute path"))
		}
	}
	for i, pat := range c.AllowedUnsafeSysctls {
		p := field.NewPath("allowedUnsafeSysctls").Index(i)
		switch {
		case !sysctlPattern.MatchString(pat):
			errs = append(errs, field.Invalid(p, pat, "must be a sysctl name or a prefix ending in *"))
		case !namespacedSysctl(pat):
			errs = append(errs, field.Invalid(p, pat, "the sysctl is not known to be namespaced"))
		}
	}
	switch c.ImagePullCredentialsVerificationPolicy {
	case "", "NeverVerify", "NeverVerifyPreloadedImages", "NeverVerifyAllowlistedImages", "AlwaysVerify":
	default:
		errs = append(errs, field.NotSupported(field.NewPath("imagePullCredentialsVerificationPolicy"), c.ImagePullCredentialsVerificationPolicy,
			[]string{"NeverVerify", "NeverVerifyPreloadedImages", "NeverVerifyAllowlistedImages", "AlwaysVerify"}))
	}
	for i, p := range c.PreloadedImagesVerificationAllowlist {
		if err := credentials.ValidateAllowlistPattern(p); err != nil {
			errs = append(errs, field.Invalid(field.NewPath("preloadedImagesVerificationAllowlist").Index(i), p, err.Error()))
		}
	}
	if len(c.PreloadedImagesVerificationAllowlist) > 0 && c.ImagePullCredentialsVerificationPolicy != "NeverVerifyAllowlistedImages" {
		errs = append(errs, field.Forbidden(field.NewPath("preloadedImagesVerificationAllowlist"), "only with imagePullCredentialsVerificationPolicy NeverVerifyAllowlistedImages"))
	}
	switch c.CgroupDriver {
	case "", "cgroupfs":
	case "systemd":
		errs = append(errs, field.Invalid(field.NewPath("cgroupDriver"), c.CgroupDriver, systemdDriverRefusal(systemdRunning())))
	default:
		errs = append(errs, field.NotSupported(field.NewPath("cgroupDriver"), c.CgroupDriver, []string{"cgroupfs", "systemd"}))
	}
	if c.DevicePluginDir != "" && !filepath.IsAbs(c.DevicePluginDir) {
		errs = append(errs, field.Invalid(field.NewPath("devicePluginDir"), c.DevicePluginDir, "must be an absolute path"))
	}
	if c.CgroupRoot != "" && !strings.HasPrefix(c.CgroupRoot, "/") {
		errs = append(errs, field.Invalid(field.NewPath("cgroupRoot"), c.CgroupRoot, "must be an absolute cgroup path"))
	}
	if c.NodeIP != "" && net.ParseIP(c.NodeIP) == nil {
		errs = append(errs, field.Invalid(field.NewPath("nodeIP"), c.NodeIP, "must be an IP address"))
	}
	for k, v := range c.NodeLabels {
		p := field.NewPath("nodeLabels").Key(k)
		for _, msg := range validation.IsQualifiedName(k) {
			errs = append(errs, field.Invalid(p, k, msg))
		}
		for _, msg := range validation.IsValidLabelValue(v) {
			errs = append(errs, field.Invalid(p, v, msg))
		}
	}
	for i, t := range c.RegisterWithTaints {
		p := field.NewPath("registerWithTaints").Index(i)
		for _, msg := range validation.IsQualifiedName(t.Key) {
			errs = append(errs, field.Invalid(p.Child("key"), t.Key, msg))
		}
		switch t.Effect {
		case corev1.TaintEffectNoSchedule, corev1.TaintEffectPreferNoSchedule, corev1.TaintEffectNoExecute:
		default:
			errs = append(errs, field.NotSupported(p.Child("effect"), t.Effect,
				[]string{string(corev1.TaintEffectNoSchedule), string(corev1.TaintEffectPreferNoSchedule), string(corev1.TaintEffectNoExecute)}))
		}
	}
	if c.ContainerRuntimeEndpoint == "" {
		errs = append(errs, field.Required(field.NewPath("containerRuntimeEndpoint"), ""))
	}
	if c.MaxPods < 0 {
		errs = append(errs, field.Invalid(field.NewPath("maxPods"), c.MaxPods, "must not be negative"))
	}
	if c.KubeAPIQPS != nil && *c.KubeAPIQPS < 0 {
		errs = append(errs, field.Invalid(field.NewPath("kubeAPIQPS"), *c.KubeAPIQPS, "must not be negative"))
	}
	if c.KubeAPIBurst < 0 {
		errs = append(errs, field.Invalid(field.NewPath("kubeAPIBurst"), c.KubeAPIBurst, "must not be negative"))
	}
	errs = append(errs, validateCIDR(field.NewPath("podCIDR"), c.PodCIDR)...)
	errs = append(errs, validateCIDR(field.NewPath("clusterCIDR"), c.ClusterCIDR)...)
	errs = append(errs, validateCIDR(field.NewPath("serviceCIDR"), c.ServiceCIDR)...)
	for i, ip := range c.ClusterDNS {
		if net.ParseIP(ip) == nil {
			errs = append(errs, field.Invalid(field.NewPath("clusterDNS").Index(i), ip, "must be an IP address"))
		}
	}
	errs = append(errs, validateReserved(field.NewPath("systemReserved"), c.SystemReserved)...)
	errs = append(errs, validateReserved(field.NewPath("kubeReserved"), c.KubeReserved)...)
	for sig, v := range c.EvictionHard {
		p := field.NewPath("evictionHard").Key(sig)
		if !knownSignals[sig] {
			errs = append(errs, field.Invalid(p, sig, "unknown eviction signal"))
			continue
		}
		if _, err := ParseThreshold(v); err != nil {
			errs = append(errs, field.Invalid(p, v, err.Error()))
		}
	}
	for _, d := range []struct {
		name string
		v    time.Duration
	}{
		{"nodeStatusUpdateFrequency", c.NodeStatusUpdateFrequency.Duration},
		{"nodeStatusReportFrequency", c.NodeStatusReportFrequency.Duration},
		{"proxySyncPeriod", c.ProxySyncPeriod.Duration},
	} {
		if d.v <= 0 {
			errs = append(errs, field.Invalid(field.NewPath(d.name), d.v.String(), "must be greater than zero"))
		}
	}
	if c.NodeLeaseDurationSeconds <= 0 {
		errs = append(errs, field.Invalid(field.NewPath("nodeLeaseDurationSeconds"), c.NodeLeaseDurationSeconds, "must be greater than zero"))
	}
	switch c.ProxyMode {
	case ProxyModeIPTables, ProxyModeNFTables, ProxyModeIPVS:
	default:
		errs = append(errs, field.NotSupported(field.NewPath("proxyMode"), c.ProxyMode,
			[]string{string(ProxyModeIPTables), string(ProxyModeNFTables), string(ProxyModeIPVS)}))
	}
	if c.KubeletPort < -1 || c.KubeletPort > 65535 {
		errs = append(errs, field.Invalid(field.NewPath("kubeletPort"), c.KubeletPort, "must be a port, or -1 to disable"))
	}
	if c.ReadOnlyPort < 0 || c.ReadOnlyPort > 65535 {
		errs = append(errs, field.Invalid(field.NewPath("readOnlyPort"), c.ReadOnlyPort, "must be a port, or 0 to disable"))
	} else if c.ReadOnlyPort != 0 && c.ReadOnlyPort == c.KubeletPort {
		errs = append(errs, field.Invalid(field.NewPath("readOnlyPort"), c.ReadOnlyPort, "must differ from kubeletPort"))
	}
	if (c.TLSCertFile == "") != (c.TLSPrivateKeyFile == "") {
		errs = append(errs, field.Required(field.NewPath("tlsPrivateKeyFile"), "tlsCertFile and tlsPrivateKeyFile go together"))
	}
	switch c.IPTablesVariant {
	case "", "legacy", "nft":
	default:
		errs = append(errs, field.NotSupported(field.NewPath("iptablesVariant"), c.IPTablesVariant, []string{"", "legacy", "nft"}))
	}
	for i, cidr := range c.NodePortAddresses {
		if cidr == NodePortAddressesPrimary || cidr == NodePortAddressesLocalhost || cidr == NodePortAddressesAll {
			continue
		}
		if _, _, err := net.ParseCIDR(cidr); err != nil {
			errs = append(errs, field.Invalid(field.NewPath("nodePortAddresses").Index(i), cidr, "must be a CIDR"))
		}
	}
	errs = append(errs, validateBindAddress(field.NewPath("proxyHealthzBindAddress"), c.ProxyHealthzBindAddress)...)
	errs = append(errs, validateBindAddress(field.NewPath("healthzBindAddress"), c.HealthzBindAddress)...)
	errs = append(errs, validateBindAddress(field.NewPath("metricsBindAddress"), c.MetricsBindAddress)...)
	return errs.ToAggregate()
}

func validateCIDR(p *field.Path, v string) field.ErrorList {
	if v == "" {
		return nil
	}
	for _, c := range strings.Split(v, ",") {
		if _, _, err := net.ParseCIDR(strings.TrimSpace(c)); err != nil {
			return field.ErrorList{field.Invalid(p, v, "must be a CIDR or a comma-separated pair of CIDRs")}
		}
	}
	return nil
}

func validateReserved(p *field.Path, m map[string]string) field.ErrorList {
	var errs field.ErrorList
	for name, v := range m {
		kp := p.Key(name)
		if !reservable[name] {
			errs = append(errs, field.NotSupported(kp, name, []string{"cpu", "memory", "ephemeral-storage", "pid"}))
			continue
		}
		q, err := resource.ParseQuantity(v)
		if err != nil {
			errs = append(errs, field.Invalid(kp, v, "must be a quantity, e.g. 100m or 256Mi"))
			continue
		}
		if q.Sign() < 0 {
			errs = append(errs, field.Invalid(kp, v, "must not be negative"))
		}
	}
	return errs
}

func validateBindAddress(p *field.Path, v string) field.ErrorList {
	if v == "" || v == "0" {
		return nil
	}
	if _, port, err := net.SplitHostPort(v); err != nil {
		return field.ErrorList{field.Invalid(p, v, "must be host:port or \"0\" to disable")}
	} else if n, err := strconv.Atoi(port); err != nil || n < 0 || n > 65535 {
		return field.ErrorList{field.Invalid(p, v, "port must be 0-65535")}
	}
	return nil
}

// Threshold is a parsed eviction threshold: either an absolute quantity or a
// percentage (0 < Percentage <= 1) of the signal's capacity.
type Threshold struct {
	Quantity   *resource.Quantity
	Percentage float64
}

// ParseThreshold parses "100Mi" or "10%".
func ParseThreshold(v string) (Threshold, error) {
	if strings.HasSuffix(v, "%") {
		f, err := strconv.ParseFloat(strings.TrimSuffix(v, "%"), 64)
		if err != nil || f < 0 || f > 100 {
			return Threshold{}, fmt.Errorf("must be a quantity or a percentage between 0%% and 100%%")
		}
		return Threshold{Percentage: f / 100}, nil
	}
	q, err := resource.ParseQuantity(v)
	if err != nil {
		return Threshold{}, fmt.Errorf("must be a quantity or a percentage between 0%% and 100%%")
	}
	if q.Sign() < 0 {
		return Threshold{}, fmt.Errorf("must not be negative")
	}
	return Threshold{Quantity: &q}, nil
}

// Value is the threshold in absolute units for a signal whose capacity is given.
func (t Threshold) Value(capacity resource.Quantity) resource.Quantity {
	if t.Quantity != nil {
		return t.Quantity.DeepCopy()
	}
	v := int64(float64(capacity.Value()) * t.Percentage)
	return *resource.NewQuantity(v, capacity.Format)
}

// ReservedList returns a reserved map as a ResourceList; invalid entries (already
// reported by Validate) are skipped.
func ReservedList(m map[string]string) corev1.ResourceList {
	out := corev1.ResourceList{}
	for name, v := range m {
		if q, err := resource.ParseQuantity(v); err == nil {
			out[corev1.ResourceName(name)] = q
		}
	}
	return out
}

// sysctlPattern is upstream's IsValidSysctlPattern (SysctlContainSlashPatternFmt).
var sysctlPattern = regexp.MustCompile(`^([a-z0-9]([-_a-z0-9]*[a-z0-9])?[\./])*([a-z0-9][-_a-z0-9]*)?[a-z0-9*]$`)

// namespacedSysctl tells whether a sysctl or pattern is one of those upstream knows to be
// namespaced (component-helpers' sysctl.GetNamespace); see also podplan.SysctlNamespace.
func namespacedSysctl(s string) bool {
	s = podplan.NormalizeSysctl(s)
	if i := strings.Index(s, "*"); i != -1 {
		s = s[:i]
	}
	switch s {
	case "kernel.domainname", "kernel.sem", "kernel.shmall", "kernel.shmmax", "kernel.shmmni",
		"kernel.shm_rmid_forced", "kernel.shm", "kernel.msgmax", "kernel.msgmnb", "kernel.msgmni", "kernel.msg":
		return true
	}
	return strings.HasPrefix(s, "net.") || strings.HasPrefix(s, "fs.mqueue.") || strings.HasPrefix(s, "user.")
}

// systemdRunning is upstream's IsRunningSystemd: systemd is PID 1 when
// /run/systemd/system exists.
func systemdRunning() bool {
	st, err := os.Lstat("/run/systemd/system")
	return err == nil && st.IsDir()
}

// systemdDriverRefusal says why the systemd cgroup driver cannot be used here: without
// systemd as PID 1 there is no systemd to own the slices; with it, nodekeeper names the
// cgroups as the driver does (podplan.SystemdCgroupName) but does not yet create them
// as systemd units over D-Bus, so it refuses rather than fall back to cgroupfs.
func systemdDriverRefusal(running bool) string {
	if !running {
		return "the systemd cgroup driver needs systemd running as PID 1 (/run/systemd/system is missing); set cgroupDriver: cgroupfs and configure the runtime with the cgroupfs driver too"
	}
	return "the systemd cgroup driver is not supported yet: nodekeeper names pod cgroups as systemd slices but does not create them as systemd units over D-Bus; set cgroupDriver: cgroupfs and configure the runtime with the cgroupfs driver too"
}
