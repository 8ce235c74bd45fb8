package kubeletapi

import (
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/rsa"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"fmt"
	"io"
	"math/big"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/go-logr/logr/testr"
	certificatesv1 "k8s.io/api/certificates/v1"
	corev1 "k8s.io/api/core/v1"
	rbacv1 "k8s.io/api/rbac/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/kubernetes"
	"sigs.k8s.io/controller-runtime/pkg/client"

	testenv "github.com/nodekeeper/nodekeeper/envtest"
	"github.com/nodekeeper/nodekeeper/runtime/cri/fake"
)

// testCA is a certificate authority made in the test.
type testCA struct {
	cert *x509.Certificate
	key  *ecdsa.PrivateKey
	pem  []byte
}

func newCA(t *testing.T, name string) *testCA {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	must(t, err)
	tmpl := &x509.Certificate{SerialNumber: big.NewInt(1), Subject: pkix.Name{CommonName: name},
		NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(24 * time.Hour),
		IsCA: true, BasicConstraintsValid: true, KeyUsage: x509.KeyUsageCertSign | x509.KeyUsageDigitalSignature}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	must(t, err)
	cert, err := x509.ParseCertificate(der)
	must(t, err)
	return &testCA{cert: cert, key: key, pem: pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der})}
}

// sign issues a certificate from the template for pub.
func (ca *testCA) sign(t *testing.T, tmpl *x509.Certificate, pub any) *x509.Certificate {
	t.Helper()
	sn, err := rand.Int(rand.Reader, big.NewInt(1<<62))
	must(t, err)
	tmpl.SerialNumber = sn
	der, err := x509.CreateCertificate(rand.Reader, tmpl, ca.cert, pub, ca.key)
	must(t, err)
	cert, err := x509.ParseCertificate(der)
	must(t, err)
	return cert
}

// clientCert is a client certificate for user (in groups) signed by ca.
func (ca *testCA) clientCert(t *testing.T, user string, groups ...string) tls.Certificate {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	must(t, err)
	cert := ca.sign(t, &x509.Certificate{Subject: pkix.Name{CommonName: user, Organization: groups},
		NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(time.Hour),
		KeyUsage: x509.KeyUsageDigitalSignature, ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth}}, &key.PublicKey)
	return tls.Certificate{Certificate: [][]byte{cert.Raw}, PrivateKey: key, Leaf: cert}
}

// serve starts s on a loopback port until the test ends and returns its address.
func serve(t *testing.T, s *Server) string {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	must(t, err)
	s.Listen = func(string) (net.Listener, error) { return l, nil }
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- s.Start(ctx) }()
	t.Cleanup(func() {
		cancel()
		if err := <-done; err != nil {
			t.Errorf("kubelet API server: %v", err)
		}
	})
	return l.Addr().String()
}

// A client certificate counts only when the client CA signed it: one from another CA
// with the very same subject is never served (the handshake fails, or the request is
// anonymous and gets 401).
func TestClientCertificateMustComeFromTheClientCA(t *testing.T) {
	env, err := testenv.Start()
	if err != nil {
		t.Fatal(err)
	}
	defer env.Stop()
	ctx := context.Background()
	const node, user = "cert-node", "kubelet-api-caller"
	must(t, env.Client.Create(ctx, &rbacv1.ClusterRoleBinding{ObjectMeta: metav1.ObjectMeta{Name: "cert-caller"},
		RoleRef:  rbacv1.RoleRef{APIGroup: "rbac.authorization.k8s.io", Kind: "ClusterRole", Name: "system:kubelet-api-admin"},
		Subjects: []rbacv1.Subject{{APIGroup: "rbac.authorization.k8s.io", Kind: "User", Name: user}}}))

	trusted, stranger := newCA(t, "kubelet-client-ca"), newCA(t, "stranger-ca")
	caFile := filepath.Join(t.TempDir(), "client-ca.crt")
	must(t, os.WriteFile(caFile, trusted.pem, 0o600))
	addr := serve(t, &Server{NodeName: node, Pods: env.Client, Reviews: env.Client, Runtime: fake.New(),
		NodeIPs: []net.IP{net.ParseIP("127.0.0.1")}, ClientCAFile: caFile, Log: testr.New(t)})

	get := func(cert *tls.Certificate, path string) (int, string, error) {
		tc := &tls.Config{InsecureSkipVerify: true} //nolint:gosec // the server's certificate is not what is tested here
		if cert != nil {
			// always sent, even when the server's list of acceptable CAs does not name its
			// issuer (Go's client would otherwise send no certificate at all)
			tc.GetClientCertificate = func(*tls.CertificateRequestInfo) (*tls.Certificate, error) { return cert, nil }
		}
		hc := &http.Client{Timeout: 10 * time.Second, Transport: &http.Transport{TLSClientConfig: tc}}
		resp, err := hc.Get("https://" + addr + path)
		if err != nil {
			return 0, "", err
		}
		defer resp.Body.Close()
		b, _ := io.ReadAll(resp.Body)
		return resp.StatusCode, string(b), nil
	}
	good := trusted.clientCert(t, user)
	forged := stranger.clientCert(t, user)
	forgedMaster := stranger.clientCert(t, "admin", "system:masters")

	// the trusted certificate works (RBAC may take a moment to see the binding)
	deadline := time.Now().Add(30 * time.Second)
	for {
		code, body, err := get(&good, "/pods")
		if err == nil && code == http.StatusOK {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("a client certificate from the client CA: GET /pods = %d %q %v, want 200", code, body, err)
		}
		time.Sleep(200 * time.Millisecond)
	}
	for _, path := range []string{"/pods", "/healthz", "/configz", "/containerLogs/ns/pod/c", "/exec/ns/pod/c?command=id", "/metrics"} {
		for _, tc := range []struct {
			name string
			cert *tls.Certificate
		}{{"same subject, other CA", &forged}, {"system:masters from another CA", &forgedMaster}, {"no certificate", nil}} {
			code, body, err := get(tc.cert, path)
			if err == nil && code != http.StatusUnauthorized {
				t.Errorf("%s: GET %s = %d %q, want a failed handshake or 401", tc.name, path, code, body)
			}
			if tc.cert == nil && err != nil {
				t.Errorf("%s: GET %s: %v, want 401", tc.name, path, err)
			}
		}
	}
	// with another CA's certificate the handshake itself fails
	_, _, err = get(&forged, "/pods")
	if err == nil || !strings.Contains(err.Error(), "certificate") {
		t.Errorf("a certificate from another CA: err = %v, want the handshake refused over the certificate", err)
	}
}

// serverTLSBootstrap: the server asks for its certificate with a CSR shaped as upstream's,
// serves no TLS until the CSR is approved and issued, then serves the issued certificate
// (kept in the cert dir).
func TestServerTLSBootstrapServesTheIssuedCertificate(t *testing.T) {
	env, err := testenv.Start()
	if err != nil {
		t.Fatal(err)
	}
	defer env.Stop()
	ctx := context.Background()
	const node = "boot-node"
	cs, err := kubernetes.NewForConfig(env.Config)
	must(t, err)
	certDir := filepath.Join(t.TempDir(), "pki")
	certs, err := NewCSRServingCertificate(ServingCertificateOptions{
		NodeName: node, CertDir: certDir, Client: cs,
		Addresses: func() []corev1.NodeAddress {
			return []corev1.NodeAddress{{Type: corev1.NodeInternalIP, Address: "127.0.0.1"}, {Type: corev1.NodeHostName, Address: node}}
		},
	})
	must(t, err)
	if certs.Current() != nil {
		t.Fatal("a certificate before any was issued")
	}
	cctx, cancel := context.WithCancel(ctx)
	defer cancel()
	go func() { _ = certs.Start(cctx) }()
	addr := serve(t, &Server{NodeName: node, Pods: env.Client, Reviews: env.Client, Runtime: fake.New(),
		ServingCertificate: certs.Current, Log: testr.New(t)})

	// the CSR appears
	var csr certificatesv1.CertificateSigningRequest
	deadline := time.Now().Add(30 * time.Second)
	for {
		list := &certificatesv1.CertificateSigningRequestList{}
		must(t, env.Client.List(ctx, list))
		if len(list.Items) == 1 {
			csr = list.Items[0]
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("want one CertificateSigningRequest, have %d", len(list.Items))
		}
		time.Sleep(200 * time.Millisecond)
	}
	if csr.Spec.SignerName != certificatesv1.KubeletServingSignerName {
		t.Errorf("signerName = %q, want %q", csr.Spec.SignerName, certificatesv1.KubeletServingSignerName)
	}
	block, _ := pem.Decode(csr.Spec.Request)
	if block == nil || block.Type != "CERTIFICATE REQUEST" {
		t.Fatalf("spec.request is not a PEM certificate request: %q", csr.Spec.Request)
	}
	req, err := x509.ParseCertificateRequest(block.Bytes)
	must(t, err)
	must(t, req.CheckSignature())
	wantUsages := []certificatesv1.KeyUsage{certificatesv1.UsageDigitalSignature, certificatesv1.UsageServerAuth}
	if _, isRSA := req.PublicKey.(*rsa.PublicKey); isRSA {
		wantUsages = append(wantUsages, certificatesv1.UsageKeyEncipherment)
	}
	if !sameUsages(csr.Spec.Usages, wantUsages) {
		t.Errorf("usages = %v, want %v", csr.Spec.Usages, wantUsages)
	}
	if req.Subject.CommonName != "system:node:"+node || !slices.Equal(req.Subject.Organization, []string{"system:nodes"}) {
		t.Errorf("subject = %v, want CN=system:node:%s, O=system:nodes", req.Subject, node)
	}
	if len(req.IPAddresses) != 1 || !req.IPAddresses[0].Equal(net.ParseIP("127.0.0.1")) || !slices.Equal(req.DNSNames, []string{node}) {
		t.Errorf("SANs = %v %v, want [127.0.0.1] [%s]", req.IPAddresses, req.DNSNames, node)
	}

	// not approved: no TLS at all
	if conn, err := tls.Dial("tcp", addr, &tls.Config{InsecureSkipVerify: true}); err == nil { //nolint:gosec // only whether a handshake completes
		conn.Close()
		t.Fatal("a TLS handshake completed before any serving certificate was issued")
	}

	// approve, and sign as the kubelet-serving signer would (envtest runs no signer)
	csr.Status.Conditions = append(csr.Status.Conditions, certificatesv1.CertificateSigningRequestCondition{
		Type: certificatesv1.CertificateApproved, Status: corev1.ConditionTrue, Reason: "TestApproved", Message: "approved by the test"})
	must(t, env.Client.SubResource("approval").Update(ctx, &csr))
	ca := newCA(t, "kubelet-serving-ca")
	issued := ca.sign(t, &x509.Certificate{Subject: req.Subject, DNSNames: req.DNSNames, IPAddresses: req.IPAddresses,
		NotBefore: time.Now().Add(-time.Minute), NotAfter: time.Now().Add(time.Hour),
		KeyUsage: x509.KeyUsageDigitalSignature, ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth}}, req.PublicKey)
	must(t, env.Client.Get(ctx, client.ObjectKeyFromObject(&csr), &csr))
	csr.Status.Certificate = pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: issued.Raw})
	must(t, env.Client.Status().Update(ctx, &csr))

	// now the server presents exactly that certificate, which verifies against the CA
	// for its IP address
	roots := x509.NewCertPool()
	roots.AddCert(ca.cert)
	deadline = time.Now().Add(30 * time.Second)
	for {
		conn, err := tls.Dial("tcp", addr, &tls.Config{RootCAs: roots, ServerName: "127.0.0.1"})
		if err == nil {
			peer := conn.ConnectionState().PeerCertificates[0]
			conn.Close()
			if peer.SerialNumber.Cmp(issued.SerialNumber) != 0 {
				t.Fatalf("served certificate serial %v, want the issued %v", peer.SerialNumber, issued.SerialNumber)
			}
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("the issued certificate is not served: %v", err)
		}
		time.Sleep(200 * time.Millisecond)
	}
	// kept where upstream keeps it, so a restarted agent serves it at once
	stored, err := os.ReadFile(filepath.Join(certDir, "kubelet-server-current.pem"))
	must(t, err)
	if !strings.Contains(string(stored), string(csr.Status.Certificate)) {
		t.Errorf("kubelet-server-current.pem does not hold the issued certificate")
	}
	again, err := NewCSRServingCertificate(ServingCertificateOptions{NodeName: node, CertDir: certDir})
	must(t, err)
	if c := again.Current(); c == nil || c.Leaf == nil || c.Leaf.SerialNumber.Cmp(issued.SerialNumber) != 0 {
		t.Errorf("a new manager does not load the stored certificate: %v", c)
	}
}

func sameUsages(a, b []certificatesv1.KeyUsage) bool {
	x, y := fmt.Sprint(sorted(a)), fmt.Sprint(sorted(b))
	return x == y
}

func sorted(u []certificatesv1.KeyUsage) []certificatesv1.KeyUsage {
	out := slices.Clone(u)
	slices.Sort(out)
	return out
}
