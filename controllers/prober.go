package controllers

import (
	"context"
	"errors"
	"fmt"
	"net"
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

	"github.com/nodekeeper/nodekeeper/internal/probehttp"
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
	// ReadinessRun: the readiness probe has given a result for this container instance
	// (until then a container the agent found running keeps its readiness: see
	// keepReadyAfterRestart)
	ReadinessRun bool
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
	start   time.Time               // when the agent started (upstream's prober manager start)
}

type probeWorker struct {
	cancel context.CancelFunc
	mu     sync.Mutex
	res    ProbeResults
	podIP  string
	// terminating: the pod is being deleted; as upstream's worker, liveness and
	// startup probes stop (reporting success), readiness goes on
	terminating bool
}

func (w *probeWorker) ip() string {
	w.mu.Lock()
	defer w.mu.Unlock()
	return w.podIP
}

func newProber(rt cri.Runtime, rec record.EventRecorder, events chan<- event.GenericEvent) *prober {
	proberOnce.Do(func() { metrics.Registry.MustRegister(probeTotal, probeLatest) })
	return &prober{runtime: rt, recorder: rec, events: events, workers: map[string]*probeWorker{}, start: time.Now()}
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

// runningContainer is a running container as Sync needs it: its name and when the
// runtime started it.
type runningContainer struct {
	Name      string
	StartedAt time.Time
}

// Sync starts workers for running probed containers of the pod and stops workers for
// containers that are gone or no longer running.
func (p *prober) Sync(pod *corev1.Pod, running map[string]runningContainer, podIP string) {
	p.mu.Lock()
	defer p.mu.Unlock()
	prefix := string(pod.UID) + "/"
	want := map[string]bool{}
	for id, rc := range running {
		spec := findContainer(pod, rc.Name)
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
		go p.run(ctx, w, pod.DeepCopy(), id, spec.DeepCopy(), rc.StartedAt)
	}
	for k, w := range p.workers {
		if strings.HasPrefix(k, prefix) && !want[k] {
			w.cancel()
			delete(p.workers, k)
		}
	}
}

// Terminating tells the pod's workers that the pod is being deleted: as upstream's
// (on a deletionTimestamp), liveness and startup probes stop with a success, so a
// container stopping (its preStop hook running) is not restarted; readiness probes go
// on until the container stops.
func (p *prober) Terminating(uid types.UID) {
	if p == nil {
		return
	}
	p.mu.Lock()
	defer p.mu.Unlock()
	prefix := string(uid) + "/"
	for k, w := range p.workers {
		if strings.HasPrefix(k, prefix) {
			w.mu.Lock()
			w.terminating = true
			w.res.Failed = ""
			w.mu.Unlock()
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

// probeState is one probe of a container instance (startup, liveness or readiness).
type probeState struct {
	probe            *corev1.Probe
	typ              probeType
	next             time.Time
	succ, fail       int32
	initial, decided bool
	// onHold: as upstream's worker, a liveness probe that failed past its threshold,
	// or a startup probe that decided, is not run again for this container instance
	// (it is being restarted, or has started)
	onHold bool
}

// maxProbeRetries: a probe that errors (as opposed to failing) is tried this many times
// before its result is thrown away, as upstream's runProbeWithRetries.
const maxProbeRetries = 3

// run probes one container: as upstream, each of its probes has a worker of its own
// (a slow or timing-out probe does not delay the others), the startup probe until it
// succeeds, then liveness and readiness, each on its own period, with thresholds as
// upstream. The initial delay counts from the container's start in the runtime
// (startedAt; zero: now), as upstream's worker compares it with State.Running.StartedAt,
// not from when the worker began.
func (p *prober) run(ctx context.Context, w *probeWorker, pod *corev1.Pod, id string, spec *corev1.Container, startedAt time.Time) {
	start := startedAt
	if start.IsZero() || start.After(time.Now()) {
		start = time.Now()
	}
	var wg sync.WaitGroup
	for _, s := range []struct {
		p *corev1.Probe
		t probeType
	}{{spec.StartupProbe, probeStartup}, {spec.LivenessProbe, probeLiveness}, {spec.ReadinessProbe, probeReadiness}} {
		if s.p == nil {
			continue
		}
		st := &probeState{probe: s.p, typ: s.t, next: start.Add(time.Duration(s.p.InitialDelaySeconds) * time.Second)}
		wg.Add(1)
		go func() {
			defer wg.Done()
			p.loop(ctx, w, pod, id, spec, st)
		}()
	}
	wg.Wait()
}

// loop is one probe's worker.
func (p *prober) loop(ctx context.Context, w *probeWorker, pod *corev1.Pod, id string, spec *corev1.Container, st *probeState) {
	tick := time.NewTicker(100 * time.Millisecond)
	defer tick.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-tick.C:
		}
		w.mu.Lock()
		started, terminating := w.res.Started, w.terminating
		w.mu.Unlock()
		now := time.Now()
		if now.Before(st.next) || st.onHold || (st.typ != probeStartup && !started) || (st.typ == probeStartup && started) ||
			(terminating && st.typ != probeReadiness) {
			continue
		}
		period := time.Duration(st.probe.PeriodSeconds) * time.Second
		if period <= 0 {
			period = 10 * time.Second
		}
		st.next = now.Add(period)
		var res probehttp.Result
		var msg string
		var err error
		for i := 0; i < maxProbeRetries; i++ {
			if res, msg, err = p.probe(ctx, w.ip(), id, spec, st.probe); err == nil {
				break
			}
		}
		if ctx.Err() != nil {
			return
		}
		if err != nil {
			// as upstream: an error (not a failure) is reported and its result thrown away
			p.recorder.Eventf(containerRef(pod, spec.Name), corev1.EventTypeWarning, "Unhealthy", "%s probe errored and resulted in unknown state: %v", st.typ, err)
			continue
		}
		ok := res != probehttp.Failure
		if res == probehttp.Warning {
			// as upstream: a warning (a redirect to another host not followed) is a success
			p.recorder.Eventf(containerRef(pod, spec.Name), corev1.EventTypeWarning, "ProbeWarning", "%s probe warning: %s", st.typ, msg)
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
			p.recorder.Eventf(containerRef(pod, spec.Name), corev1.EventTypeWarning, "Unhealthy", "%s probe failed: %s", st.typ, msg)
		}
		changed := false
		w.mu.Lock()
		if st.typ == probeReadiness && !w.res.ReadinessRun {
			w.res.ReadinessRun = true
			changed = !w.res.Ready // the kept readiness ends here
		}
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
				st.onHold = true
				if w.terminating {
					break // the pod is being deleted: nothing restarts
				}
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

// probe runs one probe once: exec through the runtime, httpGet (probehttp: as
// upstream's HTTP prober), tcpSocket, or grpc (the standard health service).
//
// err is an error of the prober, not a failure of the probe (upstream's probe.Unknown
// with an error): an exec the runtime could not run at all. An exec that timed out or
// exited non-zero, and every http, tcp and grpc outcome, is a result.
func (p *prober) probe(ctx context.Context, host, id string, spec *corev1.Container, pr *corev1.Probe) (probehttp.Result, string, error) {
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
		if errors.Is(err, context.DeadlineExceeded) {
			return probehttp.Failure, fmt.Sprintf("command %q timed out", pr.Exec.Command), nil
		}
		if err != nil {
			return probehttp.Failure, "", err
		}
		if res.ExitCode != 0 {
			return probehttp.Failure, fmt.Sprintf("command %q exited with %d: %s", pr.Exec.Command, res.ExitCode, strings.TrimSpace(string(res.Stdout)+string(res.Stderr))), nil
		}
		return probehttp.Success, "", nil
	case pr.HTTPGet != nil:
		portNum, err := strconv.Atoi(port(pr.HTTPGet.Port))
		if err != nil {
			return probehttp.Failure, "", fmt.Errorf("invalid port %q: %v", pr.HTTPGet.Port.String(), err)
		}
		req, err := probehttp.NewRequest(pr.HTTPGet, portNum, host)
		if err != nil {
			return probehttp.Failure, "", err
		}
		res, msg := probehttp.Do(req.WithContext(ctx), timeout)
		return res, msg, nil
	case pr.TCPSocket != nil:
		h := pr.TCPSocket.Host
		if h == "" {
			h = host
		}
		c, err := net.DialTimeout("tcp", net.JoinHostPort(h, port(pr.TCPSocket.Port)), timeout)
		if err != nil {
			return probehttp.Failure, err.Error(), nil
		}
		_ = c.Close()
		return probehttp.Success, "", nil
	case pr.GRPC != nil:
		conn, err := grpc.NewClient(net.JoinHostPort(host, strconv.Itoa(int(pr.GRPC.Port))), grpc.WithTransportCredentials(insecure.NewCredentials()))
		if err != nil {
			return probehttp.Failure, err.Error(), nil
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
			return probehttp.Failure, err.Error(), nil
		}
		if resp.Status != healthpb.HealthCheckResponse_SERVING {
			return probehttp.Failure, fmt.Sprintf("service unhealthy (responded with %q)", resp.Status), nil
		}
		return probehttp.Success, "", nil
	}
	return probehttp.Success, "", nil
}

// keepReadyAfterRestart is upstream's setReadyStateOnKubeletRestart (the default since
// ChangeContainerStatusOnKubeletRestart went off in 1.35): a container that was running
// more than 10 s before the agent started, whose readiness probe has not given a result
// yet, stays ready if the pod is Ready now, so an agent restart does not take the pod
// out of its Services until a probe says so.
func (p *prober) keepReadyAfterRestart(pod *corev1.Pod, spec *corev1.Container, res ProbeResults, startedAt time.Time) bool {
	if p == nil || res.Ready || res.ReadinessRun || spec.ReadinessProbe == nil || startedAt.IsZero() ||
		!startedAt.Before(p.start.Add(-10*time.Second)) {
		return false
	}
	for _, c := range pod.Status.Conditions {
		if c.Type == corev1.PodReady {
			return c.Status == corev1.ConditionTrue
		}
	}
	return false
}
