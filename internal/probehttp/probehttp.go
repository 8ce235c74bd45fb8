// Package probehttp is the kubelet's HTTP prober (k8s.io/kubernetes/pkg/probe/http) for
// httpGet probes: the request as upstream builds it, redirects followed only on the same
// host (a redirect elsewhere ends the probe with a warning, which counts as a success),
// 2xx/3xx succeed, anything else fails; no keep-alive, no proxy, no compression, and no
// certificate checks for https.
package probehttp

import (
	"crypto/tls"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/url"
	"strconv"
	"time"

	corev1 "k8s.io/api/core/v1"
)

// Result is a probe's outcome, as upstream's probe.Result.
type Result int

const (
	Success Result = iota
	// Warning: succeeded, but with something to report (a redirect not followed); the
	// kubelet records a ProbeWarning event and counts it as a success.
	Warning
	Failure
)

// maxBody is how much of a response body upstream reads (and puts in messages).
const maxBody = 10 * 1024

// UserAgent is the kubelet's probe User-Agent (kube-probe/<major>.<minor>).
const UserAgent = "kube-probe/1.37"

// LifecycleUserAgent is the User-Agent of the kubelet's httpGet lifecycle hooks
// (kube-lifecycle/<major>.<minor>: upstream builds hook requests as probe requests).
const LifecycleUserAgent = "kube-lifecycle/1.37"

// NewRequest is upstream's NewRequestForHTTPGetAction: scheme (default http), host
// (default podIP), the resolved port and the path, with the action's headers; a
// User-Agent and `Accept: */*` unless given (an empty Accept header removes it), and a
// Host header sets the request's host.
func NewRequest(get *corev1.HTTPGetAction, port int, podIP string) (*http.Request, error) {
	return NewRequestAs(get, port, podIP, UserAgent)
}

// NewRequestAs is NewRequest with another default User-Agent (LifecycleUserAgent).
func NewRequestAs(get *corev1.HTTPGetAction, port int, podIP, userAgent string) (*http.Request, error) {
	scheme := "http"
	if get.Scheme == corev1.URISchemeHTTPS {
		scheme = "https"
	}
	host := get.Host
	if host == "" {
		host = podIP
	}
	u, err := url.Parse(get.Path)
	if err != nil {
		u = &url.URL{Path: get.Path}
	}
	u.Scheme = scheme
	u.Host = net.JoinHostPort(host, strconv.Itoa(port))
	req, err := http.NewRequest(http.MethodGet, u.String(), nil)
	if err != nil {
		return nil, err
	}
	headers := http.Header{}
	for _, h := range get.HTTPHeaders {
		headers.Add(h.Name, h.Value)
	}
	if _, ok := headers["User-Agent"]; !ok {
		headers.Set("User-Agent", userAgent)
	}
	if _, ok := headers["Accept"]; !ok {
		headers.Set("Accept", "*/*")
	} else if headers.Get("Accept") == "" {
		headers.Del("Accept")
	}
	req.Header = headers
	req.Host = headers.Get("Host")
	return req, nil
}

// transport is shared by all probes (it keeps no connections).
var transport = &http.Transport{
	TLSClientConfig:     &tls.Config{InsecureSkipVerify: true}, //nolint:gosec // as upstream's prober
	DisableKeepAlives:   true,
	DisableCompression:  true,
	Proxy:               http.ProxyURL(nil),
	TLSHandshakeTimeout: 10 * time.Second,
	DialContext:         (&net.Dialer{Timeout: 30 * time.Second}).DialContext,
}

// CheckRedirect is upstream's RedirectChecker(false): redirects on the same host are
// followed (at most 10); one to another host is not, its response ends the probe.
func CheckRedirect(req *http.Request, via []*http.Request) error {
	if req.URL.Hostname() != via[0].URL.Hostname() {
		return http.ErrUseLastResponse
	}
	if len(via) >= 10 {
		return errors.New("stopped after 10 redirects")
	}
	return nil
}

// Do runs the probe request within timeout: upstream's DoHTTPProbe.
func Do(req *http.Request, timeout time.Duration) (Result, string) {
	return DoWith(&http.Client{Timeout: timeout, Transport: transport, CheckRedirect: CheckRedirect}, req)
}

// DoWith is Do with the client given (tests).
func DoWith(client *http.Client, req *http.Request) (Result, string) {
	res, err := client.Do(req)
	if err != nil {
		return Failure, err.Error()
	}
	defer res.Body.Close()
	b, err := io.ReadAll(io.LimitReader(res.Body, maxBody))
	if err != nil {
		return Failure, err.Error()
	}
	body := string(b)
	if res.StatusCode >= http.StatusOK && res.StatusCode < http.StatusBadRequest {
		if res.StatusCode >= http.StatusMultipleChoices {
			return Warning, fmt.Sprintf("Probe terminated redirects, Response body: %v", body)
		}
		return Success, body
	}
	return Failure, fmt.Sprintf("HTTP probe failed with statuscode: %d", res.StatusCode)
}
