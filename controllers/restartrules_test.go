package controllers

import (
	"time"

	. "github.com/onsi/ginkgo/v2"
	. "github.com/onsi/gomega"
	corev1 "k8s.io/api/core/v1"
	"k8s.io/utils/ptr"
)

var _ = Describe("Container restart rules (fake runtime)", func() {
	It("restarts a container whose exit code a Restart rule names, and lets the pod end on any other", func() {
		a := newPodAgent()
		p := a.pod("rules", corev1.RestartPolicyNever, func(p *corev1.Pod) {
			p.Spec.Containers[0].RestartPolicy = ptr.To(corev1.ContainerRestartPolicyNever)
			p.Spec.Containers[0].RestartPolicyRules = []corev1.ContainerRestartRule{{Action: corev1.ContainerRestartRuleActionRestart,
				ExitCodes: &corev1.ContainerRestartRuleOnExitCodes{Operator: corev1.ContainerRestartRuleOnExitCodesOpIn, Values: []int32{42}}}}
		})
		var id string
		Eventually(func() string { id = a.running(getPod(p).UID, "app"); return id }, 10*time.Second, 50*time.Millisecond).ShouldNot(BeEmpty())
		Expect(a.runtime.Exit(id, 42)).To(Succeed())
		Eventually(func() int32 {
			cs := getPod(p).Status.ContainerStatuses
			if len(cs) == 0 || cs[0].State.Running == nil {
				return -1
			}
			return cs[0].RestartCount
		}, 10*time.Second, 50*time.Millisecond).Should(BeEquivalentTo(1))
		Expect(getPod(p).Status.Phase).To(Equal(corev1.PodRunning))

		Expect(a.runtime.Exit(a.running(getPod(p).UID, "app"), 1)).To(Succeed())
		Eventually(phase(p), 10*time.Second, 50*time.Millisecond).Should(Equal(corev1.PodFailed))
		Consistently(func() string { return a.running(getPod(p).UID, "app") }, time.Second, 100*time.Millisecond).Should(BeEmpty())
	})
})
