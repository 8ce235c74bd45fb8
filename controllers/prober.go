package controllers

import (
	"context"
	"crypto/tls"
	"fmt"
	"net"
	"net/http"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"
	healthpb "google.golang.org/grpc/health/grpc_health_v1"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/apimachinery/pkg/util/intstr"
	"k8s.io/client-go/tools/record"
	"sigs.k8s.io/controller-runtime/pkg/event"
	"sigs.k8s.io/controller-runtime/pkg/metrics"

	"github.com/nodekeeper/nodekeeper/runtime/cri"
)

// probeType names the three probes as upstream's metrics do.
type probeType string

const (
	probeLiveness  probeType = "Liveness"
	probeReadiness probeType = "Readiness"
	probeStartup   probeType = "Startup"
)

var (
	proberOnce  sync.Once
	probeTotal  = prometheus.NewCounterVec(prometheus.CounterOpts{Name: "prober_probe_total", Help: "Cumulative number of a liveness, readiness or startup probe for a container by result."}, []string{"probe_type", "result", "container", "pod", "namespace", "pod_uid"})
	probeLatest = prometheus.NewHistogramVec(prometheus.HistogramOpts{Name: "prober_probe_duration_seconds", Help: "Duration in seconds for a probe response.", Buckets: prometheus.ExponentialBuckets(0.001, 2, 14)}, []string{"probe_type", "container", "pod", "namespace"})
)

// ProbeResults is what the probes say about one container instance.
type ProbeResults struct {
	Ready, Started bool
	// Failed is the kind of the probe ("liveness" or "startup") that failed past its
	// threshold; "" while the container is healthy.
	Failed string
}

// prober runs one worker per probed container instance, outside the reconcile loop,
// and tells the PodReconciler (through its event channel) when a result changes.
type prober struct {
	runtime  cri.Runtime
	recorder record.EventRecorder
	events   chan<- event.GenericEvent

	mu      sync.Mutex
	workers map[string]*probeWorker // container ID -> worker
}

type probeWorker struct {
	cancel context.CancelFunc
	mu     sync.Mutex
	res    ProbeResults
	podIP  string
}

func (w *probeWorker) ip() string {
	w.mu.Lock()
	defer w.mu.Unlock()
	return w.podIP
}

func newProber(rt cri.Runtime, rec record.EventRecorder, events chan<- event.GenericEvent) *prober {
	proberOnce.Do(func() { metrics.Registry.MustRegister(probeTotal, probeLatest) })
	return &prober{runtime: rt, recorder: rec, events: events, workers: map[string]*probeWorker{}}
}

// Results returns the probe results of a container instance; a container without a
// worker is reported by the defaults (ready/started when it has no such probe).
func (p *prober) Results(id string, spec *corev1.Container) ProbeResults {
	p.mu.Lock()
	w := p.workers[id]
	p.mu.Unlock()
	if w == nil {
		return ProbeResults{Ready: spec.ReadinessProbe == nil, Started: spec.StartupProbe == nil}
	}
	w.mu.Lock()
	defer w.mu.Unlock()
	return w.res
}

// Sync starts workers for running probed containers of the pod and stops workers for
// containers that are gone or no longer running.
func (p *prober) Sync(pod *corev1.Pod, running map[string]string, podIP string) {
	p.mu.Lock()
	defer p.mu.Unlock()
	prefix := string(pod.UID) + "/"
	want := map[string]bool{}
	for id, name := range running {
		spec := findContainer(pod, name)
		if spec == nil || (spec.ReadinessProbe == nil && spec.LivenessProbe == nil && spec.StartupProbe == nil) {
			continue
		}
		want[prefix+id] = true
		if w, ok := p.workers[prefix+id]; ok {
			w.mu.Lock()
			w.podIP = podIP
			w.mu.Unlock()
			continue
		}
		ctx, cancel := context.WithCancel(context.Background())
		w := &probeWorker{cancel: cancel, podIP: podIP, res: ProbeResults{Ready: spec.ReadinessProbe == nil, Started: spec.StartupProbe == nil}}
		p.workers[prefix+id] = w
		go p.run(ctx, w, pod.DeepCopy(), id, spec.DeepCopy())
	}
	for k, w := range p.workers {
		if strings.HasPrefix(k, prefix) && !want[k] {
			w.cancel()
			delete(p.workers, k)
		}
	}
}

// Forget stops every worker of a pod.
func (p *prober) Forget(uid types.UID) {
	p.Sync(&corev1.Pod{ObjectMeta: metav1.ObjectMeta{UID: uid}}, nil, "")
}

// results is looked up by the reconciler under the pod's prefix.
func (p *prober) lookup(uid types.UID, id string, spec *corev1.Container) ProbeResults {
	return p.Results(string(uid)+"/"+id, spec)
}

func (p *prober) notify(pod *corev1.Pod) {
	select {
	case p.events <- event.GenericEvent{Object: &corev1.Pod{ObjectMeta: metav1.ObjectMeta{Namespace: pod.Namespace, Name: pod.Name}}}:
	default:
	}
}

// run is one container's probing loop: the startup probe until it succeeds, then
// liveness and readiness, each on its own period, with thresholds as upstream.
func (p *prober) run(ctx context.Context, w *probeWorker, pod *corev1.Pod, id string, spec *corev1.Container) {
	type state struct {
		probe            *corev1.Probe
		typ              probeType
		next             time.Time
		succ, fail       int32
		result           bool
		initial, decided bool
	}
	start := time.Now()
	var states []*state
	for _, s := range []struct {
		p *corev1.Probe
		t probeType
	}{{spec.StartupProbe, probeStartup}, {spec.LivenessProbe, probeLiveness}, {spec.ReadinessProbe, probeReadiness}} {
		if s.p != nil {
			states = append(states, &state{probe: s.p, typ: s.t, next: start.Add(time.Duration(s.p.InitialDelaySeconds) * time.Second)})
		}
	}
	tick := time.NewTicker(100 * time.Millisecond)
	defer tick.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-tick.C:
		}
		w.mu.Lock()
		started := w.res.Started
		w.mu.Unlock()
		for _, st := range states {
			now := time.Now()
			if now.Before(st.next) || (st.typ != probeStartup && !started) || (st.typ == probeStartup && started) {
				continue
			}
			period := time.Duration(st.probe.PeriodSeconds) * time.Second
			if period <= 0 {
				period = 10 * time.Second
			}
			st.next = now.Add(period)
			ok, msg := p.probe(ctx, w.ip(), id, spec, st.probe)
			if ctx.Err() != nil {
				return
			}
			result := "successful"
			if !ok {
				result = "failed"
			}
			probeTotal.WithLabelValues(string(st.typ), result, spec.Name, pod.Name, pod.Namespace, string(pod.UID)).Inc()
			probeLatest.WithLabelValues(string(st.typ), spec.Name, pod.Name, pod.Namespace).Observe(time.Since(now).Seconds())
			succT, failT := st.probe.SuccessThreshold, st.probe.FailureThreshold
			if succT <= 0 {
				succT = 1
			}
			if failT <= 0 {
				failT = 3
			}
			if ok {
				st.succ, st.fail = st.succ+1, 0
			} else {
				st.fail, st.succ = st.fail+1, 0
				p.recorder.Eventf(pod, corev1.EventTypeWarning, "Unhealthy", "%s probe failed: %s", st.typ, msg)
			}
			changed := false
			w.mu.Lock()
			switch {
			case ok && st.succ >= succT:
				switch st.typ {
				case probeStartup:
					changed = !w.res.Started
					w.res.Started = true
				case probeReadiness:
					changed = !w.res.Ready
					w.res.Ready = true
				case probeLiveness:
					changed = w.res.Failed != ""
					w.res.Failed = ""
				}
			case !ok && st.fail >= failT:
				switch st.typ {
				case probeStartup, probeLiveness:
					changed = w.res.Failed == ""
					w.res.Failed = strings.ToLower(string(st.typ))
				case probeReadiness:
					changed = w.res.Ready
					w.res.Ready = false
				}
			}
			w.mu.Unlock()
			if changed {
				p.notify(pod)
			}
		}
	}
}

// probe runs one probe once: exec through the runtime, httpGet (no keep-alive, 2xx/3xx
// succeed), tcpSocket, or grpc (the standard health service).
func (p *prober) probe(ctx context.Context, host, id string, spec *corev1.Container, pr *corev1.Probe) (bool, string) {
	timeout := time.Duration(pr.TimeoutSeconds) * time.Second
	if timeout <= 0 {
		timeout = time.Second
	}
	port := func(ps intstr.IntOrString) string {
		if ps.Type == intstr.String {
			for _, cp := range spec.Ports {
				if cp.Name == ps.StrVal {
					return strconv.Itoa(int(cp.ContainerPort))
				}
			}
		}
		return ps.String()
	}
	switch {
	case pr.Exec != nil:
		res, err := p.runtime.ExecSync(ctx, id, pr.Exec.Command, timeout)
		if err != nil {
			return false, err.Error()
		}
		if res.ExitCode != 0 {
			return false, fmt.Sprintf("command %q exited with %d: %s", pr.Exec.Command, res.ExitCode, strings.TrimSpace(string(res.Stdout)+string(res.Stderr)))
		}
		return true, ""
	case pr.HTTPGet != nil:
		h := pr.HTTPGet.Host
		if h == "" {
			h = host
		}
		scheme := "http"
		if pr.HTTPGet.Scheme == corev1.URISchemeHTTPS {
			scheme = "https"
		}
		hctx, cancel := context.WithTimeout(ctx, timeout)
		defer cancel()
		url := fmt.Sprintf("%s://%s/%s", scheme, net.JoinHostPort(h, port(pr.HTTPGet.Port)), strings.TrimPrefix(pr.HTTPGet.Path, "/"))
		req, err := http.NewRequestWithContext(hctx, http.MethodGet, url, nil)
		if err != nil {
			return false, err.Error()
		}
		req.Header.Set("User-Agent", "kube-probe/1.37")
		for _, hd := range pr.HTTPGet.HTTPHeaders {
			req.Header.Set(hd.Name, hd.Value)
		}
		// as upstream's prober: no certificate checks for https probes
		client := &http.Client{Transport: &http.Transport{DisableKeepAlives: true, Proxy: nil,
			TLSClientConfig: &tls.Config{InsecureSkipVerify: true}}, //nolint:gosec // upstream semantics
			CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse }}
		resp, err := client.Do(req)
		if err != nil {
			return false, err.Error()
		}
		_ = resp.Body.Close()
		if resp.StatusCode < 200 || resp.StatusCode >= 400 {
			return false, fmt.Sprintf("HTTP probe failed with statuscode: %d", resp.StatusCode)
		}
		return true, ""
	case pr.TCPSocket != nil:
		h := pr.TCPSocket.Host
		if h == "" {
			h = host
		}
		c, err := net.DialTimeout("tcp", net.JoinHostPort(h, port(pr.TCPSocket.Port)), timeout)
		if err != nil {
			return false, err.Error()
		}
		_ = c.Close()
		return true, ""
	case pr.GRPC != nil:
		conn, err := grpc.NewClient(net.JoinHostPort(host, strconv.Itoa(int(pr.GRPC.Port))), grpc.WithTransportCredentials(insecure.NewCredentials()))
		if err != nil {
			return false, err.Error()
		}
		defer conn.Close()
		gctx, cancel := context.WithTimeout(ctx, timeout)
		defer cancel()
		svc := ""
		if pr.GRPC.Service != nil {
			svc = *pr.GRPC.Service
		}
		resp, err := healthpb.NewHealthClient(conn).Check(gctx, &healthpb.HealthCheckRequest{Service: svc})
		if err != nil {
			return false, err.Error()
		}
		if resp.Status != healthpb.HealthCheckResponse_SERVING {
			return false, fmt.Sprintf("service unhealthy (responded with %q)", resp.Status)
		}
		return true, ""
	}
	return true, ""
}
