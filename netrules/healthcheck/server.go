package healthcheck

import (
	"context"
	"fmt"
	"net"
	"net/http"
	"net/netip"
	"strconv"
	"sync"
	"time"

	"github.com/go-logr/logr"
	corev1 "k8s.io/api/core/v1"
	"k8s.io/utils/clock"

	"github.com/nodekeeper/nodekeeper/netrules"
)

// Listener opens a TCP listener (tests open it inside a network namespace).
type Listener func(addr string) (net.Listener, error)

func (l Listener) listen(addr string) (net.Listener, error) {
	if l == nil {
		return net.Listen("tcp", addr)
	}
	return l(addr)
}

// Proxy is the state upstream's ProxyHealthServer keeps: per IP family, the last
// successful sync and the oldest change not synced yet, and this node's Node object.
// The ServiceReconciler feeds it; Handler serves /healthz and /livez from it.
type Proxy struct {
	// Timeout is how long a change may wait for its sync before the proxy is unhealthy
	// (kube-proxy: 2 × syncPeriod).
	Timeout time.Duration
	Clock   clock.PassiveClock

	mu      sync.Mutex
	updated map[corev1.IPFamily]time.Time
	pending map[corev1.IPFamily]time.Time
	node    *corev1.Node
}

func (p *Proxy) now() time.Time {
	if p.Clock == nil {
		return time.Now()
	}
	return p.Clock.Now()
}

// QueuedUpdate records that family fam has a change to sync (the first since its last
// sync counts).
func (p *Proxy) QueuedUpdate(fam corev1.IPFamily) {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.pending == nil {
		p.pending = map[corev1.IPFamily]time.Time{}
	}
	if _, ok := p.pending[fam]; !ok {
		p.pending[fam] = p.now()
	}
}

// Updated records that family fam's rules are in sync.
func (p *Proxy) Updated(fam corev1.IPFamily) {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.updated == nil {
		p.updated = map[corev1.IPFamily]time.Time{}
	}
	delete(p.pending, fam)
	p.updated[fam] = p.now()
}

// SyncNode records this node's Node object (nil: not seen, or deleted).
func (p *Proxy) SyncNode(node *corev1.Node) {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.node = node
}

// Health is the proxy's health now (ComputeHealth).
func (p *Proxy) Health() ProxyHealth {
	p.mu.Lock()
	defer p.mu.Unlock()
	return ComputeHealth(p.updated, p.pending, p.now(), p.Timeout)
}

// NodeEligible tells whether load balancers may use this node (NodeEligible).
func (p *Proxy) NodeEligible() bool {
	p.mu.Lock()
	defer p.mu.Unlock()
	return NodeEligible(p.node)
}

// Handler serves /healthz and /livez.
func (p *Proxy) Handler() http.Handler {
	mux := http.NewServeMux()
	mux.HandleFunc("/healthz", func(w http.ResponseWriter, _ *http.Request) {
		Healthz(p.Health(), p.NodeEligible(), p.now()).Write(w)
	})
	mux.HandleFunc("/livez", func(w http.ResponseWriter, _ *http.Request) {
		Livez(p.Health(), p.now()).Write(w)
	})
	return mux
}

// Server serves Handler on Addr until its context ends (a manager.Runnable).
type Server struct {
	Addr    string
	Listen  Listener
	Handler http.Handler
}

// Start implements manager.Runnable.
func (s *Server) Start(ctx context.Context) error {
	l, err := s.Listen.listen(s.Addr)
	if err != nil {
		return fmt.Errorf("proxy health server: %w", err)
	}
	srv := &http.Server{Handler: s.Handler, ReadHeaderTimeout: 5 * time.Second}
	go func() {
		<-ctx.Done()
		_ = srv.Close()
	}()
	if err := srv.Serve(l); err != nil && err != http.ErrServerClosed {
		return err
	}
	return nil
}

// NeedLeaderElection implements manager.LeaderElectionRunnable.
func (s *Server) NeedLeaderElection() bool { return false }

// Services answers kube-proxy's per-Service health checks: an HTTP server on each
// healthCheckNodePort of an externalTrafficPolicy=Local Service (ServiceCheck), so that
// external load balancers send traffic only to nodes with local endpoints.
type Services struct {
	Listen Listener
	Log    logr.Logger
	// Addr is the address to bind ("" = all addresses).
	Addr string
	// Proxy, when set, is the proxy's health: a check fails while it is unhealthy.
	Proxy *Proxy

	mu      sync.Mutex
	servers map[int32]*served
}

type served struct {
	srv *http.Server
	svc Service
}

// Update opens, updates and closes health check ports to match the rulesets (Wanted).
func (h *Services) Update(rs map[netrules.Family]*netrules.Ruleset) {
	wanted := Wanted(rs)
	h.mu.Lock()
	defer h.mu.Unlock()
	if h.servers == nil {
		h.servers = map[int32]*served{}
	}
	for port, s := range h.servers {
		if _, ok := wanted[port]; !ok {
			h.close(port, s)
		}
	}
	for port, w := range wanted {
		if s, ok := h.servers[port]; ok {
			s.svc = w
			continue
		}
		l, err := h.Listen.listen(net.JoinHostPort(h.Addr, strconv.Itoa(int(port))))
		if err != nil {
			h.Log.Error(err, "Opening health check node port failed", "port", port, "service", w.Name)
			continue
		}
		s := &served{svc: w}
		s.srv = &http.Server{Handler: h.handler(port), ReadHeaderTimeout: 5 * time.Second}
		h.servers[port] = s
		go func() { _ = s.srv.Serve(l) }()
	}
}

// close stops one port's server; h.mu is held.
func (h *Services) close(port int32, s *served) {
	if err := s.srv.Close(); err != nil {
		h.Log.Error(err, "Closing health check node port failed", "port", port, "service", s.svc.Name)
	}
	delete(h.servers, port)
}

func (h *Services) handler(port int32) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, req *http.Request) {
		h.mu.Lock()
		s := h.servers[port]
		var svc Service
		if s != nil {
			svc = s.svc
		}
		h.mu.Unlock()
		if s == nil {
			return // closed meanwhile: an empty 200, as upstream
		}
		fam, known := requestFamily(req)
		healthy := h.Proxy == nil || h.Proxy.Health().Healthy
		ServiceCheck(svc.Name, svc.LocalEndpoints(fam, known), healthy).Write(w)
	})
}

// requestFamily is the family of the address the request reached (upstream has one
// server per family, each counting its own family's endpoints).
func requestFamily(req *http.Request) (netrules.Family, bool) {
	a, ok := req.Context().Value(http.LocalAddrContextKey).(net.Addr)
	if !ok {
		return 0, false
	}
	ap, err := netip.ParseAddrPort(a.String())
	if err != nil {
		return 0, false
	}
	if ap.Addr().Unmap().Is4() {
		return netrules.IPv4, true
	}
	return netrules.IPv6, true
}

// Close stops every health check port.
func (h *Services) Close() {
	h.mu.Lock()
	defer h.mu.Unlock()
	for port, s := range h.servers {
		h.close(port, s)
	}
}
