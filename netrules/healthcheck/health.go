// Package healthcheck is kube-proxy's health checking (upstream pkg/proxy/healthcheck):
// the proxy's /healthz and /livez, and one HTTP server per healthCheckNodePort that
// tells external load balancers whether this node has local endpoints for the Service.
//
// What each answers is decided by pure functions (ComputeHealth, NodeEligible, Healthz,
// Livez, ServiceCheck, Wanted); Proxy keeps the per-family sync times they read, and
// Services and Serve do the listening.
package healthcheck

import (
	"encoding/json"
	"fmt"
	"net/http"
	"net/netip"
	"strconv"
	"time"

	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/types"

	"github.com/nodekeeper/nodekeeper/netrules"
)

// ToBeDeletedTaint is the taint the Cluster Autoscaler puts on a node it is about to
// delete: /healthz then fails, so load balancers drain the node first.
const ToBeDeletedTaint = "ToBeDeletedByClusterAutoscaler"

// ProxierHealth is the health of the rules of one IP family.
type ProxierHealth struct {
	LastUpdated time.Time `json:"lastUpdated"`
	Healthy     bool      `json:"healthy"`
}

// ProxyHealth is upstream's ProxyHealth, the JSON body of /healthz and /livez.
type ProxyHealth struct {
	// LastUpdated is the most recent successful sync of any family (the current time
	// in a healthy answer, as upstream keeps for older clients).
	LastUpdated  time.Time `json:"lastUpdated"`
	CurrentTime  time.Time `json:"currentTime"`
	NodeEligible *bool     `json:"nodeEligible,omitempty"`
	// Healthy: every family is.
	Healthy bool                              `json:"healthy"`
	Status  map[corev1.IPFamily]ProxierHealth `json:"status,omitempty"`
}

// ComputeHealth is upstream's ProxyHealthServer.Health: a family is unhealthy when a
// change has been waiting (pending, since QueuedUpdate) for timeout or longer without a
// successful sync (updated); a family that never synced is not judged, so the proxy is
// healthy while it starts.
func ComputeHealth(updated, pending map[corev1.IPFamily]time.Time, now time.Time, timeout time.Duration) ProxyHealth {
	h := ProxyHealth{Healthy: true, CurrentTime: now, Status: map[corev1.IPFamily]ProxierHealth{}}
	for fam, last := range updated {
		if last.After(h.LastUpdated) {
			h.LastUpdated = last
		}
		healthy := true
		if since, ok := pending[fam]; ok && now.Sub(since) >= timeout {
			healthy = false
			h.Healthy = false
		}
		h.Status[fam] = ProxierHealth{LastUpdated: last, Healthy: healthy}
	}
	return h
}

// NodeEligible is upstream's: the node is known, not being deleted and not tainted
// ToBeDeletedTaint.
func NodeEligible(node *corev1.Node) bool {
	if node == nil || !node.DeletionTimestamp.IsZero() {
		return false
	}
	for _, t := range node.Spec.Taints {
		if t.Key == ToBeDeletedTaint {
			return false
		}
	}
	return true
}

// Response is one HTTP answer.
type Response struct {
	Code   int
	Header http.Header
	Body   string
}

// Write sends the response.
func (r Response) Write(w http.ResponseWriter) {
	for k, v := range r.Header {
		w.Header()[k] = v
	}
	w.WriteHeader(r.Code)
	_, _ = w.Write([]byte(r.Body))
}

func jsonHeader() http.Header {
	return http.Header{"Content-Type": {"application/json"}, "X-Content-Type-Options": {"nosniff"}}
}

// Healthz is the answer of /healthz: 200 when the proxy is healthy and the node
// eligible, else 503; the body says whether the node is eligible.
func Healthz(h ProxyHealth, nodeEligible bool, now time.Time) Response {
	h.NodeEligible = &nodeEligible
	return proxyResponse(h, h.Healthy && nodeEligible, now)
}

// Livez is the answer of /livez: the proxy's health alone, whatever the node.
func Livez(h ProxyHealth, now time.Time) Response {
	h.NodeEligible = nil
	return proxyResponse(h, h.Healthy, now)
}

func proxyResponse(h ProxyHealth, healthy bool, now time.Time) Response {
	code := http.StatusServiceUnavailable
	if healthy {
		code = http.StatusOK
		h.LastUpdated = now // upstream: a healthy answer says "updated now"
	}
	body, err := json.Marshal(h)
	if err != nil {
		// cannot happen: times, booleans and a map with string keys
		body = []byte(fmt.Sprintf(`{"error": %q}`, err.Error()))
	}
	return Response{Code: code, Header: jsonHeader(), Body: string(body)}
}

// ServiceCheck is what a healthCheckNodePort answers for svc: 200 when the node has
// local ready endpoints and the proxy is healthy, else 503, with the endpoint count as
// the load-balancing weight; the body is upstream's text.
func ServiceCheck(svc types.NamespacedName, localEndpoints int, proxyHealthy bool) Response {
	code := http.StatusServiceUnavailable
	if localEndpoints != 0 && proxyHealthy {
		code = http.StatusOK
	}
	h := jsonHeader()
	h.Set("X-Load-Balancing-Endpoint-Weight", strconv.Itoa(localEndpoints))
	body := fmt.Sprintf("{\n\t\"service\": {\n\t\t\"namespace\": %q,\n\t\t\"name\": %q\n\t},\n\t\"localEndpoints\": %d,\n\t\"serviceProxyHealthy\": %v\n}",
		svc.Namespace, svc.Name, localEndpoints, proxyHealthy)
	return Response{Code: code, Header: h, Body: body}
}

// Service is what one health check node port serves: its Service and, per family, the
// number of this node's ready endpoints.
type Service struct {
	Name  types.NamespacedName
	Local map[netrules.Family]int
}

// LocalEndpoints is the count a request that reached the node over family fam gets
// (known false: the address is not known, the largest count).
func (s Service) LocalEndpoints(fam netrules.Family, known bool) int {
	if known {
		return s.Local[fam]
	}
	n := 0
	for _, c := range s.Local {
		n = max(n, c)
	}
	return n
}

// Wanted is the health check node ports the rulesets ask for, with the count upstream's
// LocalReadyEndpoints gives: the distinct addresses of the Service's local ready
// endpoints over all its ports (serving-and-terminating ones do not count, so a node
// with only those fails the check and load balancers drain it).
func Wanted(rs map[netrules.Family]*netrules.Ruleset) map[int32]Service {
	out := map[int32]Service{}
	ips := map[int32]map[netrules.Family]map[netip.Addr]bool{}
	for fam, r := range rs {
		for _, p := range r.Ports {
			if p.HealthCheckNodePort == 0 {
				continue
			}
			port := p.HealthCheckNodePort
			if _, ok := out[port]; !ok {
				out[port] = Service{Name: types.NamespacedName{Namespace: p.Namespace, Name: p.Name}, Local: map[netrules.Family]int{}}
				ips[port] = map[netrules.Family]map[netip.Addr]bool{}
			}
			set := ips[port][fam]
			if set == nil {
				set = map[netip.Addr]bool{}
				ips[port][fam] = set
			}
			if !p.LocalTerminating {
				for _, e := range p.LocalEndpoints {
					set[e.IP] = true
				}
			}
			out[port].Local[fam] = len(set)
		}
	}
	return out
}
