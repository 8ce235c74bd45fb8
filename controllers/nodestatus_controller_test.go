package controllers

import (
	"context"
	"time"

	. "github.com/onsi/ginkgo/v2"
	. "github.com/onsi/gomega"
	coordinationv1 "k8s.io/api/coordination/v1"
	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/api/resource"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/apimachinery/pkg/util/rand"
	clocktesting "k8s.io/utils/clock/testing"
	ctrl "sigs.k8s.io/controller-runtime"
	"sigs.k8s.io/controller-runtime/pkg/client"

	"github.com/nodekeeper/nodekeeper/api/v1alpha1"
	"github.com/nodekeeper/nodekeeper/host"
	"github.com/nodekeeper/nodekeeper/runtime/cri/fake"
)

func q(s string) resource.Quantity { return resource.MustParse(s) }

type nodeAgent struct {
	name    string
	cfg     *v1alpha1.AgentConfiguration
	host    *host.Fake
	runtime *fake.Runtime
	clock   *clocktesting.FakeClock
}

// newNodeAgent starts a NodeStatusReconciler and lease renewer for a fresh node name.
func newNodeAgent(tweak func(*v1alpha1.AgentConfiguration)) *nodeAgent {
	a := &nodeAgent{name: "node-" + rand.String(6)}
	a.cfg = &v1alpha1.AgentConfiguration{
		NodeName:                  a.name,
		NodeLabels:                map[string]string{"example.com/pool": "blue"},
		RegisterWithTaints:        []corev1.Taint{{Key: "example.com/dedicated", Value: "infra", Effect: corev1.TaintEffectNoSchedule}},
		SystemReserved:            map[string]string{"cpu": "500m", "memory": "1Gi"},
		KubeReserved:              map[string]string{"cpu": "250m", "memory": "512Mi", "ephemeral-storage": "1Gi"},
		EvictionHard:              map[string]string{"memory.available": "100Mi", "nodefs.available": "10%", "pid.available": "5%"},
		NodeStatusUpdateFrequency: metav1.Duration{Duration: 100 * time.Millisecond},
		NodeStatusReportFrequency: metav1.Duration{Duration: time.Hour},
		NodeLeaseDurationSeconds:  4,
		MetricsBindAddress:        "0",
		HealthzBindAddress:        "0",
	}
	if tweak != nil {
		tweak(a.cfg)
	}
	v1alpha1.SetDefaults(a.cfg)
	Expect(v1alpha1.Validate(a.cfg)).To(Succeed())
	a.host = host.NewFake(
		corev1.ResourceList{"cpu": q("4"), "memory": q("8Gi"), "ephemeral-storage": q("100Gi"), "pods": q("110")},
		host.Info{MachineID: "m-1", SystemUUID: "s-1", BootID: "b-1", KernelVersion: "6.1.0-test", OSImage: "Test Linux",
			OperatingSystem: "linux", Architecture: "amd64", Hostname: a.name},
		host.Stats{
			"memory.available": {Available: q("6Gi"), Capacity: q("8Gi")},
			"nodefs.available": {Available: q("50Gi"), Capacity: q("100Gi")},
			"pid.available":    {Available: q("30000"), Capacity: q("32768")},
		},
		[]corev1.NodeAddress{{Type: corev1.NodeInternalIP, Address: "192.0.2.10"}, {Type: corev1.NodeHostName, Address: a.name}},
	)
	a.runtime = fake.New()
	a.runtime.LoadImage("docker.io/library/busybox:local", 2<<20)
	a.runtime.LoadImage("registry.k8s.io/pause:3.10-local", 1<<20)
	a.clock = clocktesting.NewFakeClock(time.Date(2026, 11, 23, 12, 0, 0, 0, time.UTC))
	startManager(func(mgr ctrl.Manager) error {
		if err := (&NodeStatusReconciler{
			Client: mgr.GetClient(), Config: a.cfg, Host: a.host, Runtime: a.runtime,
			Recorder: mgr.GetEventRecorderFor("kubelet"), Clock: a.clock, Version: "v9.9.9-test",
			Images: RuntimeImages(a.runtime),
		}).SetupWithManager(mgr); err != nil {
			return err
		}
		return mgr.Add(&NodeLeaseRenewer{Client: mgr.GetClient(), Reader: mgr.GetAPIReader(),
			NodeName: a.name, DurationSeconds: a.cfg.NodeLeaseDurationSeconds})
	})
	DeferCleanup(func() {
		_ = k8sClient.Delete(context.Background(), &corev1.Node{ObjectMeta: metav1.ObjectMeta{Name: a.name}})
	})
	return a
}

func (a *nodeAgent) node() *corev1.Node {
	n := &corev1.Node{}
	Expect(k8sClient.Get(context.Background(), types.NamespacedName{Name: a.name}, n)).To(Succeed())
	return n
}

func condition(n *corev1.Node, t corev1.NodeConditionType) corev1.NodeCondition {
	for _, c := range n.Status.Conditions {
		if c.Type == t {
			return c
		}
	}
	return corev1.NodeCondition{}
}

func readyStatus(a *nodeAgent) func() corev1.ConditionStatus {
	return func() corev1.ConditionStatus {
		n := &corev1.Node{}
		if err := k8sClient.Get(context.Background(), types.NamespacedName{Name: a.name}, n); err != nil {
			return ""
		}
		return condition(n, corev1.NodeReady).Status
	}
}

var _ = Describe("NodeStatusReconciler", func() {
	It("registers the node with labels, taints, addresses, node info and the exact allocatable", func() {
		a := newNodeAgent(nil)
		Eventually(readyStatus(a), 10*time.Second, 50*time.Millisecond).Should(Equal(corev1.ConditionTrue))
		n := a.node()

		Expect(n.Labels).To(HaveKeyWithValue(corev1.LabelHostname, a.name))
		Expect(n.Labels).To(HaveKeyWithValue(corev1.LabelOSStable, "linux"))
		Expect(n.Labels).To(HaveKeyWithValue(corev1.LabelArchStable, "amd64"))
		Expect(n.Labels).To(HaveKeyWithValue("example.com/pool", "blue"))
		// (the apiserver's TaintNodesByCondition admission adds node.kubernetes.io/not-ready too)
		Expect(n.Spec.Taints).To(ContainElement(corev1.Taint{Key: "example.com/dedicated", Value: "infra", Effect: corev1.TaintEffectNoSchedule}))
		Expect(n.Status.Addresses).To(ConsistOf(
			corev1.NodeAddress{Type: corev1.NodeInternalIP, Address: "192.0.2.10"},
			corev1.NodeAddress{Type: corev1.NodeHostName, Address: a.name}))

		// capacity 4 cpu / 8Gi / 100Gi / 110 pods
		// cpu:     4 - 500m - 250m                 = 3250m
		// memory:  8192Mi - 1024Mi - 512Mi - 100Mi = 6556Mi
		// storage: 100Gi - 1Gi - 10% of 100Gi      = 89Gi
		want := map[corev1.ResourceName]string{"cpu": "3250m", "memory": "6556Mi", "ephemeral-storage": "89Gi", "pods": "110"}
		Expect(n.Status.Allocatable).To(HaveLen(len(want)))
		for r, v := range want {
			got := n.Status.Allocatable[r]
			Expect(got.Cmp(q(v))).To(BeZero(), "allocatable %s = %s, want %s", r, got.String(), v)
		}
		capMem := n.Status.Capacity[corev1.ResourceMemory]
		Expect(capMem.Cmp(q("8Gi"))).To(BeZero())

		Expect(n.Status.NodeInfo).To(Equal(corev1.NodeSystemInfo{
			MachineID: "m-1", SystemUUID: "s-1", BootID: "b-1", KernelVersion: "6.1.0-test", OSImage: "Test Linux",
			ContainerRuntimeVersion: "fake-runtime://0.1.0", KubeletVersion: "v9.9.9-test",
			OperatingSystem: "linux", Architecture: "amd64",
		}))
		// status.images: the runtime's images, largest first
		Expect(n.Status.Images).To(HaveLen(2))
		Expect(n.Status.Images[0].Names).To(ContainElement("docker.io/library/busybox:local"))
		Expect(n.Status.Images[0].SizeBytes).To(BeEquivalentTo(2 << 20))
		r := condition(n, corev1.NodeReady)
		Expect(r.Reason).To(Equal("KubeletReady"))
		for _, t := range []corev1.NodeConditionType{corev1.NodeMemoryPressure, corev1.NodeDiskPressure, corev1.NodePIDPressure} {
			Expect(condition(n, t).Status).To(Equal(corev1.ConditionFalse), string(t))
		}
		Expect(condition(n, corev1.NodeMemoryPressure).Reason).To(Equal("KubeletHasSufficientMemory"))
		Expect(condition(n, corev1.NodeDiskPressure).Reason).To(Equal("KubeletHasNoDiskPressure"))
		Expect(condition(n, corev1.NodePIDPressure).Reason).To(Equal("KubeletHasSufficientPID"))
	})

	It("turns Ready False naming the runtime when it is down, and back when it returns", func() {
		a := newNodeAgent(nil)
		Eventually(readyStatus(a), 10*time.Second, 50*time.Millisecond).Should(Equal(corev1.ConditionTrue))
		before := a.node()
		readySince := condition(before, corev1.NodeReady).LastTransitionTime
		memSince := condition(before, corev1.NodeMemoryPressure).LastTransitionTime

		a.clock.Step(time.Minute)
		a.runtime.SetDown(true)
		Eventually(readyStatus(a), 10*time.Second, 50*time.Millisecond).Should(Equal(corev1.ConditionFalse))
		n := a.node()
		r := condition(n, corev1.NodeReady)
		Expect(r.Reason).To(Equal("KubeletNotReady"))
		Expect(r.Message).To(ContainSubstring("container runtime is down"))
		Expect(r.LastTransitionTime.Time).To(BeTemporally(">", readySince.Time))
		Expect(condition(n, corev1.NodeMemoryPressure).LastTransitionTime).To(Equal(memSince),
			"a condition that did not change kept its transition time")
		Expect(n.Status.NodeInfo.ContainerRuntimeVersion).To(Equal("fake-runtime://0.1.0"))

		a.clock.Step(time.Minute)
		a.runtime.SetDown(false)
		a.runtime.SetCondition("NetworkReady", false, "NetworkPluginNotReady", "cni plugin not initialized")
		Eventually(func() string {
			return condition(a.node(), corev1.NodeReady).Message
		}, 10*time.Second, 50*time.Millisecond).Should(ContainSubstring("NetworkReady=false reason:NetworkPluginNotReady"))

		a.runtime.SetCondition("NetworkReady", true, "", "")
		Eventually(readyStatus(a), 10*time.Second, 50*time.Millisecond).Should(Equal(corev1.ConditionTrue))

		Eventually(func() []string {
			evs := &corev1.EventList{}
			Expect(k8sClient.List(context.Background(), evs, client.InNamespace("default"))).To(Succeed())
			var reasons []string
			for _, e := range evs.Items {
				if e.InvolvedObject.Name == a.name {
					reasons = append(reasons, e.Reason)
				}
			}
			return reasons
		}, 10*time.Second, 100*time.Millisecond).Should(ContainElements("NodeNotReady", "NodeReady"))
	})

	It("reports memory, disk and PID pressure from host stats against the hard thresholds", func() {
		a := newNodeAgent(nil)
		Eventually(readyStatus(a), 10*time.Second, 50*time.Millisecond).Should(Equal(corev1.ConditionTrue))
		status := func(t corev1.NodeConditionType) func() corev1.ConditionStatus {
			return func() corev1.ConditionStatus { return condition(a.node(), t).Status }
		}
		a.clock.Step(time.Minute)
		a.host.SetStat("memory.available", host.Signal{Available: q("50Mi"), Capacity: q("8Gi")})
		Eventually(status(corev1.NodeMemoryPressure), 10*time.Second, 50*time.Millisecond).Should(Equal(corev1.ConditionTrue))
		Expect(condition(a.node(), corev1.NodeMemoryPressure).Reason).To(Equal("KubeletHasInsufficientMemory"))

		a.host.SetStat("nodefs.available", host.Signal{Available: q("5Gi"), Capacity: q("100Gi")})
		Eventually(status(corev1.NodeDiskPressure), 10*time.Second, 50*time.Millisecond).Should(Equal(corev1.ConditionTrue))

		a.host.SetStat("pid.available", host.Signal{Available: q("100"), Capacity: q("32768")})
		Eventually(status(corev1.NodePIDPressure), 10*time.Second, 50*time.Millisecond).Should(Equal(corev1.ConditionTrue))

		a.host.SetStat("memory.available", host.Signal{Available: q("6Gi"), Capacity: q("8Gi")})
		Eventually(status(corev1.NodeMemoryPressure), 10*time.Second, 50*time.Millisecond).Should(Equal(corev1.ConditionFalse))
		// pressure is not readiness
		Expect(condition(a.node(), corev1.NodeReady).Status).To(Equal(corev1.ConditionTrue))
	})

	It("does not rewrite an unchanged status until the report frequency has passed", func() {
		a := newNodeAgent(nil)
		Eventually(readyStatus(a), 10*time.Second, 50*time.Millisecond).Should(Equal(corev1.ConditionTrue))
		n := a.node()
		rv := n.ResourceVersion
		hb := condition(n, corev1.NodeReady).LastHeartbeatTime

		// ~20 update periods with nothing changed: no write
		Consistently(func() string { return a.node().ResourceVersion }, 2*time.Second, 100*time.Millisecond).Should(Equal(rv))

		// less than the report frequency later: still nothing
		a.clock.Step(59 * time.Minute)
		Consistently(func() string { return a.node().ResourceVersion }, time.Second, 100*time.Millisecond).Should(Equal(rv))

		// the report frequency has passed: one write with a new heartbeat, same transition times
		a.clock.Step(time.Minute)
		Eventually(func() string { return a.node().ResourceVersion }, 10*time.Second, 50*time.Millisecond).ShouldNot(Equal(rv))
		after := condition(a.node(), corev1.NodeReady)
		Expect(after.LastHeartbeatTime.Time).To(Equal(hb.Add(time.Hour)))
		Expect(after.LastTransitionTime).To(Equal(condition(n, corev1.NodeReady).LastTransitionTime))

		// a real change is written at once, without waiting for the report frequency
		rv = a.node().ResourceVersion
		a.host.SetAddresses([]corev1.NodeAddress{{Type: corev1.NodeInternalIP, Address: "192.0.2.11"}})
		Eventually(func() []corev1.NodeAddress { return a.node().Status.Addresses }, 10*time.Second, 50*time.Millisecond).
			Should(ConsistOf(corev1.NodeAddress{Type: corev1.NodeInternalIP, Address: "192.0.2.11"}))
	})

	It("renews its Lease in kube-node-lease, owned by the Node", func() {
		a := newNodeAgent(nil)
		lease := &coordinationv1.Lease{}
		key := types.NamespacedName{Namespace: "kube-node-lease", Name: a.name}
		Eventually(func() error { return k8sClient.Get(context.Background(), key, lease) }, 10*time.Second, 50*time.Millisecond).Should(Succeed())
		n := a.node()
		Expect(*lease.Spec.HolderIdentity).To(Equal(a.name))
		Expect(*lease.Spec.LeaseDurationSeconds).To(BeEquivalentTo(4))
		Expect(lease.OwnerReferences).To(HaveLen(1))
		Expect(lease.OwnerReferences[0].Kind).To(Equal("Node"))
		Expect(lease.OwnerReferences[0].APIVersion).To(Equal("v1"))
		Expect(lease.OwnerReferences[0].Name).To(Equal(a.name))
		Expect(lease.OwnerReferences[0].UID).To(Equal(n.UID))
		first := lease.Spec.RenewTime.Time

		// renewed every duration/4 = 1s
		Eventually(func(g Gomega) time.Time {
			l := &coordinationv1.Lease{}
			g.Expect(k8sClient.Get(context.Background(), key, l)).To(Succeed())
			return l.Spec.RenewTime.Time
		}, 5*time.Second, 100*time.Millisecond).Should(BeTemporally(">", first))
	})

	It("re-registers a node deleted from the API, and the Lease follows the new Node", func() {
		a := newNodeAgent(nil)
		Eventually(readyStatus(a), 10*time.Second, 50*time.Millisecond).Should(Equal(corev1.ConditionTrue))
		old := a.node()
		Expect(k8sClient.Delete(context.Background(), old)).To(Succeed())
		var fresh *corev1.Node
		Eventually(func() types.UID {
			n := &corev1.Node{}
			if err := k8sClient.Get(context.Background(), types.NamespacedName{Name: a.name}, n); err != nil {
				return ""
			}
			fresh = n
			return n.UID
		}, 10*time.Second, 50*time.Millisecond).ShouldNot(BeElementOf(types.UID(""), old.UID))
		Expect(fresh.Labels).To(HaveKeyWithValue("example.com/pool", "blue"))
		Eventually(readyStatus(a), 10*time.Second, 50*time.Millisecond).Should(Equal(corev1.ConditionTrue))
		Eventually(func(g Gomega) {
			l := &coordinationv1.Lease{}
			g.Expect(k8sClient.Get(context.Background(), types.NamespacedName{Namespace: "kube-node-lease", Name: a.name}, l)).To(Succeed())
			g.Expect(l.OwnerReferences).To(HaveLen(1))
			g.Expect(l.OwnerReferences[0].UID).To(Equal(fresh.UID))
		}, 10*time.Second, 100*time.Millisecond).Should(Succeed())
	})

	It("restores a well-known label removed by hand", func() {
		a := newNodeAgent(nil)
		Eventually(readyStatus(a), 10*time.Second, 50*time.Millisecond).Should(Equal(corev1.ConditionTrue))
		n := a.node()
		patched := n.DeepCopy()
		delete(patched.Labels, corev1.LabelOSStable)
		Expect(k8sClient.Patch(context.Background(), patched, client.MergeFrom(n))).To(Succeed())
		Eventually(func() map[string]string { return a.node().Labels }, 10*time.Second, 50*time.Millisecond).
			Should(HaveKeyWithValue(corev1.LabelOSStable, "linux"))
	})
})
