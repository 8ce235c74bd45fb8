package clientcert_test

// TLS bootstrap end to end: kube-apiserver (envtest, with Node,RBAC authorization,
// NodeRestriction and bootstrap tokens) and kube-controller-manager running only the
// csrapproving and csrsigning controllers (hack/k8s-bins.sh builds it), RBAC as kubeadm
// sets it up for joining nodes. Skipped when the binaries are not built.

import (
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"math/big"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	rbacv1 "k8s.io/api/rbac/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/tools/clientcmd"
	clientcmdapi "k8s.io/client-go/tools/clientcmd/api"
	crmetrics "sigs.k8s.io/controller-runtime/pkg/metrics"

	testenv "github.com/nodekeeper/nodekeeper/envtest"
	"github.com/nodekeeper/nodekeeper/internal/clientcert"
)

func must(t *testing.T, err error) {
	t.Helper()
	if err != nil {
		t.Fatal(err)
	}
}

type cluster struct {
	env       *testenv.Env
	admin     kubernetes.Interface
	bootstrap string // bootstrap kubeconfig path
}

// start brings up the API server, the CSR controllers and kubeadm's bootstrap RBAC.
func start(t *testing.T) *cluster {
	t.Helper()
	assets, err := testenv.AssetsDir()
	if err != nil {
		t.Skip(err)
	}
	kcm := filepath.Join(assets, "kube-controller-manager")
	if _, err := os.Stat(kcm); err != nil {
		t.Skip("kube-controller-manager not built (K8S_EXTRA_BINS=kube-controller-manager hack/k8s-bins.sh)")
	}
	env, err := testenv.StartWith(testenv.Options{SigningCA: true, APIServerArgs: map[string]string{"enable-bootstrap-token-auth": "true"}})
	must(t, err)
	t.Cleanup(func() { _ = env.Stop() })
	admin := kubernetes.NewForConfigOrDie(env.Config)
	ctx := context.Background()

	// a bootstrap token, as `kubeadm token create` makes it
	_, err = admin.CoreV1().Secrets("kube-system").Create(ctx, &corev1.Secret{
		ObjectMeta: metav1.ObjectMeta{Name: "bootstrap-token-abcdef", Namespace: "kube-system"},
		Type:       corev1.SecretTypeBootstrapToken,
		StringData: map[string]string{"token-id": "abcdef", "token-secret": "0123456789abcdef", "usage-bootstrap-authentication": "true",
			"usage-bootstrap-signing": "true", "auth-extra-groups": "system:bootstrappers:kubeadm:default-node-token"},
	}, metav1.CreateOptions{})
	must(t, err)
	// kubeadm's bindings (cmd/kubeadm/app/phases/bootstraptoken/node): create CSRs,
	// auto-approve node client CSRs from bootstrappers, and renewals from nodes
	for name, b := range map[string]struct{ role, group string }{
		"kubeadm:kubelet-bootstrap":                     {"system:node-bootstrapper", "system:bootstrappers:kubeadm:default-node-token"},
		"kubeadm:node-autoapprove-bootstrap":            {"system:certificates.k8s.io:certificatesigningrequests:nodeclient", "system:bootstrappers:kubeadm:default-node-token"},
		"kubeadm:node-autoapprove-certificate-rotation": {"system:certificates.k8s.io:certificatesigningrequests:selfnodeclient", "system:nodes"},
	} {
		_, err := admin.RbacV1().ClusterRoleBindings().Create(ctx, &rbacv1.ClusterRoleBinding{ObjectMeta: metav1.ObjectMeta{Name: name},
			RoleRef:  rbacv1.RoleRef{APIGroup: "rbac.authorization.k8s.io", Kind: "ClusterRole", Name: b.role},
			Subjects: []rbacv1.Subject{{APIGroup: "rbac.authorization.k8s.io", Kind: "Group", Name: b.group}}}, metav1.CreateOptions{})
		must(t, err)
	}
	dir := t.TempDir()
	log, err := os.Create(filepath.Join(dir, "kcm.log"))
	must(t, err)
	cmd := exec.Command(kcm, "--kubeconfig", env.Kubeconfig, "--controllers", "csrapproving,csrsigning",
		"--cluster-signing-cert-file", env.CACertFile, "--cluster-signing-key-file", env.CAKeyFile,
		"--leader-elect=false", "--secure-port=0", "--use-service-account-credentials=false")
	cmd.Stdout, cmd.Stderr = log, log
	must(t, cmd.Start())
	t.Cleanup(func() {
		_ = cmd.Process.Kill()
		_, _ = cmd.Process.Wait()
		if t.Failed() {
			b, _ := os.ReadFile(log.Name())
			t.Logf("kube-controller-manager log:\n%s", tail(string(b), 40))
		}
	})
	// the bootstrap kubeconfig, as kubeadm join writes bootstrap-kubelet.conf
	raw := clientcmdapi.Config{
		Clusters:       map[string]*clientcmdapi.Cluster{"c": {Server: env.Config.Host, CertificateAuthorityData: env.Config.CAData}},
		AuthInfos:      map[string]*clientcmdapi.AuthInfo{"tls-bootstrap-token-user": {Token: "abcdef.0123456789abcdef"}},
		Contexts:       map[string]*clientcmdapi.Context{"c": {Cluster: "c", AuthInfo: "tls-bootstrap-token-user"}},
		CurrentContext: "c",
	}
	bootstrap := filepath.Join(dir, "bootstrap-kubelet.conf")
	must(t, clientcmd.WriteToFile(raw, bootstrap))
	return &cluster{env: env, admin: admin, bootstrap: bootstrap}
}

func tail(s string, n int) string {
	lines := strings.Split(s, "\n")
	if len(lines) > n {
		lines = lines[len(lines)-n:]
	}
	return strings.Join(lines, "\n")
}

func TestTLSBootstrapAndNodeRestriction(t *testing.T) {
	c := start(t)
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	root := t.TempDir()
	o := clientcert.Options{Kubeconfig: filepath.Join(root, "kubeconfig"), BootstrapKubeconfig: c.bootstrap,
		CertDir: filepath.Join(root, "pki"), NodeName: "nk-boot", Rotate: true, CheckPeriod: 200 * time.Millisecond}
	id, err := clientcert.Load(ctx, o)
	must(t, err)
	go func() { _ = id.Start(ctx) }()

	// the certificate: the node's identity, issued by the cluster's signer
	cur := id.Current()
	if cur == nil || cur.Leaf == nil {
		t.Fatal("no certificate")
	}
	if cur.Leaf.Subject.CommonName != "system:node:nk-boot" || len(cur.Leaf.Subject.Organization) != 1 || cur.Leaf.Subject.Organization[0] != "system:nodes" {
		t.Errorf("subject %v", cur.Leaf.Subject)
	}
	if _, err := os.Stat(filepath.Join(o.CertDir, "kubelet-client-current.pem")); err != nil {
		t.Error(err)
	}
	kc, err := clientcmd.LoadFromFile(o.Kubeconfig)
	must(t, err)
	if ai := kc.AuthInfos[kc.Contexts[kc.CurrentContext].AuthInfo]; ai == nil || ai.ClientCertificate != filepath.Join(o.CertDir, "kubelet-client-current.pem") || ai.Token != "" {
		t.Errorf("kubeconfig user: %+v", ai)
	}
	csrs, err := c.admin.CertificatesV1().CertificateSigningRequests().List(ctx, metav1.ListOptions{})
	must(t, err)
	if len(csrs.Items) != 1 || csrs.Items[0].Spec.SignerName != "kubernetes.io/kube-apiserver-client-kubelet" || csrs.Items[0].Spec.Username != "system:bootstrap:abcdef" {
		t.Errorf("CSRs: %+v", csrs.Items)
	}

	// as system:node:nk-boot the Node authorizer and NodeRestriction confine it
	node := kubernetes.NewForConfigOrDie(id.Config)
	_, err = node.CoreV1().Nodes().Create(ctx, &corev1.Node{ObjectMeta: metav1.ObjectMeta{Name: "nk-boot"}}, metav1.CreateOptions{})
	must(t, err)
	_, err = node.CoreV1().Nodes().Create(ctx, &corev1.Node{ObjectMeta: metav1.ObjectMeta{Name: "other"}}, metav1.CreateOptions{})
	if !apierrors.IsForbidden(err) {
		t.Errorf("creating another node: %v, want Forbidden (NodeRestriction)", err)
	}
	_, err = node.CoreV1().Secrets("kube-system").List(ctx, metav1.ListOptions{})
	if !apierrors.IsForbidden(err) {
		t.Errorf("listing Secrets: %v, want Forbidden (Node authorizer)", err)
	}
	_, err = node.CoreV1().ServiceAccounts("default").CreateToken(ctx, "default", nil, metav1.CreateOptions{})
	if err == nil {
		t.Error("minting a token for an arbitrary ServiceAccount was allowed")
	}
	ttl := gauge(t, "kubelet_certificate_manager_client_ttl_seconds")
	if ttl <= 0 {
		t.Errorf("client certificate TTL metric %v", ttl)
	}

	// a second start with the kubeconfig in place needs no new request
	id2, err := clientcert.Load(ctx, clientcert.Options{Kubeconfig: o.Kubeconfig, CertDir: o.CertDir, NodeName: "nk-boot"})
	must(t, err)
	if _, err := kubernetes.NewForConfigOrDie(id2.Config).CoreV1().Nodes().Get(ctx, "nk-boot", metav1.GetOptions{}); err != nil {
		t.Error(err)
	}
	csrs, err = c.admin.CertificatesV1().CertificateSigningRequests().List(ctx, metav1.ListOptions{})
	must(t, err)
	if len(csrs.Items) != 1 {
		t.Errorf("%d CSRs after a restart, want 1", len(csrs.Items))
	}
}

// A certificate near its end is renewed with the node's own identity (the
// selfnodeclient approval), and the agent's connections switch to the new one.
func TestClientCertificateRotation(t *testing.T) {
	c := start(t)
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	root := t.TempDir()
	certDir := filepath.Join(root, "pki")
	must(t, os.MkdirAll(certDir, 0o700))
	// a certificate for the node that is 95 % through its life (signed by the cluster CA)
	old := issue(t, c.env, "system:node:nk-rot", time.Now().Add(-19*time.Minute), time.Now().Add(time.Minute))
	must(t, os.WriteFile(filepath.Join(certDir, "kubelet-client-old.pem"), old, 0o600))
	must(t, os.Symlink(filepath.Join(certDir, "kubelet-client-old.pem"), filepath.Join(certDir, "kubelet-client-current.pem")))
	kubeconfig := filepath.Join(root, "kubeconfig")
	raw := clientcmdapi.Config{
		Clusters:       map[string]*clientcmdapi.Cluster{"c": {Server: c.env.Config.Host, CertificateAuthorityData: c.env.Config.CAData}},
		AuthInfos:      map[string]*clientcmdapi.AuthInfo{"u": {ClientCertificate: filepath.Join(certDir, "kubelet-client-current.pem"), ClientKey: filepath.Join(certDir, "kubelet-client-current.pem")}},
		Contexts:       map[string]*clientcmdapi.Context{"c": {Cluster: "c", AuthInfo: "u"}},
		CurrentContext: "c",
	}
	must(t, clientcmd.WriteToFile(raw, kubeconfig))
	id, err := clientcert.Load(ctx, clientcert.Options{Kubeconfig: kubeconfig, BootstrapKubeconfig: c.bootstrap, CertDir: certDir,
		NodeName: "nk-rot", Rotate: true, CheckPeriod: 200 * time.Millisecond})
	must(t, err)
	before := id.Current().Leaf
	go func() { _ = id.Start(ctx) }()
	deadline := time.Now().Add(time.Minute)
	for id.Current().Leaf.SerialNumber.Cmp(before.SerialNumber) == 0 {
		if time.Now().After(deadline) {
			t.Fatal("the certificate was not renewed")
		}
		time.Sleep(200 * time.Millisecond)
	}
	after := id.Current().Leaf
	if !after.NotAfter.After(before.NotAfter) || after.Subject.CommonName != "system:node:nk-rot" {
		t.Errorf("renewed certificate: %v until %v (old until %v)", after.Subject, after.NotAfter, before.NotAfter)
	}
	csrs, err := c.admin.CertificatesV1().CertificateSigningRequests().List(ctx, metav1.ListOptions{})
	must(t, err)
	if len(csrs.Items) != 1 || csrs.Items[0].Spec.Username != "system:node:nk-rot" {
		t.Errorf("renewal CSR: %+v (want one requested by the node itself)", csrs.Items)
	}
	// the rotating transport presents the new certificate
	time.Sleep(500 * time.Millisecond)
	if _, err := kubernetes.NewForConfigOrDie(id.Config).CoreV1().Nodes().Create(ctx,
		&corev1.Node{ObjectMeta: metav1.ObjectMeta{Name: "nk-rot"}}, metav1.CreateOptions{}); err != nil {
		t.Error(err)
	}
}

// issue signs a client certificate with the cluster CA (PEM cert + key).
func issue(t *testing.T, env *testenv.Env, cn string, from, until time.Time) []byte {
	t.Helper()
	caPEM, err := os.ReadFile(env.CACertFile)
	must(t, err)
	keyPEM, err := os.ReadFile(env.CAKeyFile)
	must(t, err)
	caBlock, _ := pem.Decode(caPEM)
	keyBlock, _ := pem.Decode(keyPEM)
	ca, err := x509.ParseCertificate(caBlock.Bytes)
	must(t, err)
	caKey, err := x509.ParseECPrivateKey(keyBlock.Bytes)
	must(t, err)
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	must(t, err)
	der, err := x509.CreateCertificate(rand.Reader, &x509.Certificate{SerialNumber: big.NewInt(time.Now().UnixNano()),
		Subject: pkix.Name{CommonName: cn, Organization: []string{"system:nodes"}}, NotBefore: from, NotAfter: until,
		KeyUsage: x509.KeyUsageDigitalSignature, ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth}}, ca, &key.PublicKey, caKey)
	must(t, err)
	kd, err := x509.MarshalECPrivateKey(key)
	must(t, err)
	out := pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der})
	out = append(out, pem.EncodeToMemory(&pem.Block{Type: "EC PRIVATE KEY", Bytes: kd})...)
	if _, err := tls.X509KeyPair(out, out); err != nil {
		t.Fatal(err)
	}
	return out
}

func gauge(t *testing.T, name string) float64 {
	t.Helper()
	fams, err := crmetrics.Registry.Gather()
	must(t, err)
	for _, f := range fams {
		if f.GetName() == name && len(f.GetMetric()) > 0 {
			return f.GetMetric()[0].GetGauge().GetValue()
		}
	}
	t.Fatalf("%s not registered", name)
	return 0
}
