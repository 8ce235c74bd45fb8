package podplan

import (
	"fmt"
	"strings"
	"time"

	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/api/equality"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/utils/ptr"
)

// StatusInput is everything the pod status is computed from.
type StatusInput struct {
	Pod      *corev1.Pod
	Observed Observed
	// Waiting holds why containers are not running: back-off from Plan, and errors met
	// while applying it (ErrImagePull, ImagePullBackOff, CreateContainerConfigError…).
	Waiting map[string]Waiting
	// Ready overrides readiness per running container (probes); absent means a running
	// container without a readiness probe is ready.
	Ready map[string]bool
	// Started overrides `started` per running container (startup probes).
	Started     map[string]bool
	HostIP      string
	RuntimeName string // prefix of containerIDs, e.g. "containerd"
	Now         time.Time
	// Evicted is the message of the kubelet's eviction of this pod ("" : not evicted):
	// the pod ends Failed with reason Evicted and a DisruptionTarget condition.
	Evicted string
	// RecursiveReadOnlyMounts is whether the runtime makes recursive read-only mounts:
	// the containers' volumeMounts statuses say which mounts are.
	RecursiveReadOnlyMounts bool
	// Terminal: the pod has been terminated (deleted, its containers killed) and none
	// of its containers will run again. As the kubelet's final status for such a pod
	// (generateAPIPodStatus with podIsTerminal, then the status manager's TerminatePod):
	// containers that are not terminated are reported terminated (137,
	// ContainerStatusUnknown) once the pod has initialized, and the phase is Succeeded
	// when every regular container exited 0, else Failed.
	Terminal bool
}

func t(ts time.Time) metav1.Time {
	if ts.IsZero() {
		return metav1.Time{}
	}
	return metav1.NewTime(ts.Truncate(time.Second))
}

func terminated(c *Container, runtime string) *corev1.ContainerStateTerminated {
	reason := c.Reason
	if reason == "" {
		reason = "Error"
		if c.ExitCode == 0 {
			reason = "Completed"
		}
	}
	return &corev1.ContainerStateTerminated{
		ExitCode: c.ExitCode, Reason: reason, Message: c.Message,
		StartedAt: t(c.StartedAt), FinishedAt: t(c.FinishedAt), ContainerID: runtime + "://" + c.ID,
	}
}

func containerStatus(in StatusInput, c *corev1.Container, init, initDone, sandboxReady bool) corev1.ContainerStatus {
	st := corev1.ContainerStatus{Name: c.Name, Image: c.Image, Started: ptr.To(false),
		VolumeMounts: VolumeMountStatuses(c, in.RecursiveReadOnlyMounts)}
	inst := in.Observed.instances(c.Name, "")
	w, waiting := in.Waiting[c.Name]
	if len(inst) == 0 {
		reason := "ContainerCreating"
		if !sandboxReady || (!init && !initDone) || init {
			reason = "PodInitializing"
		}
		if waiting {
			st.State.Waiting = &corev1.ContainerStateWaiting{Reason: w.Reason, Message: w.Message}
		} else {
			st.State.Waiting = &corev1.ContainerStateWaiting{Reason: reason}
		}
		if !init && initDone && sandboxReady && !waiting {
			st.State.Waiting.Reason = "ContainerCreating"
		}
		return st
	}
	l := &inst[0]
	st.RestartCount = int32(l.Attempt)
	st.ContainerID = in.RuntimeName + "://" + l.ID
	st.ImageID = l.ImageRef
	if l.Image != "" {
		// as the kubelet: the image the runtime says the container runs (after a spec
		// update, the old one until the container is replaced)
		st.Image = l.Image
	}
	// the previous exited instance, for lastState
	for i := 1; i < len(inst); i++ {
		if inst[i].State == StateExited {
			st.LastTerminationState.Terminated = terminated(&inst[i], in.RuntimeName)
			break
		}
	}
	switch l.State {
	case StateRunning:
		st.State.Running = &corev1.ContainerStateRunning{StartedAt: t(l.StartedAt)}
		st.Started = ptr.To(true)
		if s, ok := in.Started[c.Name]; ok {
			st.Started = ptr.To(s)
		}
		ready := true
		if r, ok := in.Ready[c.Name]; ok {
			ready = r
		} else if c.ReadinessProbe != nil {
			ready = false
		}
		st.Ready = ready
	case StateExited:
		if waiting {
			st.State.Waiting = &corev1.ContainerStateWaiting{Reason: w.Reason, Message: w.Message}
			st.LastTerminationState = corev1.ContainerState{Terminated: terminated(l, in.RuntimeName)}
		} else {
			st.State.Terminated = terminated(l, in.RuntimeName)
		}
	default:
		if waiting {
			st.State.Waiting = &corev1.ContainerStateWaiting{Reason: w.Reason, Message: w.Message}
		} else {
			st.State.Waiting = &corev1.ContainerStateWaiting{Reason: "ContainerCreating"}
		}
	}
	return st
}

// Status computes the pod's status. Conditions keep their lastTransitionTime unless
// their status changes; startTime and qosClass, once set, are kept.
func Status(in StatusInput) corev1.PodStatus {
	pod := in.Pod
	prev := pod.Status
	st := corev1.PodStatus{
		HostIP: in.HostIP, StartTime: prev.StartTime, QOSClass: prev.QOSClass,
		NominatedNodeName: prev.NominatedNodeName,
	}
	if in.HostIP != "" {
		st.HostIPs = []corev1.HostIP{{IP: in.HostIP}}
	}
	if st.StartTime == nil {
		st.StartTime = ptr.To(t(in.Now))
	}
	if st.QOSClass == "" {
		st.QOSClass = QOSClass(pod)
	}
	sb := in.Observed.latestSandbox()
	sandboxReady := sb != nil && sb.Ready
	switch {
	case pod.Spec.HostNetwork:
		// as generateAPIPodStatus: host-network pods have the node's IP from the start
		if in.HostIP != "" {
			st.PodIP = in.HostIP
			st.PodIPs = []corev1.PodIP{{IP: in.HostIP}}
		}
	case sandboxReady && sb.IP != "":
		st.PodIP = sb.IP
		st.PodIPs = []corev1.PodIP{{IP: sb.IP}}
	case !in.Observed.anySandboxReady() && prev.PodIP != "":
		// as the PLEG's getPodIPs: a pod with no ready sandbox (its sandbox stopped
		// because it finished or is being deleted) keeps the IPs it had
		st.PodIP = prev.PodIP
		st.PodIPs = append([]corev1.PodIP(nil), prev.PodIPs...)
		if len(st.PodIPs) == 0 {
			st.PodIPs = []corev1.PodIP{{IP: prev.PodIP}}
		}
	}
	sbID := ""
	if sb != nil {
		sbID = sb.ID
	}
	initDone := allInitDone(pod, in.Observed, sbID) || (len(pod.Spec.InitContainers) == 0)
	for i := range pod.Spec.InitContainers {
		c := &pod.Spec.InitContainers[i]
		cs := containerStatus(in, c, true, initDone, sandboxReady)
		if !IsSidecar(c) {
			cs.Ready = cs.State.Terminated != nil && cs.State.Terminated.ExitCode == 0
		}
		st.InitContainerStatuses = append(st.InitContainerStatuses, cs)
	}
	for i := range pod.Spec.Containers {
		c := &pod.Spec.Containers[i]
		cs := containerStatus(in, c, false, initDone, sandboxReady)
		st.ContainerStatuses = append(st.ContainerStatuses, cs)
	}
	for i := range pod.Spec.EphemeralContainers {
		c := (*corev1.Container)(&pod.Spec.EphemeralContainers[i].EphemeralContainerCommon)
		cs := containerStatus(in, c, false, initDone, sandboxReady)
		if len(in.Observed.instances(c.Name, "")) == 0 {
			// convertToAPIContainerStatuses' default waiting state
			reason := "ContainerCreating"
			if len(pod.Spec.InitContainers) > 0 {
				reason = "PodInitializing"
			}
			if w, ok := in.Waiting[c.Name]; ok {
				cs.State.Waiting = &corev1.ContainerStateWaiting{Reason: w.Reason, Message: w.Message}
			} else {
				cs.State.Waiting = &corev1.ContainerStateWaiting{Reason: reason}
			}
		}
		cs.Ready, cs.Started = false, nil // no probes: never ready, as upstream
		st.EphemeralContainerStatuses = append(st.EphemeralContainerStatuses, cs)
	}
	if in.Terminal {
		terminateStatuses(pod, &st)
	}

	st.Phase = phase(pod, &st, in.Terminal, activeRegularStarted(pod, in.Observed, sbID))
	if in.Terminal && !IsStatic(pod) && !Terminal(pod) && st.Phase != corev1.PodSucceeded && st.Phase != corev1.PodFailed {
		// as the status manager's TerminatePod: a terminated pod always ends terminal
		st.Phase = corev1.PodFailed
	}
	if st.Phase == prev.Phase {
		st.Reason, st.Message = prev.Reason, prev.Message // they go with the phase
	}
	if PastActiveDeadline(pod, in.Now) && !Terminal(pod) {
		// the kubelet's activeDeadlineHandler (a pod sync handler's ShouldEvict)
		st.Phase, st.Reason, st.Message = corev1.PodFailed, DeadlineExceededReason, DeadlineExceededMessage
	}
	if Terminal(pod) {
		st.Phase = prev.Phase // terminal phases are final
		st.Reason, st.Message = prev.Reason, prev.Message
	}
	if in.Evicted != "" && !Terminal(pod) {
		st.Phase, st.Reason, st.Message = corev1.PodFailed, "Evicted", in.Evicted
	}

	containersReady := containersReadyCondition(pod, &st)
	// as generateAPIPodStatus: the conditions the kubelet does not own first, as they
	// were (a DisruptionTarget of our eviction replacing any earlier one), then the
	// kubelet's in its order
	var want []corev1.PodCondition
	for _, c := range prev.Conditions {
		if !kubeletCondition(c.Type) {
			want = append(want, c)
		}
	}
	if in.Evicted != "" && !Terminal(pod) {
		dt := corev1.PodCondition{Type: corev1.DisruptionTarget, Status: corev1.ConditionTrue,
			Reason: "TerminationByKubelet", Message: in.Evicted}
		replaced := false
		for i := range want {
			if want[i].Type == dt.Type {
				want[i], replaced = dt, true
			}
		}
		if !replaced {
			want = append(want, dt)
		}
	}
	want = append(want,
		readyToStartCondition(in.Observed),
		initializedCondition(pod, &st),
		readyCondition(pod, prev.Conditions, containersReady),
		containersReady,
		// a pod the kubelet sees is scheduled (its own pods, static pods and pods
		// created with spec.nodeName alike)
		corev1.PodCondition{Type: corev1.PodScheduled, Status: corev1.ConditionTrue},
	)
	old := map[corev1.PodConditionType]corev1.PodCondition{}
	for _, c := range prev.Conditions {
		old[c.Type] = c
	}
	for _, c := range want {
		// as the status manager's updateLastTransitionTime: kept unless the status changes
		if o, ok := old[c.Type]; ok && o.Status == c.Status {
			c.LastTransitionTime = o.LastTransitionTime
			if kubeletCondition(c.Type) {
				c.LastProbeTime = o.LastProbeTime
			}
		} else if kubeletCondition(c.Type) || c.Type == corev1.DisruptionTarget {
			c.LastTransitionTime = t(in.Now)
		}
		st.Conditions = append(st.Conditions, c)
	}
	return st
}

// The reason and message of a pod past its activeDeadlineSeconds (upstream's).
const (
	DeadlineExceededReason  = "DeadlineExceeded"
	DeadlineExceededMessage = "Pod was active on the node longer than the specified deadline"
)

// ActiveDeadline is when the pod's activeDeadlineSeconds runs out, counted from its
// status.startTime as the kubelet's activeDeadlineHandler; ok is false when the pod has
// no deadline or has not started.
func ActiveDeadline(pod *corev1.Pod) (deadline time.Time, ok bool) {
	if pod.Spec.ActiveDeadlineSeconds == nil || pod.Status.StartTime == nil || pod.Status.StartTime.IsZero() {
		return time.Time{}, false
	}
	return pod.Status.StartTime.Add(time.Duration(*pod.Spec.ActiveDeadlineSeconds) * time.Second), true
}

// PastActiveDeadline tells whether the pod has been active longer than its
// activeDeadlineSeconds at now.
func PastActiveDeadline(pod *corev1.Pod, now time.Time) bool {
	d, ok := ActiveDeadline(pod)
	return ok && !now.Before(d)
}

// kubeletCondition is kubetypes.PodConditionByKubelet: the conditions the kubelet owns
// (and rewrites on every status).
func kubeletCondition(t corev1.PodConditionType) bool {
	switch t {
	case corev1.PodScheduled, corev1.PodReady, corev1.PodInitialized, corev1.ContainersReady,
		corev1.PodResizeInProgress, corev1.PodResizePending, corev1.PodReadyToStartContainers:
		return true
	}
	return false
}

// readyToStartCondition is upstream's GeneratePodReadyToStartContainersCondition: True
// when the pod has a ready sandbox that needs no replacing (PodSandboxChanged).
func readyToStartCondition(o Observed) corev1.PodCondition {
	msg := ""
	nready := 0
	for i := range o.Sandboxes {
		if o.Sandboxes[i].Ready {
			nready++
		}
	}
	sb := o.latestSandbox()
	switch {
	case sb == nil:
		msg = "no pod sandbox exists"
	case nready > 1:
		msg = "multiple pod sandboxes are ready and need to be reconciled"
	case !sb.Ready:
		msg = "pod sandbox is not ready"
	default:
		return corev1.PodCondition{Type: corev1.PodReadyToStartContainers, Status: corev1.ConditionTrue}
	}
	return corev1.PodCondition{Type: corev1.PodReadyToStartContainers, Status: corev1.ConditionFalse,
		Reason: "PodSandboxNotReady", Message: msg}
}

// initializedCondition is upstream's GeneratePodInitializedCondition: every regular
// init container succeeded and every sidecar has started, or an app container has
// already run (sidecars restarting later do not take it back).
func initializedCondition(pod *corev1.Pod, st *corev1.PodStatus) corev1.PodCondition {
	var unknown, incomplete []string
	for i := range pod.Spec.InitContainers {
		c := &pod.Spec.InitContainers[i]
		cs, ok := findStatus(st.InitContainerStatuses, c.Name)
		switch {
		case !ok:
			unknown = append(unknown, c.Name)
		case IsSidecar(c) && (cs.Started == nil || !*cs.Started):
			incomplete = append(incomplete, c.Name)
		case !IsSidecar(c) && !cs.Ready:
			incomplete = append(incomplete, c.Name)
		}
	}
	if st.Phase == corev1.PodSucceeded && len(unknown) == 0 {
		return corev1.PodCondition{Type: corev1.PodInitialized, Status: corev1.ConditionTrue, Reason: "PodCompleted"}
	}
	for _, cs := range st.ContainerStatuses {
		if cs.State.Running != nil || cs.State.Terminated != nil {
			return corev1.PodCondition{Type: corev1.PodInitialized, Status: corev1.ConditionTrue}
		}
	}
	var msgs []string
	if len(unknown) > 0 {
		msgs = append(msgs, fmt.Sprintf("containers with unknown status: %s", unknown))
	}
	if len(incomplete) > 0 {
		msgs = append(msgs, fmt.Sprintf("containers with incomplete status: %s", incomplete))
	}
	if len(msgs) > 0 {
		return corev1.PodCondition{Type: corev1.PodInitialized, Status: corev1.ConditionFalse,
			Reason: "ContainersNotInitialized", Message: strings.Join(msgs, ", ")}
	}
	return corev1.PodCondition{Type: corev1.PodInitialized, Status: corev1.ConditionTrue}
}

// containersReadyCondition is upstream's GenerateContainersReadyCondition: every app
// container and every sidecar is ready.
func containersReadyCondition(pod *corev1.Pod, st *corev1.PodStatus) corev1.PodCondition {
	var unknown, unready []string
	for i := range pod.Spec.InitContainers {
		c := &pod.Spec.InitContainers[i]
		if !IsSidecar(c) {
			continue
		}
		if cs, ok := findStatus(st.InitContainerStatuses, c.Name); !ok {
			unknown = append(unknown, c.Name)
		} else if !cs.Ready {
			unready = append(unready, c.Name)
		}
	}
	for i := range pod.Spec.Containers {
		c := &pod.Spec.Containers[i]
		if cs, ok := findStatus(st.ContainerStatuses, c.Name); !ok {
			unknown = append(unknown, c.Name)
		} else if !cs.Ready {
			unready = append(unready, c.Name)
		}
	}
	switch {
	case st.Phase == corev1.PodSucceeded && len(unknown) == 0:
		return corev1.PodCondition{Type: corev1.ContainersReady, Status: corev1.ConditionFalse, Reason: "PodCompleted"}
	case st.Phase == corev1.PodFailed:
		return corev1.PodCondition{Type: corev1.ContainersReady, Status: corev1.ConditionFalse, Reason: "PodFailed"}
	}
	var msgs []string
	if len(unknown) > 0 {
		msgs = append(msgs, fmt.Sprintf("containers with unknown status: %s", unknown))
	}
	if len(unready) > 0 {
		msgs = append(msgs, fmt.Sprintf("containers with unready status: %s", unready))
	}
	if len(msgs) > 0 {
		return corev1.PodCondition{Type: corev1.ContainersReady, Status: corev1.ConditionFalse,
			Reason: "ContainersNotReady", Message: strings.Join(msgs, ", ")}
	}
	return corev1.PodCondition{Type: corev1.ContainersReady, Status: corev1.ConditionTrue}
}

// readyCondition is upstream's GeneratePodReadyCondition: ContainersReady and every
// readiness gate's condition True.
func readyCondition(pod *corev1.Pod, conds []corev1.PodCondition, containersReady corev1.PodCondition) corev1.PodCondition {
	if containersReady.Status != corev1.ConditionTrue {
		return corev1.PodCondition{Type: corev1.PodReady, Status: containersReady.Status,
			Reason: containersReady.Reason, Message: containersReady.Message}
	}
	var msgs []string
	for _, g := range pod.Spec.ReadinessGates {
		var found *corev1.PodCondition
		for i := range conds {
			if conds[i].Type == g.ConditionType {
				found = &conds[i]
			}
		}
		switch {
		case found == nil:
			msgs = append(msgs, fmt.Sprintf("corresponding condition of pod readiness gate %q does not exist.", string(g.ConditionType)))
		case found.Status != corev1.ConditionTrue:
			msgs = append(msgs, fmt.Sprintf("the status of pod readiness gate %q is not \"True\", but %v", string(g.ConditionType), found.Status))
		}
	}
	if len(msgs) > 0 {
		return corev1.PodCondition{Type: corev1.PodReady, Status: corev1.ConditionFalse,
			Reason: "ReadinessGatesNotReady", Message: strings.Join(msgs, ", ")}
	}
	return corev1.PodCondition{Type: corev1.PodReady, Status: corev1.ConditionTrue}
}

func findStatus(list []corev1.ContainerStatus, name string) (*corev1.ContainerStatus, bool) {
	for i := range list {
		if list[i].Name == name {
			return &list[i], true
		}
	}
	return nil, false
}

// phase is the kubelet's getPhase over the container statuses just computed.
// podIsTerminal: nothing will be restarted; podHasInitialized: a regular container of
// the current sandbox has started (restarting sidecars then do not make it Pending).
func phase(pod *corev1.Pod, st *corev1.PodStatus, podIsTerminal, podHasInitialized bool) corev1.PodPhase {
	find := findStatus
	pendingSidecars, pendingInits, failedInitNotRestartable := 0, 0, 0
	for i := range pod.Spec.InitContainers {
		c := &pod.Spec.InitContainers[i]
		if IsSidecar(c) {
			continue
		}
		cs, ok := find(st.InitContainerStatuses, c.Name)
		switch {
		case !ok:
			pendingInits++
		case cs.State.Running != nil:
			pendingInits++
		case cs.State.Terminated != nil:
			if code := cs.State.Terminated.ExitCode; code != 0 && !ContainerShouldRestart(c, &pod.Spec, code) {
				failedInitNotRestartable++
			}
		case cs.State.Waiting != nil:
			if lt := cs.LastTerminationState.Terminated; lt != nil {
				if lt.ExitCode != 0 && !ContainerShouldRestart(c, &pod.Spec, lt.ExitCode) {
					failedInitNotRestartable++
				}
			} else {
				pendingInits++
			}
		default:
			pendingInits++
		}
	}
	unknown, running, waiting, stopped, stoppedNotRestartable, succeeded := 0, 0, 0, 0, 0, 0
	for i := range pod.Spec.InitContainers {
		c := &pod.Spec.InitContainers[i]
		if !IsSidecar(c) {
			continue
		}
		cs, ok := find(st.InitContainerStatuses, c.Name)
		switch {
		case !ok:
			unknown++
		case cs.State.Running != nil:
			if cs.Started == nil || !*cs.Started {
				pendingSidecars++
			}
			running++
		case cs.State.Terminated != nil:
			// stopped sidecars do not count for the phase
		case cs.State.Waiting != nil:
			if cs.LastTerminationState.Terminated == nil {
				pendingSidecars++
				waiting++
			}
		default:
			pendingSidecars++
			unknown++
		}
	}
	for i := range pod.Spec.Containers {
		c := &pod.Spec.Containers[i]
		cs, ok := find(st.ContainerStatuses, c.Name)
		switch {
		case !ok:
			unknown++
		case cs.State.Running != nil:
			running++
		case cs.State.Terminated != nil:
			stopped++
			code := cs.State.Terminated.ExitCode
			if !ContainerShouldRestart(c, &pod.Spec, code) {
				stoppedNotRestartable++
			}
			if code == 0 {
				succeeded++
			}
		case cs.State.Waiting != nil:
			if lt := cs.LastTerminationState.Terminated; lt != nil {
				stopped++
				if !ContainerShouldRestart(c, &pod.Spec, lt.ExitCode) {
					stoppedNotRestartable++
				}
			} else {
				waiting++
			}
		default:
			unknown++
		}
	}
	if failedInitNotRestartable > 0 {
		return corev1.PodFailed
	}
	switch {
	case pendingInits > 0 || (pendingSidecars > 0 && !podHasInitialized), waiting > 0:
		return corev1.PodPending
	case running > 0 && unknown == 0:
		return corev1.PodRunning
	case running == 0 && stopped > 0 && unknown == 0:
		if podIsTerminal && !IsStatic(pod) {
			if stopped == succeeded {
				return corev1.PodSucceeded
			}
			return corev1.PodFailed
		}
		if stopped != stoppedNotRestartable {
			return corev1.PodRunning // restarting
		}
		if stopped == succeeded {
			return corev1.PodSucceeded
		}
		return corev1.PodFailed
	}
	return corev1.PodPending
}

// terminateStatuses is the status manager's TerminatePod: once the pod has initialized
// (judged from the status in the API, as upstream), an app container that is not
// terminated is reported terminated with 137 and ContainerStatusUnknown; so is every
// init container up to the last one that ever started.
func terminateStatuses(pod *corev1.Pod, st *corev1.PodStatus) {
	unknown := corev1.ContainerState{Terminated: &corev1.ContainerStateTerminated{
		Reason: "ContainerStatusUnknown", Message: "The container could not be located when the pod was terminated", ExitCode: 137}}
	if hasPodInitialized(pod) {
		for i := range st.ContainerStatuses {
			if st.ContainerStatuses[i].State.Terminated == nil {
				st.ContainerStatuses[i].State = *unknown.DeepCopy()
			}
		}
	}
	inits := st.InitContainerStatuses
	last := 0 // all but the suffix that never started; at least the first
	for i := len(inits) - 1; i >= 0; i-- {
		if inits[i].State.Waiting == nil || inits[i].LastTerminationState.Terminated != nil {
			last = i
			break
		}
	}
	for i := 0; i < len(inits) && i <= last; i++ {
		if inits[i].State.Terminated == nil {
			inits[i].State = *unknown.DeepCopy()
		}
	}
}

// hasPodInitialized is the status manager's: judged from the pod's status in the API.
func hasPodInitialized(pod *corev1.Pod) bool {
	if len(pod.Spec.InitContainers) == 0 {
		return true
	}
	for _, cs := range pod.Status.ContainerStatuses {
		if cs.LastTerminationState.Terminated != nil || cs.State.Waiting == nil {
			return true
		}
	}
	if l := len(pod.Status.InitContainerStatuses); l > 0 && l <= len(pod.Spec.InitContainers) {
		c, cs := &pod.Spec.InitContainers[l-1], pod.Status.InitContainerStatuses[l-1]
		if IsSidecar(c) {
			return cs.State.Running != nil && cs.Started != nil && *cs.Started
		}
		if t := cs.LastTerminationState.Terminated; t != nil && t.ExitCode == 0 {
			return true
		}
		if t := cs.State.Terminated; t != nil && t.ExitCode == 0 {
			return true
		}
	}
	return false
}

// activeRegularStarted is upstream's HasAnyActiveRegularContainerStarted: a regular
// container has an instance in the current sandbox.
func activeRegularStarted(pod *corev1.Pod, o Observed, sbID string) bool {
	if sbID == "" {
		return false
	}
	for i := range pod.Spec.Containers {
		if len(o.instances(pod.Spec.Containers[i].Name, sbID)) > 0 {
			return true
		}
	}
	return false
}

// IsStatic tells whether a pod comes from a static pod file (or another source than
// the API server): the kubelet gives such pods no terminal phase on termination.
func IsStatic(pod *corev1.Pod) bool {
	src, ok := pod.Annotations["kubernetes.io/config.source"]
	return ok && src != "api"
}

// Changed tells whether two statuses differ in anything that must be written.
func Changed(a, b corev1.PodStatus) bool { return !equality.Semantic.DeepEqual(a, b) }

// QOSClass computes the pod's QoS class as upstream: Guaranteed when every container
// has cpu and memory limits equal to its requests, BestEffort when none has any
// request or limit, Burstable otherwise.
func QOSClass(pod *corev1.Pod) corev1.PodQOSClass {
	all := append(append([]corev1.Container(nil), pod.Spec.InitContainers...), pod.Spec.Containers...)
	any, guaranteed := false, true
	for _, c := range all {
		for _, r := range []corev1.ResourceName{corev1.ResourceCPU, corev1.ResourceMemory} {
			req, hasReq := c.Resources.Requests[r]
			lim, hasLim := c.Resources.Limits[r]
			if hasReq || hasLim {
				any = true
			}
			if !hasLim {
				guaranteed = false
				continue
			}
			if hasReq && req.Cmp(lim) != 0 {
				guaranteed = false
			}
		}
	}
	switch {
	case !any:
		return corev1.PodQOSBestEffort
	case guaranteed:
		return corev1.PodQOSGuaranteed
	}
	return corev1.PodQOSBurstable
}
