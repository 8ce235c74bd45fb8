package controllers

import (
	"context"
	"os"
	"path/filepath"
	"time"

	. "github.com/onsi/ginkgo/v2"
	. "github.com/onsi/gomega"
	"golang.org/x/sys/unix"
	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/api/resource"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	runtimeapi "k8s.io/cri-api/pkg/apis/runtime/v1"
	"k8s.io/utils/ptr"
	"sigs.k8s.io/controller-runtime/pkg/client"

	"github.com/nodekeeper/nodekeeper/internal/podplan"
)

var _ = Describe("Volumes (fake runtime)", func() {
	It("writes configMap, secret (tmpfs), downwardAPI and emptyDir volumes, follows updates, and removes them with the pod", func() {
		if os.Geteuid() != 0 {
			Skip("tmpfs mounts need root")
		}
		ctx := context.Background()
		a := newPodAgent()
		Expect(k8sClient.Create(ctx, &corev1.ConfigMap{ObjectMeta: metav1.ObjectMeta{Namespace: a.ns, Name: "cfg"},
			Data: map[string]string{"app.conf": "v1", "other": "x"}})).To(Succeed())
		Expect(k8sClient.Create(ctx, &corev1.Secret{ObjectMeta: metav1.ObjectMeta{Namespace: a.ns, Name: "sec"},
			Data: map[string][]byte{"password": []byte("s3cret")}})).To(Succeed())
		p := a.pod("vols", corev1.RestartPolicyAlways, func(p *corev1.Pod) {
			p.Labels = map[string]string{"tier": "web"}
			p.Spec.Volumes = []corev1.Volume{
				{Name: "cfg", VolumeSource: corev1.VolumeSource{ConfigMap: &corev1.ConfigMapVolumeSource{
					LocalObjectReference: corev1.LocalObjectReference{Name: "cfg"}, Items: []corev1.KeyToPath{{Key: "app.conf", Path: "conf/app.conf", Mode: ptr.To(int32(0o640))}}}}},
				{Name: "sec", VolumeSource: corev1.VolumeSource{Secret: &corev1.SecretVolumeSource{SecretName: "sec", DefaultMode: ptr.To(int32(0o400))}}},
				{Name: "info", VolumeSource: corev1.VolumeSource{DownwardAPI: &corev1.DownwardAPIVolumeSource{Items: []corev1.DownwardAPIVolumeFile{
					{Path: "labels", FieldRef: &corev1.ObjectFieldSelector{FieldPath: "metadata.labels"}},
					{Path: "name", FieldRef: &corev1.ObjectFieldSelector{FieldPath: "metadata.name"}}}}}},
				{Name: "scratch", VolumeSource: corev1.VolumeSource{EmptyDir: &corev1.EmptyDirVolumeSource{Medium: corev1.StorageMediumMemory}}},
			}
			p.Spec.Containers[0].VolumeMounts = []corev1.VolumeMount{{Name: "cfg", MountPath: "/etc/app"}, {Name: "sec", MountPath: "/etc/sec"},
				{Name: "info", MountPath: "/etc/info"}, {Name: "scratch", MountPath: "/scratch"}}
		})
		Eventually(phase(p), 10*time.Second, 50*time.Millisecond).Should(Equal(corev1.PodRunning))
		p = getPod(p)
		vol := func(name string) string { return filepath.Join(a.cfg.RootDir, "pods", string(p.UID), "volumes", name) }
		read := func(path string) string {
			b, err := os.ReadFile(path)
			if err != nil {
				return "<" + err.Error() + ">"
			}
			return string(b)
		}
		Expect(read(filepath.Join(vol("cfg"), "conf", "app.conf"))).To(Equal("v1"))
		Expect(filepath.Join(vol("cfg"), "other")).NotTo(BeAnExistingFile(), "only the listed items")
		st, err := os.Stat(filepath.Join(vol("cfg"), "..data", "conf", "app.conf"))
		Expect(err).NotTo(HaveOccurred())
		Expect(st.Mode().Perm()).To(Equal(os.FileMode(0o640)))
		Expect(read(filepath.Join(vol("sec"), "password"))).To(Equal("s3cret"))
		st, _ = os.Stat(filepath.Join(vol("sec"), "..data", "password"))
		Expect(st.Mode().Perm()).To(Equal(os.FileMode(0o400)))
		var fs unix.Statfs_t
		Expect(unix.Statfs(vol("sec"), &fs)).To(Succeed())
		Expect(fs.Type).To(BeEquivalentTo(unix.TMPFS_MAGIC), "secrets never touch the disk")
		Expect(unix.Statfs(vol("scratch"), &fs)).To(Succeed())
		Expect(fs.Type).To(BeEquivalentTo(unix.TMPFS_MAGIC))
		Expect(read(filepath.Join(vol("info"), "labels"))).To(Equal(`tier="web"`))
		Expect(read(filepath.Join(vol("info"), "name"))).To(Equal("vols"))

		// an update reaches the file, swapped atomically
		cm := &corev1.ConfigMap{}
		Expect(k8sClient.Get(ctx, client.ObjectKey{Namespace: a.ns, Name: "cfg"}, cm)).To(Succeed())
		cm.Data["app.conf"] = "v2"
		Expect(k8sClient.Update(ctx, cm)).To(Succeed())
		patched := p.DeepCopy()
		patched.Annotations = map[string]string{"poke": "1"} // a pod event makes it look again
		Expect(k8sClient.Patch(ctx, patched, client.MergeFrom(p))).To(Succeed())
		Eventually(func() string { return read(filepath.Join(vol("cfg"), "conf", "app.conf")) }, 10*time.Second, 100*time.Millisecond).Should(Equal("v2"))

		// the pod goes: nothing of it stays on disk
		Expect(k8sClient.Delete(ctx, p)).To(Succeed())
		Eventually(func() bool {
			_, err := os.Stat(filepath.Join(a.cfg.RootDir, "pods", string(p.UID)))
			return os.IsNotExist(err)
		}, 10*time.Second, 100*time.Millisecond).Should(BeTrue())
	})

	It("gives volumes to the pod's fsGroup: group-owned, group-readable secrets, setgid group-writable emptyDir", func() {
		if os.Geteuid() != 0 {
			Skip("tmpfs mounts and chown need root")
		}
		ctx := context.Background()
		a := newPodAgent()
		Expect(k8sClient.Create(ctx, &corev1.Secret{ObjectMeta: metav1.ObjectMeta{Namespace: a.ns, Name: "sec"},
			Data: map[string][]byte{"password": []byte("s3cret")}})).To(Succeed())
		p := a.pod("fsgroup", corev1.RestartPolicyAlways, func(p *corev1.Pod) {
			p.Spec.SecurityContext = &corev1.PodSecurityContext{FSGroup: ptr.To(int64(2345))}
			p.Spec.Volumes = []corev1.Volume{
				{Name: "sec", VolumeSource: corev1.VolumeSource{Secret: &corev1.SecretVolumeSource{SecretName: "sec", DefaultMode: ptr.To(int32(0o400))}}},
				{Name: "scratch", VolumeSource: corev1.VolumeSource{EmptyDir: &corev1.EmptyDirVolumeSource{}}},
			}
			p.Spec.Containers[0].VolumeMounts = []corev1.VolumeMount{{Name: "sec", MountPath: "/etc/sec"}, {Name: "scratch", MountPath: "/scratch"}}
		})
		Eventually(phase(p), 10*time.Second, 50*time.Millisecond).Should(Equal(corev1.PodRunning))
		p = getPod(p)
		vol := func(name string) string { return filepath.Join(a.cfg.RootDir, "pods", string(p.UID), "volumes", name) }
		stat := func(path string) (os.FileMode, uint32) {
			var st unix.Stat_t
			Expect(unix.Stat(path, &st)).To(Succeed())
			fi, err := os.Stat(path)
			Expect(err).NotTo(HaveOccurred())
			return fi.Mode(), st.Gid
		}
		m, gid := stat(filepath.Join(vol("sec"), "..data", "password"))
		Expect(gid).To(Equal(uint32(2345)))
		Expect(m.Perm()).To(Equal(os.FileMode(0o440)), "defaultMode 0400 plus group read")
		m, gid = stat(vol("scratch"))
		Expect(gid).To(Equal(uint32(2345)))
		Expect(m & os.ModeSetgid).NotTo(BeZero())
		Expect(m.Perm() & 0o070).To(Equal(os.FileMode(0o070)))

		Expect(k8sClient.Delete(ctx, p)).To(Succeed()) // unmounts the secret's tmpfs
		Eventually(func() bool {
			_, err := os.Stat(filepath.Join(a.cfg.RootDir, "pods", string(p.UID)))
			return os.IsNotExist(err)
		}, 10*time.Second, 100*time.Millisecond).Should(BeTrue())
	})

	It("evicts a pod whose emptyDir outgrows its sizeLimit: Failed, reason Evicted, DisruptionTarget, containers stopped", func() {
		a := newPodAgent()
		p := a.pod("grows", corev1.RestartPolicyAlways, func(p *corev1.Pod) {
			p.Spec.Volumes = []corev1.Volume{{Name: "scratch", VolumeSource: corev1.VolumeSource{EmptyDir: &corev1.EmptyDirVolumeSource{SizeLimit: ptr.To(resource.MustParse("1Mi"))}}}}
			p.Spec.Containers[0].VolumeMounts = []corev1.VolumeMount{{Name: "scratch", MountPath: "/scratch"}}
		})
		Eventually(phase(p), 10*time.Second, 50*time.Millisecond).Should(Equal(corev1.PodRunning))
		p = getPod(p)
		dir := filepath.Join(a.cfg.RootDir, "pods", string(p.UID), "volumes", "scratch")
		Expect(os.WriteFile(filepath.Join(dir, "small"), make([]byte, 512<<10), 0o644)).To(Succeed())
		Consistently(phase(p), time.Second, 100*time.Millisecond).Should(Equal(corev1.PodRunning), "under the limit")
		Expect(os.WriteFile(filepath.Join(dir, "big"), make([]byte, 1<<20), 0o644)).To(Succeed()) // what the container would write
		Eventually(phase(p), 10*time.Second, 50*time.Millisecond).Should(Equal(corev1.PodFailed))
		st := getPod(p).Status
		Expect(st.Reason).To(Equal("Evicted"))
		Expect(st.Message).To(Equal(`Usage of EmptyDir volume "scratch" exceeds the limit "1Mi". `))
		Expect(podCondition(getPod(p), corev1.DisruptionTarget)).To(Equal(corev1.ConditionTrue))
		Expect(a.running(p.UID, "app")).To(BeEmpty())
		Eventually(eventsIn(a.ns), 10*time.Second, 100*time.Millisecond).Should(ContainElement(`Evicted: Usage of EmptyDir volume "scratch" exceeds the limit "1Mi". `))
		Consistently(phase(p), time.Second, 100*time.Millisecond).Should(Equal(corev1.PodFailed), "an evicted pod stays Failed")
	})

	It("keeps a pod whose volume's ConfigMap is missing in ContainerCreating with a FailedMount event", func() {
		a := newPodAgent()
		p := a.pod("novol", corev1.RestartPolicyAlways, func(p *corev1.Pod) {
			p.Spec.Volumes = []corev1.Volume{{Name: "cfg", VolumeSource: corev1.VolumeSource{ConfigMap: &corev1.ConfigMapVolumeSource{
				LocalObjectReference: corev1.LocalObjectReference{Name: "nowhere"}}}}}
			p.Spec.Containers[0].VolumeMounts = []corev1.VolumeMount{{Name: "cfg", MountPath: "/etc/app"}}
		})
		Eventually(eventsIn(a.ns), 10*time.Second, 100*time.Millisecond).Should(ContainElement(`FailedMount: MountVolume.SetUp failed for volume "cfg" : configmap "nowhere" not found`))
		Eventually(func() corev1.ConditionStatus { return podCondition(getPod(p), corev1.PodScheduled) }, 10*time.Second, 100*time.Millisecond).
			Should(Equal(corev1.ConditionTrue))
		st := getPod(p).Status
		Expect(st.Phase).To(Equal(corev1.PodPending))
		// as the kubelet: no sandbox before the volumes are set up; the conditions in its order
		sbs, err := a.runtime.ListPodSandbox(context.Background(), &runtimeapi.PodSandboxFilter{LabelSelector: map[string]string{podplan.LabelPodUID: string(getPod(p).UID)}})
		Expect(err).NotTo(HaveOccurred())
		Expect(sbs).To(BeEmpty())
		var kinds []corev1.PodConditionType
		for _, c := range st.Conditions {
			kinds = append(kinds, c.Type)
		}
		Expect(kinds).To(Equal([]corev1.PodConditionType{corev1.PodReadyToStartContainers, corev1.PodInitialized,
			corev1.PodReady, corev1.ContainersReady, corev1.PodScheduled}))
		Expect(podCondition(getPod(p), corev1.PodReadyToStartContainers)).To(Equal(corev1.ConditionFalse))
		Expect(podCondition(getPod(p), corev1.PodInitialized)).To(Equal(corev1.ConditionTrue))
		// the ConfigMap appears: the pod starts
		Expect(k8sClient.Create(context.Background(), &corev1.ConfigMap{ObjectMeta: metav1.ObjectMeta{Namespace: a.ns, Name: "nowhere"},
			Data: map[string]string{"k": "v"}})).To(Succeed())
		Eventually(phase(p), 90*time.Second, 100*time.Millisecond).Should(Equal(corev1.PodRunning))
		Expect(podCondition(getPod(p), corev1.PodReadyToStartContainers)).To(Equal(corev1.ConditionTrue))

		missing := filepath.Join(GinkgoT().TempDir(), "absent")
		a.pod("nodir", corev1.RestartPolicyAlways, func(p *corev1.Pod) {
			p.Spec.Volumes = []corev1.Volume{{Name: "data", VolumeSource: corev1.VolumeSource{HostPath: &corev1.HostPathVolumeSource{
				Path: missing, Type: ptr.To(corev1.HostPathDirectory)}}}}
			p.Spec.Containers[0].VolumeMounts = []corev1.VolumeMount{{Name: "data", MountPath: "/data"}}
		})
		Eventually(eventsIn(a.ns), 10*time.Second, 100*time.Millisecond).Should(ContainElement(
			`FailedMount: MountVolume.SetUp failed for volume "data" : hostPath type check failed, ` + missing + ` is not a directory, unable to determine its type: path "` + missing + `" does not exist`))
	})
})
