package controllers

import (
	"context"
	"os"
	"path/filepath"
	"strings"
	"sync/atomic"
	"time"

	. "github.com/onsi/ginkgo/v2"
	. "github.com/onsi/gomega"
	corev1 "k8s.io/api/core/v1"
	"k8s.io/utils/ptr"

	"github.com/nodekeeper/nodekeeper/runtime/cri"
)

func restarts(p *corev1.Pod) func() int32 {
	return func() int32 {
		cs := getPod(p).Status.ContainerStatuses
		if len(cs) == 0 {
			return 0
		}
		return cs[0].RestartCount
	}
}

var _ = Describe("Lifecycle hooks, probe grace periods and /etc/hosts (fake runtime)", func() {
	It("runs a postStart exec hook after the container starts", func() {
		a := newPodAgent()
		var ran atomic.Int32
		a.runtime.SetExecHandler(func(_ context.Context, _ string, cmd []string) (*cri.ExecResult, error) {
			if strings.Join(cmd, " ") == "touch /started" {
				ran.Add(1)
			}
			return &cri.ExecResult{}, nil
		})
		p := a.pod("hook-ok", corev1.RestartPolicyAlways, func(p *corev1.Pod) {
			p.Spec.Containers[0].Lifecycle = &corev1.Lifecycle{PostStart: &corev1.LifecycleHandler{
				Exec: &corev1.ExecAction{Command: []string{"touch", "/started"}}}}
		})
		Eventually(phase(p), 10*time.Second, 50*time.Millisecond).Should(Equal(corev1.PodRunning))
		Expect(ran.Load()).To(Equal(int32(1)))
		Consistently(restarts(p), 2*time.Second, 200*time.Millisecond).Should(BeZero())
	})

	It("kills a container whose postStart hook fails, with upstream's FailedPostStartHook and Killing events, and restarts it", func() {
		a := newPodAgent()
		a.runtime.SetExecHandler(func(_ context.Context, _ string, cmd []string) (*cri.ExecResult, error) {
			return &cri.ExecResult{ExitCode: 3, Stdout: []byte("out"), Stderr: []byte("bad")}, nil
		})
		p := a.pod("hook-fail", corev1.RestartPolicyAlways, func(p *corev1.Pod) {
			p.Spec.Containers[0].Lifecycle = &corev1.Lifecycle{PostStart: &corev1.LifecycleHandler{
				Exec: &corev1.ExecAction{Command: []string{"sh", "-c", "exit 3"}}}}
		})
		Eventually(restarts(p), 20*time.Second, 100*time.Millisecond).Should(BeNumerically(">=", 1))
		p = getPod(p)
		want := `FailedPostStartHook: Exec lifecycle hook ([sh -c exit 3]) for Container "app" in Pod "hook-fail_` + a.ns + `(` + string(p.UID) + `)" failed - error: command 'sh -c exit 3' exited with 3: bad, message: "outbad"`
		Eventually(eventsIn(a.ns), 10*time.Second, 100*time.Millisecond).Should(ContainElements(want, "Killing: FailedPostStartHook"))
		Expect(p.Status.ContainerStatuses[0].LastTerminationState.Terminated).NotTo(BeNil())
	})

	It("kills with the probe's own terminationGracePeriodSeconds and names a failed startup probe", func() {
		a := newPodAgent()
		a.runtime.SetExecHandler(func(_ context.Context, _ string, _ []string) (*cri.ExecResult, error) {
			return &cri.ExecResult{ExitCode: 1}, nil
		})
		// the pod's grace period (0) would kill the fake's container at once (137); the
		// probe's 1s ends it with SIGTERM (143)
		p := a.pod("startup", corev1.RestartPolicyAlways, func(p *corev1.Pod) {
			p.Spec.TerminationGracePeriodSeconds = ptr.To[int64](0)
			p.Spec.Containers[0].StartupProbe = &corev1.Probe{PeriodSeconds: 1, FailureThreshold: 1,
				TerminationGracePeriodSeconds: ptr.To[int64](1),
				ProbeHandler:                  corev1.ProbeHandler{Exec: &corev1.ExecAction{Command: []string{"check"}}}}
		})
		Eventually(restarts(p), 20*time.Second, 100*time.Millisecond).Should(BeNumerically(">=", 1))
		last := getPod(p).Status.ContainerStatuses[0].LastTerminationState.Terminated
		Expect(last).NotTo(BeNil())
		Expect(last.ExitCode).To(Equal(int32(143)))
		Eventually(eventsIn(a.ns), 10*time.Second, 100*time.Millisecond).Should(ContainElements(
			ContainSubstring("Unhealthy: Startup probe failed"),
			"Killing: Container app failed startup probe, will be restarted"))
	})

	It("mounts a kubelet-managed /etc/hosts with the pod's name and hostAliases", func() {
		a := newPodAgent()
		p := a.pod("hosts", corev1.RestartPolicyAlways, func(p *corev1.Pod) {
			p.Spec.Hostname, p.Spec.Subdomain = "web-0", "web"
			p.Spec.HostAliases = []corev1.HostAlias{{IP: "10.1.2.3", Hostnames: []string{"foo.local", "bar.local"}}}
		})
		Eventually(phase(p), 10*time.Second, 50*time.Millisecond).Should(Equal(corev1.PodRunning))
		p = getPod(p)
		id := a.running(p.UID, "app")
		st, err := a.runtime.ContainerStatus(context.Background(), id)
		Expect(err).NotTo(HaveOccurred())
		var host string
		for _, m := range st.Mounts {
			if m.ContainerPath == "/etc/hosts" {
				host = m.HostPath
			}
		}
		Expect(host).To(Equal(filepath.Join(a.cfg.RootDir, "pods", string(p.UID), "etc-hosts")))
		b, err := os.ReadFile(host)
		Expect(err).NotTo(HaveOccurred())
		Expect(string(b)).To(HavePrefix("# Kubernetes-managed hosts file.\n127.0.0.1\tlocalhost\n"))
		Expect(string(b)).To(ContainSubstring(p.Status.PodIP + "\tweb-0.web." + a.ns + ".svc.cluster.local\tweb-0\n"))
		Expect(string(b)).To(HaveSuffix("\n# Entries added by HostAliases.\n10.1.2.3\tfoo.local\tbar.local\n"))
	})
})
