package healthcheck

import (
	"context"
	"net"
	"net/http"
	"net/http/httptest"
	"net/netip"
	"reflect"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
	testingclock "k8s.io/utils/clock/testing"

	"github.com/nodekeeper/nodekeeper/netrules"
)

var t0 = time.Date(2026, 12, 1, 10, 0, 0, 0, time.UTC)

const v4, v6 = corev1.IPv4Protocol, corev1.IPv6Protocol

func at(s int) time.Time { return t0.Add(time.Duration(s) * time.Second) }

func TestComputeHealth(t *testing.T) {
	const timeout = 60 * time.Second
	for _, tt := range []struct {
		name             string
		updated, pending map[corev1.IPFamily]time.Time
		now              time.Time
		want             ProxyHealth
	}{
		{name: "never synced: healthy while starting", now: at(500),
			want: ProxyHealth{Healthy: true, CurrentTime: at(500), Status: map[corev1.IPFamily]ProxierHealth{}}},
		{name: "a change queued before the first sync is not judged", pending: map[corev1.IPFamily]time.Time{v4: at(0)}, now: at(500),
			want: ProxyHealth{Healthy: true, CurrentTime: at(500), Status: map[corev1.IPFamily]ProxierHealth{}}},
		{name: "synced, nothing pending, however long ago", updated: map[corev1.IPFamily]time.Time{v4: at(0)}, now: at(3600),
			want: ProxyHealth{Healthy: true, LastUpdated: at(0), CurrentTime: at(3600), Status: map[corev1.IPFamily]ProxierHealth{v4: {at(0), true}}}},
		{name: "a change pending less than the timeout", updated: map[corev1.IPFamily]time.Time{v4: at(0)}, pending: map[corev1.IPFamily]time.Time{v4: at(10)}, now: at(69),
			want: ProxyHealth{Healthy: true, LastUpdated: at(0), CurrentTime: at(69), Status: map[corev1.IPFamily]ProxierHealth{v4: {at(0), true}}}},
		{name: "a change pending for the timeout exactly", updated: map[corev1.IPFamily]time.Time{v4: at(0)}, pending: map[corev1.IPFamily]time.Time{v4: at(10)}, now: at(70),
			want: ProxyHealth{Healthy: false, LastUpdated: at(0), CurrentTime: at(70), Status: map[corev1.IPFamily]ProxierHealth{v4: {at(0), false}}}},
		{name: "dual-stack: one family late makes the proxy unhealthy; lastUpdated is the newest",
			updated: map[corev1.IPFamily]time.Time{v4: at(5), v6: at(20)}, pending: map[corev1.IPFamily]time.Time{v6: at(30)}, now: at(95),
			want: ProxyHealth{Healthy: false, LastUpdated: at(20), CurrentTime: at(95), Status: map[corev1.IPFamily]ProxierHealth{v4: {at(5), true}, v6: {at(20), false}}}},
	} {
		t.Run(tt.name, func(t *testing.T) {
			if got := ComputeHealth(tt.updated, tt.pending, tt.now, timeout); !reflect.DeepEqual(got, tt.want) {
				t.Errorf("got %+v\nwant %+v", got, tt.want)
			}
		})
	}
}

func TestNodeEligible(t *testing.T) {
	taint := func(key string) *corev1.Node {
		return &corev1.Node{Spec: corev1.NodeSpec{Taints: []corev1.Taint{{Key: key, Effect: corev1.TaintEffectNoSchedule}}}}
	}
	deleting := &corev1.Node{ObjectMeta: metav1.ObjectMeta{DeletionTimestamp: &metav1.Time{Time: t0}}}
	for _, tt := range []struct {
		name string
		node *corev1.Node
		want bool
	}{
		{"not seen", nil, false},
		{"plain", &corev1.Node{}, true},
		{"another taint", taint("other"), true},
		{"autoscaler deletes it", taint(ToBeDeletedTaint), false},
		{"being deleted", deleting, false},
	} {
		if got := NodeEligible(tt.node); got != tt.want {
			t.Errorf("%s: %v, want %v", tt.name, got, tt.want)
		}
	}
}

func TestProxyResponses(t *testing.T) {
	healthy := ComputeHealth(map[corev1.IPFamily]time.Time{v4: at(0)}, nil, at(100), time.Minute)
	late := ComputeHealth(map[corev1.IPFamily]time.Time{v4: at(0)}, map[corev1.IPFamily]time.Time{v4: at(10)}, at(100), time.Minute)
	const (
		okEligible  = `{"lastUpdated":"2026-12-01T10:01:40Z","currentTime":"2026-12-01T10:01:40Z","nodeEligible":true,"healthy":true,"status":{"IPv4":{"lastUpdated":"2026-12-01T10:00:00Z","healthy":true}}}`
		okIneligib  = `{"lastUpdated":"2026-12-01T10:00:00Z","currentTime":"2026-12-01T10:01:40Z","nodeEligible":false,"healthy":true,"status":{"IPv4":{"lastUpdated":"2026-12-01T10:00:00Z","healthy":true}}}`
		lateBody    = `{"lastUpdated":"2026-12-01T10:00:00Z","currentTime":"2026-12-01T10:01:40Z","nodeEligible":true,"healthy":false,"status":{"IPv4":{"lastUpdated":"2026-12-01T10:00:00Z","healthy":false}}}`
		livezOK     = `{"lastUpdated":"2026-12-01T10:01:40Z","currentTime":"2026-12-01T10:01:40Z","healthy":true,"status":{"IPv4":{"lastUpdated":"2026-12-01T10:00:00Z","healthy":true}}}`
		livezLate   = `{"lastUpdated":"2026-12-01T10:00:00Z","currentTime":"2026-12-01T10:01:40Z","healthy":false,"status":{"IPv4":{"lastUpdated":"2026-12-01T10:00:00Z","healthy":false}}}`
		neverSynced = `{"lastUpdated":"2026-12-01T10:01:40Z","currentTime":"2026-12-01T10:01:40Z","nodeEligible":true,"healthy":true}`
	)
	for _, tt := range []struct {
		name string
		got  Response
		code int
		body string
	}{
		{"healthz: healthy, eligible: lastUpdated is now", Healthz(healthy, true, at(100)), 200, okEligible},
		{"healthz: healthy, node not eligible", Healthz(healthy, false, at(100)), 503, okIneligib},
		{"healthz: a sync late", Healthz(late, true, at(100)), 503, lateBody},
		{"healthz: never synced", Healthz(ComputeHealth(nil, nil, at(100), time.Minute), true, at(100)), 200, neverSynced},
		{"livez ignores the node", Livez(healthy, at(100)), 200, livezOK},
		{"livez: a sync late", Livez(late, at(100)), 503, livezLate},
	} {
		t.Run(tt.name, func(t *testing.T) {
			if tt.got.Code != tt.code || tt.got.Body != tt.body {
				t.Errorf("got %d %s\nwant %d %s", tt.got.Code, tt.got.Body, tt.code, tt.body)
			}
			want := http.Header{"Content-Type": {"application/json"}, "X-Content-Type-Options": {"nosniff"}}
			if !reflect.DeepEqual(tt.got.Header, want) {
				t.Errorf("headers %v", tt.got.Header)
			}
		})
	}
}

func TestServiceCheck(t *testing.T) {
	svc := types.NamespacedName{Namespace: "ns", Name: "web"}
	body := func(n, healthy string) string {
		return "{\n\t\"service\": {\n\t\t\"namespace\": \"ns\",\n\t\t\"name\": \"web\"\n\t},\n\t\"localEndpoints\": " + n +
			",\n\t\"serviceProxyHealthy\": " + healthy + "\n}"
	}
	for _, tt := range []struct {
		local   int
		healthy bool
		code    int
		body    string
	}{
		{2, true, 200, body("2", "true")},
		{0, true, 503, body("0", "true")},
		{2, false, 503, body("2", "false")},
		{0, false, 503, body("0", "false")},
	} {
		got := ServiceCheck(svc, tt.local, tt.healthy)
		if got.Code != tt.code || got.Body != tt.body {
			t.Errorf("%d %v: got %d %q, want %d %q", tt.local, tt.healthy, got.Code, got.Body, tt.code, tt.body)
		}
		want := http.Header{"Content-Type": {"application/json"}, "X-Content-Type-Options": {"nosniff"},
			"X-Load-Balancing-Endpoint-Weight": {string(rune('0' + tt.local))}}
		if !reflect.DeepEqual(got.Header, want) {
			t.Errorf("%d %v: headers %v", tt.local, tt.healthy, got.Header)
		}
	}
}

func ep(ip string, port int32) netrules.Endpoint {
	return netrules.Endpoint{IP: netip.MustParseAddr(ip), Port: port, Local: true}
}

func TestWanted(t *testing.T) {
	port := func(ns, name string, hc int32, f func(*netrules.ServicePort)) *netrules.ServicePort {
		p := &netrules.ServicePort{Namespace: ns, Name: name, HealthCheckNodePort: hc, ExternalLocal: hc != 0}
		if f != nil {
			f(p)
		}
		return p
	}
	rs := map[netrules.Family]*netrules.Ruleset{
		netrules.IPv4: {Ports: []*netrules.ServicePort{
			// two ports, one pod serving both and a second pod on one: 2 endpoints, not 3
			port("ns", "web", 30100, func(p *netrules.ServicePort) {
				p.PortName, p.LocalEndpoints = "http", []netrules.Endpoint{ep("10.244.0.5", 8080), ep("10.244.0.6", 8080)}
			}),
			port("ns", "web", 30100, func(p *netrules.ServicePort) {
				p.PortName, p.LocalEndpoints = "https", []netrules.Endpoint{ep("10.244.0.5", 8443)}
			}),
			// only terminating local endpoints: none counted
			port("ns", "draining", 30101, func(p *netrules.ServicePort) {
				p.LocalEndpoints, p.LocalTerminating = []netrules.Endpoint{ep("10.244.0.7", 80)}, true
			}),
			port("ns", "empty", 30102, nil),
			port("ns", "cluster", 0, func(p *netrules.ServicePort) { p.LocalEndpoints = []netrules.Endpoint{ep("10.244.0.8", 80)} }),
		}},
		netrules.IPv6: {Ports: []*netrules.ServicePort{
			port("ns", "web", 30100, func(p *netrules.ServicePort) {
				p.PortName, p.LocalEndpoints = "http", []netrules.Endpoint{ep("fd00::5", 8080)}
			}),
		}},
	}
	nn := func(name string) types.NamespacedName { return types.NamespacedName{Namespace: "ns", Name: name} }
	want := map[int32]Service{
		30100: {Name: nn("web"), Local: map[netrules.Family]int{netrules.IPv4: 2, netrules.IPv6: 1}},
		30101: {Name: nn("draining"), Local: map[netrules.Family]int{netrules.IPv4: 0}},
		30102: {Name: nn("empty"), Local: map[netrules.Family]int{netrules.IPv4: 0}},
	}
	got := Wanted(rs)
	if !reflect.DeepEqual(got, want) {
		t.Fatalf("got %+v\nwant %+v", got, want)
	}
	web := got[30100]
	for _, tt := range []struct {
		fam   netrules.Family
		known bool
		want  int
	}{{netrules.IPv4, true, 2}, {netrules.IPv6, true, 1}, {0, false, 2}} {
		if n := web.LocalEndpoints(tt.fam, tt.known); n != tt.want {
			t.Errorf("LocalEndpoints(%v, %v) = %d, want %d", tt.fam, tt.known, n, tt.want)
		}
	}
	if n := got[30101].LocalEndpoints(netrules.IPv6, true); n != 0 {
		t.Errorf("a family the Service lacks: %d", n)
	}
}

// The proxy's state on an injected clock, as upstream's testProxyHealthUpdater.
func TestProxy(t *testing.T) {
	clk := testingclock.NewFakeClock(t0)
	p := &Proxy{Timeout: time.Minute, Clock: clk}
	get := func(path string) (int, bool) {
		rec := httptest.NewRecorder()
		p.Handler().ServeHTTP(rec, httptest.NewRequest(http.MethodGet, path, nil))
		return rec.Code, rec.Header().Get("X-Content-Type-Options") == "nosniff"
	}
	steps := []struct {
		name          string
		do            func()
		healthz, livz int
	}{
		{"started, no node seen yet", func() {}, 503, 200},
		{"node seen", func() { p.SyncNode(&corev1.Node{}) }, 200, 200},
		{"first syncs", func() { p.Updated(v4); p.Updated(v6) }, 200, 200},
		{"a change queued", func() { clk.Step(time.Second); p.QueuedUpdate(v4) }, 200, 200},
		{"a second change does not restart the wait", func() { clk.Step(50 * time.Second); p.QueuedUpdate(v4) }, 200, 200},
		{"the first change waited the timeout", func() { clk.Step(10 * time.Second) }, 503, 503},
		{"synced", func() { p.Updated(v4) }, 200, 200},
		{"IPv6 late", func() { p.QueuedUpdate(v6); clk.Step(2 * time.Minute) }, 503, 503},
		{"synced again", func() { p.Updated(v6) }, 200, 200},
		{"the autoscaler is deleting the node", func() {
			p.SyncNode(&corev1.Node{Spec: corev1.NodeSpec{Taints: []corev1.Taint{{Key: ToBeDeletedTaint}}}})
		}, 503, 200},
	}
	for _, s := range steps {
		s.do()
		hz, nosniff := get("/healthz")
		lz, _ := get("/livez")
		if hz != s.healthz || lz != s.livz || !nosniff {
			t.Errorf("%s: /healthz %d /livez %d (nosniff %v), want %d %d", s.name, hz, lz, nosniff, s.healthz, s.livz)
		}
	}
}

// A health check node port answers for the family of the address it was reached on,
// and fails while the proxy is unhealthy (no socket: the handler alone).
func TestServicesHandler(t *testing.T) {
	clk := testingclock.NewFakeClock(t0)
	proxy := &Proxy{Timeout: time.Minute, Clock: clk}
	proxy.Updated(v4)
	h := &Services{Proxy: proxy, servers: map[int32]*served{30100: {svc: Service{
		Name: types.NamespacedName{Namespace: "ns", Name: "web"}, Local: map[netrules.Family]int{netrules.IPv4: 2, netrules.IPv6: 0}}}}}
	get := func(local string) (int, string) {
		req := httptest.NewRequest(http.MethodGet, "/", nil)
		if local != "" {
			req = req.WithContext(context.WithValue(req.Context(), http.LocalAddrContextKey, net.TCPAddrFromAddrPort(netip.MustParseAddrPort(local))))
		}
		rec := httptest.NewRecorder()
		h.handler(30100).ServeHTTP(rec, req)
		return rec.Code, rec.Header().Get("X-Load-Balancing-Endpoint-Weight")
	}
	for _, tt := range []struct {
		name, local string
		code        int
		weight      string
	}{
		{"IPv4", "192.0.2.10:30100", 200, "2"},
		{"IPv4-mapped on a dual-stack socket", "[::ffff:192.0.2.10]:30100", 200, "2"},
		{"IPv6: no local IPv6 endpoints", "[2001:db8::10]:30100", 503, "0"},
		{"address unknown: the larger count", "", 200, "2"},
	} {
		if code, w := get(tt.local); code != tt.code || w != tt.weight {
			t.Errorf("%s: %d weight %q, want %d %q", tt.name, code, w, tt.code, tt.weight)
		}
	}
	proxy.QueuedUpdate(v4)
	clk.Step(time.Minute)
	if code, _ := get("192.0.2.10:30100"); code != 503 {
		t.Errorf("proxy unhealthy: %d, want 503", code)
	}
	rec := httptest.NewRecorder()
	h.handler(30101).ServeHTTP(rec, httptest.NewRequest(http.MethodGet, "/", nil))
	if rec.Code != 200 || rec.Body.Len() != 0 {
		t.Errorf("a closed port: %d %q, want an empty 200 as upstream", rec.Code, rec.Body.String())
	}
}
