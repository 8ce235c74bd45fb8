package prober

import (
	"context"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/client-go/tools/record"
	"k8s.io/utils/clock"

	"github.com/nodekeeper/nodekeeper/internal/podconfig"
)

var (
	probeTotal = prometheus.NewCounterVec(prometheus.CounterOpts{Name: "prober_probe_total",
		Help: "Cumulative number of a liveness, readiness or startup probe for a container by result."},
		[]string{"probe_type", "result", "container", "pod", "namespace", "pod_uid"})
	probeDuration = prometheus.NewHistogramVec(prometheus.HistogramOpts{Name: "prober_probe_duration_seconds",
		Help: "Duration in seconds for a probe response.", Buckets: prometheus.ExponentialBuckets(0.001, 2, 14)},
		[]string{"probe_type", "container", "pod", "namespace"})
	registerOnce sync.Once
)

// RegisterMetrics registers upstream's prober_probe_total and
// prober_probe_duration_seconds with reg, once per process.
func RegisterMetrics(reg prometheus.Registerer) {
	registerOnce.Do(func() { reg.MustRegister(probeTotal, probeDuration) })
}

// Options are what a Manager needs.
type Options struct {
	Exec     Execer
	Recorder record.EventRecorder
	// Clock times the probes (clock.RealClock{} when nil).
	Clock clock.Clock
	// Changed is called (from a worker) when a container's results change: the pod's
	// status or a restart is to be looked at. It must not block.
	Changed func(pod *corev1.Pod)
}

// Manager runs one worker per probed container instance, outside the reconcile loop.
type Manager struct {
	opts Options
	// Start is when the manager started (upstream's prober manager start, for KeepReady).
	Start time.Time

	mu      sync.Mutex
	workers map[string]*worker // pod UID/container ID -> worker

	// parked counts probe goroutines blocked waiting, pokes the wake-ups sent and not
	// yet taken: together they tell a test when every worker is idle (Settled).
	parked, pokes atomic.Int32
}

// New makes a Manager.
func New(o Options) *Manager {
	if o.Clock == nil {
		o.Clock = clock.RealClock{}
	}
	if o.Changed == nil {
		o.Changed = func(*corev1.Pod) {}
	}
	return &Manager{opts: o, Start: o.Clock.Now(), workers: map[string]*worker{}}
}

// Running is a running container as Sync needs it.
type Running struct {
	Spec *corev1.Container
	// StartedAt is when the runtime started it (zero: unknown, counted from now).
	StartedAt time.Time
}

// worker probes one container instance: one goroutine per probe.
type worker struct {
	cancel context.CancelFunc
	mu     sync.Mutex
	res    Results
	podIP  string
	// terminating: the pod is being deleted; as upstream's worker, liveness and startup
	// probes stop (reporting success), readiness goes on
	terminating bool
	// wake tells each probe goroutine that the results changed
	wake []chan struct{}
}

func key(uid types.UID, id string) string { return string(uid) + "/" + id }

// Sync starts workers for the pod's running probed containers (by container ID) and
// stops the workers of its containers that are gone or no longer running.
func (m *Manager) Sync(pod *corev1.Pod, running map[string]Running, podIP string) {
	m.mu.Lock()
	defer m.mu.Unlock()
	prefix := string(pod.UID) + "/"
	want := map[string]bool{}
	for id, rc := range running {
		spec := rc.Spec
		if spec == nil || (spec.ReadinessProbe == nil && spec.LivenessProbe == nil && spec.StartupProbe == nil) {
			continue
		}
		k := key(pod.UID, id)
		want[k] = true
		if w, ok := m.workers[k]; ok {
			w.mu.Lock()
			w.podIP = podIP
			w.mu.Unlock()
			continue
		}
		ctx, cancel := context.WithCancel(context.Background())
		w := &worker{cancel: cancel, podIP: podIP, res: InitialResults(spec)}
		m.workers[k] = w
		m.start(ctx, w, pod.DeepCopy(), id, spec.DeepCopy(), rc.StartedAt)
	}
	for k, w := range m.workers {
		if strings.HasPrefix(k, prefix) && !want[k] {
			w.cancel()
			delete(m.workers, k)
		}
	}
}

// Results returns the probe results of a container instance; a container without a
// worker has its initial results (ready/started when it has no such probe).
func (m *Manager) Results(uid types.UID, id string, spec *corev1.Container) Results {
	m.mu.Lock()
	w := m.workers[key(uid, id)]
	m.mu.Unlock()
	if w == nil {
		return InitialResults(spec)
	}
	w.mu.Lock()
	defer w.mu.Unlock()
	return w.res
}

// Terminating tells the pod's workers that the pod is being deleted: as upstream's (on a
// deletionTimestamp), liveness and startup probes stop with a success, so a container
// stopping (its preStop hook running) is not restarted; readiness probes go on until
// the container stops.
func (m *Manager) Terminating(uid types.UID) {
	m.eachWorker(uid, func(_ string, w *worker) {
		w.mu.Lock()
		w.terminating = true
		w.res.Failed = ""
		w.mu.Unlock()
		m.wakeAll(w)
	})
}

// Forget stops every worker of a pod.
func (m *Manager) Forget(uid types.UID) {
	m.eachWorker(uid, func(k string, w *worker) {
		w.cancel()
		delete(m.workers, k)
	})
}

// eachWorker runs f on each worker of the pod, under m.mu (a nil manager has none).
func (m *Manager) eachWorker(uid types.UID, f func(key string, w *worker)) {
	if m == nil {
		return
	}
	m.mu.Lock()
	defer m.mu.Unlock()
	prefix := string(uid) + "/"
	for k, w := range m.workers {
		if strings.HasPrefix(k, prefix) {
			f(k, w)
		}
	}
}

// KeepReady: see the function KeepReady, with the manager's start.
func (m *Manager) KeepReady(pod *corev1.Pod, spec *corev1.Container, res Results, started time.Time) bool {
	return m != nil && KeepReady(pod, spec, res, started, m.Start)
}

// Settled tells whether n probe goroutines are blocked waiting and no wake-up is
// pending (with a fake clock, a test also checks that n timers are waiting: a fired one
// not yet taken leaves its goroutine counted as parked).
func (m *Manager) Settled(n int) bool { return m.parked.Load() == int32(n) && m.pokes.Load() == 0 }

// start begins the container's probe goroutines: as upstream, each probe has one of its
// own (a slow or timing-out probe does not delay the others).
func (m *Manager) start(ctx context.Context, w *worker, pod *corev1.Pod, id string, spec *corev1.Container, startedAt time.Time) {
	now := m.opts.Clock.Now()
	type probe struct {
		mc   Machine
		pr   *corev1.Probe
		wake chan struct{}
	}
	var probes []*probe
	for _, s := range []struct {
		p *corev1.Probe
		t Type
	}{{spec.StartupProbe, Startup}, {spec.LivenessProbe, Liveness}, {spec.ReadinessProbe, Readiness}} {
		if s.p != nil {
			pb := &probe{mc: NewMachine(s.t, s.p, startedAt, now), pr: s.p, wake: make(chan struct{}, 1)}
			probes = append(probes, pb)
			w.wake = append(w.wake, pb.wake) // all made before any goroutine reads them
		}
	}
	for _, pb := range probes {
		go m.loop(ctx, w, pb.wake, pod, id, spec, pb.pr, &pb.mc)
	}
}

// wakeAll tells every probe goroutine of w that its results changed.
func (m *Manager) wakeAll(w *worker) {
	for _, c := range w.wake {
		m.pokes.Add(1)
		select {
		case c <- struct{}{}:
		default:
			m.pokes.Add(-1) // one is pending already
		}
	}
}

// loop is one probe's goroutine: the machine decides, the loop waits, runs the probe,
// records events and metrics, and reports changed results.
func (m *Manager) loop(ctx context.Context, w *worker, wake chan struct{}, pod *corev1.Pod, id string, spec *corev1.Container, pr *corev1.Probe, mc *Machine) {
	clk := m.opts.Clock
	for {
		w.mu.Lock()
		res, terminating, host := w.res, w.terminating, w.podIP
		w.mu.Unlock()
		now := clk.Now()
		if run, wait := mc.Tick(now, res, terminating); !run {
			t := clk.NewTimer(wait)
			m.parked.Add(1)
			select {
			case <-ctx.Done():
				m.parked.Add(-1)
				t.Stop()
				return
			case <-t.C():
				m.parked.Add(-1)
			case <-wake:
				m.parked.Add(-1)
				m.pokes.Add(-1)
				t.Stop()
			}
			continue
		}
		o := Run(ctx, m.opts.Exec, host, id, spec, pr)
		if ctx.Err() != nil {
			return
		}
		m.report(pod, spec, mc.Type, o, clk.Since(now))
		w.mu.Lock()
		res, changed := mc.Record(o.Result, w.res, w.terminating)
		w.res = res
		w.mu.Unlock()
		if changed {
			m.wakeAll(w)
			m.opts.Changed(pod)
		}
	}
}

// report records a run's events and metrics as upstream's prober and worker: an error
// is an "errored" Unhealthy event and no metric; a failure an Unhealthy event; a
// warning a ProbeWarning event (and a success).
func (m *Manager) report(pod *corev1.Pod, spec *corev1.Container, t Type, o Outcome, took time.Duration) {
	rec := m.opts.Recorder
	switch {
	case o.Result == Unknown:
		rec.Eventf(podconfig.ContainerRef(pod, spec.Name), corev1.EventTypeWarning, "Unhealthy", "%s probe errored and resulted in unknown state: %v", t, o.Err)
		return
	case o.Result == Failure:
		rec.Eventf(podconfig.ContainerRef(pod, spec.Name), corev1.EventTypeWarning, "Unhealthy", "%s probe failed: %s", t, o.Message)
		probeTotal.WithLabelValues(string(t), "failed", spec.Name, pod.Name, pod.Namespace, string(pod.UID)).Inc()
		return
	case o.Warning:
		rec.Eventf(podconfig.ContainerRef(pod, spec.Name), corev1.EventTypeWarning, "ProbeWarning", "%s probe warning: %s", t, o.Message)
	}
	probeTotal.WithLabelValues(string(t), "successful", spec.Name, pod.Name, pod.Namespace, string(pod.UID)).Inc()
	probeDuration.WithLabelValues(string(t), spec.Name, pod.Name, pod.Namespace).Observe(took.Seconds())
}
