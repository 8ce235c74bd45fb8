package controllers

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"time"

	. "github.com/onsi/ginkgo/v2"
	. "github.com/onsi/gomega"
	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/fields"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/apimachinery/pkg/util/rand"
	"k8s.io/client-go/kubernetes/scheme"
	"k8s.io/client-go/rest"
	"k8s.io/client-go/tools/record"
	runtimeapi "k8s.io/cri-api/pkg/apis/runtime/v1"
	"k8s.io/utils/ptr"
	ctrl "sigs.k8s.io/controller-runtime"
	"sigs.k8s.io/controller-runtime/pkg/cache"
	"sigs.k8s.io/controller-runtime/pkg/client"

	"github.com/nodekeeper/nodekeeper/api/v1alpha1"
	"github.com/nodekeeper/nodekeeper/internal/podplan"
	"github.com/nodekeeper/nodekeeper/runtime/cri"
	"github.com/nodekeeper/nodekeeper/runtime/cri/fake"
)

const staticManifest = `apiVersion: v1
kind: Pod
metadata:
  name: etcdish
  namespace: %s
spec:
  containers:
  - name: main
    image: docker.io/library/busybox:local
    command: [sleep, "%s"]
`

// nodeManagerOptions are main.go's: the pod cache holds only this node's pods (all a
// node may list under the Node authorizer).
func nodeManagerOptions(node string) ctrl.Options {
	o := managerOptions()
	o.Cache = cache.Options{ByObject: map[client.Object]cache.ByObject{
		&corev1.Pod{}:  {Field: fields.OneTermEqualSelector("spec.nodeName", node)},
		&corev1.Node{}: {Field: fields.OneTermEqualSelector("metadata.name", node)},
	}}
	return o
}

var _ = Describe("Static pods", func() {
	DescribeTable("runs manifests from the folder, mirrors them in the API, follows edits and removal, skips broken files", func(asNode bool) {
		node := "static-" + rand.String(5)
		ns := "static-" + rand.String(5)
		Expect(k8sClient.Create(context.Background(), &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: ns}})).To(Succeed())
		// a mirror pod is owned by its node: none is made before the node is registered
		nodeObj := &corev1.Node{ObjectMeta: metav1.ObjectMeta{Name: node}}
		Expect(k8sClient.Create(context.Background(), nodeObj)).To(Succeed())
		DeferCleanup(func() { _ = k8sClient.Delete(context.Background(), nodeObj) })
		dir := GinkgoT().TempDir()
		rt := fake.New()
		rt.LoadImage(busybox, 1<<20)
		write := func(name, body string) {
			Expect(os.WriteFile(filepath.Join(dir, name), []byte(body), 0o644)).To(Succeed())
		}
		write("etcd.yaml", fmt.Sprintf(staticManifest, ns, "3600"))
		write("broken.yaml", "apiVersion: v1\nkind: Pod\nmetadata: {name: broken}\nspec: {containers: [{name: x}]}\n")
		write("garbage.yaml", "{{{ not yaml")
		cfg := &v1alpha1.AgentConfiguration{NodeName: node, RootDir: GinkgoT().TempDir(), StaticPodPath: dir}
		setTestDefaults(cfg)
		if asNode {
			// as the agent runs in a cluster: system:node:<name>, under the Node
			// authorizer and the NodeRestriction admission plugin
			nodeCfg, err := env.UserConfig("system:node:"+node, "system:nodes")
			Expect(err).NotTo(HaveOccurred())
			direct, err := client.New(nodeCfg, client.Options{Scheme: scheme.Scheme})
			Expect(err).NotTo(HaveOccurred())
			startManagerWith(nodeCfg, nodeManagerOptions(node), func(mgr ctrl.Manager) error {
				return (&PodReconciler{Client: mgr.GetClient(), MirrorClient: direct, Runtime: rt, Recorder: mgr.GetEventRecorderFor("kubelet"),
					Config: cfg, RelistPeriod: 100 * time.Millisecond, StaticPodPeriod: 200 * time.Millisecond}).SetupWithManager(mgr)
			})
		} else {
			startManager(func(mgr ctrl.Manager) error {
				return (&PodReconciler{Client: mgr.GetClient(), Runtime: rt, Recorder: mgr.GetEventRecorderFor("kubelet"), Config: cfg,
					RelistPeriod: 100 * time.Millisecond, StaticPodPeriod: 200 * time.Millisecond}).SetupWithManager(mgr)
			})
		}

		key := types.NamespacedName{Namespace: ns, Name: "etcdish-" + node}
		mirror := func() *corev1.Pod {
			p := &corev1.Pod{}
			if err := k8sClient.Get(context.Background(), key, p); err != nil {
				return nil
			}
			return p
		}
		running := func() []string {
			cs, err := rt.ListContainers(context.Background(), &runtimeapi.ContainerFilter{
				State:         &runtimeapi.ContainerStateValue{State: runtimeapi.ContainerState_CONTAINER_RUNNING},
				LabelSelector: map[string]string{podplan.LabelPodName: key.Name}})
			Expect(err).NotTo(HaveOccurred())
			var ids []string
			for _, c := range cs {
				ids = append(ids, c.Id)
			}
			return ids
		}
		Eventually(running, 10*time.Second, 50*time.Millisecond).Should(HaveLen(1))
		Eventually(func() corev1.PodPhase {
			if m := mirror(); m != nil {
				return m.Status.Phase
			}
			return ""
		}, 10*time.Second, 50*time.Millisecond).Should(Equal(corev1.PodRunning))
		m := mirror()
		Expect(m.Annotations).To(HaveKey(AnnotationConfigMirror))
		Expect(m.Annotations).To(HaveKeyWithValue(AnnotationConfigSource, "file"))
		Expect(m.Spec.NodeName).To(Equal(node))
		Expect(m.OwnerReferences).To(ConsistOf(metav1.OwnerReference{APIVersion: "v1", Kind: "Node", Name: node,
			UID: getNode(node).UID, Controller: ptr.To(true)}))
		first := running()[0]

		// a mirror deleted by hand comes back; the pod keeps running
		Expect(k8sClient.Delete(context.Background(), m)).To(Succeed())
		Eventually(func() types.UID {
			if n := mirror(); n != nil {
				return n.UID
			}
			return ""
		}, 10*time.Second, 50*time.Millisecond).ShouldNot(BeElementOf(types.UID(""), m.UID))
		Expect(running()).To(Equal([]string{first}))

		// an edit replaces the pod
		write("etcd.yaml", fmt.Sprintf(staticManifest, ns, "7200"))
		Eventually(func() []string { return running() }, 10*time.Second, 50*time.Millisecond).
			Should(And(HaveLen(1), Not(ContainElement(first))))
		Eventually(func() string {
			if n := mirror(); n != nil {
				return n.Annotations[AnnotationConfigMirror]
			}
			return ""
		}, 10*time.Second, 50*time.Millisecond).ShouldNot(Equal(m.Annotations[AnnotationConfigMirror]))

		// removing the file stops the pod and removes its mirror
		Expect(os.Remove(filepath.Join(dir, "etcd.yaml"))).To(Succeed())
		Eventually(running, 10*time.Second, 50*time.Millisecond).Should(BeEmpty())
		Eventually(func() bool {
			return apierrors.IsNotFound(k8sClient.Get(context.Background(), key, &corev1.Pod{}))
		}, 10*time.Second, 50*time.Millisecond).Should(BeTrue())
		sbs, err := rt.ListPodSandbox(context.Background(), &runtimeapi.PodSandboxFilter{LabelSelector: map[string]string{podplan.LabelPodName: key.Name}})
		Expect(err).NotTo(HaveOccurred())
		Expect(sbs).To(BeEmpty())
	},
		Entry("as an admin", false),
		Entry("as system:node:<name> under the Node authorizer", true),
	)
})

const gracefulManifest = `apiVersion: v1
kind: Pod
metadata:
  name: graceful
  namespace: %s
spec:
  terminationGracePeriodSeconds: 20
  containers:
  - name: main
    image: docker.io/library/busybox:local
    command: [sleep, "%s"]
    lifecycle:
      preStop: {exec: {command: [hold]}}
`

var _ = Describe("Static pods stopping", func() {
	It("stop a removed or replaced static pod within its grace period, its mirror kept until then; a file written anew restarts the pod", func() {
		node := "static-" + rand.String(5)
		ns := "static-" + rand.String(5)
		Expect(k8sClient.Create(context.Background(), &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: ns}})).To(Succeed())
		nodeObj := &corev1.Node{ObjectMeta: metav1.ObjectMeta{Name: node}}
		Expect(k8sClient.Create(context.Background(), nodeObj)).To(Succeed())
		DeferCleanup(func() { _ = k8sClient.Delete(context.Background(), nodeObj) })
		dir := GinkgoT().TempDir()
		file := filepath.Join(dir, "graceful.yaml")
		rt := fake.New()
		rt.LoadImage(busybox, 1<<20)
		// the preStop hook holds the stop until the test lets it go
		release := make(chan struct{})
		holding := make(chan string, 10)
		rt.SetExecHandler(func(ctx context.Context, id string, cmd []string) (*cri.ExecResult, error) {
			holding <- id
			select {
			case <-release:
			case <-ctx.Done():
			}
			return &cri.ExecResult{}, nil
		})
		Expect(os.WriteFile(file, []byte(fmt.Sprintf(gracefulManifest, ns, "3600")), 0o644)).To(Succeed())
		cfg := &v1alpha1.AgentConfiguration{NodeName: node, RootDir: GinkgoT().TempDir(), StaticPodPath: dir}
		setTestDefaults(cfg)
		startManager(func(mgr ctrl.Manager) error {
			return (&PodReconciler{Client: mgr.GetClient(), Runtime: rt, Recorder: mgr.GetEventRecorderFor("kubelet"), Config: cfg,
				RelistPeriod: 100 * time.Millisecond, StaticPodPeriod: 100 * time.Millisecond}).SetupWithManager(mgr)
		})
		key := types.NamespacedName{Namespace: ns, Name: "graceful-" + node}
		mirror := func() *corev1.Pod {
			p := &corev1.Pod{}
			if err := k8sClient.Get(context.Background(), key, p); err != nil {
				return nil
			}
			return p
		}
		type ctr struct {
			id      string
			attempt uint32
		}
		running := func() []ctr {
			cs, err := rt.ListContainers(context.Background(), &runtimeapi.ContainerFilter{
				State:         &runtimeapi.ContainerStateValue{State: runtimeapi.ContainerState_CONTAINER_RUNNING},
				LabelSelector: map[string]string{podplan.LabelPodName: key.Name}})
			Expect(err).NotTo(HaveOccurred())
			var out []ctr
			for _, c := range cs {
				out = append(out, ctr{c.Id, c.GetMetadata().GetAttempt()})
			}
			return out
		}
		mirrorPhase := func() corev1.PodPhase {
			if m := mirror(); m != nil {
				return m.Status.Phase
			}
			return ""
		}
		Eventually(running, 10*time.Second, 50*time.Millisecond).Should(HaveLen(1))
		Eventually(mirrorPhase, 10*time.Second, 50*time.Millisecond).Should(Equal(corev1.PodRunning))
		first, m := running()[0], mirror()

		// an edit: the old pod stops first (its preStop hook holds it), the new one waits
		Expect(os.WriteFile(file, []byte(fmt.Sprintf(gracefulManifest, ns, "7200")), 0o644)).To(Succeed())
		Eventually(holding, 10*time.Second).Should(Receive(Equal(first.id)))
		Consistently(func() []ctr { return running() }, time.Second, 100*time.Millisecond).Should(Equal([]ctr{first}))
		Expect(mirror().UID).To(Equal(m.UID))
		Expect(mirrorPhase()).To(Equal(corev1.PodRunning))
		release <- struct{}{}
		Eventually(func() []ctr { return running() }, 10*time.Second, 50*time.Millisecond).Should(And(HaveLen(1), Not(ContainElement(first))))
		Eventually(func() types.UID {
			if n := mirror(); n != nil && n.Status.Phase == corev1.PodRunning {
				return n.UID
			}
			return ""
		}, 10*time.Second, 50*time.Millisecond).ShouldNot(BeElementOf(types.UID(""), m.UID))
		second, m := running()[0], mirror()

		// removed and written again at once: the pod stops and runs again, restarted
		Expect(os.Remove(file)).To(Succeed())
		Expect(os.WriteFile(file, []byte(fmt.Sprintf(gracefulManifest, ns, "7200")), 0o644)).To(Succeed())
		Eventually(holding, 10*time.Second).Should(Receive(Equal(second.id)))
		release <- struct{}{}
		Eventually(func() []uint32 {
			var out []uint32
			for _, c := range running() {
				if c.id != second.id {
					out = append(out, c.attempt)
				}
			}
			return out
		}, 30*time.Second, 50*time.Millisecond).Should(Equal([]uint32{1}), "the container runs again as its restart 1")
		Eventually(func() int32 {
			if n := mirror(); n != nil && len(n.Status.ContainerStatuses) == 1 && n.Status.ContainerStatuses[0].State.Running != nil {
				return n.Status.ContainerStatuses[0].RestartCount
			}
			return -1
		}, 10*time.Second, 50*time.Millisecond).Should(BeEquivalentTo(1))
		third := running()[0]

		// removed: the mirror stays Running while the pod stops, then goes
		Expect(os.Remove(file)).To(Succeed())
		Eventually(holding, 10*time.Second).Should(Receive(Equal(third.id)))
		Consistently(mirrorPhase, time.Second, 100*time.Millisecond).Should(Equal(corev1.PodRunning))
		Expect(mirror().UID).To(Equal(m.UID))
		close(release)
		Eventually(running, 10*time.Second, 50*time.Millisecond).Should(BeEmpty())
		Eventually(func() bool { return apierrors.IsNotFound(k8sClient.Get(context.Background(), key, &corev1.Pod{})) },
			10*time.Second, 50*time.Millisecond).Should(BeTrue())
	})
})

func getNode(name string) *corev1.Node {
	n := &corev1.Node{}
	Expect(k8sClient.Get(context.Background(), types.NamespacedName{Name: name}, n)).To(Succeed())
	return n
}

var _ = Describe("Static pods without an API server", func() {
	It("run from the manifest folder although no API server answers", func() {
		node := "static-" + rand.String(5)
		dir := GinkgoT().TempDir()
		Expect(os.WriteFile(filepath.Join(dir, "p.yaml"), []byte(fmt.Sprintf(staticManifest, "default", "3600")), 0o644)).To(Succeed())
		rt := fake.New()
		rt.LoadImage(busybox, 1<<20)
		cfg := &v1alpha1.AgentConfiguration{NodeName: node, RootDir: GinkgoT().TempDir(), StaticPodPath: dir}
		setTestDefaults(cfg)
		dead, err := client.New(&rest.Config{Host: "https://127.0.0.1:1"}, client.Options{Scheme: scheme.Scheme})
		Expect(err).NotTo(HaveOccurred())
		// a manager that is never started: no cache, no controllers, no API server
		mgr, err := ctrl.NewManager(env.Config, managerOptions())
		Expect(err).NotTo(HaveOccurred())
		ctx, cancel := context.WithCancel(context.Background())
		DeferCleanup(cancel)
		Expect((&PodReconciler{Client: mgr.GetClient(), MirrorClient: dead, StaticContext: ctx, Runtime: rt,
			Recorder: record.NewFakeRecorder(100), Config: cfg, StaticPodPeriod: 100 * time.Millisecond}).SetupWithManager(mgr)).To(Succeed())
		Eventually(func() int {
			cs, err := rt.ListContainers(context.Background(), &runtimeapi.ContainerFilter{
				State:         &runtimeapi.ContainerStateValue{State: runtimeapi.ContainerState_CONTAINER_RUNNING},
				LabelSelector: map[string]string{podplan.LabelPodName: "etcdish-" + node}})
			Expect(err).NotTo(HaveOccurred())
			return len(cs)
		}, 10*time.Second, 50*time.Millisecond).Should(Equal(1))
	})
})
