package controllers

import (
	"context"
	"sync"
	"time"

	. "github.com/onsi/ginkgo/v2"
	. "github.com/onsi/gomega"
	corev1 "k8s.io/api/core/v1"
	"k8s.io/utils/ptr"

	"github.com/nodekeeper/nodekeeper/runtime/cri"
)

// execLog records when each exec command (by its first word) ran.
type execLog struct {
	mu    sync.Mutex
	calls map[string][]time.Time
}

func (l *execLog) add(cmd string) {
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.calls == nil {
		l.calls = map[string][]time.Time{}
	}
	l.calls[cmd] = append(l.calls[cmd], time.Now())
}

// between counts the calls of cmd in [from, to].
func (l *execLog) between(cmd string, from, to time.Time) int {
	l.mu.Lock()
	defer l.mu.Unlock()
	n := 0
	for _, t := range l.calls[cmd] {
		if !t.Before(from) && !t.After(to) {
			n++
		}
	}
	return n
}

var _ = Describe("PreStop hooks and probes (fake runtime)", func() {
	It("stops running liveness probes once one failed, while readiness goes on during the preStop hook", func() {
		a := newPodAgent()
		var log execLog
		var hookStart, hookEnd time.Time
		var hookMu sync.Mutex
		a.runtime.SetExecHandler(func(ctx context.Context, _ string, cmd []string) (*cri.ExecResult, error) {
			log.add(cmd[0])
			switch cmd[0] {
			case "live":
				return &cri.ExecResult{ExitCode: 1}, nil
			case "prestop":
				hookMu.Lock()
				hookStart = time.Now()
				hookMu.Unlock()
				time.Sleep(3 * time.Second)
				hookMu.Lock()
				hookEnd = time.Now()
				hookMu.Unlock()
			}
			return &cri.ExecResult{}, nil
		})
		p := a.pod("prestop-probes", corev1.RestartPolicyNever, func(p *corev1.Pod) {
			p.Spec.TerminationGracePeriodSeconds = ptr.To(int64(10))
			c := &p.Spec.Containers[0]
			c.LivenessProbe = &corev1.Probe{InitialDelaySeconds: 1, PeriodSeconds: 1, FailureThreshold: 1,
				ProbeHandler: corev1.ProbeHandler{Exec: &corev1.ExecAction{Command: []string{"live"}}}}
			c.ReadinessProbe = &corev1.Probe{PeriodSeconds: 1,
				ProbeHandler: corev1.ProbeHandler{Exec: &corev1.ExecAction{Command: []string{"ready"}}}}
			c.Lifecycle = &corev1.Lifecycle{PreStop: &corev1.LifecycleHandler{Exec: &corev1.ExecAction{Command: []string{"prestop"}}}}
		})
		// the liveness failure kills the container (after its preStop hook); Never: the pod ends
		Eventually(phase(p), 20*time.Second, 100*time.Millisecond).Should(Equal(corev1.PodFailed))
		hookMu.Lock()
		from, to := hookStart, hookEnd
		hookMu.Unlock()
		Expect(from.IsZero() || to.IsZero()).To(BeFalse(), "the preStop hook ran")
		Expect(log.between("live", from, to)).To(BeZero(), "no liveness probe while the preStop hook runs")
		Expect(log.between("ready", from, to)).To(BeNumerically(">=", 1), "readiness probes go on while the preStop hook runs")
	})

	It("waits for a preStop exec hook at most the grace period, the hook itself having no timeout", func() {
		a := newPodAgent()
		deadlines := make(chan time.Duration, 1)
		release := make(chan struct{})
		defer close(release)
		a.runtime.SetExecHandler(func(ctx context.Context, _ string, cmd []string) (*cri.ExecResult, error) {
			if cmd[0] == "hang" {
				d, ok := ctx.Deadline()
				left := time.Duration(-1)
				if ok {
					left = time.Until(d)
				}
				deadlines <- left
				select {
				case <-ctx.Done():
				case <-release:
				}
			}
			return &cri.ExecResult{}, nil
		})
		p := a.pod("prestop-hangs", corev1.RestartPolicyAlways, func(p *corev1.Pod) {
			p.Spec.TerminationGracePeriodSeconds = ptr.To(int64(2))
			p.Spec.Containers[0].Lifecycle = &corev1.Lifecycle{PreStop: &corev1.LifecycleHandler{Exec: &corev1.ExecAction{Command: []string{"hang"}}}}
		})
		p = getPod(p)
		Eventually(func() string { return a.running(p.UID, "app") }, 10*time.Second, 50*time.Millisecond).ShouldNot(BeEmpty())
		id := a.running(p.UID, "app")
		start := time.Now()
		Expect(k8sClient.Delete(context.Background(), p)).To(Succeed())
		var left time.Duration
		Eventually(deadlines, 10*time.Second).Should(Receive(&left))
		// the exec call is not cut at the grace period (upstream runs it with timeout 0)
		Expect(left).To(BeNumerically(">", 30*time.Second), "the hook's exec is not bounded by the grace period")
		Eventually(func() string { return a.running(p.UID, "app") }, 10*time.Second, 50*time.Millisecond).Should(BeEmpty())
		Expect(time.Since(start)).To(BeNumerically(">=", 2*time.Second), "the stop waited for the hook within the grace period")
		Expect(time.Since(start)).To(BeNumerically("<", 8*time.Second), "and no longer")
		_ = id
	})

	It("rejects a pod asking for an AppArmor profile when the host has no AppArmor, as the kubelet's admission", func() {
		a := newPodAgent()
		for _, byField := range []bool{false, true} {
			name := "apparmor-annotation"
			if byField {
				name = "apparmor-field"
			}
			p := a.pod(name, corev1.RestartPolicyNever, func(p *corev1.Pod) {
				if byField {
					p.Spec.Containers[0].SecurityContext = &corev1.SecurityContext{AppArmorProfile: &corev1.AppArmorProfile{Type: corev1.AppArmorProfileTypeRuntimeDefault}}
				} else {
					p.Annotations = map[string]string{corev1.DeprecatedAppArmorBetaContainerAnnotationKeyPrefix + "app": "runtime/default"}
				}
			})
			Eventually(phase(p), 10*time.Second, 50*time.Millisecond).Should(Equal(corev1.PodFailed))
			st := getPod(p).Status
			Expect(st.Reason).To(Equal("AppArmor"))
			Expect(st.Message).To(Equal("Pod was rejected: Cannot enforce AppArmor: AppArmor is not enabled on the host"))
			Expect(st.ContainerStatuses).To(BeEmpty(), "nothing ran")
			Consistently(func() int { return len(a.containers(getPod(p).UID, "app")) }, time.Second, 100*time.Millisecond).Should(BeZero())
			Expect(getPod(p).Status.ContainerStatuses).To(BeEmpty(), "the rejected status stays")
		}
		Eventually(eventsIn(a.ns), 5*time.Second, 100*time.Millisecond).Should(ContainElement(
			"AppArmor: Cannot enforce AppArmor: AppArmor is not enabled on the host"))
	})
})
