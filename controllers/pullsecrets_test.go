package controllers

import (
	"context"
	"encoding/base64"
	"time"

	. "github.com/onsi/ginkgo/v2"
	. "github.com/onsi/gomega"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
)

var _ = Describe("Image pulls with imagePullSecrets", func() {
	It("pulls with the pod's matching pull secret, and warns about one that cannot be read", func() {
		a := newPodAgent()
		const img = "registry.example.com:5000/team/private:v1"
		a.runtime.AddRegistryImage(img, 1<<20)
		a.runtime.RequireAuth(img, "bob", "s3cret")
		auth := base64.StdEncoding.EncodeToString([]byte("bob:s3cret"))
		ctx := context.Background()
		Expect(k8sClient.Create(ctx, &corev1.Secret{ObjectMeta: metav1.ObjectMeta{Namespace: a.ns, Name: "regcred"},
			Type: corev1.SecretTypeDockerConfigJson,
			Data: map[string][]byte{corev1.DockerConfigJsonKey: []byte(`{"auths":{"registry.example.com:5000/team":{"auth":"` + auth + `"},` +
				`"other.example.com":{"username":"x","password":"y"}}}`)}})).To(Succeed())
		p := a.pod("private", corev1.RestartPolicyAlways, func(p *corev1.Pod) {
			p.Spec.Containers[0].Image = img
			p.Spec.Containers[0].ImagePullPolicy = corev1.PullAlways
			p.Spec.ImagePullSecrets = []corev1.LocalObjectReference{{Name: "missing"}, {Name: "regcred"}}
		})
		Eventually(phase(p), 10*time.Second, 50*time.Millisecond).Should(Equal(corev1.PodRunning))
		auths := a.runtime.PullAuths()
		Expect(auths).NotTo(BeEmpty())
		Expect(auths[0]).NotTo(BeNil())
		Expect(auths[0].Username).To(Equal("bob")) // the matching entry only
		Eventually(func() []string { return eventReasons(a.ns, "private") }, 10*time.Second, 100*time.Millisecond).
			Should(ContainElement("FailedToRetrieveImagePullSecret"))
	})

	It("pulls without credentials when no secret matches, and fails as the registry says", func() {
		a := newPodAgent()
		const img = "registry.example.com:5000/team/locked:v1"
		a.runtime.AddRegistryImage(img, 1<<20)
		a.runtime.RequireAuth(img, "bob", "s3cret")
		p := a.pod("locked", corev1.RestartPolicyAlways, func(p *corev1.Pod) {
			p.Spec.Containers[0].Image = img
		})
		reasons := watchWaitingReasons(p, "app")
		Eventually(reasons, 10*time.Second, 20*time.Millisecond).Should(ContainElement("ErrImagePull"))
		Expect(a.runtime.PullAuths()[0]).To(BeNil())
	})
})

func eventReasons(ns, name string) []string {
	evs := &corev1.EventList{}
	Expect(k8sClient.List(context.Background(), evs)).To(Succeed())
	var out []string
	for _, e := range evs.Items {
		if e.InvolvedObject.Namespace == ns && e.InvolvedObject.Name == name {
			out = append(out, e.Reason)
		}
	}
	return out
}

var _ = Describe("Images pulled with a pull secret (KubeletEnsureSecretPulledImages)", func() {
	It("lets a pod without the secret use the image only after pulling it itself", func() {
		a := newPodAgent()
		const img = "registry.example.com:5000/team/guarded:v1"
		a.runtime.AddRegistryImage(img, 1<<20)
		a.runtime.RequireAuth(img, "bob", "s3cret")
		auth := base64.StdEncoding.EncodeToString([]byte("bob:s3cret"))
		ctx := context.Background()
		Expect(k8sClient.Create(ctx, &corev1.Secret{ObjectMeta: metav1.ObjectMeta{Namespace: a.ns, Name: "regcred"},
			Type: corev1.SecretTypeDockerConfigJson,
			Data: map[string][]byte{corev1.DockerConfigJsonKey: []byte(`{"auths":{"registry.example.com:5000":{"auth":"` + auth + `"}}}`)}})).To(Succeed())
		owner := a.pod("owner", corev1.RestartPolicyAlways, func(p *corev1.Pod) {
			p.Spec.Containers[0].Image = img // IfNotPresent
			p.Spec.ImagePullSecrets = []corev1.LocalObjectReference{{Name: "regcred"}}
		})
		Eventually(phase(owner), 10*time.Second, 50*time.Millisecond).Should(Equal(corev1.PodRunning))
		pulls := len(a.runtime.PullAuths())
		// the same secret: the image present is used as it is
		friend := a.pod("friend", corev1.RestartPolicyAlways, func(p *corev1.Pod) {
			p.Spec.Containers[0].Image = img
			p.Spec.ImagePullSecrets = []corev1.LocalObjectReference{{Name: "regcred"}}
		})
		Eventually(phase(friend), 10*time.Second, 50*time.Millisecond).Should(Equal(corev1.PodRunning))
		Expect(a.runtime.PullAuths()).To(HaveLen(pulls))
		// no secret: it must pull, and the registry refuses
		stranger := a.pod("stranger", corev1.RestartPolicyAlways, func(p *corev1.Pod) {
			p.Spec.Containers[0].Image = img
		})
		reasons := watchWaitingReasons(stranger, "app")
		Eventually(reasons, 10*time.Second, 20*time.Millisecond).Should(ContainElement("ErrImagePull"))
		Expect(len(a.runtime.PullAuths())).To(BeNumerically(">", pulls))
		Expect(getPod(stranger).Status.Phase).To(Equal(corev1.PodPending))
	})
})
