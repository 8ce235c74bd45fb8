// Command nodekeeper is a node agent doing the work of the kubelet and kube-proxy as
// one controller-runtime manager. Only wiring lives here.
package main

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/http"
	"net/http/pprof"
	"net/netip"
	"os"
	"path/filepath"
	goruntime "runtime"
	"runtime/debug"
	"strconv"
	"strings"
	"time"

	libipvs "github.com/moby/ipvs"
	corev1 "k8s.io/api/core/v1"
	discoveryv1 "k8s.io/api/discovery/v1"
	"k8s.io/apimachinery/pkg/fields"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/kubernetes/scheme"
	"k8s.io/client-go/rest"
	"k8s.io/client-go/tools/clientcmd"
	logsapi "k8s.io/component-base/logs/api/v1"
	"k8s.io/klog/v2"
	ctrl "sigs.k8s.io/controller-runtime"
	"sigs.k8s.io/controller-runtime/pkg/cache"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/healthz"
	metricsserver "sigs.k8s.io/controller-runtime/pkg/metrics/server"

	"github.com/nodekeeper/nodekeeper/api/v1alpha1"
	"github.com/nodekeeper/nodekeeper/controllers"
	"github.com/nodekeeper/nodekeeper/host"
	"github.com/nodekeeper/nodekeeper/internal/cadvisor"
	"github.com/nodekeeper/nodekeeper/internal/clientcert"
	"github.com/nodekeeper/nodekeeper/internal/devicemanager"
	"github.com/nodekeeper/nodekeeper/internal/eviction"
	"github.com/nodekeeper/nodekeeper/internal/kubeletmetrics"
	"github.com/nodekeeper/nodekeeper/internal/options"
	"github.com/nodekeeper/nodekeeper/internal/stats"
	"github.com/nodekeeper/nodekeeper/internal/version"
	"github.com/nodekeeper/nodekeeper/kubeletapi"
	"github.com/nodekeeper/nodekeeper/netrules"
	"github.com/nodekeeper/nodekeeper/netrules/conntrack"
	"github.com/nodekeeper/nodekeeper/netrules/healthcheck"
	"github.com/nodekeeper/nodekeeper/netrules/iptables"
	"github.com/nodekeeper/nodekeeper/netrules/ipvs"
	"github.com/nodekeeper/nodekeeper/netrules/nftables"
	"github.com/nodekeeper/nodekeeper/runtime/cri"
)

// defaultGCPercent is the garbage collector's target when GOGC is not set: heap growth of
// 50 % over the live heap instead of Go's 100 %. A node agent's memory is taken from
// the node's pods; at 10,000 Services this lowers the peak RSS by about a quarter
// (235 → 179 MiB measured) for a little more CPU per change (README, Benchmarks).
const defaultGCPercent = 50

func main() {
	if os.Getenv("GOGC") == "" {
		debug.SetGCPercent(defaultGCPercent)
	}
	err := run(ctrl.SetupSignalHandler(), os.Args[1:])
	klog.Flush()
	if errors.Is(err, options.ErrHelp) {
		return // the usage went to stdout
	}
	if err != nil {
		fmt.Fprintln(os.Stderr, "nodekeeper:", err)
		os.Exit(1)
	}
}

func run(ctx context.Context, args []string) error {
	opts, err := options.Parse(args, os.Stderr)
	if err != nil {
		return err
	}
	if opts.Version {
		fmt.Print(version.Get())
		return nil
	}
	cfg := opts.Config
	// one logger for everything, as the kubelet's: component-base's text or JSON format
	// behind klog (-v, --vmodule, --logging-format); client-go logs through klog, and
	// controller-runtime through a klogr, so all of it is filtered and formatted alike
	if err := logsapi.ValidateAndApply(opts.Logging, nil); err != nil {
		return fmt.Errorf("logging flags: %w", err)
	}
	ctrl.SetLogger(klog.NewKlogr())
	logger := ctrl.Log.WithName("setup")

	if opts.Reconcilers[options.ReconcilerServices] && cfg.ProxyMode == v1alpha1.ProxyModeIPVS {
		// refuse at once, and never fall back silently to another mode
		if err := ipvs.KernelSupport(); err != nil {
			return fmt.Errorf("proxyMode ipvs: %w", err)
		}
	}
	var identity *clientcert.Identity
	if opts.BootstrapKubeconfig != "" {
		// TLS bootstrap, as the kubelet: the node's own client certificate
		kubeconfig := opts.Kubeconfig
		if kubeconfig == "" {
			kubeconfig = filepath.Join(cfg.RootDir, "pki", "kubeconfig")
		}
		logger.Info("Loading the node's client certificate (TLS bootstrap)", "kubeconfig", kubeconfig, "bootstrapKubeconfig", opts.BootstrapKubeconfig)
		if identity, err = clientcert.Load(ctx, clientcert.Options{Kubeconfig: kubeconfig, BootstrapKubeconfig: opts.BootstrapKubeconfig,
			CertDir: filepath.Join(cfg.RootDir, "pki"), NodeName: cfg.NodeName, Rotate: cfg.RotateCertificates}); err != nil {
			return err
		}
		opts.Kubeconfig = kubeconfig
	}
	restCfg, err := restConfig(opts.Kubeconfig)
	if err != nil {
		return err
	}
	if identity != nil {
		restCfg = identity.Config
	}
	// the kubelet's client limits (kubeAPIQPS/kubeAPIBurst, 50/100), for every client
	// below: client-go's 5/10 queue a burst of pod status writes for seconds
	if cfg.KubeAPIQPS != nil {
		restCfg.QPS = float32(*cfg.KubeAPIQPS)
	}
	restCfg.Burst = int(cfg.KubeAPIBurst)
	mgr, err := ctrl.NewManager(restCfg, ctrl.Options{
		Scheme:                 scheme.Scheme,
		LeaderElection:         false, // every agent owns its own node
		HealthProbeBindAddress: cfg.HealthzBindAddress,
		Metrics:                metricsserver.Options{BindAddress: cfg.MetricsBindAddress, ExtraHandlers: profilingHandlers(cfg.EnableProfiling)},
		Cache: cache.Options{ByObject: map[client.Object]cache.ByObject{
			&corev1.Pod{}:  {Field: fields.OneTermEqualSelector("spec.nodeName", cfg.NodeName)},
			&corev1.Node{}: {Field: fields.OneTermEqualSelector("metadata.name", cfg.NodeName)},
			// Services and EndpointSlices are watched cluster-wide, without managedFields
			// (nothing reads them; at 10,000 Services they are a third of the cache)
			&corev1.Service{}:            {Transform: cache.TransformStripManagedFields()},
			&discoveryv1.EndpointSlice{}: {Transform: cache.TransformStripManagedFields()},
		}},
	})
	if err != nil {
		return fmt.Errorf("building manager: %w", err)
	}

	// the kubelet's events: source {component: kubelet, host: <node>}
	recorder, err := controllers.NewEventRecorder(ctx, restCfg, cfg.NodeName)
	if err != nil {
		return err
	}

	rt, err := cri.Dial(cri.RemoteOptions{Endpoint: cfg.ContainerRuntimeEndpoint})
	if err != nil {
		return err
	}
	defer rt.Close()

	// the device plugins' Registration service, with the pods reconciler (which
	// allocates their devices); the node status reports their resources
	var devices *devicemanager.Manager
	var nodeDevices controllers.DeviceCapacity
	var podDevices controllers.DeviceAllocator
	if identity != nil {
		if err := mgr.Add(identity); err != nil { // rotation
			return err
		}
	}
	if opts.Reconcilers[options.ReconcilerPods] {
		devices = devicemanager.New(cfg.DevicePluginDir, nil)
		if err := mgr.Add(devices); err != nil {
			return err
		}
		nodeDevices, podDevices = devices, devices
	}

	if opts.Reconcilers[options.ReconcilerNodeStatus] {
		if err := (&controllers.NodeStatusReconciler{
			Client:   mgr.GetClient(),
			Config:   cfg,
			Host:     &host.Linux{RootDir: cfg.RootDir, MaxPods: cfg.MaxPods},
			Runtime:  rt,
			Recorder: recorder,
			Version:  version.Version,
			Images:   controllers.RuntimeImages(rt),
			Devices:  nodeDevices,
			KubeletPort: func() int32 {
				if opts.Reconcilers[options.ReconcilerPods] && cfg.KubeletPort > 0 {
					return cfg.KubeletPort
				}
				return 0
			}(),
		}).SetupWithManager(mgr); err != nil {
			return fmt.Errorf("setting up nodestatus reconciler: %w", err)
		}
		if err := mgr.Add(&controllers.NodeLeaseRenewer{
			Client: mgr.GetClient(), Reader: mgr.GetAPIReader(),
			NodeName: cfg.NodeName, DurationSeconds: cfg.NodeLeaseDurationSeconds,
		}); err != nil {
			return err
		}
	}

	if opts.Reconcilers[options.ReconcilerPods] {
		// as the kubelet's setupDataDirs: the root folder is an rshared mount, so the
		// volumes mounted in it, and the mounts containers make in a volume with
		// Bidirectional propagation, are seen by the runtime, the agent and the containers
		if err := os.MkdirAll(cfg.RootDir, 0o750); err != nil {
			return fmt.Errorf("creating the root folder: %w", err)
		}
		if err := host.MakeRShared(cfg.RootDir); err != nil {
			return fmt.Errorf("configuring the root folder: %w", err)
		}
		hostIP := cfg.NodeIP
		if hostIP == "" {
			if addrs, err := (&host.Linux{}).Addresses("", cfg.NodeName); err == nil && len(addrs) > 0 && addrs[0].Type == corev1.NodeInternalIP {
				hostIP = addrs[0].Address
			}
		}
		direct, err := client.New(restCfg, client.Options{Scheme: scheme.Scheme})
		if err != nil {
			return fmt.Errorf("building client: %w", err)
		}
		if err := (&controllers.PodReconciler{
			Client:        mgr.GetClient(),
			MirrorClient:  direct, // static pods run before the caches sync
			StaticContext: ctx,
			Runtime:       rt,
			Recorder:      recorder,
			Config:        cfg,
			HostIP:        hostIP,
			Cgroups:       host.Cgroups{},
			MemoryCapacity: func() int64 {
				if c, err := (&host.Linux{RootDir: cfg.RootDir}).Capacity(); err == nil {
					return c.Memory().Value()
				}
				return 0
			}(),
			APIReader: mgr.GetAPIReader(),
			Devices:   podDevices,
			// node-pressure eviction: the node's signals, and the pods' usage from a
			// stats provider of its own (its CPU samples are not the API server's)
			Signals: controllers.HostSignals(cfg.RootDir),
			PodUsage: func() func(context.Context) (map[types.UID]eviction.Usage, error) {
				p := &stats.Provider{NodeName: cfg.NodeName, Runtime: rt, Host: stats.Linux{}, RootDir: cfg.RootDir, PodLogsDir: cfg.PodLogsDir}
				return func(ctx context.Context) (map[types.UID]eviction.Usage, error) {
					s, err := p.Summary(ctx, false)
					if err != nil {
						return nil, err
					}
					return controllers.SummaryUsage(s), nil
				}
			}(),
		}).SetupWithManager(mgr); err != nil {
			return fmt.Errorf("setting up pod reconciler: %w", err)
		}
	}

	if opts.Reconcilers[options.ReconcilerPods] && cfg.KubeletPort > 0 {
		var ips []net.IP
		if ip := net.ParseIP(cfg.NodeIP); ip != nil {
			ips = append(ips, ip)
		}
		reviews, err := client.New(restCfg, client.Options{Scheme: scheme.Scheme})
		if err != nil {
			return fmt.Errorf("building client: %w", err)
		}
		srv := &kubeletapi.Server{
			NodeName: cfg.NodeName, Addr: net.JoinHostPort("", strconv.Itoa(int(cfg.KubeletPort))),
			Pods: mgr.GetClient(), Reviews: reviews, Runtime: rt, NodeIPs: ips,
			CertFile: cfg.TLSCertFile, KeyFile: cfg.TLSPrivateKeyFile, ClientCAFile: cfg.ClientCAFile,
			Log: ctrl.Log.WithName("kubeletapi"), Config: cfg,
			Stats: &stats.Provider{NodeName: cfg.NodeName, Runtime: rt, Host: stats.Linux{}, Pods: mgr.GetClient(), RootDir: cfg.RootDir, PodLogsDir: cfg.PodLogsDir,
				CgroupRoot: func() string {
					if cfg.CgroupsPerQOS != nil && *cfg.CgroupsPerQOS {
						return cfg.CgroupRoot
					}
					return ""
				}()},
			ReadOnlyAddr: func() string {
				if cfg.ReadOnlyPort > 0 {
					return net.JoinHostPort("", strconv.Itoa(int(cfg.ReadOnlyPort)))
				}
				return ""
			}(),
			Cadvisor: cadvisorCollector(rt, cfg),
		}
		if cfg.ServerTLSBootstrap {
			certs, err := servingCertificate(restCfg, cfg)
			if err != nil {
				return err
			}
			if err := mgr.Add(certs); err != nil {
				return err
			}
			srv.ServingCertificate = certs.Current
		}
		if err := mgr.Add(srv); err != nil {
			return err
		}
	}

	if opts.Reconcilers[options.ReconcilerServices] {
		if err := setupServices(mgr, cfg); err != nil {
			return err
		}
	}

	if err := mgr.AddHealthzCheck("ping", healthz.Ping); err != nil {
		return err
	}
	if err := mgr.AddReadyzCheck("ping", healthz.Ping); err != nil {
		return err
	}
	kubeletmetrics.RegisterRESTClient() // client-go's rest_client_*, as kube-proxy has them too
	if opts.Reconcilers[options.ReconcilerPods] || opts.Reconcilers[options.ReconcilerNodeStatus] {
		kubeletmetrics.Register() // the kubelet's families
		kubeletmetrics.NodeName.WithLabelValues(cfg.NodeName).Set(1)
	}
	logger.Info("Starting nodekeeper", "version", version.Version, "commit", version.Get().Commit, "node", cfg.NodeName, "reconcilers", opts.Reconcilers)
	return mgr.Start(ctx)
}

// cadvisorCollector serves /metrics/cadvisor from the pods' cgroups (and the runtime's
// stats where a cgroup cannot be read).
func cadvisorCollector(rt cri.Runtime, cfg *v1alpha1.AgentConfiguration) *cadvisor.Collector {
	src := &cadvisor.Source{Runtime: rt}
	if cfg.CgroupsPerQOS != nil && *cfg.CgroupsPerQOS {
		src.CgroupRoot = cfg.CgroupRoot
	}
	return &cadvisor.Collector{Source: src, OnError: func(err error) {
		ctrl.Log.WithName("kubeletapi").Error(err, "Reading cadvisor metrics failed")
	}, Machine: func() cadvisor.Machine {
		m := cadvisor.Machine{CPUCores: goruntime.NumCPU()}
		if c, err := (&host.Linux{RootDir: cfg.RootDir}).Capacity(); err == nil {
			m.MemoryBytes = uint64(c.Memory().Value())
		}
		return m
	}}
}

// servingCertificate is the kubelet API's certificate from a CertificateSigningRequest
// (serverTLSBootstrap), kept in <rootDir>/pki, for the node's addresses as the node
// status reports them.
func servingCertificate(restCfg *rest.Config, cfg *v1alpha1.AgentConfiguration) (*kubeletapi.CSRServingCertificate, error) {
	cs, err := kubernetes.NewForConfig(restCfg)
	if err != nil {
		return nil, fmt.Errorf("building clientset: %w", err)
	}
	return kubeletapi.NewCSRServingCertificate(kubeletapi.ServingCertificateOptions{
		NodeName: cfg.NodeName,
		Addresses: func() []corev1.NodeAddress {
			addrs, err := (&host.Linux{}).Addresses(cfg.NodeIP, cfg.NodeName)
			if err != nil {
				ctrl.Log.WithName("kubeletapi").Error(err, "Reading the node's addresses for its serving certificate")
			}
			return addrs
		},
		CertDir:  filepath.Join(cfg.RootDir, "pki"),
		CertFile: cfg.TLSCertFile, KeyFile: cfg.TLSPrivateKeyFile,
		Client: cs,
	})
}

// setupServices wires the ServiceReconciler with the configured kernel backend.
func setupServices(mgr ctrl.Manager, cfg *v1alpha1.AgentConfiguration) error {
	node, families, err := proxyNode(cfg)
	if err != nil {
		return err
	}
	runner := iptables.Exec{}
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	cleanupOtherModes(ctx, cfg.ProxyMode, families, func(fam netrules.Family) cleaner {
		return iptables.New(iptables.Options{Family: fam, Variant: iptables.Variant(cfg.IPTablesVariant), Runner: runner})
	}, func(fam netrules.Family) (cleaner, error) {
		return nftables.New(nftables.Options{Family: fam})
	})
	cancel()
	backends := map[netrules.Family]controllers.RulesBackend{}
	for _, fam := range families {
		switch cfg.ProxyMode {
		case v1alpha1.ProxyModeIPTables:
			backends[fam] = iptables.New(iptables.Options{Family: fam, Variant: iptables.Variant(cfg.IPTablesVariant), Runner: runner})
		case v1alpha1.ProxyModeNFTables:
			p, err := nftables.New(nftables.Options{Family: fam})
			if err != nil {
				return fmt.Errorf("proxyMode nftables: %w", err)
			}
			backends[fam] = p
		case v1alpha1.ProxyModeIPVS:
			h, err := libipvs.New("")
			if err != nil {
				return fmt.Errorf("proxyMode ipvs: opening netlink handle: %w", err)
			}
			backends[fam] = netrules.Whole{RulesetSyncer: ipvs.New(h, &ipvs.Companion{Runner: runner, Family: fam, Variant: iptables.Variant(cfg.IPTablesVariant)})}
		}
	}
	// kube-proxy's health: a change not synced within 2 × syncPeriod makes it unhealthy
	// (/healthz, /livez, and every health check node port)
	proxyHealth := &healthcheck.Proxy{Timeout: 2 * cfg.ProxySyncPeriod.Duration}
	rec := &controllers.ServiceReconciler{
		Client:         mgr.GetClient(),
		Node:           node,
		Backends:       backends,
		Conntrack:      &conntrack.Cleaner{},
		FullSyncPeriod: cfg.ProxySyncPeriod.Duration,
		Mode:           string(cfg.ProxyMode),
		HealthChecks:   &healthcheck.Services{Log: ctrl.Log.WithName("healthcheck"), Proxy: proxyHealth},
		ProxyHealth:    proxyHealth,
	}
	if err := rec.SetupWithManager(mgr); err != nil {
		return fmt.Errorf("setting up service reconciler: %w", err)
	}
	if cfg.ProxyHealthzBindAddress != "0" {
		return mgr.Add(&healthcheck.Server{Addr: cfg.ProxyHealthzBindAddress, Handler: proxyHealth.Handler()})
	}
	return nil
}

// cleaner removes every rule a proxy mode owns.
type cleaner interface {
	Cleanup(ctx context.Context) error
}

// cleanupOtherModes removes, before the first sync, the rules of the proxy modes not in
// use, as kube-proxy's platformCleanup does at start: the iptables rules (those of IPVS
// mode included: they are iptables rules too) when the mode is nftables, the nftables
// table when it is iptables or ipvs. Best effort, as upstream: failures are logged.
// (IPVS virtual servers are not removed: the kernels nodekeeper is tested on have no IPVS.)
func cleanupOtherModes(ctx context.Context, mode v1alpha1.ProxyMode, families []netrules.Family,
	ipt func(netrules.Family) cleaner, nft func(netrules.Family) (cleaner, error)) {
	logger := ctrl.Log.WithName("setup")
	for _, fam := range families {
		switch mode {
		case v1alpha1.ProxyModeNFTables:
			if err := ipt(fam).Cleanup(ctx); err != nil {
				logger.Info("Removing the iptables rules of another proxy mode failed", "family", fam, "error", err.Error())
			}
		case v1alpha1.ProxyModeIPTables, v1alpha1.ProxyModeIPVS:
			c, err := nft(fam)
			if err == nil {
				err = c.Cleanup(ctx)
			}
			if err != nil {
				logger.Info("Removing the nftables table of another proxy mode failed", "family", fam, "error", err.Error())
			}
		}
	}
}

// proxyNode gathers the node facts the rules depend on; families come from the
// service CIDR(s) (IPv4 when none is configured).
func proxyNode(cfg *v1alpha1.AgentConfiguration) (netrules.Node, []netrules.Family, error) {
	node := netrules.Node{Name: cfg.NodeName, MasqueradeAll: cfg.MasqueradeAll, LocalhostNodePorts: cfg.LocalhostNodePorts}
	if ip, err := netip.ParseAddr(cfg.NodeIP); err == nil {
		node.NodeIPs = append(node.NodeIPs, ip)
	}
	for _, c := range splitCIDRs(cfg.ClusterCIDR) {
		node.ClusterCIDRs = append(node.ClusterCIDRs, c)
	}
	for _, s := range cfg.NodePortAddresses {
		switch s { // kube-proxy's keywords (expandNodePortAddressKeywords)
		case v1alpha1.NodePortAddressesPrimary: // the node's IPs, when they are not loopback
			for _, ip := range node.NodeIPs {
				if !ip.IsLoopback() {
					node.NodePortAddresses = append(node.NodePortAddresses, netip.PrefixFrom(ip, ip.BitLen()))
				}
			}
			continue
		case v1alpha1.NodePortAddressesLocalhost:
			node.NodePortAddresses = append(node.NodePortAddresses, netip.MustParsePrefix("127.0.0.0/8"), netip.MustParsePrefix("::1/128"))
			continue
		case v1alpha1.NodePortAddressesAll:
			node.NodePortAddresses = append(node.NodePortAddresses, netip.MustParsePrefix("0.0.0.0/0"), netip.MustParsePrefix("::/0"))
			continue
		}
		p, err := netip.ParsePrefix(s)
		if err != nil {
			return node, nil, fmt.Errorf("nodePortAddresses: %w", err)
		}
		node.NodePortAddresses = append(node.NodePortAddresses, p)
	}
	var fams []netrules.Family
	for _, c := range splitCIDRs(cfg.ServiceCIDR) {
		if c.Addr().Is4() {
			fams = append(fams, netrules.IPv4)
		} else {
			fams = append(fams, netrules.IPv6)
		}
	}
	if len(fams) == 0 {
		fams = []netrules.Family{netrules.IPv4}
	}
	return node, fams, nil
}

func splitCIDRs(s string) []netip.Prefix {
	var out []netip.Prefix
	for _, part := range strings.Split(s, ",") {
		if p, err := netip.ParsePrefix(strings.TrimSpace(part)); err == nil {
			out = append(out, p.Masked())
		}
	}
	return out
}

func restConfig(kubeconfig string) (*rest.Config, error) {
	if kubeconfig != "" {
		c, err := clientcmd.BuildConfigFromFlags("", kubeconfig)
		if err != nil {
			return nil, fmt.Errorf("loading kubeconfig %s: %w", kubeconfig, err)
		}
		return c, nil
	}
	c, err := ctrl.GetConfig()
	if err != nil {
		return nil, fmt.Errorf("finding the API server (give --kubeconfig): %w", err)
	}
	return c, nil
}

// profilingHandlers are Go's pprof handlers for the metrics server, as kube-proxy serves
// them with enableProfiling (nil when off).
func profilingHandlers(on bool) map[string]http.Handler {
	if !on {
		return nil
	}
	return map[string]http.Handler{
		"/debug/pprof/":        http.HandlerFunc(pprof.Index),
		"/debug/pprof/cmdline": http.HandlerFunc(pprof.Cmdline),
		"/debug/pprof/profile": http.HandlerFunc(pprof.Profile),
		"/debug/pprof/symbol":  http.HandlerFunc(pprof.Symbol),
		"/debug/pprof/trace":   http.HandlerFunc(pprof.Trace),
	}
}
