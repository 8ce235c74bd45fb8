package helm

import (
	"context"
	"crypto/tls"
	"fmt"
	"github.com/nodekeeper/nodekeeper/kubeletapi"
	"golang.org/x/sys/unix"
	authenticationv1 "k8s.io/api/authentication/v1"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	authorizationv1 "k8s.io/api/authorization/v1"
	coordinationv1 "k8s.io/api/coordination/v1"
	corev1 "k8s.io/api/core/v1"
	discoveryv1 "k8s.io/api/discovery/v1"
	rbacv1 "k8s.io/api/rbac/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/api/resource"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/fields"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/apimachinery/pkg/util/rand"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/kubernetes/scheme"
	"k8s.io/client-go/rest"
	runtimeapi "k8s.io/cri-api/pkg/apis/runtime/v1"
	"k8s.io/utils/ptr"
	ctrl "sigs.k8s.io/controller-runtime"
	"sigs.k8s.io/controller-runtime/pkg/cache"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/config"
	metricsserver "sigs.k8s.io/controller-runtime/pkg/metrics/server"

	"github.com/nodekeeper/nodekeeper/controllers"
	"github.com/nodekeeper/nodekeeper/host"
	"github.com/nodekeeper/nodekeeper/internal/options"
	"github.com/nodekeeper/nodekeeper/internal/podplan"
	"github.com/nodekeeper/nodekeeper/netrules"
	"github.com/nodekeeper/nodekeeper/netrules/iptables"
	"github.com/nodekeeper/nodekeeper/runtime/cri/fake"
)

const busybox = "docker.io/library/busybox:local"

// The important test: the agent's reconcilers, run against a real apiserver as the
// chart's ServiceAccount with the chart's ClusterRole, do their whole job without a
// single "forbidden" — for every reconciler set the chart shrinks the role for.
func TestReconcilersAsChartServiceAccount(t *testing.T) {
	needHelm(t)
	needEnv(t)
	for _, tc := range []struct {
		release, values string
	}{
		{"rbac-all", ""},
		{"rbac-proxy", "reconcilers: [services]\nproxyMode: nftables\n"},
		{"rbac-node", "reconcilers: [nodestatus, pods]\n"},
		{"rbac-nodestatus", "reconcilers: [nodestatus]\n"},
		{"rbac-pods", "reconcilers: [pods]\n"},
	} {
		t.Run(tc.release, func(t *testing.T) {
			r := render(t, tc.release, tc.values)
			user := installRBAC(t, r, r.ClusterRole)
			node := tc.release + "-" + rand.String(5)
			opts := agentOptions(t, r, node)
			// static pods too, when the role allows their mirror pods (see staticPodGap)
			static := opts.Reconcilers[options.ReconcilerPods] && grants(r.ClusterRole, "", "pods", "create")
			if static {
				opts.Config.StaticPodPath = staticPodDir(t)
			}
			if static && !opts.Reconcilers[options.ReconcilerNodeStatus] {
				// without the node part something else registers the Node; mirror pods are
				// owned by it, so the agent makes them only once it exists (as the kubelet)
				if err := env.Client.Create(context.Background(), &corev1.Node{ObjectMeta: metav1.ObjectMeta{Name: node}}); err != nil {
					t.Fatal(err)
				}
			}
			mark := logs.mark()
			a := startAgent(t, user, opts)

			if opts.Reconcilers[options.ReconcilerNodeStatus] {
				a.checkNodeAndLease(t)
			}
			if opts.Reconcilers[options.ReconcilerPods] {
				a.checkPodLifecycle(t)
				t.Run("static-pod-mirror", func(t *testing.T) {
					if !static {
						t.Skip(staticPodGap)
					}
					a.checkMirrorPod(t)
				})
			}
			if opts.Reconcilers[options.ReconcilerServices] {
				a.checkServiceRules(t)
			}
			a.stop(t)
			if forbidden := logs.matching(mark, "forbidden"); len(forbidden) > 0 {
				t.Errorf("the agent ran into RBAC denials as %s with the chart's ClusterRole:\n%s", user, strings.Join(forbidden, "\n"))
			}
			t.Logf("%d log lines from the agent, none forbidden", len(logs.since(mark)))
		})
	}
}

// ... and the test above would notice a missing rule: without the leases rule the node
// registers, but renewing its Lease is forbidden.
func TestMissingRuleIsCaught(t *testing.T) {
	needHelm(t)
	needEnv(t)
	r := render(t, "rbac-noleases", allReconcilers)
	role := r.ClusterRole.DeepCopy()
	var kept []rbacv1.PolicyRule
	for _, rule := range role.Rules {
		if !contains(rule.Resources, "leases") {
			kept = append(kept, rule)
		}
	}
	if len(kept) == len(role.Rules) {
		t.Fatalf("the chart's ClusterRole has no leases rule to remove: %v", role.Rules)
	}
	role.Rules = kept
	user := installRBAC(t, r, role)
	node := "rbac-noleases-" + rand.String(5)
	mark := logs.mark()
	a := startAgent(t, user, agentOptions(t, r, node))

	a.waitReady(t) // the node part that is still allowed works
	var caught string
	eventually(t, 30*time.Second, func() (bool, string) {
		denied := logs.matching(mark, "forbidden")
		for _, l := range denied {
			if strings.Contains(l, `resource "leases"`) && strings.Contains(l, `User "`+user+`"`) {
				caught = l
				return true, ""
			}
		}
		return false, fmt.Sprintf("no forbidden error about leases logged; forbidden lines: %v", denied)
	})
	t.Logf("caught, as expected: %s", caught)
	lease := &coordinationv1.Lease{}
	err := env.Client.Get(context.Background(), types.NamespacedName{Namespace: "kube-node-lease", Name: node}, lease)
	if !apierrors.IsNotFound(err) {
		t.Errorf("without the leases rule no Lease can exist, got err=%v", err)
	}
	a.stop(t)
}

// Every rule of the generated role is needed: without any one of them the agent, given
// a pod and a Service to handle, runs into a "forbidden" naming that rule's resource.
// (This also shows that the log capture sees each kind of denial: a failed cache list, a
// failed write from a reconciler, a rejected event, a failed lease renewal.)
func TestEveryRuleIsNeeded(t *testing.T) {
	needHelm(t)
	needEnv(t)
	r := render(t, "rbac-without", allReconcilers)
	for i, rule := range r.ClusterRole.Rules {
		name := strings.ReplaceAll(strings.Join(rule.Resources, "+"), "/", "-")
		t.Run("without-"+name, func(t *testing.T) {
			rr := *r
			rr.ServiceAccount = r.ServiceAccount.DeepCopy()
			rr.Binding = r.Binding.DeepCopy()
			suffix := fmt.Sprintf("-%d", i)
			rr.ServiceAccount.Name += suffix
			rr.Binding.Name += suffix
			rr.Binding.Subjects[0].Name = rr.ServiceAccount.Name
			role := r.ClusterRole.DeepCopy()
			role.Name += suffix
			rr.Binding.RoleRef.Name = role.Name
			role.Rules = append(append([]rbacv1.PolicyRule(nil), role.Rules[:i]...), role.Rules[i+1:]...)
			user := installRBAC(t, &rr, role)
			node := "rbac-without-" + rand.String(5)
			mark := logs.mark()
			a := startAgent(t, user, agentOptions(t, &rr, node))
			a.workload(t)
			eventually(t, 30*time.Second, func() (bool, string) {
				for _, l := range logs.matching(mark, "forbidden") {
					unquoted := strings.ReplaceAll(l, `\"`, `"`)
					for _, res := range rule.Resources {
						if strings.Contains(unquoted, `resource "`+res+`"`) && strings.Contains(unquoted, `User "`+user+`"`) {
							t.Logf("caught: %s", l)
							return true, ""
						}
					}
				}
				return false, fmt.Sprintf("no forbidden error naming %v; forbidden lines: %v", rule.Resources, logs.matching(mark, "forbidden"))
			})
			a.stop(t)
		})
	}
}

// workload gives the agent a pod on its node and a Service with an endpoint, without
// waiting for anything.
func (a *agent) workload(t *testing.T) {
	t.Helper()
	ctx := context.Background()
	ns := "load-" + rand.String(5)
	for _, o := range []client.Object{
		&corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: ns}},
		&corev1.ServiceAccount{ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: "default"}},
		&corev1.Pod{ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: "web"},
			Spec: corev1.PodSpec{NodeName: a.node, TerminationGracePeriodSeconds: ptr.To(int64(1)), ServiceAccountName: "default",
				Volumes: []corev1.Volume{{Name: "token", VolumeSource: corev1.VolumeSource{Projected: &corev1.ProjectedVolumeSource{
					Sources: []corev1.VolumeProjection{{ServiceAccountToken: &corev1.ServiceAccountTokenProjection{Path: "token", ExpirationSeconds: ptr.To(int64(3600))}}}}}}},
				Containers: []corev1.Container{{Name: "app", Image: busybox,
					Env: []corev1.EnvVar{
						{Name: "FROM_CM", ValueFrom: &corev1.EnvVarSource{ConfigMapKeyRef: &corev1.ConfigMapKeySelector{
							LocalObjectReference: corev1.LocalObjectReference{Name: "maybe"}, Key: "k", Optional: ptr.To(true)}}},
						{Name: "FROM_SECRET", ValueFrom: &corev1.EnvVarSource{SecretKeyRef: &corev1.SecretKeySelector{
							LocalObjectReference: corev1.LocalObjectReference{Name: "maybe"}, Key: "k", Optional: ptr.To(true)}}},
					}}}}},
		&corev1.Service{ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: "web"},
			Spec: corev1.ServiceSpec{Ports: []corev1.ServicePort{{Name: "http", Port: 80, Protocol: corev1.ProtocolTCP}}}},
		&discoveryv1.EndpointSlice{
			ObjectMeta:  metav1.ObjectMeta{Namespace: ns, Name: "web-1", Labels: map[string]string{discoveryv1.LabelServiceName: "web"}},
			AddressType: discoveryv1.AddressTypeIPv4,
			Ports:       []discoveryv1.EndpointPort{{Name: ptr.To("http"), Port: ptr.To(int32(8080)), Protocol: ptr.To(corev1.ProtocolTCP)}},
			Endpoints:   []discoveryv1.Endpoint{{Addresses: []string{"10.244.9.9"}}},
		},
	} {
		if err := env.Client.Create(ctx, o); err != nil {
			t.Fatal(err)
		}
	}
	if a.kubeletAddr != "" {
		// a caller of the kubelet API: its token is reviewed, then its access
		tr := &authenticationv1.TokenRequest{Spec: authenticationv1.TokenRequestSpec{}}
		sa := &corev1.ServiceAccount{ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: "default"}}
		if err := env.Client.SubResource("token").Create(ctx, sa, tr); err != nil {
			t.Fatal(err)
		}
		hc := &http.Client{Timeout: 5 * time.Second, Transport: &http.Transport{TLSClientConfig: &tls.Config{InsecureSkipVerify: true}}} //nolint:gosec // a test server with a self-signed certificate
		req, _ := http.NewRequest(http.MethodGet, "https://"+a.kubeletAddr+"/pods", nil)
		req.Header.Set("Authorization", "Bearer "+tr.Status.Token)
		go func() {
			deadline := time.Now().Add(20 * time.Second)
			for time.Now().Before(deadline) {
				if resp, err := hc.Do(req); err == nil {
					_ = resp.Body.Close()
					return
				}
				time.Sleep(200 * time.Millisecond)
			}
		}()
	}
}

// installRBAC creates the chart's ServiceAccount and ClusterRoleBinding, and role, for
// real, waits until the authorizer sees them, and returns the ServiceAccount's user name.
func installRBAC(t *testing.T, r *rendered, role *rbacv1.ClusterRole) string {
	t.Helper()
	ctx := context.Background()
	c := env.Client
	sa := r.ServiceAccount.DeepCopy()
	role = role.DeepCopy()
	binding := r.Binding.DeepCopy()
	for _, o := range []client.Object{sa, role, binding} {
		if err := c.Create(ctx, o); err != nil {
			t.Fatalf("creating %T %s: %v", o, o.GetName(), err)
		}
		o := o
		t.Cleanup(func() { _ = c.Delete(context.Background(), o) })
	}
	user := fmt.Sprintf("system:serviceaccount:%s:%s", sa.Namespace, sa.Name)
	groups := []string{"system:serviceaccounts", "system:serviceaccounts:" + sa.Namespace, "system:authenticated"}
	eventually(t, 30*time.Second, func() (bool, string) {
		for _, tr := range triples(role.Rules) {
			group, rest, _ := strings.Cut(tr, "/")
			res, verb, _ := strings.Cut(rest, ":")
			res, sub, _ := strings.Cut(res, "/")
			sar := &authorizationv1.SubjectAccessReview{Spec: authorizationv1.SubjectAccessReviewSpec{
				User: user, Groups: groups,
				ResourceAttributes: &authorizationv1.ResourceAttributes{Group: group, Resource: res, Subresource: sub, Verb: verb},
			}}
			if err := c.Create(ctx, sar); err != nil {
				return false, err.Error()
			}
			if !sar.Status.Allowed {
				return false, fmt.Sprintf("%s may not yet %s", user, tr)
			}
		}
		return true, ""
	})
	return user
}

// agent is the agent's reconcilers as main.go wires them, with fakes for the host,
// containerd and iptables, talking to the apiserver as one user.
type agent struct {
	node        string
	kubeletAddr string
	runtime     *fake.Runtime
	ipt         *iptables.Fake
	cancel      context.CancelFunc
	done        chan struct{}
	err         error
}

func startAgent(t *testing.T, user string, opts *options.Options) *agent {
	t.Helper()
	c := *opts.Config
	cfg := &c
	node := cfg.NodeName
	// the chart's configuration, with test-speed cadences and a private state folder
	cfg.RootDir = t.TempDir()
	cfg.PodLogsDir = filepath.Join(cfg.RootDir, "logs") // not the machine's /var/log/pods
	cfg.ContainerLogsDir = filepath.Join(cfg.RootDir, "containers")
	// the agent leaves its pods' volumes mounted when it stops (as a kubelet does);
	// unmount them before the temporary folder is removed (cleanups run last-in first-out)
	t.Cleanup(func() {
		mounts, _ := filepath.Glob(filepath.Join(cfg.RootDir, "pods", "*", "volumes", "*"))
		for _, m := range mounts {
			_ = unix.Unmount(m, unix.MNT_DETACH)
		}
	})
	cfg.NodeStatusUpdateFrequency = metav1.Duration{Duration: 200 * time.Millisecond}
	cfg.NodeStatusReportFrequency = metav1.Duration{Duration: time.Hour}
	cfg.NodeLeaseDurationSeconds = 4

	a := &agent{node: node, runtime: fake.New(), ipt: iptables.NewFake(), done: make(chan struct{})}
	a.runtime.LoadImage(busybox, 1<<20)
	t.Cleanup(func() {
		_ = env.Client.Delete(context.Background(), &corev1.Node{ObjectMeta: metav1.ObjectMeta{Name: node}})
	})

	rc := rest.CopyConfig(env.Config)
	rc.Impersonate = rest.ImpersonationConfig{UserName: user}
	mgr, err := ctrl.NewManager(rc, ctrl.Options{
		Scheme:                 scheme.Scheme,
		LeaderElection:         false,
		HealthProbeBindAddress: "0",
		Metrics:                metricsserver.Options{BindAddress: "0"},
		Controller:             config.Controller{SkipNameValidation: ptr.To(true)},
		// as main.go: pods and the node are watched for this node only
		Cache: cache.Options{ByObject: map[client.Object]cache.ByObject{
			&corev1.Pod{}:                {Field: fields.OneTermEqualSelector("spec.nodeName", node)},
			&corev1.Node{}:               {Field: fields.OneTermEqualSelector("metadata.name", node)},
			&discoveryv1.EndpointSlice{}: {},
		}},
	})
	if err != nil {
		t.Fatal(err)
	}
	if opts.Reconcilers[options.ReconcilerNodeStatus] {
		h := host.NewFake(
			corev1.ResourceList{"cpu": resource.MustParse("4"), "memory": resource.MustParse("8Gi"),
				"ephemeral-storage": resource.MustParse("100Gi"), "pods": resource.MustParse("110")},
			host.Info{MachineID: "m-1", SystemUUID: "s-1", BootID: "b-1", KernelVersion: "6.1.0-test", OSImage: "Test Linux",
				OperatingSystem: "linux", Architecture: "amd64", Hostname: node},
			host.Stats{
				"memory.available": {Available: resource.MustParse("6Gi"), Capacity: resource.MustParse("8Gi")},
				"nodefs.available": {Available: resource.MustParse("50Gi"), Capacity: resource.MustParse("100Gi")},
				"pid.available":    {Available: resource.MustParse("30000"), Capacity: resource.MustParse("32768")},
			},
			[]corev1.NodeAddress{{Type: corev1.NodeInternalIP, Address: "192.0.2.10"}, {Type: corev1.NodeHostName, Address: node}},
		)
		if err := (&controllers.NodeStatusReconciler{
			Client: mgr.GetClient(), Config: cfg, Host: h, Runtime: a.runtime,
			Recorder: mgr.GetEventRecorderFor("kubelet"), Version: "v0.0.0-helmtest",
			Images: controllers.RuntimeImages(a.runtime),
		}).SetupWithManager(mgr); err != nil {
			t.Fatal(err)
		}
		if err := mgr.Add(&controllers.NodeLeaseRenewer{Client: mgr.GetClient(), Reader: mgr.GetAPIReader(),
			NodeName: node, DurationSeconds: cfg.NodeLeaseDurationSeconds}); err != nil {
			t.Fatal(err)
		}
	}
	ctx, cancel := context.WithCancel(context.Background())
	a.cancel = cancel
	if opts.Reconcilers[options.ReconcilerPods] {
		// as main.go: mirror pods are written through a direct client, static pods run
		// from the start
		direct, err := client.New(rc, client.Options{Scheme: scheme.Scheme})
		if err != nil {
			t.Fatal(err)
		}
		if err := (&controllers.PodReconciler{
			Client: mgr.GetClient(), MirrorClient: direct, StaticContext: ctx,
			Runtime: a.runtime, Recorder: mgr.GetEventRecorderFor("kubelet"), Config: cfg,
			HostIP: "192.0.2.10", RelistPeriod: 100 * time.Millisecond,
		}).SetupWithManager(mgr); err != nil {
			t.Fatal(err)
		}
		// the kubelet API reviews its callers' tokens and access as the agent
		l, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			t.Fatal(err)
		}
		a.kubeletAddr = l.Addr().String()
		if err := mgr.Add(&kubeletapi.Server{NodeName: node, Pods: mgr.GetClient(), Reviews: direct, Runtime: a.runtime,
			Listen: func(string) (net.Listener, error) { return l, nil }, Log: ctrl.Log.WithName("kubeletapi")}); err != nil {
			t.Fatal(err)
		}
		// and asks for its serving certificate as main.go does with serverTLSBootstrap (the
		// server above keeps its self-signed one, so its callers are served meanwhile)
		cs, err := kubernetes.NewForConfig(rc)
		if err != nil {
			t.Fatal(err)
		}
		certs, err := kubeletapi.NewCSRServingCertificate(kubeletapi.ServingCertificateOptions{
			NodeName: node, CertDir: filepath.Join(cfg.RootDir, "pki"), Client: cs,
			Addresses: func() []corev1.NodeAddress {
				return []corev1.NodeAddress{{Type: corev1.NodeInternalIP, Address: "192.0.2.10"}, {Type: corev1.NodeHostName, Address: node}}
			},
		})
		if err != nil {
			t.Fatal(err)
		}
		if err := mgr.Add(certs); err != nil {
			t.Fatal(err)
		}
	}
	if opts.Reconcilers[options.ReconcilerServices] {
		// the stateful iptables fake stands in for whichever kernel backend proxyMode names
		if err := (&controllers.ServiceReconciler{
			Client: mgr.GetClient(),
			Node:   netrules.Node{Name: node},
			Backends: map[netrules.Family]controllers.RulesBackend{
				netrules.IPv4: iptables.New(iptables.Options{Family: netrules.IPv4, Runner: a.ipt}),
			},
		}).SetupWithManager(mgr); err != nil {
			t.Fatal(err)
		}
	}
	go func() {
		defer close(a.done)
		a.err = mgr.Start(ctx)
	}()
	t.Cleanup(func() { a.stop(t) })
	return a
}

// stop stops the manager and waits for it; it fails the test if the manager failed.
func (a *agent) stop(t *testing.T) {
	t.Helper()
	a.cancel()
	select {
	case <-a.done:
	case <-time.After(time.Minute):
		t.Fatal("the manager did not stop within a minute")
	}
	if a.err != nil {
		t.Errorf("the manager failed: %v", a.err)
		a.err = nil
	}
}

func (a *agent) waitReady(t *testing.T) {
	t.Helper()
	eventually(t, 30*time.Second, func() (bool, string) {
		n := &corev1.Node{}
		if err := env.Client.Get(context.Background(), types.NamespacedName{Name: a.node}, n); err != nil {
			return false, "node not registered: " + err.Error()
		}
		for _, c := range n.Status.Conditions {
			if c.Type == corev1.NodeReady {
				return c.Status == corev1.ConditionTrue, fmt.Sprintf("Ready=%s %s", c.Status, c.Message)
			}
		}
		return false, "no Ready condition"
	})
}

func (a *agent) checkNodeAndLease(t *testing.T) {
	t.Helper()
	a.waitReady(t)
	eventually(t, 30*time.Second, func() (bool, string) {
		l := &coordinationv1.Lease{}
		if err := env.Client.Get(context.Background(), types.NamespacedName{Namespace: "kube-node-lease", Name: a.node}, l); err != nil {
			return false, "lease: " + err.Error()
		}
		return ptr.Deref(l.Spec.HolderIdentity, "") == a.node && l.Spec.RenewTime != nil, fmt.Sprintf("lease %+v", l.Spec)
	})
	// and it is renewed (every quarter of its 4s duration): get + update work too
	first := a.lease(t).Spec.RenewTime.Time
	eventually(t, 30*time.Second, func() (bool, string) {
		l := a.lease(t)
		return l.Spec.RenewTime.After(first), fmt.Sprintf("lease not renewed since %s", first)
	})
}

func (a *agent) lease(t *testing.T) *coordinationv1.Lease {
	t.Helper()
	l := &coordinationv1.Lease{}
	if err := env.Client.Get(context.Background(), types.NamespacedName{Namespace: "kube-node-lease", Name: a.node}, l); err != nil {
		t.Fatal(err)
	}
	return l
}

func (a *agent) checkPodLifecycle(t *testing.T) {
	t.Helper()
	ctx := context.Background()
	c := env.Client
	ns := "pods-" + rand.String(5)
	if err := c.Create(ctx, &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: ns}}); err != nil {
		t.Fatal(err)
	}
	// a projected service account token, as the ServiceAccount admission adds to every pod
	if err := c.Create(ctx, &corev1.ServiceAccount{ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: "default"}}); err != nil && !apierrors.IsAlreadyExists(err) {
		t.Fatal(err)
	}
	pod := &corev1.Pod{ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: "web"},
		Spec: corev1.PodSpec{NodeName: a.node, TerminationGracePeriodSeconds: ptr.To(int64(2)), ServiceAccountName: "default",
			Volumes: []corev1.Volume{{Name: "token", VolumeSource: corev1.VolumeSource{Projected: &corev1.ProjectedVolumeSource{
				Sources: []corev1.VolumeProjection{{ServiceAccountToken: &corev1.ServiceAccountTokenProjection{Path: "token", ExpirationSeconds: ptr.To(int64(3600))}}}}}}},
			Containers: []corev1.Container{{Name: "app", Image: busybox, Command: []string{"sleep", "3600"},
				// optional references still make the agent read ConfigMaps and Secrets
				Env: []corev1.EnvVar{
					{Name: "FROM_CM", ValueFrom: &corev1.EnvVarSource{ConfigMapKeyRef: &corev1.ConfigMapKeySelector{
						LocalObjectReference: corev1.LocalObjectReference{Name: "maybe"}, Key: "k", Optional: ptr.To(true)}}},
					{Name: "FROM_SECRET", ValueFrom: &corev1.EnvVarSource{SecretKeyRef: &corev1.SecretKeySelector{
						LocalObjectReference: corev1.LocalObjectReference{Name: "maybe"}, Key: "k", Optional: ptr.To(true)}}},
				}}}}}
	if err := c.Create(ctx, pod); err != nil {
		t.Fatal(err)
	}
	eventually(t, 30*time.Second, func() (bool, string) {
		p := &corev1.Pod{}
		if err := c.Get(ctx, client.ObjectKeyFromObject(pod), p); err != nil {
			return false, err.Error()
		}
		cs := p.Status.ContainerStatuses
		ok := p.Status.Phase == corev1.PodRunning && p.Status.PodIP != "" && p.Status.HostIP == "192.0.2.10" &&
			len(cs) == 1 && cs[0].State.Running != nil && cs[0].Ready
		return ok, fmt.Sprintf("pod status %+v", p.Status)
	})
	eventually(t, 30*time.Second, func() (bool, string) {
		evs := &corev1.EventList{}
		if err := c.List(ctx, evs, client.InNamespace(ns)); err != nil {
			return false, err.Error()
		}
		var reasons []string
		for _, e := range evs.Items {
			reasons = append(reasons, e.Reason)
			if e.Reason == "Started" {
				return true, ""
			}
		}
		return false, fmt.Sprintf("no Started event, events: %v", reasons)
	})
	p := &corev1.Pod{}
	if err := c.Get(ctx, client.ObjectKeyFromObject(pod), p); err != nil {
		t.Fatal(err)
	}
	// a graceful deletion: the agent stops the containers and then deletes the Pod for good
	if err := c.Delete(ctx, p, client.GracePeriodSeconds(1)); err != nil {
		t.Fatal(err)
	}
	eventually(t, 30*time.Second, func() (bool, string) {
		err := c.Get(ctx, client.ObjectKeyFromObject(pod), &corev1.Pod{})
		return apierrors.IsNotFound(err), fmt.Sprintf("pod still there (err=%v)", err)
	})
	cs, err := a.runtime.ListContainers(ctx, &runtimeapi.ContainerFilter{LabelSelector: map[string]string{podplan.LabelPodUID: string(p.UID)}})
	if err != nil {
		t.Fatal(err)
	}
	for _, ctr := range cs {
		if ctr.State == runtimeapi.ContainerState_CONTAINER_RUNNING {
			t.Errorf("container %s still runs after the pod was deleted", ctr.Id)
		}
	}
}

func (a *agent) checkServiceRules(t *testing.T) {
	t.Helper()
	ctx := context.Background()
	c := env.Client
	ns := "svc-" + rand.String(5)
	if err := c.Create(ctx, &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: ns}}); err != nil {
		t.Fatal(err)
	}
	svc := &corev1.Service{ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: "web"},
		Spec: corev1.ServiceSpec{Ports: []corev1.ServicePort{{Name: "http", Port: 80, Protocol: corev1.ProtocolTCP}}}}
	if err := c.Create(ctx, svc); err != nil {
		t.Fatal(err)
	}
	slice := &discoveryv1.EndpointSlice{
		ObjectMeta:  metav1.ObjectMeta{Namespace: ns, Name: "web-1", Labels: map[string]string{discoveryv1.LabelServiceName: "web"}},
		AddressType: discoveryv1.AddressTypeIPv4,
		Ports:       []discoveryv1.EndpointPort{{Name: ptr.To("http"), Port: ptr.To(int32(8080)), Protocol: ptr.To(corev1.ProtocolTCP)}},
		Endpoints:   []discoveryv1.Endpoint{{Addresses: []string{"10.244.9.9"}}},
	}
	if err := c.Create(ctx, slice); err != nil {
		t.Fatal(err)
	}
	eventually(t, 30*time.Second, func() (bool, string) {
		nat := a.ipt.Dump("nat")
		return strings.Contains(nat, "-j DNAT") && strings.Contains(nat, "--to-destination 10.244.9.9:8080") &&
			strings.Contains(nat, "-d "+svc.Spec.ClusterIP+"/32"), "nat table:\n" + nat
	})
}

// staticPodGap is why static pods are not part of the run yet.
const staticPodGap = "KNOWN RBAC GAP, static pods not checked: a static pod's mirror pod needs `create` on pods, " +
	"which the +kubebuilder:rbac markers in controllers/ (hence config/rbac/role.yaml and the chart) do not grant, " +
	"so the agent's mirror pod creation is forbidden as the chart's ServiceAccount. Add create to the pods marker in " +
	"controllers/pod_controller.go and run `make manifests`: this check then runs by itself"

func grants(role *rbacv1.ClusterRole, group, resource, verb string) bool {
	return contains(triples(role.Rules), group+"/"+resource+":"+verb)
}

// staticPodDir is a static pod folder with one manifest, static-web in default.
func staticPodDir(t *testing.T) string {
	t.Helper()
	dir := t.TempDir()
	manifest := "apiVersion: v1\nkind: Pod\nmetadata: {name: static-web, namespace: default}\n" +
		"spec:\n  containers: [{name: app, image: " + busybox + ", command: [sleep, \"3600\"]}]\n"
	if err := os.WriteFile(filepath.Join(dir, "web.yaml"), []byte(manifest), 0o644); err != nil {
		t.Fatal(err)
	}
	return dir
}

// checkMirrorPod: the static pod runs and its mirror pod shows it in the API.
func (a *agent) checkMirrorPod(t *testing.T) {
	t.Helper()
	key := types.NamespacedName{Namespace: "default", Name: "static-web-" + a.node}
	eventually(t, 30*time.Second, func() (bool, string) {
		p := &corev1.Pod{}
		if err := env.Client.Get(context.Background(), key, p); err != nil {
			return false, "mirror pod: " + err.Error()
		}
		return p.Status.Phase == corev1.PodRunning, fmt.Sprintf("mirror pod phase %q", p.Status.Phase)
	})
	t.Cleanup(func() {
		_ = env.Client.Delete(context.Background(), &corev1.Pod{ObjectMeta: metav1.ObjectMeta{Namespace: key.Namespace, Name: key.Name}})
	})
}

// eventually polls cond until it holds or the timeout passes; then it fails the test
// with cond's last message.
func eventually(t *testing.T, timeout time.Duration, cond func() (bool, string)) {
	t.Helper()
	deadline := time.Now().Add(timeout)
	for {
		ok, msg := cond()
		if ok {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("not within %s: %s", timeout, msg)
		}
		time.Sleep(100 * time.Millisecond)
	}
}

func contains(list []string, s string) bool {
	for _, x := range list {
		if x == s {
			return true
		}
	}
	return false
}
