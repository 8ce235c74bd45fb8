package controllers

import (
	"context"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"time"

	. "github.com/onsi/ginkgo/v2"
	. "github.com/onsi/gomega"
	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/types"
	runtimeapi "k8s.io/cri-api/pkg/apis/runtime/v1"
	"k8s.io/utils/ptr"

	"github.com/nodekeeper/nodekeeper/internal/podplan"
)

// sandboxes returns the configs of the pod's sandboxes in the fake runtime.
func (a *podAgent) sandboxes(uid types.UID) []*runtimeapi.PodSandboxConfig {
	sbs, err := a.runtime.ListPodSandbox(context.Background(), &runtimeapi.PodSandboxFilter{LabelSelector: map[string]string{podplan.LabelPodUID: string(uid)}})
	Expect(err).NotTo(HaveOccurred())
	var out []*runtimeapi.PodSandboxConfig
	for _, sb := range sbs {
		out = append(out, a.runtime.SandboxConfig(sb.Id))
	}
	return out
}

var _ = Describe("Pod sandbox config (fake runtime)", func() {
	It("cuts a pod name longer than 63 characters to a hostname the kernel takes, in the sandbox and /etc/hosts", func() {
		a := newPodAgent()
		name := strings.Repeat("a", 62) + "-" + strings.Repeat("b", 10) // cut at 63: ends with '-'
		p := a.pod(name, corev1.RestartPolicyAlways, nil)
		Eventually(phase(p), 10*time.Second, 50*time.Millisecond).Should(Equal(corev1.PodRunning))
		p = getPod(p)
		sbs := a.sandboxes(p.UID)
		Expect(sbs).To(HaveLen(1))
		Expect(sbs[0].Hostname).To(Equal(strings.Repeat("a", 62)))
		hosts, err := os.ReadFile(filepath.Join(a.cfg.RootDir, "pods", string(p.UID), "etc-hosts"))
		Expect(err).NotTo(HaveOccurred())
		Expect(string(hosts)).To(HaveSuffix(p.Status.PodIP + "\t" + strings.Repeat("a", 62) + "\n"))
	})

	It("keeps a pod whose FQDN is longer than 64 bytes Pending, with setHostnameAsFQDN, and says why as the kubelet does", func() {
		a := newPodAgent()
		p := a.pod("hostfqdnveryveryveryverylongforfqdntobemorethan64bytes", corev1.RestartPolicyAlways, func(p *corev1.Pod) {
			p.Spec.Subdomain = "t"
			p.Spec.SetHostnameAsFQDN = ptr.To(true)
		})
		fqdn := p.Name + ".t." + a.ns + ".svc.cluster.local"
		Eventually(eventsIn(a.ns), 10*time.Second, 50*time.Millisecond).Should(ContainElement(
			"FailedCreatePodSandBox: Failed to create pod sandbox: failed to construct FQDN from pod hostname and cluster domain, FQDN " +
				fqdn + " is too long (64 characters is the max, " + strconv.Itoa(len(fqdn)) + " characters requested)"))
		p = getPod(p)
		Expect(p.Status.Phase).To(Equal(corev1.PodPending))
		Expect(a.sandboxes(p.UID)).To(BeEmpty())

		// an FQDN that fits becomes the hostname
		q := a.pod("short", corev1.RestartPolicyAlways, func(p *corev1.Pod) {
			p.Spec.Subdomain = "t"
			p.Spec.SetHostnameAsFQDN = ptr.To(true)
		})
		Eventually(phase(q), 10*time.Second, 50*time.Millisecond).Should(Equal(corev1.PodRunning))
		Expect(a.sandboxes(getPod(q).UID)[0].Hostname).To(Equal("short.t." + a.ns + ".svc.cluster.local"))
	})

	It("runs a pod with a privileged container in a privileged sandbox, with the pod's sysctls and upstream's /proc masks", func() {
		a := newPodAgent()
		p := a.pod("priv", corev1.RestartPolicyAlways, func(p *corev1.Pod) {
			p.Spec.ShareProcessNamespace = ptr.To(true)
			p.Spec.SecurityContext = &corev1.PodSecurityContext{Sysctls: []corev1.Sysctl{{Name: "kernel.shm_rmid_forced", Value: "1"}},
				RunAsUser: ptr.To(int64(1000)), FSGroup: ptr.To(int64(3000)), SupplementalGroups: []int64{4000}}
			p.Spec.InitContainers = []corev1.Container{{Name: "setup", Image: busybox, Command: []string{"true"},
				SecurityContext: &corev1.SecurityContext{Privileged: ptr.To(true), RunAsUser: ptr.To(int64(0))}}}
		})
		var setup string
		Eventually(func() string { setup = a.running(getPod(p).UID, "setup"); return setup }, 10*time.Second, 50*time.Millisecond).ShouldNot(BeEmpty())
		Expect(a.runtime.Exit(setup, 0)).To(Succeed())
		Eventually(phase(p), 10*time.Second, 50*time.Millisecond).Should(Equal(corev1.PodRunning))
		p = getPod(p)
		sb := a.sandboxes(p.UID)[0]
		Expect(sb.Linux.SecurityContext.Privileged).To(BeTrue())
		Expect(sb.Linux.Sysctls).To(Equal(map[string]string{"kernel.shm_rmid_forced": "1"}))
		Expect(sb.Linux.SecurityContext.Seccomp.ProfileType).To(Equal(runtimeapi.SecurityProfile_RuntimeDefault))
		Expect(sb.Linux.SecurityContext.RunAsUser.GetValue()).To(Equal(int64(1000)))
		Expect(sb.Linux.SecurityContext.SupplementalGroups).To(Equal([]int64{3000, 4000}))
		Expect(sb.Linux.SecurityContext.NamespaceOptions.Pid).To(Equal(runtimeapi.NamespaceMode_POD))

		init := a.runtime.ContainerConfig(setup).Linux.SecurityContext
		Expect(init.Privileged).To(BeTrue())
		Expect(init.RunAsUser.GetValue()).To(Equal(int64(0)))
		app := a.runtime.ContainerConfig(a.running(p.UID, "app")).Linux.SecurityContext
		Expect(app.Privileged).To(BeFalse())
		Expect(app.RunAsUser.GetValue()).To(Equal(int64(1000)))
		Expect(app.SupplementalGroups).To(Equal([]int64{3000, 4000}))
		Expect(app.NamespaceOptions.Pid).To(Equal(runtimeapi.NamespaceMode_POD))
		Expect(app.MaskedPaths).To(ContainElements("/proc/kcore", "/proc/keys", "/proc/timer_list", "/sys/firmware"))
		Expect(app.ReadonlyPaths).To(Equal([]string{"/proc/bus", "/proc/fs", "/proc/irq", "/proc/sys", "/proc/sysrq-trigger"}))

		// without shareProcessNamespace each container has its own PID namespace
		q := a.pod("own-pids", corev1.RestartPolicyAlways, nil)
		Eventually(phase(q), 10*time.Second, 50*time.Millisecond).Should(Equal(corev1.PodRunning))
		q = getPod(q)
		Expect(a.sandboxes(q.UID)[0].Linux.SecurityContext.Privileged).To(BeFalse())
		Expect(a.runtime.ContainerConfig(a.running(q.UID, "app")).Linux.SecurityContext.NamespaceOptions.Pid).To(Equal(runtimeapi.NamespaceMode_CONTAINER))
	})
})
