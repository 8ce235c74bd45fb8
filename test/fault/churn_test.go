package fault

import (
	"fmt"
	"os"
	"strconv"
	"time"

	. "github.com/onsi/ginkgo/v2"
	. "github.com/onsi/gomega"

	"github.com/nodekeeper/nodekeeper/internal/netnstest"
)

const churnManifest = `
apiVersion: apps/v1
kind: Deployment
metadata: {name: churn}
spec:
  replicas: 3
  strategy: {rollingUpdate: {maxSurge: 1, maxUnavailable: 0}}
  selector: {matchLabels: {app: churn}}
  template:
    metadata: {labels: {app: churn}}
    spec:
      terminationGracePeriodSeconds: 10
      containers:
      - name: httpd
        image: docker.io/library/busybox:local
        command: ["sh", "-c", "mkdir -p /www && hostname > /www/index.html && exec httpd -f -p 8080 -h /www"]
        readinessProbe: {httpGet: {path: /, port: 8080}, periodSeconds: 1}
        # the usual zero-downtime setup: the endpoint is withdrawn (terminating) while
        # the server still answers
        lifecycle: {preStop: {exec: {command: [sleep, "3"]}}}
---
apiVersion: v1
kind: Service
metadata: {name: churn}
spec:
  type: NodePort
  selector: {app: churn}
  ports: [{name: http, port: 80, targetPort: 8080, nodePort: 30094}]
`

func churnRolls() int {
	if n, err := strconv.Atoi(os.Getenv("NK_FAULT_ROLLS")); err == nil && n > 0 {
		return n
	}
	return 20
}

func churnCases() {
	It("serves a Deployment rolled again and again without a failed request", func() {
		if !long {
			Skip("long case: make fault (NK_FAULT_LONG=1)")
		}
		applyManifest(churnManifest)
		mustKubectl("rollout", "status", "deployment/churn", "--timeout=180s")
		cip := "http://" + mustKubectl("get", "svc", "churn", "-o", "jsonpath={.spec.clusterIP}") + "/"
		np := "http://" + nodeIP + ":30094/"
		Eventually(func() (string, error) { return netnstest.Get(netns, cip) }, time.Minute, 200*time.Millisecond).Should(HavePrefix("churn-"))
		Eventually(func() (string, error) { return netnstest.Get(netns, np) }, time.Minute, 200*time.Millisecond).Should(HavePrefix("churn-"))
		tc := startTraffic(cip, 20*time.Millisecond)
		tn := startTraffic(np, 20*time.Millisecond)
		t0 := time.Now()
		n := churnRolls()
		for i := 1; i <= n; i++ {
			mustKubectl("set", "env", "deployment/churn", fmt.Sprintf("ROLL=%d", i))
			mustKubectl("rollout", "status", "deployment/churn", "--timeout=180s")
		}
		// the last old pods finish terminating
		Eventually(func() int { return len(podsOf("app=churn")) }, time.Minute, time.Second).Should(Equal(3))
		tc.Stop()
		tn.Stop()
		figure(fmt.Sprintf("churn: %d rollouts of 3 replicas", n), "in %v; ClusterIP %s; NodePort %s",
			time.Since(t0).Round(time.Second), tc.Summary(), tn.Summary())
		expectServed(tc, "ClusterIP")
		expectServed(tn, "NodePort")
	})
}
