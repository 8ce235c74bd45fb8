package e2e

import (
	"encoding/json"
	"fmt"
	"regexp"
	"strconv"
	"time"

	. "github.com/onsi/ginkgo/v2"
	. "github.com/onsi/gomega"
	"k8s.io/apimachinery/pkg/api/resource"
)

// metricsUsage is the part of a metrics.k8s.io/v1beta1 NodeMetrics / PodMetrics the
// specs look at.
type metricsUsage struct {
	Metadata   struct{ Name string }
	Window     string
	Usage      map[string]resource.Quantity
	Containers []struct {
		Name  string
		Usage map[string]resource.Quantity
	}
}

// kubectl top, answered by metrics-server (started by hack/run.sh with NK_METRICS_SERVER=1,
// registered through the aggregation layer) from the agent's /metrics/resource.
var _ = Describe("kubectl top through metrics-server", Ordered, func() {
	It("serves the node's CPU and memory on the metrics API and in kubectl top node", func() {
		start := time.Now()
		var nodes struct{ Items []metricsUsage }
		Eventually(func(g Gomega) {
			out, err := kubectl("get", "--raw", "/apis/metrics.k8s.io/v1beta1/nodes")
			g.Expect(err).NotTo(HaveOccurred())
			g.Expect(json.Unmarshal([]byte(out), &nodes)).To(Succeed())
			g.Expect(nodes.Items).To(HaveLen(1))
		}, 2*time.Minute, 2*time.Second).Should(Succeed())
		n := nodes.Items[0]
		Expect(n.Metadata.Name).To(Equal(node))
		cpu, mem := n.Usage["cpu"], n.Usage["memory"]
		Expect(cpu.MilliValue()).To(BeNumerically(">", 0), "node cpu %v", n.Usage)
		Expect(mem.Value()).To(BeNumerically(">", 16<<20), "node memory %v", n.Usage)
		Expect(n.Window).NotTo(BeEmpty())

		// NAME CPU(cores) CPU(%) MEMORY(bytes) MEMORY(%)
		top := regexp.MustCompile(`(?m)^` + node + `\s+(\d+)m\s+\d+%\s+(\d+)Mi\s+\d+%\s*$`)
		var out string
		Eventually(func() (string, error) {
			var err error
			out, err = kubectl("top", "node", "--no-headers")
			return out, err
		}, time.Minute, 2*time.Second).Should(MatchRegexp(top.String()))
		m := top.FindStringSubmatch(out)
		Expect(strconv.Atoi(m[2])).To(BeNumerically(">", 16))
		AddReportEntry("kubectl top node answered", fmt.Sprintf("%s after the spec started: %s", time.Since(start).Round(time.Second), out))
	})

	It("shows a pod burning CPU under a limit with its CPU in kubectl top pod", func() {
		applyManifest(`
apiVersion: v1
kind: Pod
metadata: {name: burner}
spec:
  terminationGracePeriodSeconds: 1
  containers:
  - name: burn
    image: docker.io/library/busybox:local
    command: ["sh", "-c", "while :; do :; done"]
    resources:
      requests: {cpu: 100m, memory: 16Mi}
      limits: {cpu: 200m, memory: 32Mi}
`)
		mustKubectl("wait", "--for=condition=Ready", "pod/burner", "--timeout=120s")
		running := time.Now()

		// NAME CPU(cores) MEMORY(bytes)
		top := regexp.MustCompile(`(?m)^burner\s+(\d+)m\s+(\d+)Mi\s*$`)
		var out string
		Eventually(func(g Gomega) {
			var err error
			out, err = kubectl("top", "pod", "burner", "--no-headers")
			g.Expect(err).NotTo(HaveOccurred())
			m := top.FindStringSubmatch(out)
			g.Expect(m).NotTo(BeNil(), "kubectl top pod said %q", out)
			g.Expect(strconv.Atoi(m[1])).To(BeNumerically(">=", 50), "a busy loop under a 200m limit: %q", out)
		}, 3*time.Minute, 2*time.Second).Should(Succeed())
		AddReportEntry("kubectl top pod answered", fmt.Sprintf("%s after the pod was Ready: %s", time.Since(running).Round(time.Second), out))

		// the raw PodMetrics: one container, cpu within what the CFS quota allows
		var pm metricsUsage
		Expect(json.Unmarshal([]byte(mustKubectl("get", "--raw", "/apis/metrics.k8s.io/v1beta1/namespaces/default/pods/burner")), &pm)).To(Succeed())
		Expect(pm.Containers).To(HaveLen(1))
		Expect(pm.Containers[0].Name).To(Equal("burn"))
		cpu := pm.Containers[0].Usage["cpu"]
		Expect(cpu.MilliValue()).To(And(BeNumerically(">=", 50), BeNumerically("<=", 260)), "container usage %v", pm.Containers[0].Usage)

		// and the pod is in the namespace-wide listing with the per-container view
		Expect(mustKubectl("top", "pod", "--containers", "--no-headers")).To(MatchRegexp(`(?m)^burner\s+burn\s+\d+m\s+\d+Mi\s*$`))
	})
})
