package prober

import (
	"context"
	"net"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"

	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/util/intstr"
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
	pr := &corev1.Probe{ProbeHandler: corev1.ProbeHandler{HTTPGet: &corev1.HTTPGetAction{
		Path: "/echo", Port: intstr.Parse(port), Scheme: corev1.URISchemeHTTPS}}}
	if o := Run(context.Background(), nil, host, "", &corev1.Container{}, pr); o.Result != Success {
		t.Errorf("https probe failed: %+v", o)
	}
	pr.HTTPGet.Path = "/missing"
	if o := Run(context.Background(), nil, host, "", &corev1.Container{}, pr); o.Result != Failure {
		t.Errorf("a 404 must fail the probe: %+v", o)
	}
}

// tcpSocket: a closed port fails (with the dial error), an open one succeeds; a named
// port is looked up in the container's ports, and an httpGet port that names none is an
// error, not a failure.
func TestTCPAndNamedPorts(t *testing.T) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	open := l.Addr().(*net.TCPAddr).Port
	defer l.Close()
	spec := &corev1.Container{Ports: []corev1.ContainerPort{{Name: "svc", ContainerPort: int32(open)}}}
	pr := &corev1.Probe{ProbeHandler: corev1.ProbeHandler{TCPSocket: &corev1.TCPSocketAction{Port: intstr.FromString("svc")}}}
	if o := Run(context.Background(), nil, "127.0.0.1", "", spec, pr); o.Result != Success {
		t.Errorf("tcp to an open named port: %+v", o)
	}
	c, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	closed := c.Addr().(*net.TCPAddr).Port
	_ = c.Close()
	pr.TCPSocket.Port = intstr.FromInt32(int32(closed))
	if o := Run(context.Background(), nil, "127.0.0.1", "", spec, pr); o.Result != Failure || !strings.Contains(o.Message, "connection refused") {
		t.Errorf("tcp to a closed port: %+v", o)
	}
	pr = &corev1.Probe{ProbeHandler: corev1.ProbeHandler{HTTPGet: &corev1.HTTPGetAction{Port: intstr.FromString("nope")}}}
	if o := Run(context.Background(), nil, "127.0.0.1", "", spec, pr); o.Result != Unknown || o.Err == nil {
		t.Errorf("httpGet to an unknown named port: %+v, want an error", o)
	}
}
