// Package options turns the command line and the --config file into one validated
// AgentConfiguration. Flags that were given on the command line override the file.
package options

import (
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"strings"

	logsapi "k8s.io/component-base/logs/api/v1"
	_ "k8s.io/component-base/logs/json/register" // --logging-format=json

	"github.com/nodekeeper/nodekeeper/api/v1alpha1"
)

// Reconciler names accepted by --reconcilers.
const (
	ReconcilerNodeStatus = "nodestatus"
	ReconcilerPods       = "pods"
	ReconcilerServices   = "services"
)

// Available are the reconcilers this build can run.
var Available = map[string]bool{ReconcilerNodeStatus: true, ReconcilerPods: true, ReconcilerServices: true}

// Options is everything main needs to build the manager.
type Options struct {
	ConfigFile string
	Kubeconfig string
	// BootstrapKubeconfig requests the node's client certificate (TLS bootstrap).
	BootstrapKubeconfig string
	Reconcilers         map[string]bool
	Version             bool
	Config              *v1alpha1.AgentConfiguration
	// Logging is component-base's logging configuration (-v, --vmodule,
	// --logging-format, ...), for logsapi.ValidateAndApply
	Logging *logsapi.LoggingConfiguration
}

// ErrHelp is returned when -h/--help was asked for; the usage has been printed on
// Stdout, and the program should exit 0.
var ErrHelp = flag.ErrHelp

// Stdout is where -h/--help prints the usage.
var Stdout io.Writer = os.Stdout

const usageHeader = `nodekeeper: a Kubernetes node agent doing the work of the kubelet and kube-proxy.

Usage:
  nodekeeper --config FILE [--kubeconfig FILE] [flags]

The --config file is an AgentConfiguration (nodekeeper.io/v1alpha1); a flag given on the
command line overrides the field it names. Flags (-flag and --flag are the same):
`

// Parse reads args (without the program name), loads the config file if one is named,
// applies flag overrides, defaults and validates. Errors name the offending field or flag.
func Parse(args []string, stderr io.Writer) (*Options, error) {
	o := &Options{}
	fs := flag.NewFlagSet("nodekeeper", flag.ContinueOnError)
	fs.SetOutput(stderr)
	fs.Usage = func() {
		fmt.Fprint(fs.Output(), usageHeader)
		fs.PrintDefaults()
	}
	fs.StringVar(&o.ConfigFile, "config", "", "path to an AgentConfiguration (nodekeeper.io/v1alpha1) or KubeletConfiguration (kubelet.config.k8s.io/v1beta1) YAML file; without it every field has its default")
	proxyConfig := fs.String("proxy-config", "", "path to a KubeProxyConfiguration (kubeproxy.config.k8s.io/v1alpha1) YAML file, applied over --config")
	fs.StringVar(&o.Kubeconfig, "kubeconfig", "", "path to the kubeconfig the agent talks to the API server with; empty means $KUBECONFIG, then the in-cluster ServiceAccount")
	fs.StringVar(&o.BootstrapKubeconfig, "bootstrap-kubeconfig", "", "path to a kubeconfig whose credentials may request the node's client certificate (TLS bootstrap); the issued certificate goes to <rootDir>/pki and the kubeconfig naming it to --kubeconfig (default <rootDir>/pki/kubeconfig)")
	fs.BoolVar(&o.Version, "version", false, "print the version, commit, build date and Go version, and exit")
	help := fs.Bool("help", false, "print this help and exit")
	fs.BoolVar(help, "h", false, "print this help and exit")
	reconcilers := fs.String("reconcilers", "nodestatus,pods,services", "comma-separated reconcilers to run: nodestatus (node registration, status, lease), pods (the kubelet's pod lifecycle and API), services (kube-proxy's Service rules); the proxy alone next to a kubelet is --reconcilers=services")

	// overrides: kept as strings and applied only when set on the command line
	nodeName := fs.String("node-name", "", "the node's name (nodeName; default: the hostname)")
	nodeIP := fs.String("node-ip", "", "the node's InternalIP (nodeIP; default: its first global unicast address)")
	cri := fs.String("container-runtime-endpoint", "", "the CRI socket (containerRuntimeEndpoint), e.g. unix:///run/containerd/containerd.sock")
	credConfig := fs.String("image-credential-provider-config", "", "path to a CredentialProviderConfig (kubelet.config.k8s.io/v1) naming the image credential provider exec plugins")
	credBinDir := fs.String("image-credential-provider-bin-dir", "", "folder of the image credential provider plugin binaries")
	rootDir := fs.String("root-dir", "", "the agent's state folder, pod volumes included (rootDir; default /var/lib/nodekeeper)")
	staticPodPath := fs.String("static-pod-path", "", "a folder of static pod manifests (staticPodPath)")
	proxyMode := fs.String("proxy-mode", "", "how Services are programmed (proxyMode): iptables, nftables or ipvs")
	clusterCIDR := fs.String("cluster-cidr", "", "the pods' address range(s), comma-separated (clusterCIDR); traffic from outside it to a ClusterIP is masqueraded")
	serviceCIDR := fs.String("service-cidr", "", "the Services' address range(s), comma-separated (serviceCIDR); decides the IP families")
	podCIDR := fs.String("pod-cidr", "", "this node's pod range (podCIDR), when the controller-manager does not allocate one")
	healthz := fs.String("healthz-bind-address", "", "host:port of /healthz and /readyz (healthzBindAddress); \"0\" disables")
	metrics := fs.String("metrics-bind-address", "", "host:port of the Prometheus /metrics endpoint (metricsBindAddress); \"0\" disables")
	profiling := fs.Bool("profiling", false, "serve /debug/pprof/ on the metrics address (enableProfiling)")
	labels := fs.String("node-labels", "", "labels added to the node's configured ones (nodeLabels), k=v[,k=v]")

	// -v, --vmodule, --logging-format (text, json), as every Kubernetes component
	o.Logging = logsapi.NewLoggingConfiguration()
	logsapi.AddGoFlags(o.Logging, fs)

	if err := fs.Parse(args); err != nil {
		return nil, err
	}
	if *help {
		fs.SetOutput(Stdout)
		fs.Usage()
		return nil, ErrHelp
	}
	if fs.NArg() > 0 {
		return nil, fmt.Errorf("unexpected arguments: %v", fs.Args())
	}
	if o.Version {
		return o, nil
	}
	if errs := logsapi.Validate(o.Logging, nil, nil); len(errs) > 0 {
		return nil, fmt.Errorf("logging flags: %w", errs.ToAggregate())
	}

	cfg := &v1alpha1.AgentConfiguration{}
	if o.ConfigFile != "" {
		var err error
		if cfg, err = v1alpha1.LoadAny(o.ConfigFile); err != nil {
			return nil, fmt.Errorf("config file %s: %w", o.ConfigFile, err)
		}
	}
	if *proxyConfig != "" {
		data, err := os.ReadFile(*proxyConfig)
		if err != nil {
			return nil, fmt.Errorf("proxy config file: %w", err)
		}
		kubeconfig, err := v1alpha1.ParseKubeProxy(data, cfg)
		if err != nil {
			return nil, fmt.Errorf("proxy config file %s: %w", *proxyConfig, err)
		}
		if o.Kubeconfig == "" {
			o.Kubeconfig = kubeconfig // kube-proxy's clientConnection.kubeconfig
		}
	}
	set := map[string]bool{}
	fs.Visit(func(f *flag.Flag) { set[f.Name] = true })
	str := func(name string, v *string, dst *string) {
		if set[name] {
			*dst = *v
		}
	}
	str("node-name", nodeName, &cfg.NodeName)
	str("node-ip", nodeIP, &cfg.NodeIP)
	str("container-runtime-endpoint", cri, &cfg.ContainerRuntimeEndpoint)
	str("root-dir", rootDir, &cfg.RootDir)
	str("image-credential-provider-config", credConfig, &cfg.ImageCredentialProviderConfig)
	str("image-credential-provider-bin-dir", credBinDir, &cfg.ImageCredentialProviderBinDir)
	str("static-pod-path", staticPodPath, &cfg.StaticPodPath)
	str("cluster-cidr", clusterCIDR, &cfg.ClusterCIDR)
	str("service-cidr", serviceCIDR, &cfg.ServiceCIDR)
	str("pod-cidr", podCIDR, &cfg.PodCIDR)
	str("healthz-bind-address", healthz, &cfg.HealthzBindAddress)
	str("metrics-bind-address", metrics, &cfg.MetricsBindAddress)
	if set["profiling"] {
		cfg.EnableProfiling = *profiling
	}
	if set["proxy-mode"] {
		cfg.ProxyMode = v1alpha1.ProxyMode(*proxyMode)
	}
	if set["node-labels"] && *labels != "" {
		if cfg.NodeLabels == nil {
			cfg.NodeLabels = map[string]string{}
		}
		for _, kv := range strings.Split(*labels, ",") {
			k, v, ok := strings.Cut(kv, "=")
			if !ok {
				return nil, fmt.Errorf("--node-labels: %q is not key=value", kv)
			}
			cfg.NodeLabels[k] = v
		}
	}

	o.Reconcilers = map[string]bool{}
	for _, r := range strings.Split(*reconcilers, ",") {
		r = strings.TrimSpace(r)
		switch r {
		case ReconcilerNodeStatus, ReconcilerPods, ReconcilerServices:
			if !Available[r] {
				return nil, fmt.Errorf("--reconcilers: %q is not available in this build yet", r)
			}
			o.Reconcilers[r] = true
		case "":
		default:
			return nil, fmt.Errorf("--reconcilers: unknown reconciler %q (want nodestatus, pods, services)", r)
		}
	}
	if len(o.Reconcilers) == 0 {
		return nil, errors.New("--reconcilers: at least one reconciler must run")
	}

	v1alpha1.SetDefaults(cfg)
	if err := v1alpha1.Validate(cfg); err != nil {
		return nil, fmt.Errorf("invalid configuration: %w", err)
	}
	o.Config = cfg
	return o, nil
}
