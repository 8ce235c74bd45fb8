package controllers

import (
	"context"
	"net"
	"net/http"
	"net/http/httptest"
	"testing"

	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/util/intstr"

	"github.com/nodekeeper/nodekeeper/internal/probehttp"
)

// An https probe does not check the server's certificate, as upstream's prober (a
// self-signed one, issued for another name, succeeds).
func TestHTTPSProbeSkipsCertificateChecks(t *testing.T) {
	srv := httptest.NewTLSServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path != "/echo" {
			w.WriteHeader(http.StatusNotFound)
		}
	}))
	defer srv.Close()
	host, port, _ := net.SplitHostPort(srv.Listener.Addr().String())
	p := &prober{}
	pr := &corev1.Probe{ProbeHandler: corev1.ProbeHandler{HTTPGet: &corev1.HTTPGetAction{
		Path: "/echo", Port: intstr.Parse(port), Scheme: corev1.URISchemeHTTPS}}}
	if res, msg, _ := p.probe(context.Background(), host, "", &corev1.Container{}, pr); res != probehttp.Success {
		t.Errorf("https probe failed: %s", msg)
	}
	pr.HTTPGet.Path = "/missing"
	if res, _, _ := p.probe(context.Background(), host, "", &corev1.Container{}, pr); res != probehttp.Failure {
		t.Error("a 404 must fail the probe")
	}
}
