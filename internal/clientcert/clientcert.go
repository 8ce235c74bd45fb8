// Package clientcert gives the agent its own identity as a kubelet gets it: TLS
// bootstrap (upstream's pkg/kubelet/certificate/bootstrap and cmd/kubelet/app's
// buildClientCertificateManager / UpdateTransport). With a bootstrap kubeconfig (a
// bootstrap token, as kubeadm join gives, or any identity allowed to create
// CertificateSigningRequests) the agent asks the kubernetes.io/kube-apiserver-client-kubelet
// signer for a client certificate for CN=system:node:<nodeName>, O=system:nodes, keeps it
// in <certDir> (kubelet-client-<time>.pem and the kubelet-client-current.pem link) and
// writes a kubeconfig naming that file. From then on it is system:node:<nodeName>, which
// the Node authorizer and the NodeRestriction admission plugin confine to its own node.
// With rotation on, the certificate is renewed before it expires (at 70–90 % of its
// lifetime), with the current certificate as the requester, and connections are
// re-established with the new one.
package clientcert

import (
	"bytes"
	"context"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"errors"
	"fmt"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"time"

	certificatesv1 "k8s.io/api/certificates/v1"
	utilnet "k8s.io/apimachinery/pkg/util/net"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/rest"
	"k8s.io/client-go/tools/clientcmd"
	clientcmdapi "k8s.io/client-go/tools/clientcmd/api"
	certutil "k8s.io/client-go/util/cert"
	"k8s.io/client-go/util/certificate"
	"k8s.io/client-go/util/connrotation"

	"github.com/nodekeeper/nodekeeper/internal/kubeletmetrics"
)

// Options configure Load.
type Options struct {
	// Kubeconfig is where the agent's own kubeconfig is (read when still valid, else
	// written after bootstrap), as the kubelet's --kubeconfig.
	Kubeconfig string
	// BootstrapKubeconfig holds the credentials that may request the first certificate
	// (--bootstrap-kubeconfig).
	BootstrapKubeconfig string
	// CertDir keeps the issued pairs (--cert-dir; nodekeeper: <rootDir>/pki).
	CertDir  string
	NodeName string
	// Rotate renews the certificate before it expires (rotateCertificates).
	Rotate bool
	// Lifetime, when set, is asked for in the requests (spec.expirationSeconds).
	Lifetime time.Duration
	// CheckPeriod is how often a renewed certificate is looked for to drop old
	// connections (default 10s).
	CheckPeriod time.Duration
}

// Identity is the agent's client identity: Config talks to the API server as the node;
// Start (a manager.Runnable) keeps the certificate renewed when rotation is on.
type Identity struct {
	Config  *rest.Config
	manager certificate.Manager
	dialer  *connrotation.Dialer
	period  time.Duration
	started bool
}

// Load makes sure the node has a client certificate (requesting one with the bootstrap
// credentials when the kubeconfig is missing or its certificate expired; it waits
// until the request is approved and signed, or ctx ends) and returns the identity.
func Load(ctx context.Context, o Options) (*Identity, error) {
	if o.Kubeconfig == "" || o.CertDir == "" || o.NodeName == "" {
		return nil, errors.New("bootstrap: kubeconfig, cert dir and node name are required")
	}
	if err := os.MkdirAll(o.CertDir, 0o700); err != nil {
		return nil, fmt.Errorf("bootstrap: %w", err)
	}
	if o.CheckPeriod == 0 {
		o.CheckPeriod = 10 * time.Second
	}
	valid := stillValid(o.Kubeconfig)
	if !valid && o.BootstrapKubeconfig == "" {
		return nil, fmt.Errorf("kubeconfig %s has no valid client certificate and no bootstrap kubeconfig was given", o.Kubeconfig)
	}
	var bootstrapCfg *rest.Config
	if o.BootstrapKubeconfig != "" {
		c, err := clientcmd.BuildConfigFromFlags("", o.BootstrapKubeconfig)
		if err != nil {
			return nil, fmt.Errorf("bootstrap kubeconfig %s: %w", o.BootstrapKubeconfig, err)
		}
		bootstrapCfg = c
	}
	// a valid kubeconfig's own pair is the store's fallback, as upstream (kubeadm hands
	// control-plane kubelets a certificate that is rotated out)
	var certFile, keyFile string
	if valid {
		if c, err := clientcmd.BuildConfigFromFlags("", o.Kubeconfig); err == nil {
			certFile, keyFile = c.CertFile, c.KeyFile
		}
	}
	store, err := certificate.NewFileStore("kubelet-client", o.CertDir, o.CertDir, certFile, keyFile)
	if err != nil {
		return nil, fmt.Errorf("client certificate store %s: %w", o.CertDir, err)
	}
	id := &Identity{period: o.CheckPeriod}
	// the clientset the manager requests with: the bootstrap credentials until there is
	// a certificate, then the node's own (upstream's newClientsetFn)
	var clientCfg *rest.Config
	clientsetFn := func(current *tls.Certificate) (kubernetes.Interface, error) {
		if current == nil || clientCfg == nil {
			if bootstrapCfg == nil {
				return nil, errors.New("no bootstrap credentials")
			}
			return kubernetes.NewForConfig(bootstrapCfg)
		}
		return kubernetes.NewForConfig(clientCfg)
	}
	var lifetime *time.Duration
	if o.Lifetime > 0 {
		lifetime = &o.Lifetime
	}
	m, err := certificate.NewManager(&certificate.Config{
		ClientsetFn: clientsetFn,
		Template: &x509.CertificateRequest{Subject: pkix.Name{
			CommonName: "system:node:" + o.NodeName, Organization: []string{"system:nodes"}}},
		SignerName:                   certificatesv1.KubeAPIServerClientKubeletSignerName,
		GetUsages:                    certificate.DefaultKubeletClientGetUsages,
		CertificateStore:             store,
		RequestedCertificateLifetime: lifetime,
		CertificateRenewFailure:      kubeletmetrics.ClientExpirationRenewErrors,
		Name:                         "kubelet-client",
	})
	if err != nil {
		return nil, fmt.Errorf("client certificate manager: %w", err)
	}
	id.manager = m
	if !valid {
		// bootstrap: the manager requests the first certificate
		m.Start()
		id.started = true
		if err := waitForCert(ctx, m); err != nil {
			m.Stop()
			return nil, err
		}
		if !o.Rotate {
			m.Stop()
			id.started = false
		}
		if err := writeKubeconfig(o.Kubeconfig, bootstrapCfg, filepath.Join(o.CertDir, "kubelet-client-current.pem")); err != nil {
			m.Stop()
			return nil, err
		}
	}
	clientCfg, err = clientcmd.BuildConfigFromFlags("", o.Kubeconfig)
	if err != nil {
		m.Stop()
		return nil, fmt.Errorf("kubeconfig %s: %w", o.Kubeconfig, err)
	}
	if o.Rotate {
		kubeletmetrics.RegisterClientCertificate(func() (time.Time, bool) {
			if c := m.Current(); c != nil && c.Leaf != nil {
				return c.Leaf.NotAfter, true
			}
			return time.Time{}, false
		})
		d, err := rotatingTransport(clientCfg, m)
		if err != nil {
			m.Stop()
			return nil, err
		}
		id.dialer = d
	}
	id.Config = clientCfg
	return id, nil
}

func waitForCert(ctx context.Context, m certificate.Manager) error {
	t := time.NewTicker(200 * time.Millisecond)
	defer t.Stop()
	for m.Current() == nil {
		select {
		case <-ctx.Done():
			return fmt.Errorf("bootstrap: no client certificate issued yet (is the CertificateSigningRequest approved?): %w", ctx.Err())
		case <-t.C:
		}
	}
	return nil
}

// Current is the certificate in use (nil before the first one).
func (id *Identity) Current() *tls.Certificate { return id.manager.Current() }

// NeedLeaderElection implements manager.LeaderElectionRunnable.
func (id *Identity) NeedLeaderElection() bool { return false }

// Start implements manager.Runnable: it rotates the certificate until ctx ends and drops
// the connections made with an older one (upstream's UpdateTransport). Without rotation
// it only waits.
func (id *Identity) Start(ctx context.Context) error {
	if id.dialer == nil {
		<-ctx.Done()
		return nil
	}
	if !id.started {
		id.manager.Start()
	}
	defer id.manager.Stop()
	last := leaf(id.manager.Current())
	t := time.NewTicker(id.period)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return nil
		case <-t.C:
			if cur := leaf(id.manager.Current()); cur != nil && !bytes.Equal(cur, last) {
				last = cur
				id.dialer.CloseAll() // reconnect with the new certificate
			}
		}
	}
}

func leaf(c *tls.Certificate) []byte {
	if c == nil || len(c.Certificate) == 0 {
		return nil
	}
	return c.Certificate[0]
}

// rotatingTransport makes cfg present the manager's current certificate on every
// handshake (upstream's updateTransport); the dialer closes connections on rotation.
func rotatingTransport(cfg *rest.Config, m certificate.Manager) (*connrotation.Dialer, error) {
	tlsCfg, err := rest.TLSConfigFor(cfg)
	if err != nil {
		return nil, fmt.Errorf("client TLS: %w", err)
	}
	if tlsCfg == nil {
		tlsCfg = &tls.Config{}
	}
	tlsCfg.Certificates = nil
	tlsCfg.GetClientCertificate = func(*tls.CertificateRequestInfo) (*tls.Certificate, error) {
		if c := m.Current(); c != nil {
			return c, nil
		}
		return &tls.Certificate{}, nil // no certificate: the server refuses, as upstream
	}
	d := connrotation.NewDialer((&net.Dialer{Timeout: 30 * time.Second, KeepAlive: 30 * time.Second}).DialContext)
	cfg.Transport = utilnet.SetTransportDefaults(&http.Transport{
		Proxy: http.ProxyFromEnvironment, TLSHandshakeTimeout: 10 * time.Second, TLSClientConfig: tlsCfg,
		MaxIdleConnsPerHost: 25, DialContext: d.DialContext,
	})
	// the transport carries the TLS settings now
	cfg.TLSClientConfig = rest.TLSClientConfig{}
	return d, nil
}

// stillValid is upstream's isClientConfigStillValid: the kubeconfig exists and its
// client certificate loads and has not expired.
func stillValid(path string) bool {
	if _, err := os.Stat(path); err != nil {
		return false
	}
	cfg, err := clientcmd.BuildConfigFromFlags("", path)
	if err != nil {
		return false
	}
	var pem []byte
	switch {
	case len(cfg.CertData) > 0:
		pem = cfg.CertData
	case cfg.CertFile != "":
		if pem, err = os.ReadFile(cfg.CertFile); err != nil {
			return false
		}
	default:
		return false
	}
	certs, err := certutil.ParseCertsPEM(pem)
	if err != nil || len(certs) == 0 {
		return false
	}
	now := time.Now()
	for _, c := range certs {
		if now.After(c.NotAfter) || now.Before(c.NotBefore) {
			return false
		}
	}
	return true
}

// writeKubeconfig writes the node's kubeconfig: the bootstrap kubeconfig's server and
// CA, and the certificate file the store keeps current (upstream's writeKubeconfigFromBootstrapping).
func writeKubeconfig(path string, bootstrap *rest.Config, certFile string) error {
	cluster := &clientcmdapi.Cluster{Server: bootstrap.Host, CertificateAuthority: bootstrap.CAFile,
		CertificateAuthorityData: bootstrap.CAData, InsecureSkipTLSVerify: bootstrap.Insecure, TLSServerName: bootstrap.ServerName}
	kc := clientcmdapi.Config{
		Clusters:       map[string]*clientcmdapi.Cluster{"default-cluster": cluster},
		AuthInfos:      map[string]*clientcmdapi.AuthInfo{"default-auth": {ClientCertificate: certFile, ClientKey: certFile}},
		Contexts:       map[string]*clientcmdapi.Context{"default-context": {Cluster: "default-cluster", AuthInfo: "default-auth", Namespace: "default"}},
		CurrentContext: "default-context",
	}
	if err := os.MkdirAll(filepath.Dir(path), 0o700); err != nil {
		return err
	}
	if err := clientcmd.WriteToFile(kc, path); err != nil {
		return fmt.Errorf("writing kubeconfig %s: %w", path, err)
	}
	return nil
}
