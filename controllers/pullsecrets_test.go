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
