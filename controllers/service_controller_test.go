package controllers

import (
	"context"
	"encoding/json"
	"fmt"
	"net"
	"net/http"
	"sync"
	"sync/atomic"
	"time"

	. "github.com/onsi/ginkgo/v2"
	. "github.com/onsi/gomega"
	corev1 "k8s.io/api/core/v1"
	discoveryv1 "k8s.io/api/discovery/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/util/rand"
	"k8s.io/utils/ptr"
	ctrl "sigs.k8s.io/controller-runtime"
	"sigs.k8s.io/controller-runtime/pkg/metrics"

	"github.com/nodekeeper/nodekeeper/netrules"
	"github.com/nodekeeper/nodekeeper/netrules/healthcheck"
	"github.com/nodekeeper/nodekeeper/netrules/iptables"
)

// countingBackend counts syncs; each takes at least delay, like a big ruleset would.
type countingBackend struct {
	be    RulesBackend
	delay time.Duration
	n     atomic.Int32
	mu    sync.Mutex
	last  []string // the changed Services of the last partial sync
}

func (c *countingBackend) SyncState(ctx context.Context, st *netrules.State, changed []string, full bool) (netrules.SyncStats, error) {
	time.Sleep(c.delay)
	c.n.Add(1)
	if !full {
		c.mu.Lock()
		c.last = append([]string(nil), changed...)
		c.mu.Unlock()
	}
	return c.be.SyncState(ctx, st, changed, full)
}

func gauge(name string) float64 {
	mfs, err := metrics.Registry.Gather()
	Expect(err).NotTo(HaveOccurred())
	for _, mf := range mfs {
		if mf.GetName() != name {
			continue
		}
		m := mf.GetMetric()[0]
		if m.GetGauge() != nil {
			return m.GetGauge().GetValue()
		}
		if m.GetHistogram() != nil {
			return float64(m.GetHistogram().GetSampleCount())
		}
		if m.GetCounter() != nil {
			return m.GetCounter().GetValue()
		}
	}
	return -1
}

var _ = Describe("ServiceReconciler against the stateful iptables fake", func() {
	It("programs Services from the API, reports kube-proxy metrics and health", func() {
		fake := iptables.NewFake()
		be := &countingBackend{be: iptables.New(iptables.Options{Family: netrules.IPv4, Runner: fake}), delay: 300 * time.Millisecond}
		// /healthz needs this node's Node (kube-proxy's node eligibility)
		nodeObj := &corev1.Node{ObjectMeta: metav1.ObjectMeta{Name: "node-fake-" + rand.String(5)}}
		Expect(k8sClient.Create(context.Background(), nodeObj)).To(Succeed())
		DeferCleanup(func() { _ = k8sClient.Delete(context.Background(), nodeObj) })
		health := &healthcheck.Proxy{Timeout: time.Minute}
		rec := &ServiceReconciler{Node: netrules.Node{Name: nodeObj.Name}, Backends: map[netrules.Family]RulesBackend{netrules.IPv4: be}, ProxyHealth: health}
		startManager(func(mgr ctrl.Manager) error {
			rec.Client = mgr.GetClient()
			return rec.SetupWithManager(mgr)
		})
		l, err := net.Listen("tcp", "127.0.0.1:0")
		Expect(err).NotTo(HaveOccurred())
		hs := &healthcheck.Server{Listen: func(string) (net.Listener, error) { return l, nil }, Handler: health.Handler()}
		ctx, cancel := context.WithCancel(context.Background())
		DeferCleanup(cancel)
		go func() { _ = hs.Start(ctx) }()

		ns := "svc-fake-" + rand.String(5)
		Expect(k8sClient.Create(ctx, &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: ns}})).To(Succeed())
		svc := &corev1.Service{ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: "web"},
			Spec: corev1.ServiceSpec{ClusterIP: clusterIP(), Ports: []corev1.ServicePort{{Name: "http", Port: 80, Protocol: corev1.ProtocolTCP}}}}
		Expect(k8sClient.Create(ctx, svc)).To(Succeed())
		DeferCleanup(func() { _ = k8sClient.Delete(context.Background(), svc) })
		// no endpoints yet: REJECT
		Eventually(func() string { return fake.Dump("filter") }, 10*time.Second, 50*time.Millisecond).
			Should(ContainSubstring(ns + "/web:http has no endpoints"))

		trigger := time.Now().Add(-2 * time.Second).UTC().Format(time.RFC3339Nano)
		slice := &discoveryv1.EndpointSlice{
			ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: "web-1", Labels: map[string]string{discoveryv1.LabelServiceName: "web"},
				Annotations: map[string]string{corev1.EndpointsLastChangeTriggerTime: trigger}},
			AddressType: discoveryv1.AddressTypeIPv4,
			Ports:       []discoveryv1.EndpointPort{{Name: ptr.To("http"), Port: ptr.To(int32(8080)), Protocol: ptr.To(corev1.ProtocolTCP)}},
			Endpoints:   []discoveryv1.Endpoint{{Addresses: []string{"10.244.9.9"}}},
		}
		Expect(k8sClient.Create(ctx, slice)).To(Succeed())
		DeferCleanup(func() { _ = k8sClient.Delete(context.Background(), slice) })
		Eventually(func() string { return fake.Dump("nat") }, 10*time.Second, 50*time.Millisecond).
			Should(ContainSubstring("--to-destination 10.244.9.9:8080"))
		Expect(fake.Dump("filter")).NotTo(ContainSubstring(ns + "/web:http has no endpoints"))

		// a burst of changes arriving while a sync runs coalesces into one more sync
		time.Sleep(time.Second)
		before := be.n.Load()
		for i := 0; i < 20; i++ {
			slice.Endpoints = []discoveryv1.Endpoint{{Addresses: []string{fmt.Sprintf("10.244.9.%d", 10+i)}}}
			Expect(k8sClient.Update(ctx, slice)).To(Succeed())
		}
		// wait until the syncs stop: one per update would be 20 syncs (6 s of them); coalesced,
		// the burst lands in the sync running when it starts plus at most two more (one more
		// if the burst straddles a sync's end), and perhaps a periodic one
		last, stableSince := be.n.Load(), time.Now()
		Eventually(func() time.Duration {
			if n := be.n.Load(); n != last {
				last, stableSince = n, time.Now()
			}
			return time.Since(stableSince)
		}, 15*time.Second, 50*time.Millisecond).Should(BeNumerically(">", time.Second))
		Expect(be.n.Load()-before).To(BeNumerically("<=", 4), "20 updates must coalesce into a few syncs")
		Expect(be.n.Load() - before).To(BeNumerically(">=", 1))
		Expect(fake.Dump("nat")).To(And(ContainSubstring("--to-destination 10.244.9.29:8080"), Not(ContainSubstring("10.244.9.28:8080"))))
		// a partial sync is told about the one Service that changed, nothing else
		be.mu.Lock()
		Expect(be.last).To(Equal([]string{ns + "/web"}))
		be.mu.Unlock()
		Expect(gauge("kubeproxy_sync_proxy_rules_service_changes_total")).To(BeNumerically(">=", 1))
		Expect(gauge("kubeproxy_sync_proxy_rules_endpoint_changes_total")).To(BeNumerically(">=", 21))
		Expect(gauge("kubeproxy_sync_proxy_rules_service_changes_pending")).To(BeNumerically("==", 0))
		Expect(gauge("kubeproxy_sync_proxy_rules_last_queued_timestamp_seconds")).To(BeNumerically(">", 0))
		Expect(gauge("kubeproxy_sync_partial_proxy_rules_duration_seconds")).To(BeNumerically(">", 0))

		Expect(gauge("kubeproxy_sync_proxy_rules_last_timestamp_seconds")).To(BeNumerically(">", 0))
		Expect(gauge("kubeproxy_sync_proxy_rules_duration_seconds")).To(BeNumerically(">", 0))
		Expect(gauge("kubeproxy_sync_full_proxy_rules_duration_seconds")).To(BeNumerically(">", 0))
		Expect(gauge("kubeproxy_network_programming_duration_seconds")).To(BeNumerically(">", 0))

		get := func(path string) (int, map[string]any) {
			resp, err := http.Get("http://" + l.Addr().String() + path)
			Expect(err).NotTo(HaveOccurred())
			defer resp.Body.Close()
			Expect(resp.Header.Get("X-Content-Type-Options")).To(Equal("nosniff"))
			var body map[string]any
			Expect(json.NewDecoder(resp.Body).Decode(&body)).To(Succeed())
			return resp.StatusCode, body
		}
		code, body := get("/healthz")
		Expect(code).To(Equal(http.StatusOK))
		Expect(body).To(HaveKeyWithValue("nodeEligible", true))
		Expect(body).To(HaveKeyWithValue("healthy", true))
		Expect(body["lastUpdated"]).NotTo(BeEmpty())
		Expect(body["status"]).To(HaveKeyWithValue("IPv4", HaveKeyWithValue("healthy", true)))

		// a node the autoscaler is about to delete fails /healthz (load balancers drain
		// it); /livez does not look at the node
		nodeObj.Spec.Taints = []corev1.Taint{{Key: healthcheck.ToBeDeletedTaint, Effect: corev1.TaintEffectNoSchedule}}
		Expect(k8sClient.Update(ctx, nodeObj)).To(Succeed())
		Eventually(func() int { code, _ := get("/healthz"); return code }, 10*time.Second, 50*time.Millisecond).Should(Equal(http.StatusServiceUnavailable))
		_, body = get("/healthz")
		Expect(body).To(HaveKeyWithValue("nodeEligible", false))
		code, _ = get("/livez")
		Expect(code).To(Equal(http.StatusOK))
	})

	It("retries a failed sync and never leaves half-applied rules", func() {
		fake := iptables.NewFake()
		rec := &ServiceReconciler{Node: netrules.Node{Name: "node-fake2"},
			Backends: map[netrules.Family]RulesBackend{netrules.IPv4: iptables.New(iptables.Options{Family: netrules.IPv4, Runner: fake})}}
		fake.FailNext = true
		startManager(func(mgr ctrl.Manager) error {
			rec.Client = mgr.GetClient()
			return rec.SetupWithManager(mgr)
		})
		Eventually(func() int { return fake.Restores }, 10*time.Second, 50*time.Millisecond).Should(BeNumerically(">=", 1))
		Expect(gauge("kubeproxy_sync_proxy_rules_iptables_restore_failures_total")).To(BeNumerically(">=", 1))
		Expect(fake.Dump("nat")).To(ContainSubstring("-A PREROUTING -m comment --comment \"kubernetes service portals\" -j KUBE-SERVICES"))
	})
})

// callAfterBackend asks to be called back once, after a delay, then records the call.
type callAfterBackend struct {
	mu    sync.Mutex
	calls []time.Time
	asked time.Time
}

func (b *callAfterBackend) SyncState(_ context.Context, _ *netrules.State, changed []string, full bool) (netrules.SyncStats, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	b.calls = append(b.calls, time.Now())
	if b.asked.IsZero() && !full {
		b.asked = time.Now()
		return netrules.SyncStats{CallAfter: 700 * time.Millisecond}, nil
	}
	return netrules.SyncStats{}, nil
}

var _ = Describe("ServiceReconciler and a backend's CallAfter", func() {
	It("calls the backend again after CallAfter without any change (stale objects fall due)", func() {
		be := &callAfterBackend{}
		rec := &ServiceReconciler{Node: netrules.Node{Name: "node-callafter-" + rand.String(5)}, Backends: map[netrules.Family]RulesBackend{netrules.IPv4: be}}
		startManager(func(mgr ctrl.Manager) error {
			rec.Client = mgr.GetClient()
			return rec.SetupWithManager(mgr)
		})
		ctx := context.Background()
		ns := "svc-callafter-" + rand.String(5)
		Expect(k8sClient.Create(ctx, &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: ns}})).To(Succeed())
		time.Sleep(time.Second) // the first (full) sync is done
		svc := &corev1.Service{ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: "web"},
			Spec: corev1.ServiceSpec{ClusterIP: clusterIP(), Ports: []corev1.ServicePort{{Name: "http", Port: 80, Protocol: corev1.ProtocolTCP}}}}
		Expect(k8sClient.Create(ctx, svc)).To(Succeed())
		DeferCleanup(func() { _ = k8sClient.Delete(context.Background(), svc) })
		Eventually(func() bool {
			be.mu.Lock()
			defer be.mu.Unlock()
			for _, c := range be.calls {
				if !be.asked.IsZero() && c.Sub(be.asked) >= 600*time.Millisecond {
					return true
				}
			}
			return false
		}, 10*time.Second, 50*time.Millisecond).Should(BeTrue(), "no call after CallAfter")
	})
})
