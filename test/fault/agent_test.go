package fault

import (
	"fmt"
	"os"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"syscall"
	"time"

	. "github.com/onsi/ginkgo/v2"
	. "github.com/onsi/gomega"

	"github.com/nodekeeper/nodekeeper/internal/netnstest"
)

// the steady workload every case runs against: replicas of a busybox httpd with a
// readiness and a liveness probe, behind a ClusterIP Service with a NodePort
func steadyManifest(replicas int) string {
	return fmt.Sprintf(`
apiVersion: apps/v1
kind: Deployment
metadata: {name: steady}
spec:
  replicas: %d
  selector: {matchLabels: {app: steady}}
  template:
    metadata: {labels: {app: steady}}
    spec:
      terminationGracePeriodSeconds: 2
      containers:
      - name: httpd
        image: docker.io/library/busybox:local
        command: ["sh", "-c", "mkdir -p /www && hostname > /www/index.html && exec httpd -f -p 8080 -h /www"]
        readinessProbe: {httpGet: {path: /, port: 8080}, periodSeconds: 2}
        livenessProbe: {httpGet: {path: /, port: 8080}, periodSeconds: 5, failureThreshold: 3}
        resources: {requests: {cpu: 20m, memory: 8Mi}}
---
apiVersion: v1
kind: Service
metadata: {name: steady}
spec:
  type: NodePort
  selector: {app: steady}
  ports: [{name: http, port: 80, targetPort: 8080, nodePort: 30093}]
`, replicas)
}

// nodePortURL is set with the cluster's addresses (fault_test.go's init).
var nodePortURL string

func steadyReplicas() int {
	if n, err := strconv.Atoi(os.Getenv("NK_FAULT_PODS")); err == nil && n > 0 {
		return n
	}
	return 30
}

var clusterIPURL string

// steadyState is what must not change through a fault.
type steadyState struct {
	pods     []podInfo
	restarts map[string]int32
	runtime  runtimeState
}

func observeSteady() steadyState {
	ps := podsOf("app=steady")
	return steadyState{pods: ps, restarts: restartsOf(ps), runtime: observeRuntime(uidsOf(ps))}
}

// expectUnchanged: the same pods, with the same restart counts, the same sandboxes
// (one each) and the same running containers.
func expectUnchanged(before steadyState) {
	after := observeSteady()
	ExpectWithOffset(1, after.restarts).To(Equal(before.restarts), "container restart counts changed")
	ExpectWithOffset(1, after.runtime.Sandboxes).To(Equal(before.runtime.Sandboxes), "sandboxes changed (duplicates or replacements)")
	ExpectWithOffset(1, after.runtime.Containers).To(Equal(before.runtime.Containers), "running containers changed")
	for uid, sbs := range after.runtime.Sandboxes {
		ExpectWithOffset(1, sbs).To(HaveLen(1), "pod %s has %d ready sandboxes", uid, len(sbs))
	}
}

// lastSync is the agent's kubeproxy_sync_proxy_rules_last_timestamp_seconds (0 when
// the agent does not answer or has not synced).
func lastSync() float64 {
	body, err := netnstest.Get(netns, "http://127.0.0.1:10249/metrics")
	if err != nil {
		return 0
	}
	m := regexp.MustCompile(`(?m)^kubeproxy_sync_proxy_rules_last_timestamp_seconds\{ip_family="IPv4"\} (\S+)$`).FindStringSubmatch(body)
	if m == nil {
		return 0
	}
	v, _ := strconv.ParseFloat(m[1], 64)
	return v
}

var _ = Describe("Faults", Ordered, ContinueOnFailure, Label("fault", "root"), func() {
	BeforeAll(func() {
		n := steadyReplicas()
		t0 := time.Now()
		applyManifest(steadyManifest(n))
		mustKubectl("rollout", "status", "deployment/steady", "--timeout=300s")
		Eventually(func() []string {
			return strings.Fields(mustKubectl("get", "endpointslices", "-l", "kubernetes.io/service-name=steady",
				"-o", `jsonpath={range .items[*].endpoints[?(@.conditions.ready==true)]}{.addresses[0]}{" "}{end}`))
		}, 2*time.Minute, time.Second).Should(HaveLen(n))
		clusterIPURL = "http://" + mustKubectl("get", "svc", "steady", "-o", "jsonpath={.spec.clusterIP}") + "/"
		Eventually(func() int { return len(netnstest.Histogram(netns, clusterIPURL, 3*n)) }, 2*time.Minute, time.Second).
			Should(BeNumerically(">=", n/2))
		Eventually(func() (string, error) { return netnstest.Get(netns, nodePortURL) }, time.Minute, time.Second).Should(HavePrefix("steady-"))
		figure("setup", "%d pods Running and Ready behind a ClusterIP+NodePort Service in %v", n, time.Since(t0).Round(time.Second))
	})

	It("answers every request when nothing goes wrong (the baseline for the cases below)", func() {
		cip := startTraffic(clusterIPURL, 20*time.Millisecond)
		np := startTraffic(nodePortURL, 50*time.Millisecond)
		d := 10 * time.Second
		if long {
			d = 60 * time.Second
		}
		time.Sleep(d)
		cip.Stop()
		np.Stop()
		figure(fmt.Sprintf("baseline (no fault, %v)", d), "ClusterIP %s; NodePort %s", cip.Summary(), np.Summary())
		expectServed(cip, "ClusterIP")
		expectServed(np, "NodePort")
	})

	for _, sig := range []syscall.Signal{syscall.SIGTERM, syscall.SIGKILL} {
		sig := sig
		It(fmt.Sprintf("keeps every container and every rule through an agent restart (%v)", sig), func() {
			before := observeSteady()
			cip := startTraffic(clusterIPURL, 20*time.Millisecond)
			np := startTraffic(nodePortURL, 50*time.Millisecond)
			time.Sleep(2 * time.Second)
			pid := readPID(pidFile("nodekeeper"))
			exit := signalAndWait(pid, sig, 30*time.Second)
			time.Sleep(5 * time.Second) // the node without its agent: the kernel keeps serving
			restart := time.Now()
			startAgent()
			Eventually(agentHealthy, time.Minute, 100*time.Millisecond).Should(BeTrue())
			healthy := time.Since(restart)
			Eventually(lastSync, time.Minute, 100*time.Millisecond).Should(BeNumerically(">", float64(restart.UnixNano())/1e9))
			synced := time.Since(restart)
			Eventually(leaseRenewTime, time.Minute, 200*time.Millisecond).Should(BeTemporally(">", restart.Add(-time.Second)))
			leased := time.Since(restart)
			time.Sleep(5 * time.Second) // traffic after the first syncs
			cip.Stop()
			np.Stop()
			figure("agent restart "+map[syscall.Signal]string{syscall.SIGTERM: "SIGTERM", syscall.SIGKILL: "SIGKILL"}[sig], "exit %v; restarted agent healthy in %v, rules synced in %v, Lease renewed in %v; ClusterIP %s; NodePort %s",
				exit.Round(time.Millisecond), healthy.Round(time.Millisecond), synced.Round(time.Millisecond), leased.Round(time.Millisecond), cip.Summary(), np.Summary())
			expectServed(cip, "ClusterIP")
			expectServed(np, "NodePort")
			expectUnchanged(before)
			Consistently(func() []string {
				var notReady []string
				for _, p := range podsOf("app=steady") {
					if !p.Ready {
						notReady = append(notReady, p.Name)
					}
				}
				return notReady
			}, 3*time.Second, time.Second).Should(BeEmpty())
			logs, err := os.ReadFile(filepath.Join(runDir, "logs", "nodekeeper.log"))
			Expect(err).NotTo(HaveOccurred())
			Expect(string(logs)).NotTo(ContainSubstring("panic:"))
		})
	}

	Context("Rule tampering", Ordered, tamperCases)
	Context("Rule tampering, nftables mode", Ordered, tamperNFTCases)
	Context("containerd outage", Ordered, runtimeCases)
	Context("API server outage", Ordered, apiServerCases)
	Context("bad input", Ordered, badInputCases)
	Context("security", Ordered, securityCases)
	Context("proxy mode switch", Ordered, modeSwitchCases)
	Context("churn", Ordered, churnCases)
	Context("soak", Ordered, soakCases)
})
