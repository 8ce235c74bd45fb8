package controllers

import (
	"context"
	"path/filepath"
	"testing"

	. "github.com/onsi/ginkgo/v2"
	. "github.com/onsi/gomega"
	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/kubernetes/scheme"
	"k8s.io/client-go/rest"
	"k8s.io/utils/ptr"
	ctrl "sigs.k8s.io/controller-runtime"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/config"
	"sigs.k8s.io/controller-runtime/pkg/log/zap"
	metricsserver "sigs.k8s.io/controller-runtime/pkg/metrics/server"

	"github.com/nodekeeper/nodekeeper/api/v1alpha1"
	testenv "github.com/nodekeeper/nodekeeper/envtest"
)

var (
	env       *testenv.Env
	k8sClient client.Client
)

func TestControllers(t *testing.T) {
	RegisterFailHandler(Fail)
	RunSpecs(t, "Controllers Suite")
}

var _ = BeforeSuite(func() {
	ctrl.SetLogger(zap.New(zap.WriteTo(GinkgoWriter), zap.UseDevMode(true)))
	var err error
	env, err = testenv.Start()
	Expect(err).NotTo(HaveOccurred())
	k8sClient = env.Client
	// the apiserver creates kube-node-lease itself, but may not have yet
	ns := &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: "kube-node-lease"}}
	if err := k8sClient.Create(context.Background(), ns); err != nil && !apierrors.IsAlreadyExists(err) {
		Expect(err).NotTo(HaveOccurred())
	}
})

var _ = AfterSuite(func() {
	if env != nil {
		Expect(env.Stop()).To(Succeed())
	}
})

// startManager starts a manager against the test apiserver, set up by setup, and
// stops it when the spec ends.
func startManager(setup func(ctrl.Manager) error) {
	startManagerWith(env.Config, managerOptions(), setup)
}

// startManagerWith is startManager with another identity or options.
func startManagerWith(cfg *rest.Config, opts ctrl.Options, setup func(ctrl.Manager) error) {
	mgr, err := ctrl.NewManager(cfg, opts)
	Expect(err).NotTo(HaveOccurred())
	Expect(setup(mgr)).To(Succeed())
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() {
		defer GinkgoRecover()
		defer close(done)
		Expect(mgr.Start(ctx)).To(Succeed())
	}()
	DeferCleanup(func() {
		cancel()
		<-done
	})
}

func managerOptions() ctrl.Options {
	return ctrl.Options{
		Scheme:                 scheme.Scheme,
		Metrics:                metricsserver.Options{BindAddress: "0"},
		HealthProbeBindAddress: "0",
		Controller:             config.Controller{SkipNameValidation: ptr.To(true)},
	}
}

// eventsIn returns a poller of the "Reason: message" of every event in a namespace.
func eventsIn(ns string) func() []string {
	return func() []string {
		evs := &corev1.EventList{}
		Expect(k8sClient.List(context.Background(), evs, client.InNamespace(ns))).To(Succeed())
		var out []string
		for _, e := range evs.Items {
			out = append(out, e.Reason+": "+e.Message)
		}
		return out
	}
}

// setTestDefaults is v1alpha1.SetDefaults with the container logs kept under the test's
// rootDir (the defaults are the machine's /var/log/pods and /var/log/containers).
func setTestDefaults(cfg *v1alpha1.AgentConfiguration) {
	if cfg.RootDir != "" {
		cfg.PodLogsDir = filepath.Join(cfg.RootDir, "logs")
		cfg.ContainerLogsDir = filepath.Join(cfg.RootDir, "containers")
	}
	v1alpha1.SetDefaults(cfg)
}
