package kubeletapi

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"fmt"
	"net"
	"sort"
	"time"

	certificatesv1 "k8s.io/api/certificates/v1"
	corev1 "k8s.io/api/core/v1"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/util/certificate"

	"github.com/nodekeeper/nodekeeper/internal/kubeletmetrics"
)

// ServingCertificateOptions configure CSRServingCertificate.
type ServingCertificateOptions struct {
	// NodeName names the certificate's subject: CN=system:node:<NodeName>, O=system:nodes.
	NodeName string
	// Addresses are the node's addresses; InternalIP/ExternalIP become IP SANs,
	// Hostname/InternalDNS/ExternalDNS DNS SANs (a Hostname that is an IP becomes an IP SAN).
	// Called each time a request is made, so a changed address leads to a new request.
	Addresses func() []corev1.NodeAddress
	// CertDir holds the issued pairs (kubelet-server-<time>.pem) and the
	// kubelet-server-current.pem link to the one in use, as upstream's --cert-dir.
	CertDir string
	// CertFile/KeyFile, when set, are served until the first certificate is issued
	// (upstream's file store fallback).
	CertFile, KeyFile string
	// Client creates and watches the CertificateSigningRequests.
	Client kubernetes.Interface
}

// CSRServingCertificate is the kubelet API's serving certificate obtained from the
// certificates API (upstream: serverTLSBootstrap): client-go's certificate manager asks for
// a certificate from the kubernetes.io/kubelet-serving signer, stores it and renews it
// before it expires (at 70–90% of its lifetime, or when the addresses change).
// It is a manager.Runnable: Start runs the rotation until the context ends.
type CSRServingCertificate struct {
	m certificate.Manager
}

// NewCSRServingCertificate loads the stored certificate, if any, and prepares the
// manager; nothing is requested before Start.
func NewCSRServingCertificate(o ServingCertificateOptions) (*CSRServingCertificate, error) {
	store, err := certificate.NewFileStore("kubelet-server", o.CertDir, o.CertDir, o.CertFile, o.KeyFile)
	if err != nil {
		return nil, fmt.Errorf("kubelet API serving certificate store %s: %w", o.CertDir, err)
	}
	var clientsetFn certificate.ClientsetFunc
	if o.Client != nil {
		clientsetFn = func(*tls.Certificate) (kubernetes.Interface, error) { return o.Client, nil }
	}
	m, err := certificate.NewManager(&certificate.Config{
		Name:             "kubelet-serving",
		ClientsetFn:      clientsetFn,
		GetTemplate:      servingTemplate(o.NodeName, o.Addresses),
		SignerName:       certificatesv1.KubeletServingSignerName,
		GetUsages:        certificate.DefaultKubeletServingGetUsages,
		CertificateStore: store,
		// upstream's kubelet_server_expiration_renew_errors and
		// kubelet_certificate_manager_server_rotation_seconds
		CertificateRotation:     kubeletmetrics.ServerRotationSeconds,
		CertificateRenewFailure: kubeletmetrics.ServerExpirationRenewErrors,
	})
	if err != nil {
		return nil, fmt.Errorf("kubelet API serving certificate manager: %w", err)
	}
	kubeletmetrics.RegisterServerCertificate(func() (time.Time, bool) {
		if c := m.Current(); c != nil && c.Leaf != nil {
			return c.Leaf.NotAfter, true
		}
		return time.Time{}, false
	})
	return &CSRServingCertificate{m: m}, nil
}

// Current is the certificate to serve, nil until one has been issued (or when it expired).
func (c *CSRServingCertificate) Current() *tls.Certificate { return c.m.Current() }

// Start implements manager.Runnable.
func (c *CSRServingCertificate) Start(ctx context.Context) error {
	c.m.Start()
	<-ctx.Done()
	c.m.Stop()
	return nil
}

// NeedLeaderElection implements manager.LeaderElectionRunnable.
func (c *CSRServingCertificate) NeedLeaderElection() bool { return false }

// servingTemplate is upstream's request template: no request until the node has an IP
// address (the API server reaches the kubelet by address).
func servingTemplate(nodeName string, addresses func() []corev1.NodeAddress) func() *x509.CertificateRequest {
	return func() *x509.CertificateRequest {
		dns, ips := sans(addresses())
		if len(ips) == 0 {
			return nil
		}
		return &x509.CertificateRequest{
			Subject:     pkix.Name{CommonName: "system:node:" + nodeName, Organization: []string{"system:nodes"}},
			DNSNames:    dns,
			IPAddresses: ips,
		}
	}
}

// sans sorts node addresses into DNS names and IPs, deduplicated and in a stable order
// (the manager compares templates to notice a change).
func sans(addrs []corev1.NodeAddress) (dns []string, ips []net.IP) {
	seenDNS, seenIP := map[string]bool{}, map[string]bool{}
	for _, a := range addrs {
		if a.Address == "" {
			continue
		}
		ip := net.ParseIP(a.Address)
		switch a.Type {
		case corev1.NodeHostName:
			if ip != nil {
				seenIP[ip.String()] = true
			} else {
				seenDNS[a.Address] = true
			}
		case corev1.NodeInternalIP, corev1.NodeExternalIP:
			if ip != nil {
				seenIP[ip.String()] = true
			}
		case corev1.NodeInternalDNS, corev1.NodeExternalDNS:
			seenDNS[a.Address] = true
		}
	}
	for d := range seenDNS {
		dns = append(dns, d)
	}
	sort.Strings(dns)
	var ipStrs []string
	for i := range seenIP {
		ipStrs = append(ipStrs, i)
	}
	sort.Strings(ipStrs)
	for _, i := range ipStrs {
		ips = append(ips, net.ParseIP(i))
	}
	return dns, ips
}
