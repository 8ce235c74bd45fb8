package controllers

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	. "github.com/onsi/ginkgo/v2"
	. "github.com/onsi/gomega"
	"golang.org/x/sys/unix"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/apimachinery/pkg/util/rand"
	"k8s.io/utils/ptr"
	ctrl "sigs.k8s.io/controller-runtime"
	"sigs.k8s.io/controller-runtime/pkg/reconcile"

	"github.com/nodekeeper/nodekeeper/api/v1alpha1"
	"github.com/nodekeeper/nodekeeper/host"
	"github.com/nodekeeper/nodekeeper/internal/eviction"
	"github.com/nodekeeper/nodekeeper/internal/nodestatus"
	"github.com/nodekeeper/nodekeeper/internal/podplan"
	"github.com/nodekeeper/nodekeeper/runtime/cri/fake"
)

// Issue 16, part 6: a full disk under the root dir and a read-only root dir are
// reported as the kubelet reports them (FailedMount for volumes, CreateContainerConfigError
// for the pod's hosts file, FailedCreatePodSandBox for its log folder, the node's
// DiskPressure), never panicked on; nothing is lost (a volume's refresh that cannot be
// written leaves the containers the previous content) and the pods start once there is
// room again or the folder is writable again. The root dir is a size-limited tmpfs (or a
// read-only bind mount) the spec makes on a folder of its own and unmounts at its end;
// no other mount is touched.
var _ = Describe("A full or read-only root dir", Label("root"), func() {
	BeforeEach(func() {
		if os.Geteuid() != 0 {
			Skip("needs root (mounts)")
		}
	})

	// newRoot is a new folder for a root dir, unmounted (detached) when the spec ends.
	newRoot := func() string {
		dir := filepath.Join(GinkgoT().TempDir(), "root")
		Expect(os.Mkdir(dir, 0o750)).To(Succeed())
		return dir
	}
	unmountAtEnd := func(dir string) {
		DeferCleanup(func() { Expect(unix.Unmount(dir, unix.MNT_DETACH)).To(Succeed()) })
	}

	// fill writes into dir until its filesystem has no block and no inode left, and
	// returns a func that frees them.
	fill := func(dir string) func() {
		filler := filepath.Join(dir, "filler")
		Expect(os.Mkdir(filler, 0o700)).To(Succeed())
		f, err := os.Create(filepath.Join(filler, "blocks"))
		Expect(err).NotTo(HaveOccurred())
		buf := make([]byte, 16<<10)
		for {
			if _, err := f.Write(buf); err != nil {
				Expect(errors.Is(err, syscall.ENOSPC)).To(BeTrue(), "%v", err)
				break
			}
		}
		Expect(f.Close()).To(Succeed())
		for i := 0; ; i++ {
			f, err := os.Create(filepath.Join(filler, fmt.Sprintf("inode-%d", i)))
			if err != nil {
				Expect(errors.Is(err, syscall.ENOSPC)).To(BeTrue(), "%v", err)
				break
			}
			f.Close()
		}
		return func() { Expect(os.RemoveAll(filler)).To(Succeed()) }
	}

	// agentOn runs a PodReconciler with root as its root dir and the pod logs in logs
	// (a node's /var/log/pods, or a folder of the root dir).
	agentOn := func(root, logs string) *podAgent {
		a := &podAgent{node: "rootdir-" + rand.String(5), ns: "rootdir-" + rand.String(5), runtime: fake.New()}
		a.runtime.LoadImage(busybox, 1<<20)
		Expect(k8sClient.Create(context.Background(), &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: a.ns}})).To(Succeed())
		a.cfg = &v1alpha1.AgentConfiguration{NodeName: a.node, RootDir: root, ClusterDNS: []string{"10.0.0.10"}}
		setTestDefaults(a.cfg)
		a.cfg.PodLogsDir = logs
		startManager(func(mgr ctrl.Manager) error {
			return (&PodReconciler{
				Client: mgr.GetClient(), Runtime: a.runtime, Recorder: mgr.GetEventRecorderFor("kubelet"), Config: a.cfg,
				HostIP: "192.0.2.10", RelistPeriod: 100 * time.Millisecond, EvictionPeriod: 200 * time.Millisecond,
				Backoff:  podplan.BackoffPolicy{Base: 200 * time.Millisecond, Max: time.Second, Reset: 10 * time.Minute},
				AppArmor: func() error { return errors.New("AppArmor is not enabled on the host") },
			}).SetupWithManager(mgr)
		})
		return a
	}

	settings := func(a *podAgent, value string) {
		cm := &corev1.ConfigMap{ObjectMeta: metav1.ObjectMeta{Namespace: a.ns, Name: "settings"}, Data: map[string]string{"mode": value}}
		if err := k8sClient.Create(context.Background(), cm); err != nil {
			Expect(k8sClient.Update(context.Background(), cm)).To(Succeed())
		}
	}
	podWithVolumes := func(a *podAgent, name string) *corev1.Pod {
		return a.pod(name, corev1.RestartPolicyAlways, func(p *corev1.Pod) {
			p.Spec.Volumes = []corev1.Volume{
				{Name: "settings", VolumeSource: corev1.VolumeSource{ConfigMap: &corev1.ConfigMapVolumeSource{LocalObjectReference: corev1.LocalObjectReference{Name: "settings"}}}},
				{Name: "scratch", VolumeSource: corev1.VolumeSource{EmptyDir: &corev1.EmptyDirVolumeSource{}}},
			}
			p.Spec.Containers[0].VolumeMounts = []corev1.VolumeMount{{Name: "settings", MountPath: "/etc/settings"}, {Name: "scratch", MountPath: "/scratch"}}
		})
	}
	waiting := func(p *corev1.Pod) func() string {
		return func() string {
			cs := getPod(p).Status.ContainerStatuses
			if len(cs) != 1 || cs[0].State.Waiting == nil {
				return ""
			}
			return cs[0].State.Waiting.Reason + ": " + cs[0].State.Waiting.Message
		}
	}
	// failedMounts is how many times a FailedMount was recorded for the pod (counts of
	// repeated events included)
	failedMounts := func(p *corev1.Pod) int32 {
		evs := &corev1.EventList{}
		Expect(k8sClient.List(context.Background(), evs)).To(Succeed())
		var n int32
		for _, e := range evs.Items {
			if e.InvolvedObject.UID == p.UID && e.Reason == "FailedMount" {
				n += max(e.Count, 1)
			}
		}
		return n
	}

	It("evicts the pod filling the root dir's filesystem below nodefs.available 10 % and refuses new pods under DiskPressure", func() {
		root := newRoot()
		Expect(unix.Mount("tmpfs", root, "tmpfs", 0, "size=4m,mode=0750")).To(Succeed())
		unmountAtEnd(root)
		a := agentWith("rootdir-", fake.New(), nil, root, func(r *PodReconciler) {
			r.Config.PodLogsDir = GinkgoT().TempDir()
			r.EvictionPeriod = time.Second
			r.Signals = HostSignals(root) // the real observation of the root dir's filesystem, as main's
			// each pod's folder (its volumes), measured
			r.PodUsage = func(context.Context) (map[types.UID]eviction.Usage, error) {
				out := map[types.UID]eviction.Usage{}
				dirs, _ := os.ReadDir(filepath.Join(root, "pods"))
				for _, d := range dirs {
					n, err := eviction.DirUsage(filepath.Join(root, "pods", d.Name()))
					if err == nil {
						out[types.UID(d.Name())] = eviction.Usage{Disk: n}
					}
				}
				return out, nil
			}
		})
		withScratch := func(p *corev1.Pod) {
			p.Spec.Volumes = []corev1.Volume{{Name: "scratch", VolumeSource: corev1.VolumeSource{EmptyDir: &corev1.EmptyDirVolumeSource{}}}}
			p.Spec.Containers[0].VolumeMounts = []corev1.VolumeMount{{Name: "scratch", MountPath: "/scratch"}}
		}
		idle := a.pod("idle", corev1.RestartPolicyAlways, withScratch)
		writer := a.pod("writer", corev1.RestartPolicyAlways, withScratch)
		Eventually(phase(idle), 10*time.Second, 50*time.Millisecond).Should(Equal(corev1.PodRunning))
		Eventually(phase(writer), 10*time.Second, 50*time.Millisecond).Should(Equal(corev1.PodRunning))
		writer = getPod(writer)
		// what the container would write into its emptyDir: 3.7 of the 4 MiB
		big := filepath.Join(root, "pods", string(writer.UID), "volumes", "scratch", "big")
		Expect(os.WriteFile(big, make([]byte, 3700<<10), 0o644)).To(Succeed())
		Eventually(phase(writer), 10*time.Second, 50*time.Millisecond).Should(Equal(corev1.PodFailed))
		Expect(os.Remove(big)).To(Succeed()) // room again: the next cycle evicts nobody
		st := getPod(writer).Status
		Expect(st.Reason).To(Equal("Evicted"))
		Expect(st.Message).To(MatchRegexp(`^The node was low on resource: ephemeral-storage\. Threshold quantity: 419430, available: \d+Ki\. $`))
		Eventually(eventsIn(a.ns), 10*time.Second, 100*time.Millisecond).Should(ContainElement("Evicted: " + st.Message))
		Consistently(phase(idle), 2*time.Second, 100*time.Millisecond).Should(Equal(corev1.PodRunning), "one pod per cycle, the largest user first")

		// DiskPressure lasts the transition period (5m): a new pod is refused
		late := a.pod("late", corev1.RestartPolicyAlways, nil)
		Eventually(phase(late), 10*time.Second, 50*time.Millisecond).Should(Equal(corev1.PodFailed))
		Expect(getPod(late).Status.Reason).To(Equal("Evicted"))
		Expect(getPod(late).Status.Message).To(Equal("Pod was rejected: The node had condition: [DiskPressure]. "))
		Expect(k8sClient.Delete(context.Background(), writer)).To(Succeed())
		Expect(k8sClient.Delete(context.Background(), idle)).To(Succeed())
		Eventually(func() bool {
			_, err := os.Stat(filepath.Join(root, "pods", string(idle.UID)))
			return os.IsNotExist(err)
		}, 10*time.Second, 100*time.Millisecond).Should(BeTrue())
	})

	It("reports a full disk under the root dir on the pods and the node, keeps volume content, and starts the pods once there is room", func() {
		root := newRoot()
		Expect(unix.Mount("tmpfs", root, "tmpfs", 0, "size=1m,nr_inodes=256,mode=0750")).To(Succeed())
		unmountAtEnd(root)
		free := fill(root)

		// the node: nodefs (the root dir's filesystem) is under evictionHard's 10 %
		st, err := (&host.Linux{RootDir: root}).Stats()
		Expect(err).NotTo(HaveOccurred())
		signals := map[string]nodestatus.Signal{}
		for k, v := range st {
			signals[k] = nodestatus.Signal{Available: v.Available, Capacity: v.Capacity}
		}
		hard, err := nodestatus.ParseThresholds(map[string]string{"nodefs.available": "10%"})
		Expect(err).NotTo(HaveOccurred())
		Expect(nodestatus.ComputePressure(signals, hard).Disk).To(BeTrue(), "nodefs %+v", signals["nodefs.available"])
		cond := nodestatus.Conditions(nil, nodestatus.RuntimeHealth{}, nil, nodestatus.ComputePressure(signals, hard), metav1.Now())
		Expect(cond).To(ContainElement(And(HaveField("Type", corev1.NodeDiskPressure), HaveField("Status", corev1.ConditionTrue),
			HaveField("Reason", nodestatus.ReasonDiskPressure))))

		a := agentOn(root, GinkgoT().TempDir()) // pod logs elsewhere, as /var/log/pods
		settings(a, "blue")
		withVols := podWithVolumes(a, "full")
		bare := a.pod("bare", corev1.RestartPolicyAlways, nil)
		Eventually(eventsIn(a.ns), 20*time.Second, 100*time.Millisecond).Should(ContainElements(
			And(HavePrefix(`FailedMount: MountVolume.SetUp failed for volume "settings" : `), HaveSuffix("no space left on device")),
			And(HavePrefix("Failed: Error: failed to create the pod's hosts file: "), HaveSuffix("no space left on device"))))
		Eventually(waiting(withVols), 10*time.Second, 100*time.Millisecond).Should(HavePrefix("ContainerCreating: "))
		Eventually(waiting(bare), 10*time.Second, 100*time.Millisecond).Should(And(HavePrefix("CreateContainerConfigError: "), HaveSuffix("no space left on device")))

		free()
		Eventually(phase(withVols), 30*time.Second, 100*time.Millisecond).Should(Equal(corev1.PodRunning))
		Eventually(phase(bare), 30*time.Second, 100*time.Millisecond).Should(Equal(corev1.PodRunning))
		mode := filepath.Join(root, "pods", string(getPod(withVols).UID), "volumes", "settings", "mode")
		Expect(os.ReadFile(mode)).To(BeEquivalentTo("blue"))

		// the disk fills up again while the pod runs and its ConfigMap changes: the
		// refresh fails (reported), the container keeps the content it had
		free = fill(root)
		before := failedMounts(withVols)
		settings(a, strings.Repeat("green", 64<<10)) // 320 KiB: cannot fit
		// a pod update syncs it at once (otherwise the minute's refresh would)
		cur := getPod(withVols)
		cur.Annotations = map[string]string{"touched": "1"}
		Expect(k8sClient.Update(context.Background(), cur)).To(Succeed())
		Eventually(func() int32 { return failedMounts(withVols) }, 20*time.Second, 100*time.Millisecond).
			Should(BeNumerically(">", before), "the failed refresh is reported")
		Expect(os.ReadFile(mode)).To(BeEquivalentTo("blue"))
		Expect(phase(withVols)()).To(Equal(corev1.PodRunning))
		free()
		Eventually(func() (int, error) { b, err := os.ReadFile(mode); return len(b), err }, 30*time.Second, 100*time.Millisecond).
			Should(Equal(len("green") * 64 << 10))
	})

	It("reports a read-only root dir on the pods, and starts them once it is writable", func() {
		root := newRoot()
		Expect(unix.Mount(root, root, "", unix.MS_BIND, "")).To(Succeed())
		unmountAtEnd(root)
		Expect(unix.Mount("", root, "", unix.MS_REMOUNT|unix.MS_BIND|unix.MS_RDONLY, "")).To(Succeed())
		a := agentOn(root, filepath.Join(root, "logs")) // pod logs in the root dir too
		settings(a, "blue")
		withVols := podWithVolumes(a, "readonly")
		bare := a.pod("bare", corev1.RestartPolicyAlways, func(p *corev1.Pod) { p.Spec.TerminationGracePeriodSeconds = ptr.To(int64(1)) })
		Eventually(eventsIn(a.ns), 20*time.Second, 100*time.Millisecond).Should(ContainElements(
			And(HavePrefix(`FailedMount: MountVolume.SetUp failed for volume "settings" : `), HaveSuffix("read-only file system")),
			And(HavePrefix(`FailedCreatePodSandBox: Failed to create pod sandbox: create pod log directory for pod "bare_`+a.ns), HaveSuffix("read-only file system"))))
		Eventually(waiting(withVols), 10*time.Second, 100*time.Millisecond).Should(HavePrefix("ContainerCreating: "))
		Expect(unix.Mount("", root, "", unix.MS_REMOUNT|unix.MS_BIND, "")).To(Succeed())
		Eventually(phase(withVols), 30*time.Second, 100*time.Millisecond).Should(Equal(corev1.PodRunning))
		Eventually(phase(bare), 30*time.Second, 100*time.Millisecond).Should(Equal(corev1.PodRunning))
		Expect(os.ReadFile(filepath.Join(root, "pods", string(getPod(withVols).UID), "volumes", "settings", "mode"))).To(BeEquivalentTo("blue"))
	})
})

// As the kubelet's pod workers (backOffPeriod): a pod whose sync keeps failing is
// retried at least every 10 s, not after controller-runtime's default doubling to 1000 s.
func TestPodRetryBackoffIsCapped(t *testing.T) {
	l := podRetryLimiter()
	req := reconcile.Request{NamespacedName: types.NamespacedName{Namespace: "ns", Name: "p"}}
	if d := l.When(req); d > 10*time.Millisecond {
		t.Errorf("first retry after %v, want ~5ms", d)
	}
	var d time.Duration
	for i := 0; i < 40; i++ {
		d = l.When(req)
	}
	if d != podRetryBackoffMax {
		t.Errorf("retry after 40 failures in %v, want %v", d, podRetryBackoffMax)
	}
	l.Forget(req)
	if d := l.When(req); d > 10*time.Millisecond {
		t.Errorf("after a success, first retry after %v", d)
	}
}
