package controllers

import (
	"context"
	"errors"
	"strings"
	"sync/atomic"
	"time"

	. "github.com/onsi/ginkgo/v2"
	. "github.com/onsi/gomega"
	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"sigs.k8s.io/controller-runtime/pkg/client"

	"github.com/nodekeeper/nodekeeper/runtime/cri/fake"
)

// stopFails is the fake runtime whose StopContainer fails while fail is set.
type stopFails struct {
	*fake.Runtime
	fail atomic.Bool
}

func (s *stopFails) StopContainer(ctx context.Context, id string, timeout time.Duration) error {
	if s.fail.Load() {
		return errors.New("rpc error: code = Unknown desc = failed to kill container: permission denied")
	}
	return s.Runtime.StopContainer(ctx, id, timeout)
}

var _ = Describe("A deleted pod whose containers cannot be killed", func() {
	It("records a FailedKillPod Warning, keeps trying, and lets the pod go once the kill succeeds", func() {
		rt := &stopFails{Runtime: fake.New()}
		a := agentWith("killfail-", rt.Runtime, rt, "", nil)
		p := a.pod("stuck", corev1.RestartPolicyAlways, nil)
		Eventually(phase(p), 10*time.Second, 50*time.Millisecond).Should(Equal(corev1.PodRunning))
		p = getPod(p)
		rt.fail.Store(true)
		Expect(k8sClient.Delete(context.Background(), p)).To(Succeed())
		failedKills := func() (n int32, msg string) {
			evs := &corev1.EventList{}
			Expect(k8sClient.List(context.Background(), evs, client.InNamespace(a.ns))).To(Succeed())
			for _, e := range evs.Items {
				if e.Reason == "FailedKillPod" {
					Expect(e.Type).To(Equal(corev1.EventTypeWarning))
					Expect(e.InvolvedObject.UID).To(Equal(p.UID))
					Expect(e.InvolvedObject.FieldPath).To(BeEmpty())
					n, msg = n+e.Count, e.Message
				}
			}
			return n, msg
		}
		Eventually(func() int32 { n, _ := failedKills(); return n }, 10*time.Second, 100*time.Millisecond).Should(BeNumerically(">=", 2), "each failed attempt, aggregated")
		_, msg := failedKills()
		Expect(msg).To(HavePrefix("error killing pod: "))
		Expect(strings.Contains(msg, "permission denied")).To(BeTrue(), msg)
		Expect(a.running(p.UID, "app")).NotTo(BeEmpty(), "still running")
		Expect(k8sClient.Get(context.Background(), client.ObjectKeyFromObject(p), &corev1.Pod{})).To(Succeed(), "not released while it runs")

		rt.fail.Store(false)
		Eventually(func() bool {
			return apierrors.IsNotFound(k8sClient.Get(context.Background(), client.ObjectKeyFromObject(p), &corev1.Pod{}))
		}, 20*time.Second, 100*time.Millisecond).Should(BeTrue())
		Expect(a.running(p.UID, "app")).To(BeEmpty())
	})
})
