package controllers

import (
	"context"
	"strings"
	"sync/atomic"
	"time"

	. "github.com/onsi/ginkgo/v2"
	. "github.com/onsi/gomega"
	corev1 "k8s.io/api/core/v1"

	"github.com/nodekeeper/nodekeeper/runtime/cri"
)

var _ = Describe("Probes (fake runtime)", func() {
	It("follows a readiness exec probe into the container's ready flag and the pod's Ready condition", func() {
		a := newPodAgent()
		var healthy atomic.Bool
		healthy.Store(true)
		a.runtime.SetExecHandler(func(_ context.Context, _ string, cmd []string) (*cri.ExecResult, error) {
			if strings.Join(cmd, " ") == "cat /tmp/ready" && !healthy.Load() {
				return &cri.ExecResult{ExitCode: 1, Stderr: []byte("no such file")}, nil
			}
			return &cri.ExecResult{}, nil
		})
		p := a.pod("ready", corev1.RestartPolicyAlways, func(p *corev1.Pod) {
			p.Spec.Containers[0].ReadinessProbe = &corev1.Probe{PeriodSeconds: 1, FailureThreshold: 1,
				ProbeHandler: corev1.ProbeHandler{Exec: &corev1.ExecAction{Command: []string{"cat", "/tmp/ready"}}}}
		})
		ready := func() corev1.ConditionStatus { return podCondition(getPod(p), corev1.PodReady) }
		Eventually(ready, 10*time.Second, 50*time.Millisecond).Should(Equal(corev1.ConditionTrue))
		healthy.Store(false)
		Eventually(ready, 10*time.Second, 50*time.Millisecond).Should(Equal(corev1.ConditionFalse))
		st := getPod(p).Status
		Expect(st.ContainerStatuses[0].Ready).To(BeFalse())
		Expect(st.ContainerStatuses[0].State.Running).NotTo(BeNil(), "readiness never restarts")
		Expect(podCondition(getPod(p), corev1.ContainersReady)).To(Equal(corev1.ConditionFalse))
		healthy.Store(true)
		Eventually(ready, 10*time.Second, 50*time.Millisecond).Should(Equal(corev1.ConditionTrue))
		Expect(gauge("prober_probe_total")).To(BeNumerically(">", 0))
	})

	It("restarts a container whose liveness probe fails, with Unhealthy and Killing events", func() {
		a := newPodAgent()
		a.runtime.SetExecHandler(func(_ context.Context, _ string, cmd []string) (*cri.ExecResult, error) {
			return &cri.ExecResult{ExitCode: 1, Stdout: []byte("dead")}, nil
		})
		p := a.pod("live", corev1.RestartPolicyAlways, func(p *corev1.Pod) {
			p.Spec.Containers[0].LivenessProbe = &corev1.Probe{PeriodSeconds: 1, FailureThreshold: 2,
				ProbeHandler: corev1.ProbeHandler{Exec: &corev1.ExecAction{Command: []string{"check"}}}}
		})
		Eventually(func() int32 {
			cs := getPod(p).Status.ContainerStatuses
			if len(cs) == 0 {
				return 0
			}
			return cs[0].RestartCount
		}, 20*time.Second, 100*time.Millisecond).Should(BeNumerically(">=", 1))
		Eventually(eventsIn(a.ns), 10*time.Second, 100*time.Millisecond).Should(ContainElements(
			ContainSubstring("Unhealthy: Liveness probe failed"),
			ContainSubstring("Killing: Container app failed liveness probe, will be restarted")))
	})
})
