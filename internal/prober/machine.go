// Package prober runs a pod's liveness, readiness and startup probes as the kubelet's
// prober does (pkg/kubelet/prober), in two parts:
//
//   - Machine, a pure threshold state machine for one probe of one container instance:
//     when the probe is due (initialDelaySeconds counted from the container's start,
//     periodSeconds, the startup probe gating the other two, liveness and startup
//     stopping on a deleted pod), and what a result does to the container's Results
//     (successThreshold, failureThreshold, errors thrown away, on hold after a
//     liveness failure or a startup decision). It reads no clock: now is an argument.
//   - Manager, the workers: one goroutine per probe of each running probed container,
//     on an injected clock, running the probe (exec through a narrow ExecSync interface,
//     httpGet, tcpSocket, grpc), recording the kubelet's events and metrics, and telling
//     the caller when a container's Results change.
package prober

import (
	"strings"
	"time"

	corev1 "k8s.io/api/core/v1"
)

// Type names a probe as upstream's metrics and events do.
type Type string

const (
	Liveness  Type = "Liveness"
	Readiness Type = "Readiness"
	Startup   Type = "Startup"
)

// Result is one run of a probe, as upstream's results (probe.Unknown is Unknown: the
// prober could not run the probe, an error rather than a failure).
type Result int

const (
	Success Result = iota
	Failure
	// Unknown: the probe errored (e.g. the runtime could not start the exec); upstream's
	// worker throws the result away, so it counts neither way.
	Unknown
)

func (r Result) String() string {
	switch r {
	case Success:
		return "success"
	case Failure:
		return "failure"
	}
	return "unknown"
}

// Results is what the probes say about one container instance.
type Results struct {
	Ready, Started bool
	// ReadinessRun: the readiness probe has given a result for this container instance
	// (until then a container the agent found running may keep its readiness: KeepReady)
	ReadinessRun bool
	// Failed is the probe ("liveness" or "startup") that failed past its threshold; ""
	// while the container is healthy. The container is to be restarted.
	Failed string
}

// InitialResults are a container's results before any probe ran, as upstream's initial
// values: not ready while it has a readiness probe (Failure), not started while it has a
// startup probe (Unknown), and alive (liveness starts as Success).
func InitialResults(c *corev1.Container) Results {
	return Results{Ready: c.ReadinessProbe == nil, Started: c.StartupProbe == nil}
}

// Spec is a probe's timing and thresholds with upstream's defaults applied (the API
// server defaults them too; a zero here means the object was not defaulted).
type Spec struct {
	InitialDelay, Period               time.Duration
	SuccessThreshold, FailureThreshold int32
}

// SpecOf reads a probe's timing and thresholds: periodSeconds 10, successThreshold 1,
// failureThreshold 3 when unset, as upstream's defaults.
func SpecOf(p *corev1.Probe) Spec {
	s := Spec{InitialDelay: time.Duration(p.InitialDelaySeconds) * time.Second, Period: time.Duration(p.PeriodSeconds) * time.Second,
		SuccessThreshold: p.SuccessThreshold, FailureThreshold: p.FailureThreshold}
	if s.Period <= 0 {
		s.Period = 10 * time.Second
	}
	if s.SuccessThreshold <= 0 {
		s.SuccessThreshold = 1
	}
	if s.FailureThreshold <= 0 {
		s.FailureThreshold = 3
	}
	return s
}

// Machine is one probe's state for one container instance.
type Machine struct {
	Type Type
	Spec Spec
	// Next is when the probe is due next (the container's start plus the initial delay,
	// then one period after each run).
	Next time.Time
	// Last and Run: the last result that counted and how many times in a row it came.
	Last Result
	Run  int32
	// OnHold: as upstream's worker, a liveness probe that failed past its threshold, or
	// a startup probe that decided, is not run again for this container instance (it
	// is being restarted, or has started).
	OnHold bool
}

// NewMachine starts the machine of a probe of a container that the runtime started at
// started (zero, or in the future: now). The initial delay counts from the container's
// start, as upstream's worker compares it with State.Running.StartedAt, not from when
// the worker began (a worker begun after an agent restart does not wait it again).
func NewMachine(t Type, p *corev1.Probe, started, now time.Time) Machine {
	if started.IsZero() || started.After(now) {
		started = now
	}
	s := SpecOf(p)
	return Machine{Type: t, Spec: s, Next: started.Add(s.InitialDelay), Last: Unknown}
}

// Tick decides whether the probe runs at now, given the container's results and whether
// its pod is being deleted. When it runs, the next run is due one period later. When it
// does not, wait is how long until it might be due: until Next, or one period when it
// waits on something else (the container's start, or nothing at all: on hold) — a
// change of the results is told to the worker besides.
//
// As upstream's worker: liveness and readiness wait until the container has started
// (its startup probe succeeded), the startup probe stops once it has, and on a deleted
// pod liveness and startup stop (the container stopping is not restarted) while
// readiness goes on.
func (m *Machine) Tick(now time.Time, res Results, terminating bool) (run bool, wait time.Duration) {
	switch {
	case m.OnHold, terminating && m.Type != Readiness,
		m.Type == Startup && res.Started, m.Type != Startup && !res.Started:
		return false, m.Spec.Period
	case now.Before(m.Next):
		return false, m.Next.Sub(now)
	}
	m.Next = now.Add(m.Spec.Period)
	return true, 0
}

// Record folds one result of the probe into the machine and the container's results,
// and tells whether the results changed (the pod's status, or a restart, is to be
// looked at again).
//
// As upstream's worker: an Unknown result (an error) is thrown away; a result changes
// the container's results only once it came successThreshold (success) or
// failureThreshold (failure) times in a row; a liveness failure past its threshold
// fails the container (to be restarted, unless its pod is being deleted) and puts the
// probe on hold, as does a startup probe's decision either way. The first readiness
// result of an instance, below its threshold or not, ends a readiness kept across an
// agent restart (ReadinessRun).
func (m *Machine) Record(r Result, res Results, terminating bool) (Results, bool) {
	if r == Unknown {
		return res, false
	}
	if r == m.Last {
		m.Run++
	} else {
		m.Last, m.Run = r, 1
	}
	old := res
	if m.Type == Readiness {
		res.ReadinessRun = true
	}
	threshold := m.Spec.SuccessThreshold
	if r == Failure {
		threshold = m.Spec.FailureThreshold
	}
	if m.Run < threshold {
		return res, keptReadinessEnded(old, res)
	}
	switch {
	case m.Type == Readiness:
		res.Ready = r == Success
	case m.Type == Liveness && r == Success:
		res.Failed = ""
	case m.Type == Startup && r == Success:
		res.Started = true
		m.OnHold, m.Run = true, 0
	default: // liveness or startup failed past its threshold
		m.OnHold, m.Run = true, 0
		if !terminating { // a pod being deleted is not restarted
			res.Failed = strings.ToLower(string(m.Type))
		}
	}
	return res, res.Ready != old.Ready || res.Started != old.Started || res.Failed != old.Failed || keptReadinessEnded(old, res)
}

// keptReadinessEnded: the first readiness result of an unready instance ends the
// readiness kept across an agent restart, which the caller must look at again.
func keptReadinessEnded(old, res Results) bool {
	return !old.ReadinessRun && res.ReadinessRun && !res.Ready
}

// KeepReady is upstream's setReadyStateOnKubeletRestart (the default since
// ChangeContainerStatusOnKubeletRestart went off in 1.35): a container that was running
// more than 10 s before the agent started (agentStart), whose readiness probe has not
// given a result yet, stays ready if the pod is Ready now, so an agent restart does not
// take the pod out of its Services until a probe says so.
func KeepReady(pod *corev1.Pod, spec *corev1.Container, res Results, started, agentStart time.Time) bool {
	if res.Ready || res.ReadinessRun || spec.ReadinessProbe == nil || started.IsZero() ||
		!started.Before(agentStart.Add(-10*time.Second)) {
		return false
	}
	for _, c := range pod.Status.Conditions {
		if c.Type == corev1.PodReady {
			return c.Status == corev1.ConditionTrue
		}
	}
	return false
}
