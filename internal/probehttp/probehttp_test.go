package probehttp

import (
	"net"
	"net/http"
	"net/http/httptest"
	"net/url"
	"strconv"
	"strings"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/util/intstr"
)

// server answers as agnhost's netexec does for the redirect specs: /redirect?loc=X is a
// 302 to X, /healthz fails, /ok succeeds; it records the headers it got.
func server(t *testing.T) (*httptest.Server, *http.Header) {
	got := &http.Header{}
	mux := http.NewServeMux()
	mux.HandleFunc("/redirect", func(w http.ResponseWriter, r *http.Request) {
		http.Redirect(w, r, r.URL.Query().Get("loc"), http.StatusFound)
	})
	mux.HandleFunc("/loop", func(w http.ResponseWriter, r *http.Request) { http.Redirect(w, r, "/loop", http.StatusFound) })
	mux.HandleFunc("/healthz", func(w http.ResponseWriter, r *http.Request) { w.WriteHeader(500) })
	mux.HandleFunc("/ok", func(w http.ResponseWriter, r *http.Request) {
		*got = r.Header.Clone()
		got.Set("X-Host", r.Host)
		_, _ = w.Write([]byte("fine"))
	})
	s := httptest.NewServer(mux)
	t.Cleanup(s.Close)
	return s, got
}

func probe(t *testing.T, s *httptest.Server, get corev1.HTTPGetAction) (Result, string) {
	t.Helper()
	u, _ := url.Parse(s.URL)
	host, port, _ := net.SplitHostPort(u.Host)
	p, _ := strconv.Atoi(port)
	get.Port = intstr.FromInt32(int32(p))
	req, err := NewRequest(&get, p, host)
	if err != nil {
		t.Fatal(err)
	}
	return Do(req, 5*time.Second)
}

func TestRedirects(t *testing.T) {
	s, _ := server(t)
	// a redirect on the same host is followed: here to a failing endpoint
	if r, msg := probe(t, s, corev1.HTTPGetAction{Path: "/redirect?loc=" + url.QueryEscape("/healthz")}); r != Failure ||
		msg != "HTTP probe failed with statuscode: 500" {
		t.Errorf("local redirect to a failing path: %v %q, want a failure", r, msg)
	}
	if r, _ := probe(t, s, corev1.HTTPGetAction{Path: "/redirect?loc=" + url.QueryEscape("/ok")}); r != Success {
		t.Errorf("local redirect to a healthy path: %v, want success", r)
	}
	// one to another host is not followed: a warning (a success) with the body
	r, msg := probe(t, s, corev1.HTTPGetAction{Path: "/redirect?loc=" + url.QueryEscape("http://0.0.0.0/")})
	if r != Warning || msg != `Probe terminated redirects, Response body: <a href="http://0.0.0.0/">Found</a>.`+"\n\n" {
		t.Errorf("non-local redirect: %v %q, want a warning", r, msg)
	}
	// a redirect loop stops after 10
	if r, msg := probe(t, s, corev1.HTTPGetAction{Path: "/loop"}); r != Failure ||
		!strings.Contains(msg, "stopped after 10 redirects") {
		t.Errorf("redirect loop: %v %q, want a failure", r, msg)
	}
}

func TestHeaders(t *testing.T) {
	s, got := server(t)
	if r, _ := probe(t, s, corev1.HTTPGetAction{Path: "/ok"}); r != Success {
		t.Fatal("probe failed")
	}
	if got.Get("User-Agent") != UserAgent || got.Get("Accept") != "*/*" || got.Get("Accept-Encoding") != "" {
		t.Errorf("default headers: %v", *got)
	}
	if r, _ := probe(t, s, corev1.HTTPGetAction{Path: "/ok", HTTPHeaders: []corev1.HTTPHeader{
		{Name: "Host", Value: "example.test"}, {Name: "Accept", Value: ""}, {Name: "User-Agent", Value: "mine"}}}); r != Success {
		t.Fatal("probe failed")
	}
	if got.Get("X-Host") != "example.test" || got.Get("User-Agent") != "mine" || len((*got)["Accept"]) != 0 {
		t.Errorf("given headers: %v", *got)
	}
}

func TestHTTPSWithoutVerification(t *testing.T) {
	s := httptest.NewTLSServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {}))
	defer s.Close()
	u, _ := url.Parse(s.URL)
	host, port, _ := net.SplitHostPort(u.Host)
	p, _ := strconv.Atoi(port)
	req, err := NewRequest(&corev1.HTTPGetAction{Scheme: corev1.URISchemeHTTPS, Path: "/"}, p, host)
	if err != nil {
		t.Fatal(err)
	}
	if r, msg := Do(req, 5*time.Second); r != Success {
		t.Errorf("https probe of a self-signed server: %v %q", r, msg)
	}
}
