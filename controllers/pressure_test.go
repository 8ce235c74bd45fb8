package controllers

import (
	"context"
	"errors"
	"sync"
	"time"

	. "github.com/onsi/ginkgo/v2"
	. "github.com/onsi/gomega"
	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/api/resource"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/apimachinery/pkg/util/rand"
	ctrl "sigs.k8s.io/controller-runtime"

	"github.com/nodekeeper/nodekeeper/api/v1alpha1"
	"github.com/nodekeeper/nodekeeper/internal/eviction"
	"github.com/nodekeeper/nodekeeper/internal/nodestatus"
	"github.com/nodekeeper/nodekeeper/internal/podplan"
	"github.com/nodekeeper/nodekeeper/runtime/cri"
	"github.com/nodekeeper/nodekeeper/runtime/cri/fake"
)

// signalsFake is the observation of the node's eviction signals a spec sets.
type signalsFake struct {
	mu  sync.Mutex
	obs map[string]nodestatus.Signal
}

func (s *signalsFake) set(sig, avail, capacity string) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.obs[sig] = nodestatus.Signal{Available: resource.MustParse(avail), Capacity: resource.MustParse(capacity)}
}

func (s *signalsFake) get() (map[string]nodestatus.Signal, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	out := map[string]nodestatus.Signal{}
	for k, v := range s.obs {
		out[k] = v
	}
	return out, nil
}

// agentWith is a podAgent on the fake runtime fk (seen by the reconciler as rt: fk or
// a wrapper of it; nil: fk), its root dir root ("" a temporary one), the kubelet's recorder, and
// the reconciler's other fields set by mutate.
func agentWith(prefix string, fk *fake.Runtime, rt cri.Runtime, root string, mutate func(*PodReconciler)) *podAgent {
	a := &podAgent{node: prefix + rand.String(5), ns: prefix + rand.String(5), runtime: fk}
	a.runtime.LoadImage(busybox, 1<<20)
	Expect(k8sClient.Create(context.Background(), &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: a.ns}})).To(Succeed())
	if rt == nil {
		rt = fk
	}
	if root == "" {
		root = GinkgoT().TempDir()
	}
	a.cfg = &v1alpha1.AgentConfiguration{NodeName: a.node, RootDir: root, ClusterDNS: []string{"10.0.0.10"}}
	setTestDefaults(a.cfg) // evictionHard: upstream's defaults
	recorder := kubeletRecorder(a.node)
	startManager(func(mgr ctrl.Manager) error {
		r := &PodReconciler{
			Client: mgr.GetClient(), Runtime: rt, Recorder: recorder, Config: a.cfg,
			HostIP: "192.0.2.10", RelistPeriod: 100 * time.Millisecond, EvictionPeriod: 200 * time.Millisecond,
			Backoff:  podplan.BackoffPolicy{Base: 200 * time.Millisecond, Max: time.Second, Reset: 10 * time.Minute},
			AppArmor: func() error { return errors.New("AppArmor is not enabled on the host") },
		}
		if mutate != nil {
			mutate(r)
		}
		return r.SetupWithManager(mgr)
	})
	return a
}

var _ = Describe("Node-pressure eviction", func() {
	It("evicts the pod using the most disk under nodefs pressure (Failed, Evicted, upstream's message) and refuses new pods", func() {
		signals := &signalsFake{obs: map[string]nodestatus.Signal{}}
		signals.set("memory.available", "4Gi", "8Gi")
		signals.set("nodefs.available", "50Mi", "100Mi")
		var usageMu sync.Mutex
		usage := map[types.UID]eviction.Usage{}
		a := agentWith("press-", fake.New(), nil, "", func(r *PodReconciler) {
			r.Signals = signals.get
			r.PodUsage = func(context.Context) (map[types.UID]eviction.Usage, error) {
				usageMu.Lock()
				defer usageMu.Unlock()
				out := map[types.UID]eviction.Usage{}
				for k, v := range usage {
					out[k] = v
				}
				return out, nil
			}
		})
		small := a.pod("small", corev1.RestartPolicyAlways, nil)
		big := a.pod("big", corev1.RestartPolicyAlways, nil)
		Eventually(phase(small), 10*time.Second, 50*time.Millisecond).Should(Equal(corev1.PodRunning))
		Eventually(phase(big), 10*time.Second, 50*time.Millisecond).Should(Equal(corev1.PodRunning))
		small, big = getPod(small), getPod(big)
		usageMu.Lock()
		usage[small.UID] = eviction.Usage{Disk: 1 << 20, Containers: map[string]eviction.ContainerUsage{"app": {Disk: 1 << 20}}}
		usage[big.UID] = eviction.Usage{Disk: 40 << 20, Containers: map[string]eviction.ContainerUsage{"app": {Disk: 40 << 20}}}
		usageMu.Unlock()
		Consistently(phase(big), time.Second, 100*time.Millisecond).Should(Equal(corev1.PodRunning), "no pressure")

		signals.set("nodefs.available", "5Mi", "100Mi") // below 10%
		Eventually(phase(big), 10*time.Second, 50*time.Millisecond).Should(Equal(corev1.PodFailed))
		st := getPod(big).Status
		want := "The node was low on resource: ephemeral-storage. Threshold quantity: 10Mi, available: 5Mi. Container app was using 40Mi, request is 0, has larger consumption of ephemeral-storage. "
		Expect(st.Reason).To(Equal("Evicted"))
		Expect(st.Message).To(Equal(want))
		Expect(podCondition(getPod(big), corev1.DisruptionTarget)).To(Equal(corev1.ConditionTrue))
		Expect(a.running(big.UID, "app")).To(BeEmpty())
		Eventually(eventsIn(a.ns), 10*time.Second, 100*time.Millisecond).Should(ContainElement("Evicted: " + want))
		Eventually(eventsIn(""), 10*time.Second, 100*time.Millisecond).Should(ContainElement("EvictionThresholdMet: Attempting to reclaim ephemeral-storage"))

		// one pod per cycle: the small one goes next while the pressure lasts
		Eventually(phase(small), 10*time.Second, 50*time.Millisecond).Should(Equal(corev1.PodFailed))

		// a new pod is refused while the node has DiskPressure (and for the transition period after)
		signals.set("nodefs.available", "50Mi", "100Mi")
		late := a.pod("late", corev1.RestartPolicyAlways, nil)
		Eventually(phase(late), 10*time.Second, 50*time.Millisecond).Should(Equal(corev1.PodFailed))
		st = getPod(late).Status
		Expect(st.Reason).To(Equal("Evicted"))
		Expect(st.Message).To(Equal("Pod was rejected: The node had condition: [DiskPressure]. "))
		Expect(a.containers(late.UID, "app")).To(BeEmpty())
	})
})
