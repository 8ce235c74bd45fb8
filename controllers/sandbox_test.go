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
})
