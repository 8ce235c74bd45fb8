// Package kubeletapi serves the part of the kubelet's HTTPS API that nodekeeper has so
// far: /healthz, /pods, /containerLogs, /exec, /attach, /portForward, /configz,
// /stats/summary, /metrics, /metrics/probes, /metrics/resource and /metrics/cadvisor (what kubectl and
// metrics-server use through the API server's node proxy), and optionally the
// unauthenticated read-only port. Every request is authenticated (client certificate from the
// client CA, or a bearer token through the TokenReview API) and authorized with a
// SubjectAccessReview on the node's subresource, as upstream; anonymous requests are
// refused.
package kubeletapi

import (
	"bufio"
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"math/big"
	"net"
	"net/http"
	"net/http/httputil"
	"net/url"
	"os"
	"sort"
	"strconv"
	"strings"
	"time"

	"github.com/go-logr/logr"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/promhttp"
	dto "github.com/prometheus/client_model/go"
	authenticationv1 "k8s.io/api/authentication/v1"
	authorizationv1 "k8s.io/api/authorization/v1"
	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/types"
	runtimeapi "k8s.io/cri-api/pkg/apis/runtime/v1"
	statsapi "k8s.io/kubelet/pkg/apis/stats/v1alpha1"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/metrics"

	"github.com/nodekeeper/nodekeeper/api/v1alpha1"

	"github.com/nodekeeper/nodekeeper/internal/podplan"
	"github.com/nodekeeper/nodekeeper/internal/stats"
	"github.com/nodekeeper/nodekeeper/runtime/cri"
)

// Server is the kubelet API server. Pods are read through Pods (the node-scoped
// cache); reviews go to the API server through Reviews.
type Server struct {
	NodeName string
	Addr     string
	Pods     client.Reader
	Reviews  client.Client
	Runtime  cri.Runtime
	// CertFile/KeyFile serve TLS; empty means a self-signed certificate for NodeIPs.
	CertFile, KeyFile string
	NodeIPs           []net.IP
	// ClientCAFile verifies client certificates (the API server's kubelet client cert).
	ClientCAFile string
	// Listen opens the listener (tests); default net.Listen.
	Listen func(addr string) (net.Listener, error)
	// Log receives review failures (the caller only sees 401/500).
	Log logr.Logger
	// LogDir is served under /logs/ (nodes/log), as upstream's system log handler:
	// default /var/log; "-" turns it off.
	LogDir string
	// Config is served by /configz.
	Config *v1alpha1.AgentConfiguration
	// ServingCertificate, when set, gives the serving certificate for each handshake
	// (serverTLSBootstrap: CSRServingCertificate.Current); while it returns nil no
	// handshake completes, as upstream. CertFile/KeyFile are then not read here.
	ServingCertificate func() *tls.Certificate
	// Stats serves /stats/summary and /metrics/resource; Start also samples it every
	// StatsPeriod (default 10s) so that usageNanoCores is there at the first request.
	Stats       *stats.Provider
	StatsPeriod time.Duration
	// ReadOnlyAddr, when set, serves ReadOnlyHandler over plain HTTP (the kubelet's
	// read-only port).
	ReadOnlyAddr string
	// Cadvisor, when set, serves /metrics/cadvisor (the container_* series).
	Cadvisor prometheus.Collector
}

// prefixGatherer serves only the metric families whose name has a prefix.
type prefixGatherer struct {
	g      prometheus.Gatherer
	prefix string
}

func (p prefixGatherer) Gather() ([]*dto.MetricFamily, error) {
	all, err := p.g.Gather()
	var out []*dto.MetricFamily
	for _, mf := range all {
		if strings.HasPrefix(mf.GetName(), p.prefix) {
			out = append(out, mf)
		}
	}
	return out, err
}

// NeedLeaderElection implements manager.LeaderElectionRunnable.
func (s *Server) NeedLeaderElection() bool { return false }

// Start implements manager.Runnable.
func (s *Server) Start(ctx context.Context) error {
	tlsCfg, err := s.tlsConfig()
	if err != nil {
		return err
	}
	listen := s.Listen
	if listen == nil {
		listen = func(a string) (net.Listener, error) { return net.Listen("tcp", a) }
	}
	l, err := listen(s.Addr)
	if err != nil {
		return fmt.Errorf("kubelet API: %w", err)
	}
	srv := &http.Server{Handler: s.Handler(), TLSConfig: tlsCfg, ReadHeaderTimeout: 10 * time.Second}
	go func() {
		<-ctx.Done()
		_ = srv.Close()
	}()
	if s.ReadOnlyAddr != "" {
		rl, err := listen(s.ReadOnlyAddr)
		if err != nil {
			_ = l.Close()
			return fmt.Errorf("kubelet read-only port: %w", err)
		}
		ro := &http.Server{Handler: s.ReadOnlyHandler(), ReadHeaderTimeout: 10 * time.Second}
		go func() {
			<-ctx.Done()
			_ = ro.Close()
		}()
		go func() {
			if err := ro.Serve(rl); err != nil && err != http.ErrServerClosed {
				s.Log.Error(err, "Kubelet read-only port stopped")
			}
		}()
	}
	if s.Stats != nil {
		go s.sampleStats(ctx)
	}
	if err := srv.Serve(tls.NewListener(l, tlsCfg)); err != nil && err != http.ErrServerClosed {
		return err
	}
	return nil
}

// sampleStats reads the cpu and memory stats every StatsPeriod, so that rates
// (usageNanoCores) have an earlier sample to be computed from, as cAdvisor's
// housekeeping does upstream.
func (s *Server) sampleStats(ctx context.Context) {
	period := s.StatsPeriod
	if period <= 0 {
		period = 10 * time.Second
	}
	t := time.NewTicker(period)
	defer t.Stop()
	for {
		if _, err := s.Stats.Summary(ctx, true); err != nil && ctx.Err() == nil {
			s.Log.V(4).Info("Sampling stats failed", "error", err)
		}
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
	}
}

func (s *Server) tlsConfig() (*tls.Config, error) {
	// HTTP/1.1 only: exec and port-forward are connection upgrades
	// without a client CA no client certificate is asked for: with ClientCAs nil, crypto/tls
	// would verify client certificates against the system roots
	cfg := &tls.Config{MinVersion: tls.VersionTLS12, ClientAuth: tls.NoClientCert, NextProtos: []string{"http/1.1"}}
	if s.ClientCAFile != "" {
		cfg.ClientAuth = tls.VerifyClientCertIfGiven
		pem, err := os.ReadFile(s.ClientCAFile)
		if err != nil {
			return nil, fmt.Errorf("kubelet API client CA: %w", err)
		}
		pool := x509.NewCertPool()
		if !pool.AppendCertsFromPEM(pem) {
			return nil, fmt.Errorf("kubelet API client CA %s holds no certificate", s.ClientCAFile)
		}
		cfg.ClientCAs = pool
	}
	if s.ServingCertificate != nil {
		cfg.GetCertificate = func(*tls.ClientHelloInfo) (*tls.Certificate, error) {
			if c := s.ServingCertificate(); c != nil {
				return c, nil
			}
			return nil, fmt.Errorf("no serving certificate available for the kubelet API yet (serverTLSBootstrap: the CertificateSigningRequest is not approved and issued)")
		}
		return cfg, nil
	}
	if s.CertFile != "" {
		cert, err := tls.LoadX509KeyPair(s.CertFile, s.KeyFile)
		if err != nil {
			return nil, fmt.Errorf("kubelet API serving certificate: %w", err)
		}
		cfg.Certificates = []tls.Certificate{cert}
		return cfg, nil
	}
	cert, err := selfSigned(s.NodeName, s.NodeIPs)
	if err != nil {
		return nil, err
	}
	cfg.Certificates = []tls.Certificate{cert}
	return cfg, nil
}

func selfSigned(name string, ips []net.IP) (tls.Certificate, error) {
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return tls.Certificate{}, err
	}
	tmpl := &x509.Certificate{
		SerialNumber: big.NewInt(time.Now().UnixNano()), Subject: pkix.Name{CommonName: name + "@nodekeeper"},
		NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(365 * 24 * time.Hour),
		KeyUsage: x509.KeyUsageDigitalSignature, ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth},
		DNSNames: []string{name}, IPAddresses: ips,
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		return tls.Certificate{}, err
	}
	return tls.Certificate{Certificate: [][]byte{der}, PrivateKey: key}, nil
}

// Handler is the authenticated, authorized mux (the HTTPS port).
func (s *Server) Handler() http.Handler {
	mux := http.NewServeMux()
	s.defaultHandlers(mux)
	mux.HandleFunc("/containerLogs/", s.containerLogs)
	mux.HandleFunc("/exec/", s.exec)
	mux.HandleFunc("/attach/", s.attach)
	mux.HandleFunc("/configz", s.configz)
	mux.HandleFunc("/portForward/", s.portForward)
	if s.LogDir != "-" {
		// the node's log folder, as upstream's system log handler (nodes/log)
		dir := s.LogDir
		if dir == "" {
			dir = "/var/log"
		}
		mux.Handle("/logs/", http.StripPrefix("/logs/", http.FileServer(http.Dir(dir))))
	}
	return s.auth(mux)
}

// ReadOnlyHandler is the read-only port's mux: without authentication, and only what
// upstream serves there (its InstallDefaultHandlers): health, pods, stats and metrics;
// never logs, exec, attach, port-forward or configz.
func (s *Server) ReadOnlyHandler() http.Handler {
	mux := http.NewServeMux()
	s.defaultHandlers(mux)
	return mux
}

func (s *Server) defaultHandlers(mux *http.ServeMux) {
	mux.HandleFunc("/healthz", func(w http.ResponseWriter, _ *http.Request) { _, _ = w.Write([]byte("ok")) })
	for _, check := range []string{"ping", "log", "syncloop"} { // upstream's named checks
		mux.HandleFunc("/healthz/"+check, func(w http.ResponseWriter, _ *http.Request) { _, _ = w.Write([]byte("ok")) })
	}
	mux.HandleFunc("/pods", s.pods)
	mux.HandleFunc("/pods/", s.pods)
	mux.HandleFunc("/stats/summary", s.statsSummary)
	mux.Handle("/metrics", promhttp.HandlerFor(metrics.Registry, promhttp.HandlerOpts{}))
	mux.Handle("/metrics/probes", promhttp.HandlerFor(prefixGatherer{metrics.Registry, "prober_"}, promhttp.HandlerOpts{}))
	resource := prometheus.NewRegistry()
	resource.MustRegister(stats.ResourceCollector{
		Summary: func() (*statsapi.Summary, error) {
			if s.Stats == nil {
				return nil, errors.New("no stats provider")
			}
			return s.Stats.Summary(context.Background(), true)
		},
		OnError: func(err error) { s.Log.Error(err, "Reading resource metrics failed") },
	})
	mux.Handle("/metrics/resource", promhttp.HandlerFor(resource, promhttp.HandlerOpts{}))
	if s.Cadvisor != nil {
		cadvisor := prometheus.NewRegistry()
		cadvisor.MustRegister(s.Cadvisor)
		mux.Handle("/metrics/cadvisor", promhttp.HandlerFor(cadvisor, promhttp.HandlerOpts{}))
	}
}

// statsSummary serves /stats/summary (?only_cpu_and_memory=true for cpu and memory only).
func (s *Server) statsSummary(w http.ResponseWriter, r *http.Request) {
	if r.Method != http.MethodGet {
		http.Error(w, "only GET", http.StatusMethodNotAllowed)
		return
	}
	if s.Stats == nil {
		http.Error(w, "no stats provider", http.StatusServiceUnavailable)
		return
	}
	only, _ := strconv.ParseBool(r.URL.Query().Get("only_cpu_and_memory"))
	sum, err := s.Stats.Summary(r.Context(), only)
	if err != nil {
		http.Error(w, "reading stats: "+err.Error(), http.StatusInternalServerError)
		return
	}
	w.Header().Set("Content-Type", "application/json")
	_ = json.NewEncoder(w).Encode(sum)
}

// subresources maps a path to the node subresources that authorize it, most specific
// first (upstream's mapping, with the fine-grained checks before nodes/proxy).
func subresources(path string) []string {
	switch {
	case strings.HasPrefix(path, "/stats"):
		return []string{"stats"}
	case strings.HasPrefix(path, "/metrics"):
		return []string{"metrics"}
	case strings.HasPrefix(path, "/logs"):
		return []string{"log"}
	case strings.HasPrefix(path, "/containerLogs"):
		return []string{"log", "proxy"}
	case strings.HasPrefix(path, "/configz"):
		return []string{"configz", "proxy"}
	case strings.HasPrefix(path, "/healthz"):
		return []string{"healthz", "proxy"}
	case strings.HasPrefix(path, "/pods"):
		return []string{"pods", "proxy"}
	}
	return []string{"proxy"}
}

func (s *Server) auth(next http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		user, groups, uid, extra, ok := s.authenticate(r)
		if !ok {
			http.Error(w, "Unauthorized", http.StatusUnauthorized)
			return
		}
		verb := "get"
		switch r.Method {
		case http.MethodPost:
			verb = "create"
		case http.MethodPut:
			verb = "update"
		case http.MethodPatch:
			verb = "patch"
		case http.MethodDelete:
			verb = "delete"
		}
		for _, sub := range subresources(r.URL.Path) {
			sar := &authorizationv1.SubjectAccessReview{Spec: authorizationv1.SubjectAccessReviewSpec{
				User: user, Groups: groups, UID: uid, Extra: extra,
				ResourceAttributes: &authorizationv1.ResourceAttributes{Verb: verb, Resource: "nodes", Subresource: sub, Name: s.NodeName},
			}}
			if err := s.Reviews.Create(r.Context(), sar); err != nil {
				s.Log.Error(err, "SubjectAccessReview for a kubelet API request failed", "path", r.URL.Path)
				http.Error(w, "authorization check failed: "+err.Error(), http.StatusInternalServerError)
				return
			}
			if sar.Status.Allowed {
				next.ServeHTTP(w, r)
				return
			}
		}
		http.Error(w, fmt.Sprintf("Forbidden (user=%s, verb=%s, resource=nodes, subresource(s)=%v)", user, verb, subresources(r.URL.Path)), http.StatusForbidden)
	})
}

func (s *Server) authenticate(r *http.Request) (user string, groups []string, uid string, extra map[string]authorizationv1.ExtraValue, ok bool) {
	if r.TLS != nil && len(r.TLS.VerifiedChains) > 0 {
		c := r.TLS.VerifiedChains[0][0]
		return c.Subject.CommonName, c.Subject.Organization, "", nil, true
	}
	h := r.Header.Get("Authorization")
	if !strings.HasPrefix(h, "Bearer ") {
		return "", nil, "", nil, false
	}
	tr := &authenticationv1.TokenReview{Spec: authenticationv1.TokenReviewSpec{Token: strings.TrimPrefix(h, "Bearer ")}}
	if err := s.Reviews.Create(r.Context(), tr); err != nil {
		s.Log.Error(err, "TokenReview for a kubelet API request failed")
		return "", nil, "", nil, false
	}
	if !tr.Status.Authenticated {
		return "", nil, "", nil, false
	}
	extra = map[string]authorizationv1.ExtraValue{}
	for k, v := range tr.Status.User.Extra {
		extra[k] = authorizationv1.ExtraValue(v)
	}
	return tr.Status.User.Username, tr.Status.User.Groups, tr.Status.User.UID, extra, true
}

func (s *Server) pods(w http.ResponseWriter, r *http.Request) {
	list := &corev1.PodList{}
	if err := s.Pods.List(r.Context(), list); err != nil {
		http.Error(w, err.Error(), http.StatusInternalServerError)
		return
	}
	out := &corev1.PodList{TypeMeta: list.TypeMeta}
	out.APIVersion, out.Kind = "v1", "PodList"
	for _, p := range list.Items {
		if p.Spec.NodeName == s.NodeName {
			out.Items = append(out.Items, p)
		}
	}
	w.Header().Set("Content-Type", "application/json")
	_ = json.NewEncoder(w).Encode(out)
}

// containerLogs serves /containerLogs/{namespace}/{pod}/{container} with follow,
// tailLines, limitBytes, sinceSeconds, sinceTime, timestamps and previous.
func (s *Server) containerLogs(w http.ResponseWriter, r *http.Request) {
	parts := strings.Split(strings.Trim(strings.TrimPrefix(r.URL.Path, "/containerLogs/"), "/"), "/")
	if len(parts) != 3 {
		http.Error(w, "path must be /containerLogs/{namespace}/{pod}/{container}", http.StatusBadRequest)
		return
	}
	ns, podName, container := parts[0], parts[1], parts[2]
	pod := &corev1.Pod{}
	if err := s.Pods.Get(r.Context(), client.ObjectKey{Namespace: ns, Name: podName}, pod); err != nil || pod.Spec.NodeName != s.NodeName {
		http.Error(w, fmt.Sprintf("pod %s/%s not found on node %s", ns, podName, s.NodeName), http.StatusNotFound)
		return
	}
	// as the kubelet's getContainerLogs: 404 only for a pod that is not here or a
	// container its spec does not have; a container without logs to show is a 400 that
	// says why (validateContainerLogStatus), which the API server passes on to the client
	if !inSpec(pod, container) {
		http.Error(w, fmt.Sprintf("container %q not found in pod %q", container, podName), http.StatusNotFound)
		return
	}
	q := r.URL.Query()
	cs, err := s.Runtime.ListContainers(r.Context(), &runtimeapi.ContainerFilter{LabelSelector: map[string]string{
		podplan.LabelPodUID: string(runtimeUID(pod)), podplan.LabelContainerName: container}})
	if err != nil {
		http.Error(w, err.Error(), http.StatusServiceUnavailable)
		return
	}
	sort.Slice(cs, func(i, j int) bool { return cs[i].GetMetadata().GetAttempt() > cs[j].GetMetadata().GetAttempt() })
	idx := 0
	if b, _ := strconv.ParseBool(q.Get("previous")); b {
		idx = 1
	}
	if len(cs) <= idx {
		http.Error(w, noLogs(pod, container, idx == 1), http.StatusBadRequest)
		return
	}
	st, err := s.Runtime.ContainerStatus(r.Context(), cs[idx].Id)
	if err != nil {
		http.Error(w, fmt.Sprintf("failed to get container status %q: %v", cs[idx].Id, err), http.StatusBadRequest)
		return
	}
	opts := logOptions{timestamps: q.Get("timestamps") == "true", tail: -1, limit: -1}
	if v, err := strconv.ParseInt(q.Get("tailLines"), 10, 64); err == nil {
		opts.tail = v
	}
	if v, err := strconv.ParseInt(q.Get("limitBytes"), 10, 64); err == nil {
		opts.limit = v
	}
	if v, err := strconv.ParseInt(q.Get("sinceSeconds"), 10, 64); err == nil {
		opts.since = time.Now().Add(-time.Duration(v) * time.Second)
	}
	if v, err := time.Parse(time.RFC3339, q.Get("sinceTime")); err == nil {
		opts.since = v
	}
	follow := q.Get("follow") == "true" && idx == 0
	w.Header().Set("Content-Type", "text/plain")
	if err := writeLogs(r.Context(), w, st.LogPath, opts, follow, func() bool {
		c, err := s.Runtime.ContainerStatus(context.Background(), cs[0].Id)
		return err != nil || c.State != runtimeapi.ContainerState_CONTAINER_RUNNING
	}); err != nil {
		http.Error(w, err.Error(), http.StatusInternalServerError)
	}
}

// inSpec tells whether the pod's spec has a container (app, init or ephemeral) of that name.
func inSpec(pod *corev1.Pod, name string) bool {
	for _, c := range pod.Spec.Containers {
		if c.Name == name {
			return true
		}
	}
	for _, c := range pod.Spec.InitContainers {
		if c.Name == name {
			return true
		}
	}
	for _, c := range pod.Spec.EphemeralContainers {
		if c.Name == name {
			return true
		}
	}
	return false
}

// noLogs says why a container of the pod's spec has no instance in the runtime to read
// logs from (the current one, or the previous one), in the kubelet's words
// (validateContainerLogStatus), judged from the pod's status.
func noLogs(pod *corev1.Pod, name string, previous bool) string {
	var cs *corev1.ContainerStatus
	for _, l := range [][]corev1.ContainerStatus{pod.Status.ContainerStatuses, pod.Status.InitContainerStatuses, pod.Status.EphemeralContainerStatuses} {
		for i := range l {
			if l[i].Name == name {
				cs = &l[i]
			}
		}
	}
	switch {
	case cs == nil:
		return fmt.Sprintf("container %q in pod %q is not available", name, pod.Name)
	case previous:
		return fmt.Sprintf("previous terminated container %q in pod %q not found", name, pod.Name)
	case cs.State.Running != nil:
		return fmt.Sprintf("container %q in pod %q is not available", name, pod.Name)
	case cs.State.Terminated != nil || cs.LastTerminationState.Terminated != nil:
		return fmt.Sprintf("container %q in pod %q is terminated", name, pod.Name)
	case cs.State.Waiting != nil:
		switch reason := cs.State.Waiting.Reason; reason {
		case "ErrImagePull":
			return fmt.Sprintf("container %q in pod %q is waiting to start: image can't be pulled", name, pod.Name)
		case "ImagePullBackOff":
			return fmt.Sprintf("container %q in pod %q is waiting to start: trying and failing to pull image", name, pod.Name)
		default:
			return fmt.Sprintf("container %q in pod %q is waiting to start: %v", name, pod.Name, reason)
		}
	}
	return fmt.Sprintf("container %q in pod %q is waiting to start - no logs yet", name, pod.Name)
}

// findPod finds a pod of this node by namespace/name, or answers 404.
func (s *Server) findPod(w http.ResponseWriter, r *http.Request, ns, name string) *corev1.Pod {
	pod := &corev1.Pod{}
	if err := s.Pods.Get(r.Context(), client.ObjectKey{Namespace: ns, Name: name}, pod); err != nil || pod.Spec.NodeName != s.NodeName {
		http.Error(w, fmt.Sprintf("pod %s/%s not found on node %s", ns, name, s.NodeName), http.StatusNotFound)
		return nil
	}
	return pod
}

// runtimeUID is the UID the pod's containers run under: a mirror pod stands for its
// static pod, whose UID its kubernetes.io/config.mirror annotation holds (the kubelet's
// pod manager translates a mirror pod to its static pod the same way).
func runtimeUID(pod *corev1.Pod) types.UID {
	if hash, ok := pod.Annotations["kubernetes.io/config.mirror"]; ok && hash != "" {
		return types.UID(hash)
	}
	return pod.UID
}

func queryBool(q url.Values, names ...string) bool {
	for _, n := range names {
		if v := q.Get(n); v == "1" || v == "true" {
			return true
		}
	}
	return false
}

// exec serves /exec/{namespace}/{pod}/{container}?command=…&stdin&stdout&stderr&tty:
// the runtime prepares the session and its stream server speaks the streaming protocol
// (SPDY, or WebSocket) with the caller through this proxy.
func (s *Server) exec(w http.ResponseWriter, r *http.Request) {
	q := r.URL.Query()
	cmd := q["command"]
	if len(cmd) == 0 {
		http.Error(w, "no command given", http.StatusBadRequest)
		return
	}
	id, ok := s.runningContainer(w, r, "exec")
	if !ok {
		return
	}
	u, err := s.Runtime.Exec(r.Context(), &runtimeapi.ExecRequest{ContainerId: id, Cmd: cmd,
		Tty: queryBool(q, "tty"), Stdin: queryBool(q, "stdin", "input"), Stdout: queryBool(q, "stdout", "output"), Stderr: queryBool(q, "stderr", "error")})
	if err != nil {
		http.Error(w, err.Error(), http.StatusInternalServerError)
		return
	}
	s.proxyStream(w, r, u)
}

// attach serves /attach/{namespace}/{pod}/{container}?stdin&stdout&stderr&tty: the
// caller is joined to the container's main process (its stdin when the container has
// stdin: true) through the runtime's stream server, as for exec.
func (s *Server) attach(w http.ResponseWriter, r *http.Request) {
	id, ok := s.runningContainer(w, r, "attach")
	if !ok {
		return
	}
	q := r.URL.Query()
	u, err := s.Runtime.Attach(r.Context(), &runtimeapi.AttachRequest{ContainerId: id,
		Tty: queryBool(q, "tty"), Stdin: queryBool(q, "stdin", "input"), Stdout: queryBool(q, "stdout", "output"), Stderr: queryBool(q, "stderr", "error")})
	if err != nil {
		http.Error(w, err.Error(), http.StatusInternalServerError)
		return
	}
	s.proxyStream(w, r, u)
}

// runningContainer resolves /{verb}/{namespace}/{pod}/{container} (or
// /{verb}/{namespace}/{pod}/{uid}/{container}) to the running container's ID, or
// answers 400/404.
func (s *Server) runningContainer(w http.ResponseWriter, r *http.Request, verb string) (string, bool) {
	parts := strings.Split(strings.Trim(strings.TrimPrefix(r.URL.Path, "/"+verb+"/"), "/"), "/")
	if len(parts) == 4 { // /{verb}/{namespace}/{pod}/{uid}/{container}
		parts = []string{parts[0], parts[1], parts[3]}
	}
	if len(parts) != 3 {
		http.Error(w, "path must be /"+verb+"/{namespace}/{pod}/{container}", http.StatusBadRequest)
		return "", false
	}
	pod := s.findPod(w, r, parts[0], parts[1])
	if pod == nil {
		return "", false
	}
	cs, err := s.Runtime.ListContainers(r.Context(), &runtimeapi.ContainerFilter{
		State:         &runtimeapi.ContainerStateValue{State: runtimeapi.ContainerState_CONTAINER_RUNNING},
		LabelSelector: map[string]string{podplan.LabelPodUID: string(runtimeUID(pod)), podplan.LabelContainerName: parts[2]}})
	if err != nil || len(cs) == 0 {
		http.Error(w, fmt.Sprintf("container %q in pod %q is not running", parts[2], parts[1]), http.StatusNotFound)
		return "", false
	}
	return cs[0].Id, true
}

// portForward serves /portForward/{namespace}/{pod} through the runtime's stream server.
func (s *Server) portForward(w http.ResponseWriter, r *http.Request) {
	parts := strings.Split(strings.Trim(strings.TrimPrefix(r.URL.Path, "/portForward/"), "/"), "/")
	if len(parts) < 2 {
		http.Error(w, "path must be /portForward/{namespace}/{pod}", http.StatusBadRequest)
		return
	}
	pod := s.findPod(w, r, parts[0], parts[1])
	if pod == nil {
		return
	}
	sbs, err := s.Runtime.ListPodSandbox(r.Context(), &runtimeapi.PodSandboxFilter{
		State:         &runtimeapi.PodSandboxStateValue{State: runtimeapi.PodSandboxState_SANDBOX_READY},
		LabelSelector: map[string]string{podplan.LabelPodUID: string(runtimeUID(pod))}})
	if err != nil || len(sbs) == 0 {
		http.Error(w, fmt.Sprintf("pod %q has no ready sandbox", parts[1]), http.StatusNotFound)
		return
	}
	var ports []int32
	for _, p := range r.URL.Query()["port"] {
		if n, err := strconv.Atoi(p); err == nil {
			ports = append(ports, int32(n))
		}
	}
	u, err := s.Runtime.PortForward(r.Context(), &runtimeapi.PortForwardRequest{PodSandboxId: sbs[0].Id, Port: ports})
	if err != nil {
		http.Error(w, err.Error(), http.StatusInternalServerError)
		return
	}
	s.proxyStream(w, r, u)
}

// proxyStream hands the (upgrading) request to the runtime's stream server.
func (s *Server) proxyStream(w http.ResponseWriter, r *http.Request, target string) {
	u, err := url.Parse(target)
	if err != nil {
		http.Error(w, err.Error(), http.StatusInternalServerError)
		return
	}
	proxy := &httputil.ReverseProxy{
		Director: func(req *http.Request) {
			req.URL = u
			req.Host = u.Host
			req.Header.Del("Authorization")
		},
		ErrorHandler: func(w http.ResponseWriter, _ *http.Request, err error) {
			s.Log.Error(err, "Proxying a stream to the runtime failed", "url", target)
			http.Error(w, err.Error(), http.StatusBadGateway)
		},
	}
	proxy.ServeHTTP(w, r)
}

// rotated tells whether path now names another file than the open f.
func rotated(f *os.File, path string) bool {
	cur, err := os.Stat(path)
	if err != nil {
		return false
	}
	open, err := f.Stat()
	return err == nil && !os.SameFile(cur, open)
}

type logOptions struct {
	timestamps  bool
	tail, limit int64
	since       time.Time
}

// writeLogs copies a CRI log file ("<RFC3339Nano> <stream> <P|F> <text>" lines; P joins
// with the next) to w with the options, then keeps following it when asked until the
// container has stopped or the client went away.
func writeLogs(ctx context.Context, w io.Writer, path string, o logOptions, follow bool, stopped func() bool) error {
	f, err := os.Open(path)
	if err != nil {
		return fmt.Errorf("opening log: %w", err)
	}
	defer func() { _ = f.Close() }() // f changes when a followed log is rotated
	rd := bufio.NewReader(f)
	var lines []string
	var partial, partialTS string
	var written int64
	emit := func(s string) bool {
		if o.limit >= 0 && written+int64(len(s)) > o.limit {
			s = s[:o.limit-written]
		}
		n, _ := io.WriteString(w, s)
		written += int64(n)
		if fl, ok := w.(http.Flusher); ok {
			fl.Flush()
		}
		return o.limit < 0 || written < o.limit
	}
	parse := func(line string) (string, bool) {
		p := strings.SplitN(strings.TrimRight(line, "\n"), " ", 4)
		if len(p) < 4 {
			return "", false
		}
		ts, err := time.Parse(time.RFC3339Nano, p[0])
		if err == nil && !o.since.IsZero() && ts.Before(o.since) {
			return "", false
		}
		text := partial + p[3]
		if p[2] == "P" {
			if partial == "" {
				partialTS = p[0]
			}
			partial = text
			return "", false
		}
		partial = ""
		if o.timestamps {
			text = p[0] + " " + text
		}
		return text + "\n", true
	}
	for {
		line, err := rd.ReadString('\n')
		if line != "" && strings.HasSuffix(line, "\n") {
			if text, ok := parse(line); ok {
				lines = append(lines, text)
			}
		}
		if err != nil {
			break
		}
	}
	if partial != "" {
		// the log ends in a partial line (output without a final newline, as the runtime
		// writes it when the container stops): as upstream, its text as it is
		text := partial
		if o.timestamps {
			text = partialTS + " " + text
		}
		lines = append(lines, text)
		partial = ""
	}
	if o.tail >= 0 && int64(len(lines)) > o.tail {
		lines = lines[int64(len(lines))-o.tail:]
	}
	for _, l := range lines {
		if !emit(l) {
			return nil
		}
	}
	if !follow {
		return nil
	}
	for {
		line, err := rd.ReadString('\n')
		if err == nil {
			if text, ok := parse(line); ok && !emit(text) {
				return nil
			}
			continue
		}
		if line != "" {
			_, _ = f.Seek(-int64(len(line)), io.SeekCurrent)
			rd.Reset(f)
		} else if rotated(f, path) {
			// the old file is read to its end and the runtime writes a new one at
			// path (log rotation): go on with that
			if nf, err := os.Open(path); err == nil {
				_ = f.Close()
				f = nf
				rd.Reset(f)
				continue
			}
		}
		if stopped() {
			return nil
		}
		select {
		case <-ctx.Done():
			return nil
		case <-time.After(200 * time.Millisecond):
		}
	}
}
