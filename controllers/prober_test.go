package controllers

import (
	"context"
	"errors"
	"net"
	"strings"
	"sync/atomic"
	"time"

	. "github.com/onsi/ginkgo/v2"
	. "github.com/onsi/gomega"
	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/util/intstr"

	"github.com/nodekeeper/nodekeeper/internal/prober"
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

	// test/fault's bad-probe pod: an exec liveness probe of a binary the image does not
	// have (the runtime cannot start it: upstream's exec prober returns probe.Unknown with
	// the error) and a readiness httpGet on a closed port. As the kubelet: every period an
	// "errored" Unhealthy event, the result thrown away, so the container is never
	// restarted; readiness fails with "connection refused" and the pod stays not Ready.
	It("keeps a container whose exec liveness probe cannot start running and unready, with Unhealthy events", func() {
		a := newPodAgent()
		var execs atomic.Int32
		a.runtime.SetExecHandler(func(_ context.Context, _ string, cmd []string) (*cri.ExecResult, error) {
			execs.Add(1)
			return nil, errors.New(`failed to exec in container: failed to start exec "x": OCI runtime exec failed: exec failed: unable to start container process: exec: "/no/such/probe": stat /no/such/probe: no such file or directory: unknown`)
		})
		l, err := net.Listen("tcp", "127.0.0.1:0")
		Expect(err).NotTo(HaveOccurred())
		closed := l.Addr().(*net.TCPAddr).Port
		Expect(l.Close()).To(Succeed())
		p := a.pod("bad-probe", corev1.RestartPolicyAlways, func(p *corev1.Pod) {
			c := &p.Spec.Containers[0]
			c.LivenessProbe = &corev1.Probe{PeriodSeconds: 1, FailureThreshold: 1,
				ProbeHandler: corev1.ProbeHandler{Exec: &corev1.ExecAction{Command: []string{"/no/such/probe"}}}}
			c.ReadinessProbe = &corev1.Probe{PeriodSeconds: 1,
				ProbeHandler: corev1.ProbeHandler{HTTPGet: &corev1.HTTPGetAction{Host: "127.0.0.1", Path: "/", Port: intstr.FromInt32(int32(closed))}}}
		})
		Eventually(eventsIn(a.ns), 20*time.Second, 100*time.Millisecond).Should(ContainElements(
			ContainSubstring(`Unhealthy: Liveness probe errored and resulted in unknown state: `),
			And(ContainSubstring("Unhealthy: Readiness probe failed: "), ContainSubstring("connection refused"))))
		// two periods of errors (3 tries each) with failureThreshold 1: a prober counting
		// errors as failures would have restarted the container by now
		Eventually(execs.Load, 20*time.Second, 100*time.Millisecond).Should(BeNumerically(">=", 2*prober.MaxRetries))
		st := getPod(p).Status
		Expect(st.ContainerStatuses).To(HaveLen(1))
		Expect(st.ContainerStatuses[0].State.Running).NotTo(BeNil(), "%+v", st.ContainerStatuses[0].State)
		Expect(st.ContainerStatuses[0].RestartCount).To(BeZero())
		Expect(st.ContainerStatuses[0].Ready).To(BeFalse())
		Expect(podCondition(getPod(p), corev1.PodReady)).To(Equal(corev1.ConditionFalse))
		Expect(eventsIn(a.ns)()).NotTo(ContainElement(HavePrefix("Killing:")))
	})
})
