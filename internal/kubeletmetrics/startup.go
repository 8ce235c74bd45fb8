package kubeletmetrics

import (
	"sync"
	"time"

	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/types"
)

// StartupTracker follows pods from first sight to running, as upstream's
// PodStartupLatencyTracker (pkg/kubelet/util/pod_startup_latency_tracker.go) and the
// kubelet's firstSeenTime: pod_start_duration_seconds is first sight → Running phase;
// pod_start_total_duration_seconds is creation → every container started as seen on
// the watch; pod_start_sli_duration_seconds is that minus the time spent pulling images
// (overlapping pulls counted once), and left out for stateful pods (PVC or generic
// ephemeral volumes). Time spent in init containers is not subtracted (upstream
// subtracts it). Safe for concurrent use.
type StartupTracker struct {
	mu   sync.Mutex
	pods map[types.UID]*podStartup
}

type podStartup struct {
	firstSeen time.Time
	pulls     []pull
	synced    bool // a sync ran (the pod worker's "create" was counted)
	running   bool // the Running phase was reached (pod_start_duration observed)
	recorded  bool // the SLI was observed
}

type pull struct{ start, end time.Time }

// Observation is what ObservePod recorded (for tests): zero durations were not observed.
type Observation struct {
	StartDuration, TotalDuration, SLIDuration time.Duration
	SLI                                       bool
}

func (t *StartupTracker) state(uid types.UID, now time.Time) *podStartup {
	if t.pods == nil {
		t.pods = map[types.UID]*podStartup{}
	}
	s := t.pods[uid]
	if s == nil {
		s = &podStartup{firstSeen: now}
		t.pods[uid] = s
	}
	return s
}

// FirstSeen notes the first time the pod was seen, on the watch as the kubelet's
// firstSeenTime (taken when its config source delivers the pod, before any sync); it
// returns true the first time.
func (t *StartupTracker) FirstSeen(uid types.UID, now time.Time) bool {
	t.mu.Lock()
	defer t.mu.Unlock()
	_, seen := t.pods[uid]
	t.state(uid, now)
	return !seen
}

// FirstSync notes a sync of the pod; it returns true the first time (the pod worker's
// "create"). A pod not seen before (a static pod) is first seen now.
func (t *StartupTracker) FirstSync(uid types.UID, now time.Time) bool {
	t.mu.Lock()
	defer t.mu.Unlock()
	s := t.state(uid, now)
	first := !s.synced
	s.synced = true
	return first
}

// PullStarted and PullFinished bracket one image pull for the pod.
func (t *StartupTracker) PullStarted(uid types.UID, now time.Time) {
	t.mu.Lock()
	defer t.mu.Unlock()
	s := t.state(uid, now)
	s.pulls = append(s.pulls, pull{start: now})
}

// PullFinished ends the earliest unfinished pull.
func (t *StartupTracker) PullFinished(uid types.UID, now time.Time) {
	t.mu.Lock()
	defer t.mu.Unlock()
	s := t.state(uid, now)
	for i := range s.pulls {
		if s.pulls[i].end.IsZero() {
			s.pulls[i].end = now
			return
		}
	}
}

// StatusComputed is called with the phase a sync computed: the first Running after
// Pending (or with no status written yet) observes pod_start_duration_seconds.
func (t *StartupTracker) StatusComputed(uid types.UID, previous, phase corev1.PodPhase, now time.Time) time.Duration {
	t.mu.Lock()
	defer t.mu.Unlock()
	s := t.state(uid, now)
	if s.running || phase != corev1.PodRunning || (previous != "" && previous != corev1.PodPending) {
		return 0
	}
	s.running = true
	d := now.Sub(s.firstSeen)
	PodStartDuration.Observe(d.Seconds())
	return d
}

// ObservePod is the pod as the watch shows it at now: once every container is reported
// started, the total and SLI durations are observed (once per pod). Terminal pods are
// forgotten.
func (t *StartupTracker) ObservePod(pod *corev1.Pod, now time.Time) Observation {
	t.mu.Lock()
	defer t.mu.Unlock()
	if pod.Status.Phase == corev1.PodSucceeded || pod.Status.Phase == corev1.PodFailed {
		delete(t.pods, pod.UID)
		return Observation{}
	}
	s := t.pods[pod.UID]
	if s == nil || s.recorded || !startedSLO(pod) {
		return Observation{}
	}
	s.recorded = true
	total := now.Sub(pod.CreationTimestamp.Time)
	o := Observation{TotalDuration: total}
	PodStartTotalDuration.WithLabelValues().Observe(total.Seconds())
	if !stateful(pod) {
		o.SLI, o.SLIDuration = true, total-pullTime(s.pulls)
		PodStartSLIDuration.WithLabelValues().Observe(o.SLIDuration.Seconds())
	}
	return o
}

// Forget drops a pod (it is gone).
func (t *StartupTracker) Forget(uid types.UID) {
	t.mu.Lock()
	defer t.mu.Unlock()
	delete(t.pods, uid)
}

// startedSLO is upstream's hasPodStartedSLO: Running, and every container started.
func startedSLO(pod *corev1.Pod) bool {
	if pod.Status.Phase != corev1.PodRunning || len(pod.Status.ContainerStatuses) == 0 {
		return false
	}
	for _, cs := range pod.Status.ContainerStatuses {
		if cs.State.Running == nil || cs.State.Running.StartedAt.IsZero() {
			return false
		}
	}
	return true
}

// stateful is upstream's isStatefulPod: a PVC or generic ephemeral volume.
func stateful(pod *corev1.Pod) bool {
	for _, v := range pod.Spec.Volumes {
		if v.PersistentVolumeClaim != nil || v.Ephemeral != nil {
			return true
		}
	}
	return false
}

// pullTime is upstream's calculateImagePullingTime: finished pulls in start order,
// overlaps counted once.
func pullTime(pulls []pull) time.Duration {
	var total time.Duration
	var end time.Time
	first := true
	for _, p := range pulls {
		if p.end.IsZero() {
			continue
		}
		switch {
		case first || p.start.After(end):
			total += p.end.Sub(p.start)
			end = p.end
		case p.end.After(end):
			total += p.end.Sub(end)
			end = p.end
		}
		first = false
	}
	return total
}
