package controllers

import (
	"context"
	"fmt"
	"io"
	"net"
	"strings"
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
	"sigs.k8s.io/controller-runtime/pkg/client"

	"github.com/nodekeeper/nodekeeper/internal/netnstest"
	"github.com/nodekeeper/nodekeeper/netrules"
	"github.com/nodekeeper/nodekeeper/netrules/conntrack"
	"github.com/nodekeeper/nodekeeper/netrules/healthcheck"
	"github.com/nodekeeper/nodekeeper/netrules/iptables"
	"github.com/nodekeeper/nodekeeper/netrules/nftables"
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
)

const netnsNode = "node-a"

// nextIP hands out ClusterIPs from envtest's 10.0.0.0/24 service range.
var nextIP atomic.Int32

func clusterIP() string { return fmt.Sprintf("10.0.0.%d", 100+nextIP.Add(1)) }

type backendCase struct {
	name    string
	backend func(nodeNS string) RulesBackend
	dump    func(nodeNS string) (string, error)
	breakIt func(nodeNS string) error
}

var backendCases = []backendCase{
	{
		name: "iptables-legacy",
		backend: func(ns string) RulesBackend {
			return iptables.New(iptables.Options{Family: netrules.IPv4, Variant: "legacy", Runner: iptables.Exec{Prefix: []string{"nsenter", "--net=/run/netns/" + ns}}})
		},
		breakIt: func(ns string) error {
			return netnstest.Run(ns, "iptables-legacy", "-w", "5", "-t", "nat", "-F", "KUBE-SERVICES")
		},
	},
	{
		name: "iptables-nft",
		backend: func(ns string) RulesBackend {
			return iptables.New(iptables.Options{Family: netrules.IPv4, Variant: "nft", Runner: iptables.Exec{Prefix: []string{"nsenter", "--net=/run/netns/" + ns}}})
		},
		breakIt: func(ns string) error {
			return netnstest.Run(ns, "iptables-nft", "-w", "5", "-t", "nat", "-F", "KUBE-SERVICES")
		},
	},
	{
		name: "nftables-anonymous-maps",
		backend: func(ns string) RulesBackend {
			p, err := nftables.New(nftables.Options{Family: netrules.IPv4, NetNS: "/run/netns/" + ns, Spread: nftables.SpreadAnonymous})
			Expect(err).NotTo(HaveOccurred())
			DeferCleanup(p.Close)
			return p
		},
		breakIt: func(ns string) error {
			return flushDispatch(ns, 1)
		},
	},
	{
		name: "nftables",
		backend: func(ns string) RulesBackend {
			p, err := nftables.New(nftables.Options{Family: netrules.IPv4, NetNS: "/run/netns/" + ns})
			Expect(err).NotTo(HaveOccurred())
			DeferCleanup(p.Close)
			return p
		},
		breakIt: func(ns string) error {
			return flushDispatch(ns, 1)
		},
	},
	{
		// every Service port in a shard table of its own: the dispatch crosses tables
		// (each shard's nat chains in turn), shared keys move between shards
		name: "nftables-one-port-per-shard",
		backend: func(ns string) RulesBackend {
			p, err := nftables.New(nftables.Options{Family: netrules.IPv4, NetNS: "/run/netns/" + ns, TablePorts: 1})
			Expect(err).NotTo(HaveOccurred())
			DeferCleanup(p.Close)
			return p
		},
		breakIt: func(ns string) error {
			for i := 1; i <= 64; i++ { // every shard's dispatch
				if err := netnstest.Run(ns, "nft", "list", "table", "ip", nftables.ShardTableName(i)); err != nil {
					return nil
				}
				if err := flushDispatch(ns, i); err != nil {
					return err
				}
			}
			return nil
		},
	},
}

// flushDispatch empties a shard's ClusterIP dispatch (its nat base chains).
func flushDispatch(ns string, shard int) error {
	t := nftables.ShardTableName(shard)
	return netnstest.Run(ns, "nft", fmt.Sprintf("flush chain ip %s nat-prerouting; flush chain ip %s nat-output", t, t))
}

var _ = Describe("ServiceReconciler in a network namespace", Label("netns", "root"), Ordered, func() {
	for _, bc := range backendCases {
		bc := bc
		Context(bc.name, Ordered, func() {
			var (
				topo *netnstest.Topology
				ns   string
				rec  *ServiceReconciler
			)
			BeforeAll(func() {
				if why := netnstest.Available(); why != "" {
					Skip(why)
				}
				var err error
				topo, err = netnstest.Up(netnstest.NamePrefix("nk") + rand.String(4) + "-")
				Expect(err).NotTo(HaveOccurred())
				DeferCleanup(topo.Down)
				for i, name := range []string{"pod1", "pod2", "pod3"} {
					_, err := topo.AddPod(name, fmt.Sprintf("10.244.0.%d", 11+i))
					Expect(err).NotTo(HaveOccurred())
				}
				ns = "svc-" + rand.String(5)
				Expect(k8sClient.Create(context.Background(), &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: ns}})).To(Succeed())
				rec = &ServiceReconciler{
					Node: netrules.Node{Name: netnsNode,
						ClusterCIDRs: []netip.Prefix{netip.MustParsePrefix(netnstest.ClusterCID)}},
					Backends:       map[netrules.Family]RulesBackend{netrules.IPv4: bc.backend(topo.Node)},
					Conntrack:      &conntrack.Cleaner{NetNS: "/run/netns/" + topo.Node},
					FullSyncPeriod: 2 * time.Second,
					HealthChecks: &healthcheck.Services{Listen: func(addr string) (net.Listener, error) {
						return netnstest.InNetns(topo.Node, func() (net.Listener, error) { return net.Listen("tcp", addr) })
					}},
				}
				startManager(func(mgr ctrl.Manager) error {
					rec.Client = mgr.GetClient()
					return rec.SetupWithManager(mgr)
				})
				DeferCleanup(func() {
					// leave no Services behind for the next backend's reconciler
					ctx := context.Background()
					Expect(k8sClient.DeleteAllOf(ctx, &discoveryv1.EndpointSlice{}, client.InNamespace(ns))).To(Succeed())
					svcs := &corev1.ServiceList{}
					Expect(k8sClient.List(ctx, svcs, client.InNamespace(ns))).To(Succeed())
					for i := range svcs.Items {
						Expect(k8sClient.Delete(ctx, &svcs.Items[i])).To(Succeed())
					}
					if rec.HealthChecks != nil {
						rec.HealthChecks.Close()
					}
				})
			})

			type ep struct {
				pod      string
				node     string
				notReady bool
			}
			podIP := map[string]string{"pod1": "10.244.0.11", "pod2": "10.244.0.12", "pod3": "10.244.0.13", "pod4": "10.244.0.14"}
			makeService := func(name string, mutate func(*corev1.Service)) *corev1.Service {
				svc := &corev1.Service{
					ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: name},
					Spec: corev1.ServiceSpec{ClusterIP: clusterIP(), Ports: []corev1.ServicePort{
						{Name: "http", Port: 80, Protocol: corev1.ProtocolTCP},
					}},
				}
				if mutate != nil {
					mutate(svc)
				}
				// other specs of the envtest let the API server pick ClusterIPs from the
				// same range: take the next address when one is held
				err := k8sClient.Create(context.Background(), svc)
				for i := 0; i < 20 && err != nil && strings.Contains(err.Error(), "provided IP is already allocated"); i++ {
					svc.Spec.ClusterIP, svc.Spec.ClusterIPs, svc.ResourceVersion = clusterIP(), nil, ""
					err = k8sClient.Create(context.Background(), svc)
				}
				Expect(err).To(Succeed())
				return svc
			}
			setEndpoints := func(svc *corev1.Service, eps ...ep) {
				slice := &discoveryv1.EndpointSlice{
					ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: svc.Name + "-1", Labels: map[string]string{
						discoveryv1.LabelServiceName: svc.Name, discoveryv1.LabelManagedBy: "test"}},
					AddressType: discoveryv1.AddressTypeIPv4,
				}
				for _, p := range svc.Spec.Ports {
					target := int32(8080)
					if p.Protocol == corev1.ProtocolUDP {
						target = 5353
					}
					slice.Ports = append(slice.Ports, discoveryv1.EndpointPort{Name: ptr.To(p.Name), Port: ptr.To(target), Protocol: ptr.To(p.Protocol)})
				}
				for _, e := range eps {
					node := e.node
					if node == "" {
						node = netnsNode
					}
					slice.Endpoints = append(slice.Endpoints, discoveryv1.Endpoint{
						Addresses: []string{podIP[e.pod]}, NodeName: ptr.To(node),
						Conditions: discoveryv1.EndpointConditions{Ready: ptr.To(!e.notReady)}})
				}
				existing := &discoveryv1.EndpointSlice{}
				err := k8sClient.Get(context.Background(), client.ObjectKeyFromObject(slice), existing)
				if err == nil {
					existing.Endpoints, existing.Ports = slice.Endpoints, slice.Ports
					Expect(k8sClient.Update(context.Background(), existing)).To(Succeed())
					return
				}
				Expect(k8sClient.Create(context.Background(), slice)).To(Succeed())
			}
			url := func(ip string, port int32) string { return fmt.Sprintf("http://%s:%d/", ip, port) }

			It("balances a ClusterIP over every ready backend and stops using one that turns not ready", func() {
				svc := makeService("web", nil)
				setEndpoints(svc, ep{pod: "pod1"}, ep{pod: "pod2"}, ep{pod: "pod3"})
				Eventually(func() map[string]int { return netnstest.Histogram(topo.Client, url(svc.Spec.ClusterIP, 80), 1) },
					20*time.Second, 200*time.Millisecond).ShouldNot(HaveKey("ERR"))
				h := netnstest.Histogram(topo.Client, url(svc.Spec.ClusterIP, 80), 90)
				Expect(h).NotTo(HaveKey("ERR"))
				for _, p := range []string{"pod1", "pod2", "pod3"} {
					Expect(h[p]).To(BeNumerically(">=", 10), "distribution %v", h)
				}
				// the node itself reaches the ClusterIP too
				Expect(netnstest.Get(topo.Node, url(svc.Spec.ClusterIP, 80))).To(MatchRegexp("^pod[123] "))

				setEndpoints(svc, ep{pod: "pod1"}, ep{pod: "pod2", notReady: true}, ep{pod: "pod3"})
				Eventually(func() map[string]int { return netnstest.Histogram(topo.Client, url(svc.Spec.ClusterIP, 80), 30) },
					20*time.Second, 200*time.Millisecond).ShouldNot(HaveKey("pod2"))
			})

			It("lets a pod reach itself through its own Service (hairpin, masqueraded)", func() {
				svc := makeService("self", nil)
				setEndpoints(svc, ep{pod: "pod1"})
				var body string
				Eventually(func() (string, error) {
					var err error
					body, err = netnstest.Get(topo.Prefix+"pod1", url(svc.Spec.ClusterIP, 80))
					return body, err
				}, 20*time.Second, 200*time.Millisecond).Should(HavePrefix("pod1 "))
				// without the masquerade the reply would never reach the client
				Expect(body).To(HavePrefix("pod1 " + netnstest.BridgeIP + ":"))
			})

			It("serves a NodePort to an outside client", func() {
				svc := makeService("np", func(s *corev1.Service) {
					s.Spec.Type = corev1.ServiceTypeNodePort
					s.Spec.Ports[0].NodePort = 30080 + nextIP.Add(1)
				})
				setEndpoints(svc, ep{pod: "pod1"}, ep{pod: "pod2"}, ep{pod: "pod3"})
				Eventually(func() map[string]int {
					return netnstest.Histogram(topo.Ext, url(netnstest.NodeIP, svc.Spec.Ports[0].NodePort), 30)
				},
					20*time.Second, 200*time.Millisecond).Should(And(Not(HaveKey("ERR")), HaveLen(3)))
			})

			It("sends externalTrafficPolicy=Local traffic only to local endpoints and keeps the client address", func() {
				svc := makeService("local", func(s *corev1.Service) {
					s.Spec.Type = corev1.ServiceTypeLoadBalancer // so the apiserver allocates a healthCheckNodePort
					s.Spec.Ports[0].NodePort = 30080 + nextIP.Add(1)
					s.Spec.ExternalTrafficPolicy = corev1.ServiceExternalTrafficPolicyLocal
				})
				setEndpoints(svc, ep{pod: "pod1"}, ep{pod: "pod2", node: "node-b"}, ep{pod: "pod3", node: "node-b"})
				np := svc.Spec.Ports[0].NodePort
				Eventually(func() map[string]int { return netnstest.Histogram(topo.Ext, url(netnstest.NodeIP, np), 20) },
					20*time.Second, 200*time.Millisecond).Should(Equal(map[string]int{"pod1": 20}))
				body, err := netnstest.Get(topo.Ext, url(netnstest.NodeIP, np))
				Expect(err).NotTo(HaveOccurred())
				Expect(body).To(HavePrefix("pod1 " + netnstest.ExtIP + ":"))
				// pods still use every endpoint through the ClusterIP
				Expect(netnstest.Histogram(topo.Client, url(svc.Spec.ClusterIP, 80), 60)).To(HaveLen(3))

				// the health check node port tells load balancers how many local endpoints there are
				Expect(k8sClient.Get(context.Background(), client.ObjectKeyFromObject(svc), svc)).To(Succeed())
				hc := svc.Spec.HealthCheckNodePort
				Expect(hc).NotTo(BeZero())
				Eventually(func() (string, error) {
					return netnstest.Get(topo.Node, fmt.Sprintf("http://%s:%d/", netnstest.NodeIP, hc))
				}, 10*time.Second, 200*time.Millisecond).Should(ContainSubstring(`"localEndpoints": 1,`))
			})

			It("keeps a client on one backend with ClientIP session affinity", func() {
				svc := makeService("sticky", func(s *corev1.Service) {
					s.Spec.SessionAffinity = corev1.ServiceAffinityClientIP
				})
				setEndpoints(svc, ep{pod: "pod1"}, ep{pod: "pod2"}, ep{pod: "pod3"})
				Eventually(func() map[string]int { return netnstest.Histogram(topo.Client, url(svc.Spec.ClusterIP, 80), 1) },
					20*time.Second, 200*time.Millisecond).ShouldNot(HaveKey("ERR"))
				Expect(netnstest.Histogram(topo.Client, url(svc.Spec.ClusterIP, 80), 30)).To(HaveLen(1))
			})

			It("rejects connections to a Service without endpoints at once", func() {
				svc := makeService("empty", nil)
				Eventually(func() string {
					_, err := netnstest.Get(topo.Client, url(svc.Spec.ClusterIP, 80))
					if err == nil {
						return "answered"
					}
					return err.Error()
				}, 20*time.Second, 200*time.Millisecond).Should(ContainSubstring("connection refused"))
			})

			It("keeps a UDP client working when its backend is replaced (stale conntrack cleared)", func() {
				svc := makeService("dns", func(s *corev1.Service) {
					s.Spec.Ports = []corev1.ServicePort{{Name: "dns", Port: 53, Protocol: corev1.ProtocolUDP}}
				})
				_, err := topo.AddPod("pod4", podIP["pod4"])
				Expect(err).NotTo(HaveOccurred())
				setEndpoints(svc, ep{pod: "pod4"})
				cli, err := netnstest.NewUDPClient(topo.Client, 40000+int(nextIP.Add(1)))
				Expect(err).NotTo(HaveOccurred())
				defer cli.Close()
				addr := svc.Spec.ClusterIP + ":53"
				Eventually(func() (string, error) { return cli.Ask(addr, 300*time.Millisecond) }, 20*time.Second, 100*time.Millisecond).Should(Equal("pod4"))

				// the backend goes away and another takes its place
				Expect(topo.RemovePod("pod4")).To(Succeed())
				setEndpoints(svc, ep{pod: "pod1"})
				Eventually(func() (string, error) { return cli.Ask(addr, 300*time.Millisecond) }, 20*time.Second, 100*time.Millisecond).Should(Equal("pod1"))
			})

			It("restores rules deleted by hand at the next periodic sync", func() {
				svc := makeService("repair", nil)
				setEndpoints(svc, ep{pod: "pod1"})
				Eventually(func() (string, error) { return netnstest.Get(topo.Client, url(svc.Spec.ClusterIP, 80)) },
					20*time.Second, 200*time.Millisecond).Should(HavePrefix("pod1 "))
				Expect(bc.breakIt(topo.Node)).To(Succeed())
				Eventually(func() (string, error) { return netnstest.Get(topo.Client, url(svc.Spec.ClusterIP, 80)) },
					20*time.Second, 200*time.Millisecond).Should(HavePrefix("pod1 "))
			})

			It("leaves a Service claimed by another proxy alone", func() {
				svc := makeService("theirs", func(s *corev1.Service) {
					s.Labels = map[string]string{netrules.LabelServiceProxyName: "other-proxy"}
				})
				setEndpoints(svc, ep{pod: "pod1"})
				mine := makeService("mine", nil)
				setEndpoints(mine, ep{pod: "pod1"})
				Eventually(func() (string, error) { return netnstest.Get(topo.Client, url(mine.Spec.ClusterIP, 80)) },
					20*time.Second, 200*time.Millisecond).Should(HavePrefix("pod1 "))
				_, err := netnstest.Get(topo.Client, url(svc.Spec.ClusterIP, 80))
				Expect(err).To(HaveOccurred())
				Expect(strings.Contains(err.Error(), "refused")).To(BeFalse(), "no REJECT rule either: %v", err)
			})

			It("keeps answering while its endpoints are changed 1,000 times under a running client", func() {
				if bc.name == "nftables-anonymous-maps" && os.Getenv("NK_CHURN_DEBUG") == "" {
					// known limit (README, Services): a rule's anonymous map loses its
					// elements in the commit that replaces the rule, and a packet that
					// entered the chain before that commit looks them up after it; about
					// one SYN in 10,000 goes unDNATed here. The default layout keeps
					// unused endpoint map elements for StaleDelay instead.
					Skip("nftables anonymous maps: an endpoint change can leave one new connection unDNATed")
				}
				// The first probe below usually leaves a conntrack entry without DNAT: its SYN
				// goes out before the Service has rules. The client later opens ~10,000
				// connections and so reuses source ports; one reusing that probe's port
				// would match the entry and bypass the rules (a SYN unanswered for 2 s, seen
				// on iptables-nft, the slowest to program) unless the reconciler clears
				// such never-answered attempts once the Service has endpoints.
				svc := makeService("churn", nil)
				setEndpoints(svc, ep{pod: "pod1"})
				Eventually(func() map[string]int { return netnstest.Histogram(topo.Client, url(svc.Spec.ClusterIP, 80), 1) },
					20*time.Second, 200*time.Millisecond).ShouldNot(HaveKey("ERR"))
				// every version has at least one ready, live backend: a request can only fail
				// if a sync leaves the Service half-programmed (or unprogrammed) for a moment
				sets := [][]ep{{{pod: "pod1"}, {pod: "pod2"}}, {{pod: "pod2"}, {pod: "pod3"}}, {{pod: "pod3"}},
					{{pod: "pod1"}, {pod: "pod3"}, {pod: "pod2", notReady: true}}, {{pod: "pod1"}}}
				if dir := os.Getenv("NK_CHURN_DEBUG"); dir != "" {
					churnDebug(dir, bc.name, topo.Node, svc.Spec.ClusterIP)
				}
				stop := make(chan struct{})
				done := make(chan map[string]int)
				go func() {
					defer GinkgoRecover()
					// a request slowed by a starved CPU is not a failure; one refused, reset or
					// unroutable is: allow 10 s, and keep each error's text
					hc := netnstest.HTTPClient(topo.Client)
					hc.Timeout = 10 * time.Second
					h := map[string]int{}
					for {
						select {
						case <-stop:
							done <- h
							return
						default:
						}
						resp, err := hc.Get(url(svc.Spec.ClusterIP, 80))
						if err != nil {
							GinkgoWriter.Printf("%s ERR %v\n", time.Now().Format("15:04:05.000000"), err)
							h["ERR: "+err.Error()]++
							continue
						}
						body, err := io.ReadAll(resp.Body)
						_ = resp.Body.Close()
						if err != nil {
							h["ERR: "+err.Error()]++
							continue
						}
						h[strings.Fields(string(body) + " ?")[0]]++
					}
				}()
				for i := 0; i < 1000; i++ {
					setEndpoints(svc, sets[i%len(sets)]...)
				}
				// let the last change reach the kernel while the client keeps going
				time.Sleep(3 * time.Second)
				close(stop)
				h := <-done
				total := 0
				for _, n := range h {
					total += n
				}
				GinkgoWriter.Printf("%s: %d requests during 1,000 endpoint changes: %v\n", bc.name, total, h)
				for k := range h {
					Expect(k).NotTo(HavePrefix("ERR"), "requests failed during the changes: %v", h)
				}
				Expect(total).To(BeNumerically(">=", 50), "the client must have run throughout")
				for _, p := range []string{"pod1", "pod2", "pod3"} {
					Expect(h).To(HaveKey(p), "every backend served while it was in the set: %v", h)
				}
			})
		})
	}
})

// churnDebug (NK_CHURN_DEBUG=dir) records the node namespace's conntrack events and an nft
// trace of every SYN to the Service into dir, for the churn spec's lost-connection hunt.
func churnDebug(dir, name, node, vip string) {
	Expect(os.MkdirAll(dir, 0o755)).To(Succeed())
	start := func(file string, args ...string) {
		f, err := os.Create(filepath.Join(dir, name+"-"+file))
		Expect(err).NotTo(HaveOccurred())
		cmd := exec.Command("nsenter", append([]string{"--net=/run/netns/" + node}, args...)...)
		cmd.Stdout, cmd.Stderr = f, f
		Expect(cmd.Start()).To(Succeed())
		DeferCleanup(func() { _ = cmd.Process.Kill(); _ = cmd.Wait(); _ = f.Close() })
	}
	start("ct.log", "conntrack", "-E", "-p", "tcp", "-o", "timestamp,id")
	if os.Getenv("NK_CHURN_TAMPER") != "" {
		stop := make(chan struct{})
		DeferCleanup(func() { close(stop) })
		go func() {
			for {
				select {
				case <-stop:
					return
				case <-time.After(700 * time.Millisecond):
				}
				_ = netnstest.Run(node, "nft", "add", "table", "ip", "nktamper")
				_ = netnstest.Run(node, "nft", "delete", "table", "ip", "nktamper")
			}
		}()
	}
	if os.Getenv("NK_CHURN_TRACE") == "" {
		return
	}
	for _, cmd := range [][]string{{"add", "table", "ip", "nktrace"},
		{"add", "chain", "ip", "nktrace", "pre", "{ type filter hook prerouting priority -400 ; }"},
		{"add", "rule", "ip", "nktrace", "pre", "ip", "daddr", vip, "tcp", "flags", "&", "(syn|ack)", "==", "syn", "meta", "nftrace", "set", "1"},
		{"add", "rule", "ip", "nktrace", "pre", "ip", "saddr", "10.244.0.0/24", "tcp", "flags", "&", "(syn|ack)", "==", "(syn|ack)", "meta", "nftrace", "set", "1"}} {
		Expect(netnstest.Run(node, append([]string{"nft"}, cmd...)...)).To(Succeed())
	}
	DeferCleanup(func() { _ = netnstest.Run(node, "nft", "delete", "table", "ip", "nktrace") })
	start("trace.log", "nft", "monitor", "trace")
	time.Sleep(500 * time.Millisecond)
}
