// Package podplan is the pure heart of the PodReconciler: from a Pod, what the runtime
// holds for it (Observed), what the probes say, the back-off state, the eviction
// decision and the time (Input), Plan computes what to do (Actions: sandbox, kills with
// their grace periods, starts, waits, the next wake-up), Image what to do about a
// container's image, and Status what to report. No I/O, no clock.
package podplan

import (
	"fmt"
	"hash/fnv"
	"sort"
	"strings"
	"time"

	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/util/dump"
)

// Labels and annotations the kubelet puts on sandboxes and containers (same keys, so
// crictl users see what they expect), plus nodekeeper's ownership label.
const (
	LabelManaged       = "nodekeeper.io/managed"
	LabelPodName       = "io.kubernetes.pod.name"
	LabelPodNamespace  = "io.kubernetes.pod.namespace"
	LabelPodUID        = "io.kubernetes.pod.uid"
	LabelContainerName = "io.kubernetes.container.name"
	AnnotationHash     = "io.kubernetes.container.hash"
	AnnotationRestarts = "io.kubernetes.container.restartCount"
	AnnotationInit     = "nodekeeper.io/init-container"
	AnnotationGrace    = "io.kubernetes.pod.terminationGracePeriod"
)

// Annotations of static and mirror pods, as the kubelet sets them.
const (
	AnnotationConfigSource = "kubernetes.io/config.source"
	AnnotationConfigHash   = "kubernetes.io/config.hash"
	AnnotationConfigSeen   = "kubernetes.io/config.seen"
	AnnotationConfigMirror = "kubernetes.io/config.mirror"
)

// ContainerState is the runtime state of one container instance.
type ContainerState int

const (
	StateCreated ContainerState = iota
	StateRunning
	StateExited
	StateUnknown
)

// Sandbox is one observed sandbox of the pod.
type Sandbox struct {
	ID        string
	Attempt   uint32
	Ready     bool
	IP        string
	CreatedAt time.Time
}

// Container is one observed container instance of the pod.
type Container struct {
	ID         string
	SandboxID  string
	Name       string
	Attempt    uint32
	State      ContainerState
	ExitCode   int32
	Reason     string
	Message    string
	Hash       string
	Image      string
	ImageRef   string
	LogPath    string
	CreatedAt  time.Time
	StartedAt  time.Time
	FinishedAt time.Time
}

// Observed is what the runtime holds for one pod.
type Observed struct {
	Sandboxes  []Sandbox   // any order
	Containers []Container // any order, every instance still present
	// Unhealthy holds the IDs of running containers whose liveness or startup probe
	// has failed past its threshold, with the probe's kind ("liveness" or "startup").
	Unhealthy map[string]string
	// NotStarted holds the IDs of running containers whose startup probe has not
	// succeeded yet (absent: started).
	NotStarted map[string]bool
}

// latestSandbox is the newest sandbox (highest attempt, then newest).
func (o Observed) latestSandbox() *Sandbox {
	var best *Sandbox
	for i := range o.Sandboxes {
		s := &o.Sandboxes[i]
		if best == nil || s.Attempt > best.Attempt || (s.Attempt == best.Attempt && s.CreatedAt.After(best.CreatedAt)) {
			best = s
		}
	}
	return best
}

// ReadySandbox is the newest ready sandbox (highest attempt, then newest), or nil: the
// one containers are started in and whose IP the pod has.
func (o Observed) ReadySandbox() *Sandbox {
	var best *Sandbox
	for i := range o.Sandboxes {
		s := &o.Sandboxes[i]
		if s.Ready && (best == nil || s.Attempt > best.Attempt || (s.Attempt == best.Attempt && s.CreatedAt.After(best.CreatedAt))) {
			best = s
		}
	}
	return best
}

// anySandboxReady tells whether one of the pod's sandboxes is ready.
func (o Observed) anySandboxReady() bool {
	for i := range o.Sandboxes {
		if o.Sandboxes[i].Ready {
			return true
		}
	}
	return false
}

// instances returns a container's instances in sandbox sb, newest first.
func (o Observed) instances(name, sb string) []Container {
	var out []Container
	for _, c := range o.Containers {
		if c.Name == name && (sb == "" || c.SandboxID == sb) {
			out = append(out, c)
		}
	}
	sort.Slice(out, func(i, j int) bool {
		if out[i].Attempt != out[j].Attempt {
			return out[i].Attempt > out[j].Attempt
		}
		return out[i].CreatedAt.After(out[j].CreatedAt)
	})
	return out
}

// Latest is the newest instance of a container across sandboxes, or nil.
func (o Observed) Latest(name string) *Container {
	in := o.instances(name, "")
	if len(in) == 0 {
		return nil
	}
	return &in[0]
}

// HashContainer is a stable hash of the fields of a container spec whose change means
// the container must be recreated (upstream hashes the whole spec minus mutable bits).
func HashContainer(c *corev1.Container) string {
	cp := c.DeepCopy()
	cp.Resources = corev1.ResourceRequirements{} // resized in place upstream
	h := fnv.New32a()
	fmt.Fprint(h, dump.ForHash(cp))
	return fmt.Sprintf("%08x", h.Sum32())
}

// Backoff is the restart back-off state of the pod's containers: the earliest time
// each container (by name) may be started again.
type Backoff map[string]time.Time

// Start is a container to start.
type Start struct {
	Name    string
	Init    bool
	Attempt uint32 // restart count of the new instance
	// Ephemeral: an ephemeral container (started once, never restarted); TargetID is
	// the container whose PID namespace it joins (targetContainerName), "" for none.
	Ephemeral bool
	TargetID  string
	// Backoff is the container's restart back-off once this restart has happened (nil:
	// not a restart, or no back-off policy in the Input): the delay before the restart
	// after its next exit.
	Backoff *BackoffEntry
	// Image is what to do about the container's image (DecideImages; nil: undecided,
	// the container is not started this time).
	Image *ImageStep
}

// Kill is a container instance to stop, and why.
type Kill struct {
	ID, Name, Reason string
	// Grace is the grace period of the stop: a failed probe's
	// terminationGracePeriodSeconds when it has one, else the pod's (Actions.Grace).
	Grace time.Duration
	// probeGrace is the failed probe's terminationGracePeriodSeconds (nil: none)
	probeGrace *int64
}

// Input is everything Plan decides from.
type Input struct {
	Pod *corev1.Pod
	// Observed is what the runtime holds for the pod, with the probes' results
	// (Observed.Unhealthy, Observed.NotStarted).
	Observed Observed
	// Backoff is the restart back-off ("not before" by container name) and the image
	// pull back-off (by "pull/<container>"): NotBefore of the entries.
	Backoff Backoff
	// Entries are the back-off entries themselves, and Policy the back-off policy: a
	// restart's next entry is decided from them (Start.Backoff).
	Entries map[string]BackoffEntry
	Policy  BackoffPolicy
	// Evicted is the eviction message ("" when the pod is not evicted): an evicted pod
	// stops at once (grace 0), as upstream's eviction manager kills it.
	Evicted string
	// Errors are the containers held back by the last apply (CreateContainerConfigError,
	// ErrImagePull, …): the pod is looked at again after RetryPeriod.
	Errors map[string]Waiting
	// RetryPeriod is the wake-up for a pod with waiting containers and no back-off
	// ending sooner (the back-off's base, 10 s).
	RetryPeriod time.Duration
	Now         time.Time
}

// Actions is the plan for one pod.
type Actions struct {
	// CreateSandbox: (re)create the sandbox with SandboxAttempt, after killing
	// everything of the old one.
	CreateSandbox  bool
	SandboxAttempt uint32
	// KillPod: stop every container and the sandbox (pod done, deleted, evicted, past
	// its deadline, or sandbox dead), each container within Grace; KillReason says why.
	KillPod    bool
	KillReason string
	// Grace is the pod's grace period (GracePeriod): for KillPod, and for each Kill
	// without a probe's own.
	Grace time.Duration
	// Terminate: the pod is being deleted: after the kill, its final status is written,
	// the Pod object deleted, and its sandboxes, volumes and logs removed.
	Terminate bool
	// DeadlineExceeded: the pod ran past its activeDeadlineSeconds; it is killed (and
	// the DeadlineExceeded event recorded).
	DeadlineExceeded bool
	// Wake is when the pod is to be looked at again if nothing else happens: a
	// back-off or pull retry ends, the active deadline runs out, or ConfigMap, Secret
	// and token updates are to reach its volumes (0: not needed).
	Wake time.Duration
	// Start lists containers to start, in order.
	Start []Start
	// Kill lists container instances to stop.
	Kill []Kill
	// Waiting: containers held back, with the reason status should show
	// (CrashLoopBackOff) and a message.
	Waiting map[string]Waiting
}

// Waiting is why a container does not run now.
type Waiting struct{ Reason, Message string }

// String explains the plan, in the order apply carries it out, e.g. "kill c1: Container
// c1 failed liveness probe, will be restarted (grace 30s); start c1 (restart 3); c2
// waits: CrashLoopBackOff (back-off 40s restarting failed container=c2); wake in 40s".
func (a Actions) String() string {
	var parts []string
	if a.KillPod {
		parts = append(parts, fmt.Sprintf("kill the pod: %s (grace %s)", a.KillReason, a.Grace))
	}
	if a.Terminate {
		parts = append(parts, "write the final status, delete the pod, remove its sandboxes, volumes and logs")
	}
	for _, k := range a.Kill {
		parts = append(parts, fmt.Sprintf("kill %s: %s (grace %s)", k.Name, k.Reason, k.Grace))
	}
	if a.CreateSandbox {
		parts = append(parts, fmt.Sprintf("create sandbox (attempt %d)", a.SandboxAttempt))
	}
	for _, s := range a.Start {
		what := "start " + s.Name
		switch {
		case s.Ephemeral:
			what += " (ephemeral)"
		case s.Init:
			what += " (init)"
		}
		if s.Attempt > 0 {
			what += fmt.Sprintf(" (restart %d)", s.Attempt)
		}
		if s.Image != nil {
			what += ": " + s.Image.String()
		}
		if s.Backoff != nil {
			what += fmt.Sprintf(", then back-off %s", s.Backoff.Delay)
		}
		parts = append(parts, what)
	}
	names := make([]string, 0, len(a.Waiting))
	for n := range a.Waiting {
		names = append(names, n)
	}
	sort.Strings(names)
	for _, n := range names {
		parts = append(parts, fmt.Sprintf("%s waits: %s (%s)", n, a.Waiting[n].Reason, a.Waiting[n].Message))
	}
	if a.Wake > 0 {
		parts = append(parts, fmt.Sprintf("wake in %s", a.Wake))
	}
	if len(parts) == 0 {
		return "nothing to do"
	}
	return strings.Join(parts, "; ")
}

// GracePeriod is the grace period of the pod's containers' stop: 0 for an evicted pod
// (local storage eviction kills at once, as upstream), else the deletion's grace
// period, the pod's terminationGracePeriodSeconds, or 30 s.
func GracePeriod(pod *corev1.Pod, evicted bool) time.Duration {
	switch {
	case evicted:
		return 0
	case pod.DeletionGracePeriodSeconds != nil:
		return time.Duration(*pod.DeletionGracePeriodSeconds) * time.Second
	case pod.Spec.TerminationGracePeriodSeconds != nil:
		return time.Duration(*pod.Spec.TerminationGracePeriodSeconds) * time.Second
	}
	return 30 * time.Second
}

// UpdatableVolumes tells whether the pod has volumes whose content follows API objects
// (configMap, secret, projected, downwardAPI).
func UpdatableVolumes(pod *corev1.Pod) bool {
	for _, v := range pod.Spec.Volumes {
		if v.ConfigMap != nil || v.Secret != nil || v.Projected != nil || v.DownwardAPI != nil {
			return true
		}
	}
	return false
}

// Wake is when a pod is to be looked at again: when the first back-off (restart or
// pull) still running at now ends; else, with containers waiting, after retry; the
// active deadline if it runs out sooner; else, with updatable volumes, within a minute
// (ConfigMap/Secret/token updates reach the files within a minute). 0: not needed.
func Wake(pod *corev1.Pod, backoff Backoff, waiting bool, retry time.Duration, now time.Time) time.Duration {
	var next time.Duration
	for _, until := range backoff {
		if d := until.Sub(now); d > 0 && (next == 0 || d < next) {
			next = d
		}
	}
	if waiting && next == 0 {
		next = retry
	}
	if d, ok := ActiveDeadline(pod); ok && !Terminal(pod) && d.After(now) {
		if until := d.Sub(now); next == 0 || until < next {
			next = until
		}
	}
	if next == 0 && UpdatableVolumes(pod) {
		next = time.Minute
	}
	return next
}

// IsSidecar tells whether an init container is a native sidecar (restartPolicy Always).
func IsSidecar(c *corev1.Container) bool {
	return c.RestartPolicy != nil && *c.RestartPolicy == corev1.ContainerRestartPolicyAlways
}

// Terminal tells whether the pod has reached a phase it never leaves.
func Terminal(pod *corev1.Pod) bool {
	return pod.Status.Phase == corev1.PodSucceeded || pod.Status.Phase == corev1.PodFailed
}

// PodDone tells whether, by the restart policies (ContainerShouldRestart), nothing of
// the pod will run again: every app container has exited and none is to be restarted
// (or an init container failed and is not to be restarted).
func PodDone(pod *corev1.Pod, o Observed) bool {
	for i := range pod.Spec.InitContainers {
		c := &pod.Spec.InitContainers[i]
		if IsSidecar(c) {
			continue
		}
		if l := o.Latest(c.Name); l != nil && l.State == StateExited && l.ExitCode != 0 && !ContainerShouldRestart(c, &pod.Spec, l.ExitCode) {
			return true
		}
	}
	for i := range pod.Spec.Containers {
		c := &pod.Spec.Containers[i]
		l := o.Latest(c.Name)
		if l == nil || l.State != StateExited || ContainerShouldRestart(c, &pod.Spec, l.ExitCode) {
			return false
		}
	}
	return len(pod.Spec.Containers) > 0
}

// Plan computes what to do for a pod from every input (Input), and nothing else.
func Plan(in Input) Actions {
	pod := in.Pod
	a := plan(in)
	a.Grace = GracePeriod(pod, in.Evicted != "")
	for i := range a.Kill {
		a.Kill[i].Grace = a.Grace
		if g := a.Kill[i].probeGrace; g != nil {
			a.Kill[i].Grace = time.Duration(*g) * time.Second
		}
	}
	for i := range a.Start {
		st := &a.Start[i]
		if st.Attempt == 0 || in.Policy.Base == 0 {
			continue
		}
		// a restart: the next one waits for the back-off, which grows unless the last
		// instance ran long enough
		ranFor := time.Duration(0)
		if l := in.Observed.Latest(st.Name); l != nil && !l.StartedAt.IsZero() && !l.FinishedAt.IsZero() {
			ranFor = l.FinishedAt.Sub(l.StartedAt)
		}
		var prev *BackoffEntry
		if e, ok := in.Entries[st.Name]; ok {
			prev = &e
		}
		next := in.Policy.Next(prev, ranFor, in.Now)
		st.Backoff = &next
	}
	waiting := len(a.Waiting) > 0 || len(in.Errors) > 0
	a.Wake = Wake(pod, in.Backoff, waiting, in.RetryPeriod, in.Now)
	return a
}

func plan(in Input) Actions {
	pod, o, backoff, now := in.Pod, in.Observed, in.Backoff, in.Now
	a := Actions{Waiting: map[string]Waiting{}}
	sb := o.latestSandbox()
	terminal := Terminal(pod)
	a.DeadlineExceeded = !terminal && PastActiveDeadline(pod, now)
	switch {
	case pod.DeletionTimestamp != nil:
		a.KillReason = "the pod is being deleted"
	case terminal:
		a.KillReason = "the pod is " + string(pod.Status.Phase)
	case in.Evicted != "":
		a.KillReason = "evicted: " + in.Evicted
	case a.DeadlineExceeded:
		a.KillReason = DeadlineExceededMessage
	case PodDone(pod, o):
		a.KillReason = "no container will run again"
	}
	if a.KillReason != "" {
		a.KillPod = anyRunning(o) || (sb != nil && sb.Ready)
		a.Terminate = pod.DeletionTimestamp != nil
		return a
	}
	if sb == nil || !sb.Ready {
		// (re)create the sandbox; upstream also restarts every container in it
		a.CreateSandbox = true
		if sb != nil {
			a.SandboxAttempt = sb.Attempt + 1
			a.KillPod = anyRunning(o)
			a.KillReason = "the pod sandbox changed"
		}
		// nothing runs in the new sandbox yet: init containers run again from the first
		const fresh = "\x00new-sandbox"
		if initActions(pod, o, fresh, backoff, now, &a) {
			appStarts(pod, o, fresh, backoff, now, &a)
		}
		return a
	}
	ephemeralStarts(pod, o, &a)
	if initActions(pod, o, sb.ID, backoff, now, &a) {
		appStarts(pod, o, sb.ID, backoff, now, &a)
	}
	return a
}

// ephemeralStarts is computePodActions' EphemeralContainersToStart: in a ready sandbox,
// even before initialization completes, each ephemeral container that has never run
// starts (first, as SyncPod starts them); none is ever restarted.
func ephemeralStarts(pod *corev1.Pod, o Observed, a *Actions) {
	for i := range pod.Spec.EphemeralContainers {
		ec := &pod.Spec.EphemeralContainers[i]
		if o.Latest(ec.Name) != nil {
			continue
		}
		s := Start{Name: ec.Name, Ephemeral: true}
		if t := ec.TargetContainerName; t != "" {
			l := o.Latest(t)
			if l == nil {
				continue // upstream: "unable to find target container"; tried again later
			}
			s.TargetID = l.ID
		}
		a.Start = append(a.Start, s)
	}
}

// initActions is upstream's computeInitContainerActions for the sandbox sbID: it adds
// the init containers to (re)start and to kill to a, and tells whether the pod has
// initialized (its app containers may run). Regular init containers run one at a
// time, in order; a sidecar (restartPolicy Always) keeps running, and the next init
// container starts only once it has started (its startup probe passed); a sidecar
// that exits, fails its liveness or startup probe or changes is restarted. Once an app
// container has run in the sandbox, regular init containers are not run again.
func initActions(pod *corev1.Pod, o Observed, sbID string, backoff Backoff, now time.Time, a *Actions) bool {
	inits := pod.Spec.InitContainers
	if len(inits) == 0 {
		return true
	}
	podHasInitialized := activeRegularStarted(pod, o, sbID)
	previouslyInitialized := podHasInitialized
	var toStart []int
	kill := func(c *corev1.Container, l Container, reason string, probe *corev1.Probe) {
		k := Kill{ID: l.ID, Name: c.Name, Reason: reason}
		if probe != nil && probe.TerminationGracePeriodSeconds != nil {
			g := *probe.TerminationGracePeriodSeconds
			k.probeGrace = &g
		}
		a.Kill = append(a.Kill, k)
	}
	// from the last init container back: the furthest one that ran tells how far
	// initialization got
	for i := len(inits) - 1; i >= 0; i-- {
		c := &inits[i]
		inst := o.instances(c.Name, sbID)
		if len(inst) == 0 {
			if previouslyInitialized && IsSidecar(c) {
				toStart = append(toStart, i)
			}
			continue
		}
		if previouslyInitialized && !IsSidecar(c) {
			continue
		}
		l := inst[0]
		switch l.State {
		case StateCreated:
			toStart = append(toStart, i)
		case StateRunning:
			if !IsSidecar(c) {
				break // runs to completion
			}
			failed := o.Unhealthy[l.ID]
			if c.StartupProbe != nil && o.NotStarted[l.ID] {
				if failed == "startup" {
					kill(c, l, fmt.Sprintf("Init container %s failed startup probe", c.Name), c.StartupProbe)
					toStart = append(toStart, i)
				}
				break // the next container waits for it to start
			}
			if i == len(inits)-1 {
				podHasInitialized = true
			} else if !previouslyInitialized {
				toStart = append(toStart, i+1)
			}
			switch {
			case l.Hash != "" && l.Hash != HashContainer(c):
				kill(c, l, fmt.Sprintf("Init container %s definition changed", c.Name), nil)
				toStart = append(toStart, i)
			case failed == "liveness":
				kill(c, l, fmt.Sprintf("Init container %s failed liveness probe", c.Name), c.LivenessProbe)
				toStart = append(toStart, i)
			}
		case StateExited:
			if IsSidecar(c) {
				toStart = append(toStart, i)
				break
			}
			if l.ExitCode != 0 {
				if !ContainerShouldRestart(c, &pod.Spec, l.ExitCode) {
					return false // the pod failed (PodDone)
				}
				toStart = append(toStart, i)
				break
			}
			if i == len(inits)-1 {
				podHasInitialized = true
			} else {
				toStart = append(toStart, i+1)
			}
		default: // unknown: kill it before it runs again
			if !IsSidecar(c) && !ContainerShouldRestart(c, &pod.Spec, 1) {
				return false
			}
			kill(c, l, fmt.Sprintf("Init container is in %q state, try killing it before restart", "unknown"), nil)
			toStart = append(toStart, i)
		}
		previouslyInitialized = true
	}
	if !previouslyInitialized {
		toStart = append(toStart, 0) // nothing ran yet: the first
	}
	for k := len(toStart) - 1; k >= 0; k-- { // in the pod's order
		c := &inits[toStart[k]]
		startOrWait(c.Name, true, attemptFor(o, c.Name), backoff, now, a)
	}
	return podHasInitialized
}

func anyRunning(o Observed) bool {
	for _, c := range o.Containers {
		if c.State == StateRunning || c.State == StateCreated {
			return true
		}
	}
	return false
}

// restartCount is the number of earlier instances of a container (its newest attempt).
func restartCount(o Observed, name string) uint32 {
	if l := o.Latest(name); l != nil {
		return l.Attempt
	}
	return 0
}

func startOrWait(name string, init bool, attempt uint32, backoff Backoff, now time.Time, a *Actions) {
	if until, ok := backoff[name]; ok && now.Before(until) {
		a.Waiting[name] = Waiting{Reason: "CrashLoopBackOff",
			Message: fmt.Sprintf("back-off %s restarting failed container=%s", until.Sub(now).Round(time.Second), name)}
		return
	}
	a.Start = append(a.Start, Start{Name: name, Init: init, Attempt: attempt})
}

// attemptFor is the attempt number of a container's next instance.
func attemptFor(o Observed, name string) uint32 {
	if l := o.Latest(name); l != nil {
		return l.Attempt + 1
	}
	return 0
}

func allInitDone(pod *corev1.Pod, o Observed, sbID string) bool {
	for i := range pod.Spec.InitContainers {
		c := &pod.Spec.InitContainers[i]
		inst := o.instances(c.Name, sbID)
		if len(inst) == 0 {
			return false
		}
		if IsSidecar(c) {
			if inst[0].State != StateRunning {
				return false
			}
			continue
		}
		if inst[0].State != StateExited || inst[0].ExitCode != 0 {
			return false
		}
	}
	return true
}

func appStarts(pod *corev1.Pod, o Observed, sbID string, backoff Backoff, now time.Time, a *Actions) {
	for i := range pod.Spec.Containers {
		c := &pod.Spec.Containers[i]
		inst := o.instances(c.Name, sbID)
		if len(inst) == 0 {
			a.Start = append(a.Start, Start{Name: c.Name, Attempt: attemptFor(o, c.Name)})
			continue
		}
		l := inst[0]
		switch l.State {
		case StateRunning:
			// as computePodActions: a running container whose definition changed is
			// killed and started again in the same sync whatever the restart policy; one
			// that failed its liveness or startup probe too, unless its policy is Never.
			// The new instance does not wait for a back-off (nothing exited yet).
			if l.Hash != "" && l.Hash != HashContainer(c) {
				a.Kill = append(a.Kill, Kill{ID: l.ID, Name: c.Name, Reason: fmt.Sprintf("Container %s definition changed, will be restarted", c.Name)})
				a.Start = append(a.Start, Start{Name: c.Name, Attempt: l.Attempt + 1})
			} else if kind := o.Unhealthy[l.ID]; kind != "" {
				probe := c.LivenessProbe
				if kind == "startup" {
					probe = c.StartupProbe
				}
				restart := restartOnProbeFailure(pod, c)
				reason := fmt.Sprintf("Container %s failed %s probe", c.Name, kind)
				if restart {
					reason += ", will be restarted"
				}
				k := Kill{ID: l.ID, Name: c.Name, Reason: reason}
				if probe != nil && probe.TerminationGracePeriodSeconds != nil {
					g := *probe.TerminationGracePeriodSeconds
					k.probeGrace = &g
				}
				a.Kill = append(a.Kill, k)
				if restart {
					a.Start = append(a.Start, Start{Name: c.Name, Attempt: l.Attempt + 1})
				}
			}
		case StateCreated:
			a.Start = append(a.Start, Start{Name: c.Name, Attempt: l.Attempt + 1})
		default:
			if ContainerShouldRestart(c, &pod.Spec, l.ExitCode) {
				startOrWait(c.Name, false, l.Attempt+1, backoff, now, a)
			}
		}
	}
}

// restartOnProbeFailure is computePodActions' restart for a running container killed by
// a probe: the pod's restart policy is not Never (shouldRestartOnFailure), or, when the
// container has a restart policy of its own, that one is not Never.
func restartOnProbeFailure(pod *corev1.Pod, c *corev1.Container) bool {
	if c.RestartPolicy != nil {
		return *c.RestartPolicy != corev1.ContainerRestartPolicyNever
	}
	return pod.Spec.RestartPolicy != corev1.RestartPolicyNever
}

// NotBefore turns back-off entries into "not before" times (Backoff): a container's
// restart back-off counts from its newest instance's exit (only while that instance
// has exited), an image pull back-off ("pull/<name>") from the failed pull.
func NotBefore(entries map[string]BackoffEntry, o Observed) Backoff {
	out := Backoff{}
	for name, e := range entries {
		if l := o.Latest(name); l != nil && l.State == StateExited {
			out[name] = l.FinishedAt.Add(e.Delay)
		} else if strings.HasPrefix(name, "pull/") {
			out[name] = e.LastUpdate.Add(e.Delay)
		}
	}
	return out
}

// BackoffEntry is the restart back-off of one container.
type BackoffEntry struct {
	Delay      time.Duration
	LastUpdate time.Time
}

// BackoffPolicy is the kubelet's: Base doubling to Max, reset after Reset of clean running.
type BackoffPolicy struct {
	Base, Max, Reset time.Duration
}

// DefaultBackoff is upstream's: 10s doubling to 5 minutes, reset after 10 minutes.
var DefaultBackoff = BackoffPolicy{Base: 10 * time.Second, Max: 5 * time.Minute, Reset: 10 * time.Minute}

// Next is the entry after a restart at now of a container that ran for ranFor:
// the delay before the restart after the next exit.
func (p BackoffPolicy) Next(prev *BackoffEntry, ranFor time.Duration, now time.Time) BackoffEntry {
	if prev == nil || ranFor >= p.Reset || now.Sub(prev.LastUpdate) > 2*p.Max+ranFor {
		return BackoffEntry{Delay: p.Base, LastUpdate: now}
	}
	d := 2 * prev.Delay
	if d > p.Max {
		d = p.Max
	}
	return BackoffEntry{Delay: d, LastUpdate: now}
}

// TerminationPrereqs is upstream's termination ordering for a pod with sidecars: for
// each of the running containers, the running containers it must wait for before it
// is stopped. A sidecar waits for every app container and for the next sidecar in the
// pod's order (sidecars stop after the app, last first); app containers and regular
// init containers wait for nothing. Nil when the pod has no sidecar.
func TerminationPrereqs(pod *corev1.Pod, running []string) map[string][]string {
	isRunning := map[string]bool{}
	for _, n := range running {
		isRunning[n] = true
	}
	hasSidecar := false
	for i := range pod.Spec.InitContainers {
		hasSidecar = hasSidecar || IsSidecar(&pod.Spec.InitContainers[i])
	}
	if !hasSidecar {
		return nil
	}
	var apps []string
	for _, c := range pod.Spec.Containers {
		if isRunning[c.Name] {
			apps = append(apps, c.Name)
		}
	}
	out := map[string][]string{}
	next := "" // the sidecar after this one in the pod's order
	for i := len(pod.Spec.InitContainers) - 1; i >= 0; i-- {
		c := &pod.Spec.InitContainers[i]
		if !IsSidecar(c) {
			continue
		}
		if isRunning[c.Name] {
			deps := append([]string(nil), apps...)
			if next != "" && isRunning[next] {
				deps = append(deps, next)
			}
			if len(deps) > 0 {
				out[c.Name] = deps
			}
		}
		next = c.Name
	}
	return out
}
