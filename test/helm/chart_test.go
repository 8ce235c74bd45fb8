package helm

import (
	"io"
	"os"
	"path/filepath"
	"reflect"
	"sort"
	"strings"
	"testing"

	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	rbacv1 "k8s.io/api/rbac/v1"
	"sigs.k8s.io/yaml"

	"github.com/nodekeeper/nodekeeper/api/v1alpha1"
	"github.com/nodekeeper/nodekeeper/internal/options"
)

// valueSet is one way to install the chart, with what it must render to.
type valueSet struct {
	name        string
	values      string
	reconcilers string             // the --reconcilers the DaemonSet must pass
	proxyMode   v1alpha1.ProxyMode // in the AgentConfiguration
	hostPaths   map[string]string  // volume name -> host path, exactly these (besides the ConfigMap)
	check       func(t *testing.T, r *rendered, cfg *v1alpha1.AgentConfiguration)
}

var allHostPaths = map[string]string{
	"cri-socket-dir": "/run/containerd",
	"state":          "/var/lib/nodekeeper",
	"pod-logs":       "/var/log/pods",
	"container-logs": "/var/log/containers",
	"machine-id":     "/etc/machine-id",
	"os-release":     "/etc/os-release",
	"xtables-lock":   "/run/xtables.lock",
}

// allReconcilers is the node mode through the chart: the agent as the node's kubelet and
// its proxy (the default is the proxy alone)
const allReconcilers = "reconcilers: [nodestatus, pods, services]\n"

// proxyOnlyRules: what the proxy alone may do, read nodes, services and endpointslices
var proxyOnlyRules = []string{
	"/nodes:get", "/nodes:list", "/nodes:watch",
	"/services:get", "/services:list", "/services:watch",
	"discovery.k8s.io/endpointslices:get", "discovery.k8s.io/endpointslices:list", "discovery.k8s.io/endpointslices:watch",
}

var valueSets = []valueSet{
	{
		// the default: the proxy alone, beside the node's kubelet
		name:        "defaults",
		reconcilers: "services",
		proxyMode:   v1alpha1.ProxyModeIPTables,
		hostPaths:   map[string]string{"xtables-lock": "/run/xtables.lock"},
		check: func(t *testing.T, r *rendered, cfg *v1alpha1.AgentConfiguration) {
			// no Secret read, no token minting, no writes
			if got := triples(r.ClusterRole.Rules); !reflect.DeepEqual(got, proxyOnlyRules) {
				t.Errorf("the default ClusterRole grants\n %v\nwant only the proxy's reads:\n %v", got, proxyOnlyRules)
			}
			tol := r.DaemonSet.Spec.Template.Spec.Tolerations
			if len(tol) != 1 || tol[0].Operator != corev1.TolerationOpExists || tol[0].Key != "" || tol[0].Effect != "" {
				t.Errorf("by default the agent tolerates every taint, got %v", tol)
			}
			if sel := r.DaemonSet.Spec.Template.Spec.NodeSelector; !reflect.DeepEqual(sel, map[string]string{"kubernetes.io/os": "linux"}) {
				t.Errorf("nodeSelector %v, want only kubernetes.io/os: linux", sel)
			}
			// no clash with the kubelet beside it: healthz on 127.0.0.1, not on its 10248
			if cfg.HealthzBindAddress != "127.0.0.1:10264" || cfg.MetricsBindAddress != "127.0.0.1:10249" || cfg.ProxyHealthzBindAddress != "0.0.0.0:10256" {
				t.Errorf("addresses healthz %q metrics %q proxy healthz %q", cfg.HealthzBindAddress, cfg.MetricsBindAddress, cfg.ProxyHealthzBindAddress)
			}
			c := r.DaemonSet.Spec.Template.Spec.Containers[0]
			for _, p := range []*corev1.Probe{c.LivenessProbe, c.ReadinessProbe} {
				if p == nil || p.HTTPGet == nil || p.HTTPGet.Host != "127.0.0.1" || p.HTTPGet.Port.IntValue() != 10264 {
					t.Errorf("probes must dial 127.0.0.1:10264, got %+v", p)
				}
			}
			if c.Image != "nodekeeper/nodekeeper:v0.1.0-dev" || c.ImagePullPolicy != corev1.PullIfNotPresent {
				t.Errorf("image %s (%s), want make image's nodekeeper/nodekeeper:<appVersion>", c.Image, c.ImagePullPolicy)
			}
		},
	},
	{
		name:        "node-mode",
		values:      allReconcilers,
		reconcilers: "nodestatus,pods,services",
		proxyMode:   v1alpha1.ProxyModeIPTables,
		hostPaths:   allHostPaths,
		check: func(t *testing.T, r *rendered, cfg *v1alpha1.AgentConfiguration) {
			// the generated union, exactly
			if want := roleFile(t).Rules; !reflect.DeepEqual(r.ClusterRole.Rules, want) {
				t.Errorf("with every reconciler the chart's rules must be config/rbac/role.yaml's:\n got %v\nwant %v", r.ClusterRole.Rules, want)
			}
			if len(cfg.SystemReserved) != 0 || len(cfg.KubeReserved) != 0 {
				t.Errorf("no reservations by default, got %v / %v", cfg.SystemReserved, cfg.KubeReserved)
			}
			tol := r.DaemonSet.Spec.Template.Spec.Tolerations
			if len(tol) != 1 || tol[0].Operator != corev1.TolerationOpExists || tol[0].Key != "" || tol[0].Effect != "" {
				t.Errorf("by default the agent tolerates every taint, got %v", tol)
			}
			if sel := r.DaemonSet.Spec.Template.Spec.NodeSelector; !reflect.DeepEqual(sel, map[string]string{"kubernetes.io/os": "linux"}) {
				t.Errorf("nodeSelector %v, want only kubernetes.io/os: linux", sel)
			}
			// the node's kubelet: the kubelet's healthz port
			if cfg.HealthzBindAddress != "127.0.0.1:10248" {
				t.Errorf("node mode healthz %q, want the kubelet's 127.0.0.1:10248", cfg.HealthzBindAddress)
			}
		},
	},
	{
		name:        "proxy-only-nftables",
		values:      "reconcilers: [services]\nproxyMode: nftables\n",
		reconcilers: "services",
		proxyMode:   v1alpha1.ProxyModeNFTables,
		// no containerd, no state, no xtables lock for nftables, no /lib/modules
		// unless libModules (the kernel loads its modules itself)
		hostPaths: map[string]string{},
		check: func(t *testing.T, r *rendered, _ *v1alpha1.AgentConfiguration) {
			if got := triples(r.ClusterRole.Rules); !reflect.DeepEqual(got, proxyOnlyRules) {
				t.Errorf("proxy-only ClusterRole grants\n %v\nwant only read access to nodes, services and endpointslices:\n %v", got, proxyOnlyRules)
			}
		},
	},
	{
		name:        "node-only",
		values:      "reconcilers: [nodestatus, pods]\n",
		reconcilers: "nodestatus,pods",
		proxyMode:   v1alpha1.ProxyModeIPTables,
		hostPaths: map[string]string{"cri-socket-dir": "/run/containerd", "state": "/var/lib/nodekeeper",
			"pod-logs": "/var/log/pods", "container-logs": "/var/log/containers",
			"machine-id": "/etc/machine-id", "os-release": "/etc/os-release"},
		check: func(t *testing.T, r *rendered, _ *v1alpha1.AgentConfiguration) {
			// the pods' Service link variables need read access to Services, not more
			var want []string
			for _, tr := range triples(roleFile(t).Rules) {
				if strings.Contains(tr, "/endpointslices:") {
					continue
				}
				if strings.Contains(tr, "/services:") && !strings.HasSuffix(tr, ":get") && !strings.HasSuffix(tr, ":list") && !strings.HasSuffix(tr, ":watch") {
					continue
				}
				want = append(want, tr)
			}
			if got := triples(r.ClusterRole.Rules); !reflect.DeepEqual(got, want) {
				t.Errorf("node-only ClusterRole grants\n %v\nwant the generated role without endpointslices (and only reads of services):\n %v", got, want)
			}
		},
	},
	{
		name: "reservations",
		values: allReconcilers + `
systemReserved: {cpu: 500m, memory: 1Gi}
kubeReserved: {cpu: 1, memory: 512Mi, ephemeral-storage: 1Gi, pid: 1000}
evictionHard: {memory.available: 200Mi, nodefs.available: "5%", pid.available: "10%"}
proxyMode: ipvs
config:
  clusterCIDR: 10.244.0.0/16
  serviceCIDR: 10.96.0.0/12
  maxPods: 64
  clusterDNS: [10.96.0.10]
  healthzBindAddress: ":10300"
apiServer: {host: 192.0.2.1, port: 6443}
image: {repository: registry.example.com/nodekeeper, tag: v1.2.3, pullPolicy: Always}
tolerations: [{key: example.com/dedicated, operator: Equal, value: infra, effect: NoSchedule}]
nodeSelector: {example.com/pool: blue}
resources: {requests: {cpu: 200m, memory: 256Mi}, limits: {memory: 1Gi}}
extraArgs: ["--node-ip=$(HOST_IP)"]
`,
		reconcilers: "nodestatus,pods,services",
		proxyMode:   v1alpha1.ProxyModeIPVS,
		hostPaths:   allHostPaths,
		check: func(t *testing.T, r *rendered, cfg *v1alpha1.AgentConfiguration) {
			wantMaps := map[string][2]map[string]string{
				"systemReserved": {cfg.SystemReserved, {"cpu": "500m", "memory": "1Gi"}},
				"kubeReserved":   {cfg.KubeReserved, {"cpu": "1", "memory": "512Mi", "ephemeral-storage": "1Gi", "pid": "1000"}},
				"evictionHard":   {cfg.EvictionHard, {"memory.available": "200Mi", "nodefs.available": "5%", "pid.available": "10%"}},
			}
			for name, m := range wantMaps {
				if !reflect.DeepEqual(m[0], m[1]) {
					t.Errorf("%s = %v, want %v", name, m[0], m[1])
				}
			}
			if cfg.MaxPods != 64 || cfg.ServiceCIDR != "10.96.0.0/12" || cfg.ClusterCIDR != "10.244.0.0/16" ||
				!reflect.DeepEqual(cfg.ClusterDNS, []string{"10.96.0.10"}) || cfg.HealthzBindAddress != ":10300" {
				t.Errorf("extra config not carried over: %+v", cfg)
			}
			c := r.DaemonSet.Spec.Template.Spec.Containers[0]
			if c.Image != "registry.example.com/nodekeeper:v1.2.3" || c.ImagePullPolicy != corev1.PullAlways {
				t.Errorf("image %s (%s)", c.Image, c.ImagePullPolicy)
			}
			if env := envMap(c); env["KUBERNETES_SERVICE_HOST"] != "192.0.2.1" || env["KUBERNETES_SERVICE_PORT"] != "6443" {
				t.Errorf("apiServer not passed as KUBERNETES_SERVICE_HOST/PORT: %v", env)
			}
			if c.LivenessProbe == nil || c.LivenessProbe.HTTPGet.Port.IntValue() != 10300 || c.Ports[0].ContainerPort != 10300 {
				t.Errorf("probes must follow healthzBindAddress :10300: %+v %+v", c.LivenessProbe, c.Ports)
			}
			if mem := c.Resources.Limits[corev1.ResourceMemory]; mem.String() != "1Gi" {
				t.Errorf("resources not carried over: %+v", c.Resources)
			}
			spec := r.DaemonSet.Spec.Template.Spec
			if len(spec.Tolerations) != 1 || spec.Tolerations[0].Key != "example.com/dedicated" {
				t.Errorf("tolerations %v", spec.Tolerations)
			}
			if !reflect.DeepEqual(spec.NodeSelector, map[string]string{"example.com/pool": "blue", "kubernetes.io/os": "linux"}) {
				t.Errorf("nodeSelector %v", spec.NodeSelector)
			}
			if !reflect.DeepEqual(r.ClusterRole.Rules, roleFile(t).Rules) {
				t.Errorf("every reconciler runs: the rules must be the generated ones")
			}
		},
	},
}

func TestHelmLint(t *testing.T) {
	for _, vs := range valueSets {
		t.Run(vs.name, func(t *testing.T) {
			out, err := helm(t, "lint", "--strict", chartRel, "--namespace", releaseNamespace, "-f", valuesFile(t, vs.values))
			if err != nil {
				t.Fatal(err)
			}
			if !strings.Contains(out, "0 chart(s) failed") {
				t.Fatalf("helm lint:\n%s", out)
			}
		})
	}
}

func TestHelmTemplate(t *testing.T) {
	for _, vs := range valueSets {
		t.Run(vs.name, func(t *testing.T) {
			r := render(t, "nk", vs.values)
			for what, o := range map[string]any{"ServiceAccount": r.ServiceAccount, "ClusterRole": r.ClusterRole,
				"ClusterRoleBinding": r.Binding, "ConfigMap": r.ConfigMap, "DaemonSet": r.DaemonSet} {
				if reflect.ValueOf(o).IsNil() {
					t.Fatalf("the chart rendered no %s:\n%s", what, r.raw)
				}
			}
			checkWiring(t, r)
			ds := r.DaemonSet
			spec := ds.Spec.Template.Spec
			c := spec.Containers[0]
			if !hasArg(c.Args, "--reconcilers="+vs.reconcilers) {
				t.Errorf("DaemonSet args %v, want --reconcilers=%s", c.Args, vs.reconcilers)
			}
			if !hasArg(c.Args, "--node-name=$(NODE_NAME)") {
				t.Errorf("DaemonSet args %v, want --node-name=$(NODE_NAME)", c.Args)
			}
			if !spec.HostNetwork {
				t.Error("the agent must run in the host's network namespace (hostNetwork)")
			}
			// privileged only for the node part (Bidirectional propagation needs it); the
			// proxy alone gets NET_ADMIN and NET_RAW, nothing else
			node := strings.Contains(vs.reconcilers, "nodestatus") || strings.Contains(vs.reconcilers, "pods")
			sc := c.SecurityContext
			if sc == nil || sc.Privileged == nil || *sc.Privileged != node {
				t.Errorf("securityContext %+v: want privileged exactly when the node part runs (%v)", sc, node)
			} else if !node {
				if sc.Capabilities == nil || !reflect.DeepEqual(sc.Capabilities.Add, []corev1.Capability{"NET_ADMIN", "NET_RAW"}) ||
					!reflect.DeepEqual(sc.Capabilities.Drop, []corev1.Capability{"ALL"}) {
					t.Errorf("proxy capabilities %+v, want add NET_ADMIN, NET_RAW, drop ALL", sc.Capabilities)
				}
				if sc.ReadOnlyRootFilesystem == nil || !*sc.ReadOnlyRootFilesystem || sc.AllowPrivilegeEscalation == nil || *sc.AllowPrivilegeEscalation {
					t.Errorf("proxy securityContext %+v: want a read-only root and no privilege escalation", sc)
				}
			}
			nodeName := findEnv(c, "NODE_NAME")
			if nodeName == nil || nodeName.ValueFrom == nil || nodeName.ValueFrom.FieldRef == nil ||
				nodeName.ValueFrom.FieldRef.FieldPath != "spec.nodeName" {
				t.Errorf("NODE_NAME must come from the downward API spec.nodeName, got %+v", nodeName)
			}
			if got := hostPathVolumes(ds); !reflect.DeepEqual(got, vs.hostPaths) {
				t.Errorf("host paths\n got %v\nwant %v", got, vs.hostPaths)
			}
			for _, m := range c.VolumeMounts {
				if (m.Name == "lib-modules" || m.Name == "config" || m.Name == "machine-id") && !m.ReadOnly {
					t.Errorf("%s must be mounted read-only", m.Name)
				}
				if p, ok := vs.hostPaths[m.Name]; ok && p != m.MountPath {
					t.Errorf("%s is mounted at %s, want the host's path %s", m.Name, m.MountPath, p)
				}
				// the pod volumes the agent mounts in its state folder must reach containerd
				pods := strings.Contains(vs.reconcilers, "pods")
				bidi := m.MountPropagation != nil && *m.MountPropagation == corev1.MountPropagationBidirectional
				if m.Name == "state" && pods != bidi {
					t.Errorf("state is mounted with propagation %v; want Bidirectional exactly when the pods reconciler runs", m.MountPropagation)
				}
			}

			// the ConfigMap holds a valid AgentConfiguration ...
			data := r.ConfigMap.Data["config.yaml"]
			cfg, err := v1alpha1.Parse([]byte(data))
			if err != nil {
				t.Fatalf("config.yaml: %v\n%s", err, data)
			}
			cfg.NodeName = "node-1" // --node-name
			v1alpha1.SetDefaults(cfg)
			if err := v1alpha1.Validate(cfg); err != nil {
				t.Fatalf("config.yaml is not valid: %v\n%s", err, data)
			}
			if cfg.ProxyMode != vs.proxyMode {
				t.Errorf("proxyMode %q, want %q", cfg.ProxyMode, vs.proxyMode)
			}
			// ... and the agent's own flag parsing accepts the DaemonSet's args with it
			opts := agentOptions(t, r, "node-1")
			var got []string
			for name := range opts.Reconcilers {
				got = append(got, name)
			}
			sort.Strings(got)
			want := strings.Split(vs.reconcilers, ",")
			sort.Strings(want)
			if !reflect.DeepEqual(got, want) {
				t.Errorf("the agent would run %v, want %v", got, want)
			}
			if opts.Config.NodeName != "node-1" || opts.Config.ProxyMode != vs.proxyMode {
				t.Errorf("agent config nodeName=%q proxyMode=%q", opts.Config.NodeName, opts.Config.ProxyMode)
			}

			// the ClusterRole never grants more than the generated role
			union := map[string]bool{}
			for _, tr := range triples(roleFile(t).Rules) {
				union[tr] = true
			}
			for _, tr := range triples(r.ClusterRole.Rules) {
				if !union[tr] {
					t.Errorf("the ClusterRole grants %s, which config/rbac/role.yaml does not", tr)
				}
			}
			if vs.check != nil {
				vs.check(t, r, cfg)
			}
		})
	}
}

func TestHelmTemplateRejectsBadValues(t *testing.T) {
	for name, values := range map[string]string{
		"unknown reconciler":         "reconcilers: [kubelet]\n",
		"no reconciler":              "reconcilers: []\n",
		"bad proxyMode":              "proxyMode: userspace\n",
		"nodeName in config":         "config: {nodeName: n1}\n",
		"unknown config field":       "config: {nodeLables: {a: b}}\n",
		"config field type":          "config: {maxPods: many}\n",
		"config duration":            "config: {proxySyncPeriod: 10}\n",
		"config proxyMode":           "config: {proxyMode: userspace}\n",
		"serviceMonitor on loopback": "serviceMonitor: {enabled: true}\nmetrics: {address: 127.0.0.1}\n",
		"unknown port field":         "healthz: {adress: 0.0.0.0}\n",
	} {
		t.Run(name, func(t *testing.T) {
			if out, err := helm(t, "template", "nk", chartRel, "-f", valuesFile(t, values)); err == nil {
				t.Errorf("helm template accepted %q:\n%s", values, out)
			}
		})
	}
}

// checkWiring: the objects point at each other.
func checkWiring(t *testing.T, r *rendered) {
	t.Helper()
	spec := r.DaemonSet.Spec.Template.Spec
	if spec.ServiceAccountName != r.ServiceAccount.Name || r.ServiceAccount.Namespace != releaseNamespace {
		t.Errorf("DaemonSet runs as %q, the chart's ServiceAccount is %s/%s", spec.ServiceAccountName, r.ServiceAccount.Namespace, r.ServiceAccount.Name)
	}
	if r.Binding.RoleRef.Name != r.ClusterRole.Name || r.Binding.RoleRef.Kind != "ClusterRole" {
		t.Errorf("binding refers to %v, role is %s", r.Binding.RoleRef, r.ClusterRole.Name)
	}
	if len(r.Binding.Subjects) != 1 || r.Binding.Subjects[0].Kind != rbacv1.ServiceAccountKind ||
		r.Binding.Subjects[0].Name != r.ServiceAccount.Name || r.Binding.Subjects[0].Namespace != releaseNamespace {
		t.Errorf("binding subjects %v", r.Binding.Subjects)
	}
	var cmName string
	for _, v := range spec.Volumes {
		if v.ConfigMap != nil {
			cmName = v.ConfigMap.Name
		}
	}
	if cmName != r.ConfigMap.Name {
		t.Errorf("DaemonSet mounts ConfigMap %q, the chart's is %q", cmName, r.ConfigMap.Name)
	}
	if !hasArg(spec.Containers[0].Args, "--config=/etc/nodekeeper/config.yaml") {
		t.Errorf("args %v lack --config", spec.Containers[0].Args)
	}
}

// agentOptions runs the agent's own option parsing on the DaemonSet's args, with the
// ConfigMap's config.yaml as the --config file and the downward API variables filled in.
func agentOptions(t *testing.T, r *rendered, nodeName string) *options.Options {
	t.Helper()
	cfgPath := filepath.Join(t.TempDir(), "config.yaml")
	if err := os.WriteFile(cfgPath, []byte(r.ConfigMap.Data["config.yaml"]), 0o644); err != nil {
		t.Fatal(err)
	}
	repl := strings.NewReplacer("$(NODE_NAME)", nodeName, "$(HOST_IP)", "192.0.2.10",
		"--config=/etc/nodekeeper/config.yaml", "--config="+cfgPath)
	var args []string
	for _, a := range r.DaemonSet.Spec.Template.Spec.Containers[0].Args {
		args = append(args, repl.Replace(a))
	}
	opts, err := options.Parse(args, io.Discard)
	if err != nil {
		t.Fatalf("the agent refuses the DaemonSet's args %v: %v", args, err)
	}
	return opts
}

func hasArg(args []string, want string) bool {
	for _, a := range args {
		if a == want {
			return true
		}
	}
	return false
}

func findEnv(c corev1.Container, name string) *corev1.EnvVar {
	for i := range c.Env {
		if c.Env[i].Name == name {
			return &c.Env[i]
		}
	}
	return nil
}

func envMap(c corev1.Container) map[string]string {
	m := map[string]string{}
	for _, e := range c.Env {
		m[e.Name] = e.Value
	}
	return m
}

func hostPathVolumes(ds *appsv1.DaemonSet) map[string]string {
	m := map[string]string{}
	for _, v := range ds.Spec.Template.Spec.Volumes {
		if v.HostPath != nil {
			m[v.Name] = v.HostPath.Path
		}
	}
	return m
}

// triples expands rules to sorted "group/resource:verb" strings.
func triples(rules []rbacv1.PolicyRule) []string {
	set := map[string]bool{}
	for _, r := range rules {
		for _, g := range r.APIGroups {
			for _, res := range r.Resources {
				for _, v := range r.Verbs {
					set[g+"/"+res+":"+v] = true
				}
			}
		}
	}
	out := make([]string, 0, len(set))
	for k := range set {
		out = append(out, k)
	}
	sort.Strings(out)
	return out
}

// roleFile is config/rbac/role.yaml, the role `make manifests` generates.
func roleFile(t *testing.T) *rbacv1.ClusterRole {
	t.Helper()
	data, err := os.ReadFile(filepath.Join(repoRoot, "config", "rbac", "role.yaml"))
	if err != nil {
		t.Fatal(err)
	}
	role := &rbacv1.ClusterRole{}
	if err := yaml.UnmarshalStrict(data, role); err != nil {
		t.Fatalf("config/rbac/role.yaml: %v", err)
	}
	return role
}
