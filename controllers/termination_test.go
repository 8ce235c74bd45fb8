package controllers

import (
	"context"
	"time"

	. "github.com/onsi/ginkgo/v2"
	. "github.com/onsi/gomega"
	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/utils/ptr"
	"sigs.k8s.io/controller-runtime/pkg/client"
)

const testFinalizer = "example.com/test-finalizer"

// removeFinalizer lets a pod held by testFinalizer go.
func removeFinalizer(p *corev1.Pod) {
	Eventually(func() error {
		cur := &corev1.Pod{}
		if err := k8sClient.Get(context.Background(), client.ObjectKeyFromObject(p), cur); err != nil {
			return client.IgnoreNotFound(err)
		}
		cur.Finalizers = nil
		return k8sClient.Update(context.Background(), cur)
	}, 10*time.Second, 100*time.Millisecond).Should(Succeed())
}

func gone(p *corev1.Pod) func() bool {
	return func() bool {
		err := k8sClient.Get(context.Background(), client.ObjectKeyFromObject(p), &corev1.Pod{})
		return apierrors.IsNotFound(err)
	}
}

var _ = Describe("Final status of deleted pods (fake runtime)", func() {
	for _, policy := range []corev1.RestartPolicy{corev1.RestartPolicyAlways, corev1.RestartPolicyOnFailure, corev1.RestartPolicyNever} {
		It("writes Failed and the killed container's exit code on a deleted "+string(policy)+" pod a finalizer holds", func() {
			a := newPodAgent()
			p := a.pod("deleted-running", policy, func(p *corev1.Pod) { p.Finalizers = []string{testFinalizer} })
			DeferCleanup(removeFinalizer, p)
			Eventually(phase(p), 10*time.Second, 50*time.Millisecond).Should(Equal(corev1.PodRunning))
			Expect(k8sClient.Delete(context.Background(), p, client.GracePeriodSeconds(1))).To(Succeed())
			Eventually(phase(p), 10*time.Second, 50*time.Millisecond).Should(Equal(corev1.PodFailed))
			got := getPod(p)
			Expect(got.DeletionTimestamp).NotTo(BeNil())
			Expect(got.Status.ContainerStatuses).To(HaveLen(1))
			term := got.Status.ContainerStatuses[0].State.Terminated
			Expect(term).NotTo(BeNil())
			Expect(term.ExitCode).To(Equal(int32(143))) // the fake honours SIGTERM
			Expect(term.Reason).To(Equal("Error"))
			Expect(term.ContainerID).To(HavePrefix("fake-runtime://"))
			Expect(podCondition(got, corev1.PodReady)).To(Equal(corev1.ConditionFalse))
			// the runtime side is gone, and the status stays as written
			Eventually(func() int { return len(a.containers(got.UID, "app")) }, 10*time.Second, 50*time.Millisecond).Should(BeZero())
			// the agent's own delete (grace 0) is the last write: the pod is not written
			// again (no update loop on a pod held by a finalizer)
			Eventually(func() *int64 { return getPod(p).DeletionGracePeriodSeconds }, 10*time.Second, 50*time.Millisecond).
				Should(Equal(ptr.To[int64](0)))
			rv := getPod(p).ResourceVersion
			Consistently(func() string { return getPod(p).ResourceVersion }, 2*time.Second, 100*time.Millisecond).Should(Equal(rv))
			Expect(getPod(p).Status.ContainerStatuses[0].State.Terminated).To(Equal(term))
			removeFinalizer(p)
			Eventually(gone(p), 10*time.Second, 50*time.Millisecond).Should(BeTrue())
		})
	}

	It("writes Succeeded when the containers exit 0 on SIGTERM", func() {
		a := newPodAgent()
		p := a.pod("deleted-clean", corev1.RestartPolicyAlways, func(p *corev1.Pod) { p.Finalizers = []string{testFinalizer} })
		DeferCleanup(removeFinalizer, p)
		Eventually(phase(p), 10*time.Second, 50*time.Millisecond).Should(Equal(corev1.PodRunning))
		p = getPod(p)
		Expect(a.runtime.SetTermExitCode(a.running(p.UID, "app"), 0)).To(Succeed())
		Expect(k8sClient.Delete(context.Background(), p)).To(Succeed())
		Eventually(phase(p), 10*time.Second, 50*time.Millisecond).Should(Equal(corev1.PodSucceeded))
		term := getPod(p).Status.ContainerStatuses[0].State.Terminated
		Expect(term).NotTo(BeNil())
		Expect(term.ExitCode).To(BeZero())
		Expect(term.Reason).To(Equal("Completed"))
	})

	It("writes Failed on a pod deleted while its image cannot be pulled", func() {
		a := newPodAgent()
		p := a.pod("deleted-pending", corev1.RestartPolicyAlways, func(p *corev1.Pod) {
			p.Finalizers = []string{testFinalizer}
			p.Spec.Containers[0].Image = "non-existing-repo/non-existing-image:v1.0"
			p.Spec.Containers[0].ImagePullPolicy = corev1.PullAlways
		})
		DeferCleanup(removeFinalizer, p)
		Eventually(func() string {
			cs := getPod(p).Status.ContainerStatuses
			if len(cs) == 0 || cs[0].State.Waiting == nil {
				return ""
			}
			return cs[0].State.Waiting.Reason
		}, 10*time.Second, 50*time.Millisecond).Should(Or(Equal("ErrImagePull"), Equal("ImagePullBackOff")))
		Expect(k8sClient.Delete(context.Background(), p, &client.DeleteOptions{GracePeriodSeconds: ptr.To[int64](30)})).To(Succeed())
		Eventually(phase(p), 10*time.Second, 50*time.Millisecond).Should(Equal(corev1.PodFailed))
		term := getPod(p).Status.ContainerStatuses[0].State.Terminated
		Expect(term).NotTo(BeNil())
		Expect(term.ExitCode).To(Equal(int32(137)))
		Expect(term.Reason).To(Equal("ContainerStatusUnknown"))
	})
})
