package controllers

import (
	"context"
	"encoding/json"
	"fmt"
	"net"
	"net/http"
	"strconv"
	"sync"
	"time"

	"github.com/go-logr/logr"

	"github.com/nodekeeper/nodekeeper/netrules"
)

// Listener opens a TCP listener (tests open it inside a network namespace).
type Listener func(addr string) (net.Listener, error)

// HealthCheckServer answers kube-proxy's per-Service health checks: for each
// externalTrafficPolicy=Local Service it serves HTTP on healthCheckNodePort, 200 with
// the local endpoint count when there are local endpoints, else 503 — so external load
// balancers send traffic only to nodes that have endpoints.
type HealthCheckServer struct {
	Listen Listener
	Log    logr.Logger
	// Addr is the address to bind ("" = all addresses).
	Addr string

	mu      sync.Mutex
	servers map[int32]*hcService
}

type hcService struct {
	srv       *http.Server
	namespace string
	name      string
	local     int
}

// Update opens, updates and closes health check ports to match the rulesets.
func (h *HealthCheckServer) Update(rs map[netrules.Family]*netrules.Ruleset) {
	type want struct {
		ns, name string
		local    int
	}
	wanted := map[int32]want{}
	for _, r := range rs {
		for _, p := range r.Ports {
			if p.HealthCheckNodePort == 0 {
				continue
			}
			w := wanted[p.HealthCheckNodePort]
			w.ns, w.name = p.Namespace, p.Name
			if len(p.LocalEndpoints) > w.local {
				w.local = len(p.LocalEndpoints)
			}
			wanted[p.HealthCheckNodePort] = w
		}
	}
	h.mu.Lock()
	defer h.mu.Unlock()
	if h.servers == nil {
		h.servers = map[int32]*hcService{}
	}
	for port, s := range h.servers {
		if _, ok := wanted[port]; !ok {
			_ = s.srv.Close()
			delete(h.servers, port)
		}
	}
	for port, w := range wanted {
		if s, ok := h.servers[port]; ok {
			s.namespace, s.name, s.local = w.ns, w.name, w.local
			continue
		}
		listen := h.Listen
		if listen == nil {
			listen = func(addr string) (net.Listener, error) { return net.Listen("tcp", addr) }
		}
		l, err := listen(net.JoinHostPort(h.Addr, strconv.Itoa(int(port))))
		if err != nil {
			h.Log.Error(err, "Opening health check node port failed", "port", port, "service", w.ns+"/"+w.name)
			continue
		}
		s := &hcService{namespace: w.ns, name: w.name, local: w.local}
		s.srv = &http.Server{Handler: h.handler(port), ReadHeaderTimeout: 5 * time.Second}
		h.servers[port] = s
		go func() { _ = s.srv.Serve(l) }()
	}
}

func (h *HealthCheckServer) handler(port int32) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) {
		h.mu.Lock()
		s := h.servers[port]
		var ns, name string
		var local int
		if s != nil {
			ns, name, local = s.namespace, s.name, s.local
		}
		h.mu.Unlock()
		w.Header().Set("Content-Type", "application/json")
		w.Header().Set("X-Content-Type-Options", "nosniff")
		w.Header().Set("X-Load-Balancing-Endpoint-Weight", strconv.Itoa(local))
		if local == 0 {
			w.WriteHeader(http.StatusServiceUnavailable)
		} else {
			w.WriteHeader(http.StatusOK)
		}
		_ = json.NewEncoder(w).Encode(map[string]any{
			"service":             map[string]string{"namespace": ns, "name": name},
			"localEndpoints":      local,
			"serviceProxyHealthy": true,
		})
	})
}

// Close stops every health check port.
func (h *HealthCheckServer) Close() {
	h.mu.Lock()
	defer h.mu.Unlock()
	for port, s := range h.servers {
		_ = s.srv.Close()
		delete(h.servers, port)
	}
}

// ProxyHealthServer is kube-proxy's /healthz (port 10256): healthy when the last
// successful sync is recent.
type ProxyHealthServer struct {
	Addr     string
	Listen   Listener
	LastSync func() time.Time
	// Timeout after which a node with no sync is unhealthy (default 2 × full sync period).
	Timeout time.Duration
	Now     func() time.Time
}

// Start implements manager.Runnable.
func (p *ProxyHealthServer) Start(ctx context.Context) error {
	listen := p.Listen
	if listen == nil {
		listen = func(addr string) (net.Listener, error) { return net.Listen("tcp", addr) }
	}
	l, err := listen(p.Addr)
	if err != nil {
		return fmt.Errorf("proxy health server: %w", err)
	}
	now := p.Now
	if now == nil {
		now = time.Now
	}
	mux := http.NewServeMux()
	healthz := func(w http.ResponseWriter, _ *http.Request) {
		last := p.LastSync()
		t := now()
		healthy := !last.IsZero() && t.Sub(last) <= p.Timeout
		w.Header().Set("Content-Type", "application/json")
		if healthy {
			w.WriteHeader(http.StatusOK)
		} else {
			w.WriteHeader(http.StatusServiceUnavailable)
		}
		_ = json.NewEncoder(w).Encode(map[string]any{"lastUpdated": last.UTC().Format(time.RFC3339Nano), "currentTime": t.UTC().Format(time.RFC3339Nano), "nodeHealthy": healthy})
	}
	mux.HandleFunc("/healthz", healthz)
	mux.HandleFunc("/livez", healthz)
	srv := &http.Server{Handler: mux, ReadHeaderTimeout: 5 * time.Second}
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
func (p *ProxyHealthServer) NeedLeaderElection() bool { return false }
