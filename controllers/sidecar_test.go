package controllers

import (
	"context"
	"sync"
	"sync/atomic"
	"time"

	. "github.com/onsi/ginkgo/v2"
	. "github.com/onsi/gomega"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/util/rand"
	"k8s.io/utils/ptr"
	ctrl "sigs.k8s.io/controller-runtime"

	"github.com/nodekeeper/nodekeeper/api/v1alpha1"
	"github.com/nodekeeper/nodekeeper/runtime/cri"
	"github.com/nodekeeper/nodekeeper/runtime/cri/fake"
)

func sidecar(name string, mutate func(*corev1.Container)) corev1.Container {
	c := corev1.Container{Name: name, Image: busybox, Command: []string{"sleep", "3600"},
		RestartPolicy: ptr.To(corev1.ContainerRestartPolicyAlways)}
	if mutate != nil {
		mutate(&c)
	}
	return c
}

func execProbe(cmd string, mutate func(*corev1.Probe)) *corev1.Probe {
	p := &corev1.Probe{PeriodSeconds: 1, FailureThreshold: 1,
		ProbeHandler: corev1.ProbeHandler{Exec: &corev1.ExecAction{Command: []string{cmd}}}}
	if mutate != nil {
		mutate(p)
	}
	return p
}

// initStatus is the status of the pod's init container name.
func initStatus(p *corev1.Pod, name string) corev1.ContainerStatus {
	for _, cs := range getPod(p).Status.InitContainerStatuses {
		if cs.Name == name {
			return cs
		}
	}
	return corev1.ContainerStatus{}
}

func podCond(p *corev1.Pod, t corev1.PodConditionType) corev1.PodCondition {
	for _, c := range getPod(p).Status.Conditions {
		if c.Type == t {
			return c
		}
	}
	return corev1.PodCondition{}
}

// stopRecorder is the fake runtime, noting the order in which containers are stopped.
type stopRecorder struct {
	*fake.Runtime
	mu      sync.Mutex
	stopped []string
	at      []time.Time     // when each was stopped
	timeout []time.Duration // with which timeout
	// ignoreTerm: the processes ignore SIGTERM, a stop takes its whole timeout
	ignoreTerm bool
}

func (s *stopRecorder) StopContainer(ctx context.Context, id string, timeout time.Duration) error {
	st, err := s.ContainerStatus(ctx, id)
	if err == nil && st.GetState().String() == "CONTAINER_RUNNING" {
		s.mu.Lock()
		s.stopped = append(s.stopped, st.GetMetadata().GetName())
		s.at = append(s.at, time.Now())
		s.timeout = append(s.timeout, timeout)
		ignore := s.ignoreTerm
		s.mu.Unlock()
		if ignore {
			time.Sleep(timeout)
		}
	}
	return s.Runtime.StopContainer(ctx, id, timeout)
}

func (s *stopRecorder) order() []string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return append([]string(nil), s.stopped...)
}

var _ = Describe("Restartable init containers (sidecars) on the fake runtime", func() {
	It("starts what follows a sidecar only once its startup probe passed", func() {
		a := newPodAgent()
		var up atomic.Bool
		a.runtime.SetExecHandler(func(_ context.Context, _ string, cmd []string) (*cri.ExecResult, error) {
			if cmd[0] == "startup" && !up.Load() {
				return &cri.ExecResult{ExitCode: 1}, nil
			}
			return &cri.ExecResult{}, nil
		})
		p := a.pod("sc-startup", corev1.RestartPolicyAlways, func(p *corev1.Pod) {
			p.Spec.InitContainers = []corev1.Container{
				sidecar("s1", func(c *corev1.Container) {
					c.StartupProbe = execProbe("startup", func(p *corev1.Probe) { p.FailureThreshold = 1000 })
				}),
				{Name: "i1", Image: busybox, Command: []string{"true"}},
			}
		})
		p = getPod(p)
		Eventually(func() string { return a.running(p.UID, "s1") }, 10*time.Second, 50*time.Millisecond).ShouldNot(BeEmpty())
		Consistently(func() int { return len(a.containers(p.UID, "i1")) + len(a.containers(p.UID, "app")) }, 2*time.Second, 100*time.Millisecond).Should(BeZero())
		Expect(getPod(p).Status.Phase).To(Equal(corev1.PodPending))
		Expect(initStatus(p, "s1").Started).To(Equal(ptr.To(false)))
		Expect(podCond(p, corev1.PodInitialized).Message).To(Equal("containers with incomplete status: [s1 i1]"))

		up.Store(true)
		var id string
		Eventually(func() string { id = a.running(p.UID, "i1"); return id }, 10*time.Second, 50*time.Millisecond).ShouldNot(BeEmpty())
		// the runtime runs i1 before the status saying so is written
		Eventually(func() *bool { return initStatus(p, "s1").Started }, 10*time.Second, 50*time.Millisecond).Should(Equal(ptr.To(true)))
		Expect(a.runtime.Exit(id, 0)).To(Succeed())
		Eventually(phase(p), 10*time.Second, 50*time.Millisecond).Should(Equal(corev1.PodRunning))
		Eventually(func() corev1.ConditionStatus { return podCond(p, corev1.PodReady).Status }, 10*time.Second, 50*time.Millisecond).
			Should(Equal(corev1.ConditionTrue))
		Expect(podCond(p, corev1.PodInitialized).Status).To(Equal(corev1.ConditionTrue))
	})

	It("restarts a sidecar that fails its liveness probe, with upstream's Killing event, and leaves the app running", func() {
		a := newPodAgent()
		a.runtime.SetExecHandler(func(_ context.Context, _ string, cmd []string) (*cri.ExecResult, error) {
			if cmd[0] == "live" {
				return &cri.ExecResult{ExitCode: 1}, nil
			}
			return &cri.ExecResult{}, nil
		})
		p := a.pod("sc-liveness", corev1.RestartPolicyAlways, func(p *corev1.Pod) {
			p.Spec.InitContainers = []corev1.Container{sidecar("s1", func(c *corev1.Container) {
				c.LivenessProbe = execProbe("live", func(p *corev1.Probe) { p.InitialDelaySeconds = 1 })
			})}
		})
		Eventually(func() int32 { return initStatus(p, "s1").RestartCount }, 20*time.Second, 100*time.Millisecond).Should(BeNumerically(">=", 1))
		Eventually(eventsIn(a.ns), 10*time.Second, 100*time.Millisecond).Should(ContainElement("Killing: Init container s1 failed liveness probe"))
		st := getPod(p).Status
		Expect(st.ContainerStatuses[0].RestartCount).To(BeZero())
		Expect(st.ContainerStatuses[0].State.Running).NotTo(BeNil())
	})

	It("restarts a sidecar that fails its startup probe", func() {
		a := newPodAgent()
		a.runtime.SetExecHandler(func(_ context.Context, _ string, cmd []string) (*cri.ExecResult, error) {
			return &cri.ExecResult{ExitCode: 1}, nil
		})
		p := a.pod("sc-startup-fail", corev1.RestartPolicyAlways, func(p *corev1.Pod) {
			p.Spec.InitContainers = []corev1.Container{sidecar("s1", func(c *corev1.Container) { c.StartupProbe = execProbe("startup", nil) })}
		})
		Eventually(func() int32 { return initStatus(p, "s1").RestartCount }, 20*time.Second, 100*time.Millisecond).Should(BeNumerically(">=", 1))
		Eventually(eventsIn(a.ns), 10*time.Second, 100*time.Millisecond).Should(ContainElement("Killing: Init container s1 failed startup probe"))
		Expect(a.containers(getPod(p).UID, "app")).To(BeEmpty())
	})

	It("ends a Never pod Succeeded when its regular containers completed, stopping the sidecar", func() {
		a := newPodAgent()
		p := a.pod("sc-complete", corev1.RestartPolicyNever, func(p *corev1.Pod) {
			p.Spec.InitContainers = []corev1.Container{sidecar("s1", nil)}
		})
		p = getPod(p)
		var id string
		Eventually(func() string { id = a.running(p.UID, "app"); return id }, 10*time.Second, 50*time.Millisecond).ShouldNot(BeEmpty())
		Expect(a.runtime.Exit(id, 0)).To(Succeed())
		Eventually(phase(p), 10*time.Second, 50*time.Millisecond).Should(Equal(corev1.PodSucceeded))
		Eventually(func() string { return a.running(p.UID, "s1") }, 10*time.Second, 50*time.Millisecond).Should(BeEmpty())
		Expect(podCond(p, corev1.PodInitialized).Status).To(Equal(corev1.ConditionTrue))
	})

	It("makes the pod Ready only when its sidecars are ready", func() {
		a := newPodAgent()
		var ok atomic.Bool
		a.runtime.SetExecHandler(func(_ context.Context, _ string, cmd []string) (*cri.ExecResult, error) {
			if cmd[0] == "ready" && !ok.Load() {
				return &cri.ExecResult{ExitCode: 1}, nil
			}
			return &cri.ExecResult{}, nil
		})
		p := a.pod("sc-ready", corev1.RestartPolicyAlways, func(p *corev1.Pod) {
			p.Spec.InitContainers = []corev1.Container{sidecar("s1", func(c *corev1.Container) { c.ReadinessProbe = execProbe("ready", nil) })}
		})
		Eventually(phase(p), 10*time.Second, 50*time.Millisecond).Should(Equal(corev1.PodRunning))
		Eventually(func() string { return podCond(p, corev1.ContainersReady).Message }, 10*time.Second, 50*time.Millisecond).
			Should(Equal("containers with unready status: [s1]"))
		Expect(podCond(p, corev1.PodReady).Status).To(Equal(corev1.ConditionFalse))
		Expect(getPod(p).Status.ContainerStatuses[0].Ready).To(BeTrue())
		ok.Store(true)
		Eventually(func() corev1.ConditionStatus { return podCond(p, corev1.PodReady).Status }, 10*time.Second, 50*time.Millisecond).
			Should(Equal(corev1.ConditionTrue))
		Expect(initStatus(p, "s1").Ready).To(BeTrue())
	})

	It("stops sidecars after the app containers, the last sidecar first", func() {
		node, ns := "sc-"+rand.String(5), "sc-"+rand.String(5)
		Expect(k8sClient.Create(context.Background(), &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: ns}})).To(Succeed())
		rt := &stopRecorder{Runtime: fake.New()}
		rt.LoadImage(busybox, 1<<20)
		// the app's preStop hook takes a while: without the ordering the sidecars would
		// be stopped first
		rt.SetExecHandler(func(ctx context.Context, _ string, cmd []string) (*cri.ExecResult, error) {
			if cmd[0] == "slow" {
				select {
				case <-time.After(time.Second):
				case <-ctx.Done():
				}
			}
			return &cri.ExecResult{}, nil
		})
		cfg := &v1alpha1.AgentConfiguration{NodeName: node, RootDir: GinkgoT().TempDir()}
		setTestDefaults(cfg)
		startManager(func(mgr ctrl.Manager) error {
			return (&PodReconciler{Client: mgr.GetClient(), Runtime: rt, Recorder: mgr.GetEventRecorderFor("kubelet"), Config: cfg,
				HostIP: "192.0.2.10", RelistPeriod: 100 * time.Millisecond}).SetupWithManager(mgr)
		})
		p := &corev1.Pod{ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: "sc-order"},
			Spec: corev1.PodSpec{NodeName: node, TerminationGracePeriodSeconds: ptr.To[int64](30),
				InitContainers: []corev1.Container{sidecar("s1", nil), sidecar("s2", nil)},
				Containers: []corev1.Container{{Name: "app", Image: busybox, Command: []string{"sleep", "3600"},
					Lifecycle: &corev1.Lifecycle{PreStop: &corev1.LifecycleHandler{Exec: &corev1.ExecAction{Command: []string{"slow"}}}}}}}}
		Expect(k8sClient.Create(context.Background(), p)).To(Succeed())
		Eventually(phase(p), 10*time.Second, 50*time.Millisecond).Should(Equal(corev1.PodRunning))
		Expect(k8sClient.Delete(context.Background(), p)).To(Succeed())
		Eventually(gone(p), 20*time.Second, 100*time.Millisecond).Should(BeTrue())
		Expect(rt.order()).To(Equal([]string{"app", "s2", "s1"}))
	})

	It("stops sidecars whose preStop hooks outlive the grace period together, each with the 2s minimum", func() {
		node, ns := "sc-"+rand.String(5), "sc-"+rand.String(5)
		Expect(k8sClient.Create(context.Background(), &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: ns}})).To(Succeed())
		rt := &stopRecorder{Runtime: fake.New(), ignoreTerm: true}
		rt.LoadImage(busybox, 1<<20)
		release := make(chan struct{})
		defer close(release)
		rt.SetExecHandler(func(ctx context.Context, _ string, cmd []string) (*cri.ExecResult, error) {
			if cmd[0] == "hang" { // a hook that loops forever: it ends with its container
				select {
				case <-release:
				case <-ctx.Done():
				}
			}
			return &cri.ExecResult{}, nil
		})
		cfg := &v1alpha1.AgentConfiguration{NodeName: node, RootDir: GinkgoT().TempDir()}
		v1alpha1.SetDefaults(cfg)
		startManager(func(mgr ctrl.Manager) error {
			return (&PodReconciler{Client: mgr.GetClient(), Runtime: rt, Recorder: mgr.GetEventRecorderFor("kubelet"), Config: cfg,
				HostIP: "192.0.2.10", RelistPeriod: 100 * time.Millisecond}).SetupWithManager(mgr)
		})
		hang := func(c *corev1.Container) {
			c.Lifecycle = &corev1.Lifecycle{PreStop: &corev1.LifecycleHandler{Exec: &corev1.ExecAction{Command: []string{"hang"}}}}
		}
		p := &corev1.Pod{ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: "sc-hang"},
			Spec: corev1.PodSpec{NodeName: node, TerminationGracePeriodSeconds: ptr.To[int64](2),
				InitContainers: []corev1.Container{sidecar("s1", hang), sidecar("s2", hang), sidecar("s3", hang)},
				Containers:     []corev1.Container{{Name: "app", Image: busybox, Command: []string{"sleep", "3600"}}}}}
		Expect(k8sClient.Create(context.Background(), p)).To(Succeed())
		Eventually(phase(p), 10*time.Second, 50*time.Millisecond).Should(Equal(corev1.PodRunning))
		start := time.Now()
		Expect(k8sClient.Delete(context.Background(), p)).To(Succeed())
		Eventually(gone(p), 20*time.Second, 100*time.Millisecond).Should(BeTrue())
		rt.mu.Lock()
		defer rt.mu.Unlock()
		Expect(rt.stopped).To(HaveLen(4))
		var first, last time.Time
		for i, name := range rt.stopped {
			if name == "app" {
				continue
			}
			// the hooks used the whole grace period: no wait for the turn is left
			Expect(rt.timeout[i]).To(Equal(2*time.Second), "%s stopped with the minimum", name)
			Expect(rt.at[i].Sub(start)).To(BeNumerically(">=", 2*time.Second), "%s waited for its hook the grace period", name)
			if first.IsZero() || rt.at[i].Before(first) {
				first = rt.at[i]
			}
			if rt.at[i].After(last) {
				last = rt.at[i]
			}
		}
		Expect(last.Sub(first)).To(BeNumerically("<", 500*time.Millisecond), "the sidecars are stopped together")
	})
})
