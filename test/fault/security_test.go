package fault

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"fmt"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"time"

	. "github.com/onsi/ginkgo/v2"
	. "github.com/onsi/gomega"
	runtimeapi "k8s.io/cri-api/pkg/apis/runtime/v1"
)

// every kubelet API endpoint a stranger might try (the e2e suite, test/e2e, also checks
// wrong-CA certificates and tokens without the right permissions on each)
var kubeletPaths = []struct{ method, path string }{
	{http.MethodGet, "/pods"}, {http.MethodGet, "/containerLogs/default/secretive/c"},
	{http.MethodPost, "/exec/default/secretive/c?command=id&output=1"}, {http.MethodPost, "/run/default/secretive/c?cmd=id"},
	{http.MethodPost, "/attach/default/secretive/c?output=1"}, {http.MethodPost, "/portForward/default/secretive?port=80"},
	{http.MethodGet, "/configz"}, {http.MethodGet, "/metrics"}, {http.MethodGet, "/metrics/resource"},
	{http.MethodGet, "/stats/summary"}, {http.MethodGet, "/healthz"}, {http.MethodGet, "/logs/"},
}

// mountOf is the /proc/mounts line for a path, "" when it is not a mount point.
func mountOf(path string) string {
	b, err := os.ReadFile("/proc/mounts")
	Expect(err).NotTo(HaveOccurred())
	for _, l := range strings.Split(string(b), "\n") {
		if f := strings.Fields(l); len(f) > 2 && f[1] == path {
			return l
		}
	}
	return ""
}

func securityCases() {
	It("keeps secrets on tmpfs only, gone with the pod; pods cannot reach the agent's metrics; strangers get 401 everywhere", func() {
		applyManifest(`apiVersion: v1
kind: Secret
metadata: {name: fault-secret}
stringData: {password: hunter2}
---
apiVersion: v1
kind: Pod
metadata: {name: secretive}
spec:
  terminationGracePeriodSeconds: 1
  volumes: [{name: s, secret: {secretName: fault-secret}}]
  containers: [{name: c, image: docker.io/library/busybox:local, command: [sleep, "3600"], volumeMounts: [{name: s, mountPath: /s}]}]
`)
		Eventually(func() (string, error) { return kubectl("get", "pod", "secretive", "-o", "jsonpath={.status.phase}") },
			time.Minute, time.Second).Should(Equal("Running"))
		uid := mustKubectl("get", "pod", "secretive", "-o", "jsonpath={.metadata.uid}")
		vol := filepath.Join(runDir, "agent", "pods", uid, "volumes", "s") // nodekeeper: <rootDir>/pods/<uid>/volumes/<name>
		m := mountOf(vol)
		Expect(strings.Fields(m + " x x x")[2]).To(Equal("tmpfs"), "the secret volume %s: %q", vol, m)
		b, err := os.ReadFile(filepath.Join(vol, "password"))
		Expect(err).NotTo(HaveOccurred())
		Expect(string(b)).To(Equal("hunter2"))

		// from inside the pod: the agent's metrics (127.0.0.1:10249) and kubelet API
		// without credentials
		rt := runtimeClient()
		defer rt.Close()
		cs, err := rt.ListContainers(context.Background(), &runtimeapi.ContainerFilter{LabelSelector: map[string]string{"io.kubernetes.pod.uid": uid},
			State: &runtimeapi.ContainerStateValue{State: runtimeapi.ContainerState_CONTAINER_RUNNING}})
		Expect(err).NotTo(HaveOccurred())
		Expect(cs).To(HaveLen(1))
		reach := func(port int) bool {
			res, err := rt.ExecSync(context.Background(), cs[0].Id, []string{"sh", "-c", fmt.Sprintf("nc -w 2 %s %d </dev/null", nodeIP, port)}, 10*time.Second)
			Expect(err).NotTo(HaveOccurred())
			return res.ExitCode == 0
		}
		metrics, healthz, proxyHealthz, kubeletAPI := reach(10249), reach(10248), reach(10256), reach(10250)
		Expect(metrics).To(BeFalse(), "a pod reaches the agent's metrics port")

		// strangers on the kubelet port (over TLS, verifying the node's certificate)
		ca, err := os.ReadFile(filepath.Join(runDir, "pki", "ca.crt"))
		Expect(err).NotTo(HaveOccurred())
		pool := x509.NewCertPool()
		Expect(pool.AppendCertsFromPEM(ca)).To(BeTrue())
		hc := &http.Client{Timeout: 10 * time.Second, Transport: &http.Transport{TLSClientConfig: &tls.Config{RootCAs: pool, MinVersion: tls.VersionTLS12}, DisableKeepAlives: true}}
		codes := map[int]int{}
		for _, e := range kubeletPaths {
			for _, token := range []string{"", "not-a-token"} {
				req, err := http.NewRequest(e.method, "https://"+nodeIP+":10250"+e.path, nil)
				Expect(err).NotTo(HaveOccurred())
				if token != "" {
					req.Header.Set("Authorization", "Bearer "+token)
				}
				resp, err := hc.Do(req)
				Expect(err).NotTo(HaveOccurred())
				resp.Body.Close()
				codes[resp.StatusCode]++
				Expect(resp.StatusCode).To(Equal(http.StatusUnauthorized), "%s %s (token %q)", e.method, e.path, token)
			}
		}

		mustKubectl("delete", "pod", "secretive", "--wait=true", "--timeout=60s")
		Eventually(func() string { return mountOf(vol) }, 30*time.Second, 500*time.Millisecond).Should(BeEmpty())
		_, err = os.Stat(filepath.Join(runDir, "agent", "pods", uid))
		Expect(os.IsNotExist(err)).To(BeTrue(), "the pod's folder is left: %v", err)
		figure("security", "secret volume on tmpfs, unmounted and its pod folder removed with the pod; from a pod: metrics :10249 reachable=%v, healthz :10248 reachable=%v, proxy healthz :10256 reachable=%v, kubelet API :10250 reachable=%v; anonymous and bogus-token requests: %v on %d endpoints",
			metrics, healthz, proxyHealthz, kubeletAPI, codes, len(kubeletPaths))
	})
}
