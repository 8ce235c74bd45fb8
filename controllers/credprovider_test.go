package controllers

import (
	"context"
	"errors"
	"os"
	"path/filepath"
	"time"

	. "github.com/onsi/ginkgo/v2"
	. "github.com/onsi/gomega"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/util/rand"
	ctrl "sigs.k8s.io/controller-runtime"

	"github.com/nodekeeper/nodekeeper/api/v1alpha1"
	"github.com/nodekeeper/nodekeeper/internal/podplan"
	"github.com/nodekeeper/nodekeeper/runtime/cri/fake"
)

var _ = Describe("Image pulls with a credential provider plugin", func() {
	It("pulls with the credentials the matching exec plugin answers", func() {
		dir := GinkgoT().TempDir()
		plugin := "#!/bin/sh\ncat >/dev/null\n" + `echo '{"apiVersion":"credentialprovider.kubelet.k8s.io/v1","kind":"CredentialProviderResponse","cacheKeyType":"Registry","auth":{"*.example.com:5000":{"username":"carol","password":"pl4gin"}}}'` + "\n"
		Expect(os.WriteFile(filepath.Join(dir, "ecr-like"), []byte(plugin), 0o755)).To(Succeed())
		Expect(os.WriteFile(filepath.Join(dir, "config.yaml"), []byte("apiVersion: kubelet.config.k8s.io/v1\nkind: CredentialProviderConfig\nproviders:\n"+
			"- name: ecr-like\n  apiVersion: credentialprovider.kubelet.k8s.io/v1\n  matchImages: [\"*.example.com:5000\"]\n  defaultCacheDuration: 1m\n"), 0o644)).To(Succeed())

		rt := fake.New()
		rt.LoadImage(busybox, 1<<20)
		a := &podAgent{node: "pods-" + rand.String(5), ns: "pods-" + rand.String(5), runtime: rt}
		Expect(k8sClient.Create(context.Background(), &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: a.ns}})).To(Succeed())
		cfg := &v1alpha1.AgentConfiguration{NodeName: a.node, RootDir: GinkgoT().TempDir(), ClusterDNS: []string{"10.0.0.10"},
			ImageCredentialProviderConfig: filepath.Join(dir, "config.yaml"), ImageCredentialProviderBinDir: dir}
		setTestDefaults(cfg)
		a.cfg = cfg
		startManager(func(mgr ctrl.Manager) error {
			return (&PodReconciler{Client: mgr.GetClient(), Runtime: rt, Recorder: mgr.GetEventRecorderFor("kubelet"), Config: cfg,
				HostIP: "192.0.2.10", RelistPeriod: 100 * time.Millisecond, EvictionPeriod: 200 * time.Millisecond,
				Backoff:  podplan.BackoffPolicy{Base: 500 * time.Millisecond, Max: 2 * time.Second, Reset: 10 * time.Minute},
				AppArmor: func() error { return errors.New("AppArmor is not enabled on the host") },
			}).SetupWithManager(mgr)
		})
		const img = "registry.example.com:5000/team/private:v1"
		rt.AddRegistryImage(img, 1<<20)
		rt.RequireAuth(img, "carol", "pl4gin")
		p := a.pod("plugin", corev1.RestartPolicyAlways, func(p *corev1.Pod) {
			p.Spec.Containers[0].Image = img
			p.Spec.Containers[0].ImagePullPolicy = corev1.PullAlways
		})
		Eventually(phase(p), 10*time.Second, 50*time.Millisecond).Should(Equal(corev1.PodRunning))
		auths := rt.PullAuths()
		Expect(auths).NotTo(BeEmpty())
		Expect(auths[0]).NotTo(BeNil())
		Expect(auths[0].Username).To(Equal("carol"))
	})
})
