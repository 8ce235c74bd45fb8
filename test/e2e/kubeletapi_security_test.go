package e2e

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"fmt"
	"io"
	"math/big"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"time"

	. "github.com/onsi/ginkgo/v2"
	. "github.com/onsi/gomega"
)

// kubeletURL is the node's kubelet API as the API server reaches it: the node IP on the
// veth (the test runs in the host namespace, like the API server).
const kubeletURL = "https://198.18.78.2:10250"

// Every endpoint a stranger might try; none may answer anything but 401 to one.
var kubeletEndpoints = []struct{ method, path string }{
	{http.MethodGet, "/pods"},
	{http.MethodGet, "/containerLogs/default/guarded/main"},
	{http.MethodPost, "/exec/default/guarded/main?command=id&output=1"},
	{http.MethodGet, "/exec/default/guarded/main?command=id&output=1"},
	{http.MethodPost, "/run/default/guarded/main?cmd=id"},
	{http.MethodPost, "/attach/default/guarded/main?output=1"},
	{http.MethodPost, "/portForward/default/guarded?port=80"},
	{http.MethodGet, "/configz"},
	{http.MethodGet, "/metrics"},
	{http.MethodGet, "/metrics/probes"},
	{http.MethodGet, "/stats/summary"},
	{http.MethodGet, "/healthz"},
}

// kubeletClient trusts the cluster CA that signed the node's serving certificate (real
// verification of the node's name/IP) and presents cert, if any.
func kubeletClient(cert *tls.Certificate) *http.Client {
	ca, err := os.ReadFile(filepath.Join(runDir, "pki", "ca.crt"))
	Expect(err).NotTo(HaveOccurred())
	pool := x509.NewCertPool()
	Expect(pool.AppendCertsFromPEM(ca)).To(BeTrue())
	tc := &tls.Config{RootCAs: pool, MinVersion: tls.VersionTLS12}
	if cert != nil {
		// always sent, even when the server's list of acceptable CAs does not name its issuer
		tc.GetClientCertificate = func(*tls.CertificateRequestInfo) (*tls.Certificate, error) { return cert, nil }
	}
	return &http.Client{Timeout: 10 * time.Second, Transport: &http.Transport{TLSClientConfig: tc, DisableKeepAlives: true}}
}

// kubeletDo sends one request to the node's kubelet API; err is a transport (TLS) error.
func kubeletDo(hc *http.Client, method, path, token string) (int, string, error) {
	req, err := http.NewRequest(method, kubeletURL+path, nil)
	Expect(err).NotTo(HaveOccurred())
	if token != "" {
		req.Header.Set("Authorization", "Bearer "+token)
	}
	resp, err := hc.Do(req)
	if err != nil {
		return 0, "", err
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(io.LimitReader(resp.Body, 1<<16))
	return resp.StatusCode, string(b), nil
}

// strangerCert is a client certificate for the API server's own kubelet client identity
// (which may do anything on the kubelet API) and system:masters, signed by a CA made
// here that the kubelet has never heard of.
func strangerCert() tls.Certificate {
	caKey, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	Expect(err).NotTo(HaveOccurred())
	caTmpl := &x509.Certificate{SerialNumber: big.NewInt(1), Subject: pkix.Name{CommonName: "nodekeeper-ca"}, // the real CA's name, too
		NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(time.Hour),
		IsCA: true, BasicConstraintsValid: true, KeyUsage: x509.KeyUsageCertSign}
	caDER, err := x509.CreateCertificate(rand.Reader, caTmpl, caTmpl, &caKey.PublicKey, caKey)
	Expect(err).NotTo(HaveOccurred())
	ca, err := x509.ParseCertificate(caDER)
	Expect(err).NotTo(HaveOccurred())
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	Expect(err).NotTo(HaveOccurred())
	der, err := x509.CreateCertificate(rand.Reader, &x509.Certificate{SerialNumber: big.NewInt(2),
		Subject:   pkix.Name{CommonName: "kube-apiserver-kubelet-client", Organization: []string{"system:masters"}},
		NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(time.Hour),
		KeyUsage: x509.KeyUsageDigitalSignature, ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth}}, ca, &key.PublicKey, caKey)
	Expect(err).NotTo(HaveOccurred())
	return tls.Certificate{Certificate: [][]byte{der, caDER}, PrivateKey: key}
}

var _ = Describe("The node's kubelet API, closed to strangers", Ordered, func() {
	var token, saKubeconfig string

	BeforeAll(func() {
		// pods need the namespace's default ServiceAccount, which the controller-manager
		// creates shortly after start-up (this may be the first spec to run)
		Eventually(func() error { _, err := kubectl("get", "serviceaccount", "default", "-n", "default"); return err },
			time.Minute, time.Second).Should(Succeed())
		applyManifest(`
apiVersion: v1
kind: ServiceAccount
metadata: {name: log-reader, namespace: default}
---
apiVersion: rbac.authorization.k8s.io/v1
kind: ClusterRole
metadata: {name: e2e-log-reader}
rules:
- {apiGroups: [""], resources: [nodes/log], verbs: [get]}
- {apiGroups: [""], resources: [pods, pods/log], verbs: [get, list]}
---
apiVersion: rbac.authorization.k8s.io/v1
kind: ClusterRoleBinding
metadata: {name: e2e-log-reader}
roleRef: {apiGroup: rbac.authorization.k8s.io, kind: ClusterRole, name: e2e-log-reader}
subjects: [{kind: ServiceAccount, name: log-reader, namespace: default}]
---
apiVersion: v1
kind: Pod
metadata: {name: guarded}
spec:
  terminationGracePeriodSeconds: 1
  containers:
  - name: main
    image: docker.io/library/busybox:local
    command: ["sh", "-c", "echo secret-ish line; exec sleep 3600"]
`)
		token = strings.TrimSpace(mustKubectl("create", "token", "log-reader", "-n", "default", "--duration=1h"))
		Expect(token).To(HavePrefix("eyJ"))
		// a kubeconfig holding only the ServiceAccount's token (no client certificate that
		// the API server would prefer)
		saKubeconfig = filepath.Join(GinkgoT().TempDir(), "sa.kubeconfig")
		Expect(os.WriteFile(saKubeconfig, []byte(fmt.Sprintf(`apiVersion: v1
kind: Config
clusters:
- name: e2e
  cluster: {server: "https://%s:%s", certificate-authority: "%s"}
users:
- name: log-reader
  user: {token: "%s"}
contexts:
- name: e2e
  context: {cluster: e2e, user: log-reader, namespace: default}
current-context: e2e
`, clusterEnv["NK_HOST_IP"], clusterEnv["NK_APISERVER_PORT"], filepath.Join(runDir, "pki", "ca.crt"), token)), 0o600)).To(Succeed())
		Eventually(func() (string, error) {
			return kubectl("get", "pod", "guarded", "-o", "jsonpath={.status.phase}")
		}, time.Minute, time.Second).Should(Equal("Running"))
	})

	asSA := func(args ...string) (string, error) {
		cmd := exec.Command(kubectlBin, append([]string{"--kubeconfig", saKubeconfig}, args...)...)
		out, err := cmd.CombinedOutput()
		return string(out), err
	}

	It("lets a ServiceAccount with nodes/log and pods/log read logs with kubectl, and nothing more", func() {
		Eventually(func() (string, error) { return asSA("logs", "guarded") }, time.Minute, time.Second).Should(Equal("secret-ish line\n"))
		out, err := asSA("exec", "guarded", "--", "id")
		Expect(err).To(HaveOccurred(), "kubectl exec without pods/exec: %s", out)
		Expect(out).To(ContainSubstring("forbidden"))
	})

	It("serves that ServiceAccount's token directly on the kubelet port for logs, and 403 for the rest", func() {
		hc := kubeletClient(nil)
		var code int
		var body string
		Eventually(func() (int, error) {
			var err error
			code, body, err = kubeletDo(hc, http.MethodGet, "/containerLogs/default/guarded/main", token)
			return code, err
		}, 30*time.Second, time.Second).Should(Equal(http.StatusOK))
		Expect(body).To(Equal("secret-ish line\n"))
		for _, e := range []struct{ method, path string }{
			{http.MethodPost, "/exec/default/guarded/main?command=id&output=1"},
			{http.MethodGet, "/exec/default/guarded/main?command=id&output=1"},
			{http.MethodPost, "/run/default/guarded/main?cmd=id"},
			{http.MethodPost, "/attach/default/guarded/main?output=1"},
			{http.MethodPost, "/portForward/default/guarded?port=80"},
			{http.MethodGet, "/stats/summary"},
			{http.MethodGet, "/pods"},
			{http.MethodGet, "/configz"},
			{http.MethodGet, "/metrics"},
		} {
			code, body, err := kubeletDo(hc, e.method, e.path, token)
			Expect(err).NotTo(HaveOccurred())
			Expect(code).To(Equal(http.StatusForbidden), "%s %s with a nodes/log token: %s", e.method, e.path, body)
			Expect(body).To(ContainSubstring("system:serviceaccount:default:log-reader"))
		}
	})

	It("answers 401 to anonymous requests on every endpoint", func() {
		hc := kubeletClient(nil)
		for _, e := range kubeletEndpoints {
			code, body, err := kubeletDo(hc, e.method, e.path, "")
			Expect(err).NotTo(HaveOccurred())
			Expect(code).To(Equal(http.StatusUnauthorized), "anonymous %s %s: %s", e.method, e.path, body)
		}
	})

	It("answers 401 to a bogus bearer token on every endpoint", func() {
		hc := kubeletClient(nil)
		// a well-formed JWT the cluster never issued, and plain garbage
		for _, bogus := range []string{token[:len(token)-8] + "AAAAAAAA", "not-a-token"} {
			for _, e := range kubeletEndpoints {
				code, body, err := kubeletDo(hc, e.method, e.path, bogus)
				Expect(err).NotTo(HaveOccurred())
				Expect(code).To(Equal(http.StatusUnauthorized), "bogus token, %s %s: %s", e.method, e.path, body)
			}
		}
	})

	It("never serves a client certificate from a CA it does not trust", func() {
		cert := strangerCert()
		hc := kubeletClient(&cert)
		for _, e := range kubeletEndpoints {
			code, body, err := kubeletDo(hc, e.method, e.path, "")
			if err != nil {
				Expect(err.Error()).To(ContainSubstring("certificate"), "%s %s: the handshake failed, but not over the certificate", e.method, e.path)
				continue
			}
			Expect(code).To(Equal(http.StatusUnauthorized), "stranger's certificate, %s %s: %s", e.method, e.path, body)
		}
		// while the cluster's own kubelet client certificate is served (so the refusal is
		// about the CA, not the client)
		own, err := tls.LoadX509KeyPair(filepath.Join(runDir, "pki", "apiserver-kubelet-client.crt"), filepath.Join(runDir, "pki", "apiserver-kubelet-client.key"))
		Expect(err).NotTo(HaveOccurred())
		code, body, err := kubeletDo(kubeletClient(&own), http.MethodGet, "/containerLogs/default/guarded/main", "")
		Expect(err).NotTo(HaveOccurred())
		Expect(code).To(Equal(http.StatusOK), body)
		Expect(body).To(Equal("secret-ish line\n"))
	})
})
