package controllers

import (
	"time"

	. "github.com/onsi/ginkgo/v2"
	. "github.com/onsi/gomega"
	corev1 "k8s.io/api/core/v1"
	runtimeapi "k8s.io/cri-api/pkg/apis/runtime/v1"
	"k8s.io/utils/ptr"
)

var _ = Describe("Recursive read-only mounts (fake runtime)", func() {
	rroPod := func(a *podAgent, name string, mounts ...corev1.VolumeMount) *corev1.Pod {
		return a.pod(name, corev1.RestartPolicyAlways, func(p *corev1.Pod) {
			p.Spec.Volumes = []corev1.Volume{{Name: "mnt", VolumeSource: corev1.VolumeSource{EmptyDir: &corev1.EmptyDirVolumeSource{}}}}
			p.Spec.Containers[0].VolumeMounts = mounts
		})
	}
	mixed := []corev1.VolumeMount{
		{Name: "mnt", MountPath: "/mnt-rro-if-possible", ReadOnly: true, RecursiveReadOnly: ptr.To(corev1.RecursiveReadOnlyIfPossible)},
		{Name: "mnt", MountPath: "/mnt-rro-disabled", ReadOnly: true, RecursiveReadOnly: ptr.To(corev1.RecursiveReadOnlyDisabled)},
		{Name: "mnt", MountPath: "/mnt-ro", ReadOnly: true},
		{Name: "mnt", MountPath: "/mnt-rw"},
	}
	criMounts := func(a *podAgent, p *corev1.Pod) map[string]bool {
		out := map[string]bool{}
		for _, m := range a.runtime.ContainerConfig(a.running(p.UID, "app")).Mounts {
			out[m.ContainerPath] = m.RecursiveReadOnly
		}
		return out
	}
	statusModes := func(p *corev1.Pod) map[string]string {
		out := map[string]string{}
		for _, m := range getPod(p).Status.ContainerStatuses[0].VolumeMounts {
			mode := "<nil>"
			if m.RecursiveReadOnly != nil {
				mode = string(*m.RecursiveReadOnly)
			}
			out[m.MountPath] = mode
		}
		return out
	}

	It("on a runtime without them (containerd 1.6): rejects Enabled with upstream's message, and IfPossible falls back to read-only", func() {
		a := newPodAgent()
		bad := rroPod(a, "rro-enabled", corev1.VolumeMount{Name: "mnt", MountPath: "/mnt", ReadOnly: true, RecursiveReadOnly: ptr.To(corev1.RecursiveReadOnlyEnabled)})
		Eventually(func() string {
			cs := getPod(bad).Status.ContainerStatuses
			if len(cs) == 0 || cs[0].State.Waiting == nil {
				return ""
			}
			return cs[0].State.Waiting.Reason + ": " + cs[0].State.Waiting.Message
		}, 10*time.Second, 50*time.Millisecond).Should(Equal("CreateContainerConfigError: failed to resolve recursive read-only mode: " +
			`volume "mnt" requested recursive read-only mode, but it is not supported by the runtime`))

		p := rroPod(a, "rro-fallback", mixed...)
		Eventually(phase(p), 10*time.Second, 50*time.Millisecond).Should(Equal(corev1.PodRunning))
		Expect(criMounts(a, getPod(p))).To(Equal(map[string]bool{"/mnt-rro-if-possible": false, "/mnt-rro-disabled": false, "/mnt-ro": false,
			"/mnt-rw": false, "/etc/hosts": false, "/dev/termination-log": false}))
		Expect(statusModes(p)).To(Equal(map[string]string{"/mnt-rro-if-possible": "Disabled", "/mnt-rro-disabled": "Disabled", "/mnt-ro": "Disabled",
			"/mnt-rw": "<nil>"}))
	})

	It("on a runtime that has them: makes Enabled and IfPossible mounts recursively read-only and says so in the status", func() {
		a := newPodAgent()
		a.runtime.SetRuntimeHandlers(&runtimeapi.RuntimeHandler{Name: "", Features: &runtimeapi.RuntimeHandlerFeatures{RecursiveReadOnlyMounts: true}})
		p := rroPod(a, "rro", append([]corev1.VolumeMount{{Name: "mnt", MountPath: "/mnt-rro", ReadOnly: true,
			RecursiveReadOnly: ptr.To(corev1.RecursiveReadOnlyEnabled)}}, mixed...)...)
		Eventually(phase(p), 10*time.Second, 50*time.Millisecond).Should(Equal(corev1.PodRunning))
		m := criMounts(a, getPod(p))
		Expect(m).To(HaveKeyWithValue("/mnt-rro", true))
		Expect(m).To(HaveKeyWithValue("/mnt-rro-if-possible", true))
		Expect(m).To(HaveKeyWithValue("/mnt-ro", false))
		Expect(statusModes(p)).To(Equal(map[string]string{"/mnt-rro": "Enabled", "/mnt-rro-if-possible": "Enabled", "/mnt-rro-disabled": "Disabled",
			"/mnt-ro": "Disabled", "/mnt-rw": "<nil>"}))
	})
})
