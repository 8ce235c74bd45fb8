package controllers

import (
	"context"
	"os"
	"sync"
	"time"

	. "github.com/onsi/ginkgo/v2"
	. "github.com/onsi/gomega"
	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	runtimeapi "k8s.io/cri-api/pkg/apis/runtime/v1"
	"k8s.io/utils/ptr"
	"sigs.k8s.io/controller-runtime/pkg/client"

	"github.com/nodekeeper/nodekeeper/internal/podplan"
	"github.com/nodekeeper/nodekeeper/runtime/cri/fake"
)

const testFinalizer = "example.com/test-finalizer"

// removeFinalizer lets a pod held by testFinalizer go.
func removeFinalizer(p *corev1.Pod) {
	Eventually(func() error {
		cur := &corev1.Pod{}
		if err := k8sClient.Get(context.Background(), client.ObjectKeyFromObject(p), cur); err != nil {
			return client.IgnoreNotFound(err)
		}
		cur.Finalizers = nil
		return k8sClient.Update(context.Background(), cur)
	}, 10*time.Second, 100*time.Millisecond).Should(Succeed())
}

func gone(p *corev1.Pod) func() bool {
	return func() bool {
		err := k8sClient.Get(context.Background(), client.ObjectKeyFromObject(p), &corev1.Pod{})
		return apierrors.IsNotFound(err)
	}
}

var _ = Describe("Final status of deleted pods (fake runtime)", func() {
	for _, policy := range []corev1.RestartPolicy{corev1.RestartPolicyAlways, corev1.RestartPolicyOnFailure, corev1.RestartPolicyNever} {
		It("writes Failed and the killed container's exit code on a deleted "+string(policy)+" pod a finalizer holds", func() {
			a := newPodAgent()
			p := a.pod("deleted-running", policy, func(p *corev1.Pod) { p.Finalizers = []string{testFinalizer} })
			DeferCleanup(removeFinalizer, p)
			Eventually(phase(p), 10*time.Second, 50*time.Millisecond).Should(Equal(corev1.PodRunning))
			Expect(k8sClient.Delete(context.Background(), p, client.GracePeriodSeconds(1))).To(Succeed())
			Eventually(phase(p), 10*time.Second, 50*time.Millisecond).Should(Equal(corev1.PodFailed))
			got := getPod(p)
			Expect(got.DeletionTimestamp).NotTo(BeNil())
			Expect(got.Status.ContainerStatuses).To(HaveLen(1))
			term := got.Status.ContainerStatuses[0].State.Terminated
			Expect(term).NotTo(BeNil())
			Expect(term.ExitCode).To(Equal(int32(143))) // the fake honours SIGTERM
			Expect(term.Reason).To(Equal("Error"))
			Expect(term.ContainerID).To(HavePrefix("fake-runtime://"))
			Expect(podCondition(got, corev1.PodReady)).To(Equal(corev1.ConditionFalse))
			// the runtime side is gone, and the status stays as written
			Eventually(func() int { return len(a.containers(got.UID, "app")) }, 10*time.Second, 50*time.Millisecond).Should(BeZero())
			// the agent's own delete (grace 0) is the last write: the pod is not written
			// again (no update loop on a pod held by a finalizer)
			Eventually(func() *int64 { return getPod(p).DeletionGracePeriodSeconds }, 10*time.Second, 50*time.Millisecond).
				Should(Equal(ptr.To[int64](0)))
			rv := getPod(p).ResourceVersion
			Consistently(func() string { return getPod(p).ResourceVersion }, 2*time.Second, 100*time.Millisecond).Should(Equal(rv))
			Expect(getPod(p).Status.ContainerStatuses[0].State.Terminated).To(Equal(term))
			removeFinalizer(p)
			Eventually(gone(p), 10*time.Second, 50*time.Millisecond).Should(BeTrue())
		})
	}

	It("writes Succeeded when the containers exit 0 on SIGTERM", func() {
		a := newPodAgent()
		p := a.pod("deleted-clean", corev1.RestartPolicyAlways, func(p *corev1.Pod) { p.Finalizers = []string{testFinalizer} })
		DeferCleanup(removeFinalizer, p)
		Eventually(phase(p), 10*time.Second, 50*time.Millisecond).Should(Equal(corev1.PodRunning))
		p = getPod(p)
		Expect(a.runtime.SetTermExitCode(a.running(p.UID, "app"), 0)).To(Succeed())
		Expect(k8sClient.Delete(context.Background(), p)).To(Succeed())
		Eventually(phase(p), 10*time.Second, 50*time.Millisecond).Should(Equal(corev1.PodSucceeded))
		term := getPod(p).Status.ContainerStatuses[0].State.Terminated
		Expect(term).NotTo(BeNil())
		Expect(term.ExitCode).To(BeZero())
		Expect(term.Reason).To(Equal("Completed"))
	})

	// containerd 1.6 still reports a container whose process has just ended running for a
	// few milliseconds after StopContainer returns (test/charte2e: the helm test pod,
	// deleted as it exited, was written Failed with 137 ContainerStatusUnknown)
	It("waits until the runtime reports a stopped container exited instead of writing ContainerStatusUnknown", func() {
		a := newPodAgent()
		p := a.pod("deleted-stop-lag", corev1.RestartPolicyNever, func(p *corev1.Pod) { p.Finalizers = []string{testFinalizer} })
		DeferCleanup(removeFinalizer, p)
		Eventually(phase(p), 10*time.Second, 50*time.Millisecond).Should(Equal(corev1.PodRunning))
		p = getPod(p)
		id := a.running(p.UID, "app")
		Expect(a.runtime.SetTermExitCode(id, 0)).To(Succeed())
		Expect(a.runtime.SetStopLag(id, 3)).To(Succeed())
		Expect(k8sClient.Delete(context.Background(), p)).To(Succeed())
		Eventually(phase(p), 10*time.Second, 50*time.Millisecond).Should(Or(Equal(corev1.PodSucceeded), Equal(corev1.PodFailed)))
		got := getPod(p)
		Expect(got.Status.ContainerStatuses).To(HaveLen(1))
		term := got.Status.ContainerStatuses[0].State.Terminated
		Expect(term).NotTo(BeNil())
		Expect(term.Reason).To(Equal("Completed"))
		Expect(term.ExitCode).To(BeZero())
		Expect(term.ContainerID).To(Equal("fake-runtime://" + id))
		Expect(got.Status.Phase).To(Equal(corev1.PodSucceeded))
	})

	// as upstream's SyncTerminatedPod, which leaves the containers "to make sure logs are
	// available until the pod is physically deleted": the kubelet API serves a container's
	// logs from the runtime, so the containers and their logs stay until the agent deletes
	// the Pod object (test/charte2e: helm test --logs got 404 for a pod the DaemonSet
	// controller had deleted, whose final status was written but whose container the
	// agent had removed before it deleted the pod)
	It("keeps a deleted pod's containers and logs until it deletes the Pod object", func() {
		type seen struct {
			containers, logs int
		}
		var (
			mu       sync.Mutex
			atDelete []seen
		)
		rt := fake.New()
		a := newPodAgentOn(rt, func(c client.Client) client.Client {
			return &deleteHook{Client: c, before: func(obj client.Object) {
				if _, ok := obj.(*corev1.Pod); !ok || obj.GetName() != "deleted-logs" {
					return
				}
				cs, err := rt.ListContainers(context.Background(), &runtimeapi.ContainerFilter{LabelSelector: map[string]string{
					podplan.LabelPodUID: string(obj.GetUID()), podplan.LabelContainerName: "app"}})
				s := seen{containers: len(cs)}
				if err != nil {
					s.containers = -1 // the runtime did not answer (it is a fake: never)
				}
				for _, c := range cs {
					if st, err := rt.ContainerStatus(context.Background(), c.Id); err == nil {
						if _, err := os.Stat(st.LogPath); err == nil {
							s.logs++
						}
					}
				}
				mu.Lock()
				defer mu.Unlock()
				atDelete = append(atDelete, s)
			}}
		})
		p := a.pod("deleted-logs", corev1.RestartPolicyNever, nil)
		Eventually(phase(p), 10*time.Second, 50*time.Millisecond).Should(Equal(corev1.PodRunning))
		p = getPod(p)
		// deleted while it runs, as the DaemonSet controller did (a terminal pod's delete
		// is immediate: the API server gives it grace 0, and the agent never deletes it)
		Expect(a.runtime.SetTermExitCode(a.running(p.UID, "app"), 0)).To(Succeed())
		Expect(k8sClient.Delete(context.Background(), p)).To(Succeed())
		Eventually(gone(p), 10*time.Second, 50*time.Millisecond).Should(BeTrue())
		mu.Lock()
		Expect(atDelete).NotTo(BeEmpty())
		Expect(atDelete[0]).To(Equal(seen{containers: 1, logs: 1}), "the container and its log when the agent deleted the pod")
		mu.Unlock()
		// and once the pod is deleted, they go
		Eventually(func() int { return len(a.containers(p.UID, "app")) }, 10*time.Second, 50*time.Millisecond).Should(BeZero())
	})

	It("writes Failed on a pod deleted while its image cannot be pulled", func() {
		a := newPodAgent()
		p := a.pod("deleted-pending", corev1.RestartPolicyAlways, func(p *corev1.Pod) {
			p.Finalizers = []string{testFinalizer}
			p.Spec.Containers[0].Image = "non-existing-repo/non-existing-image:v1.0"
			p.Spec.Containers[0].ImagePullPolicy = corev1.PullAlways
		})
		DeferCleanup(removeFinalizer, p)
		Eventually(func() string {
			cs := getPod(p).Status.ContainerStatuses
			if len(cs) == 0 || cs[0].State.Waiting == nil {
				return ""
			}
			return cs[0].State.Waiting.Reason
		}, 10*time.Second, 50*time.Millisecond).Should(Or(Equal("ErrImagePull"), Equal("ImagePullBackOff")))
		Expect(k8sClient.Delete(context.Background(), p, &client.DeleteOptions{GracePeriodSeconds: ptr.To[int64](30)})).To(Succeed())
		Eventually(phase(p), 10*time.Second, 50*time.Millisecond).Should(Equal(corev1.PodFailed))
		term := getPod(p).Status.ContainerStatuses[0].State.Terminated
		Expect(term).NotTo(BeNil())
		Expect(term.ExitCode).To(Equal(int32(137)))
		Expect(term.Reason).To(Equal("ContainerStatusUnknown"))
	})
})

// deleteHook calls before with each object the wrapped client is asked to delete, before
// deleting it.
type deleteHook struct {
	client.Client
	before func(client.Object)
}

func (d *deleteHook) Delete(ctx context.Context, obj client.Object, opts ...client.DeleteOption) error {
	d.before(obj)
	return d.Client.Delete(ctx, obj, opts...)
}
