package podplan

import (
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
	if l.Image != "" && st.Image == "" {
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
	if sandboxReady && sb.IP != "" {
		st.PodIP = sb.IP
		st.PodIPs = []corev1.PodIP{{IP: sb.IP}}
	} else if sandboxReady && pod.Spec.HostNetwork {
		st.PodIP = in.HostIP
		st.PodIPs = []corev1.PodIP{{IP: in.HostIP}}
	}
	sbID := ""
	if sb != nil {
		sbID = sb.ID
	}
	initDone := allInitDone(pod, in.Observed, sbID) || (len(pod.Spec.InitContainers) == 0)
	initFailedForGood := false // a failed init container that is not restarted
	for i := range pod.Spec.InitContainers {
		c := &pod.Spec.InitContainers[i]
		cs := containerStatus(in, c, true, initDone, sandboxReady)
		if !IsSidecar(c) {
			cs.Ready = cs.State.Terminated != nil && cs.State.Terminated.ExitCode == 0
			if l := in.Observed.Latest(c.Name); l != nil && l.State == StateExited && l.ExitCode != 0 && !ContainerShouldRestart(c, &pod.Spec, l.ExitCode) {
				initFailedForGood = true
			}
		}
		st.InitContainerStatuses = append(st.InitContainerStatuses, cs)
	}
	allReady := true
	var running, waiting, succeeded, failed, stoppedForGood int
	for i := range pod.Spec.Containers {
		c := &pod.Spec.Containers[i]
		cs := containerStatus(in, c, false, initDone, sandboxReady)
		if !cs.Ready {
			allReady = false
		}
		stopped := func(exitCode int32) {
			if exitCode == 0 {
				succeeded++
			} else {
				failed++
			}
			if !ContainerShouldRestart(c, &pod.Spec, exitCode) {
				stoppedForGood++
			}
		}
		switch {
		case cs.State.Running != nil:
			running++
		case cs.State.Terminated != nil:
			stopped(cs.State.Terminated.ExitCode)
		case cs.State.Waiting != nil && cs.LastTerminationState.Terminated != nil:
			// restarting: counts as stopped for the phase
			stopped(cs.LastTerminationState.Terminated.ExitCode)
		default:
			waiting++
		}
		st.ContainerStatuses = append(st.ContainerStatuses, cs)
	}

	// phase, as upstream's getPhase (with ContainerRestartRules: the restart policies
	// are each container's, ContainerShouldRestart)
	switch {
	case !initDone && initFailedForGood:
		st.Phase = corev1.PodFailed
	case !initDone:
		st.Phase = corev1.PodPending
	case waiting > 0:
		st.Phase = corev1.PodPending
	case running > 0:
		st.Phase = corev1.PodRunning
	case succeeded+failed > 0:
		switch {
		case succeeded+failed != stoppedForGood:
			st.Phase = corev1.PodRunning // at least one is restarting
		case failed == 0:
			st.Phase = corev1.PodSucceeded
		default:
			st.Phase = corev1.PodFailed
		}
	default:
		st.Phase = corev1.PodPending
	}
	if Terminal(pod) {
		st.Phase = prev.Phase // terminal phases are final
		st.Reason, st.Message = prev.Reason, prev.Message
	}
	if in.Evicted != "" && !Terminal(pod) {
		st.Phase, st.Reason, st.Message = corev1.PodFailed, "Evicted", in.Evicted
	}

	cond := func(typ corev1.PodConditionType, ok bool, reason string) corev1.PodCondition {
		c := corev1.PodCondition{Type: typ, Status: corev1.ConditionFalse, Reason: reason}
		if ok {
			c.Status, c.Reason = corev1.ConditionTrue, ""
		}
		return c
	}
	containersReady := allReady && len(pod.Spec.Containers) > 0 && st.Phase == corev1.PodRunning
	gatesOK := true
	for _, g := range pod.Spec.ReadinessGates {
		found := false
		for _, c := range prev.Conditions {
			if c.Type == g.ConditionType && c.Status == corev1.ConditionTrue {
				found = true
			}
		}
		gatesOK = gatesOK && found
	}
	notReadyReason := "ContainersNotReady"
	if st.Phase == corev1.PodSucceeded || st.Phase == corev1.PodFailed {
		notReadyReason = "PodCompleted"
	}
	readyReason := notReadyReason
	if containersReady && !gatesOK {
		readyReason = "ReadinessGatesNotReady"
	}
	initReason := "ContainersNotInitialized"
	if st.Phase == corev1.PodSucceeded || st.Phase == corev1.PodFailed {
		initReason = "PodCompleted"
	}
	want := []corev1.PodCondition{
		cond(corev1.PodReadyToStartContainers, sandboxReady, ""),
		cond(corev1.PodInitialized, initDone, initReason),
		cond(corev1.ContainersReady, containersReady, notReadyReason),
		cond(corev1.PodReady, containersReady && gatesOK, readyReason),
	}
	if in.Evicted != "" && !Terminal(pod) {
		want = append(want, corev1.PodCondition{Type: corev1.DisruptionTarget, Status: corev1.ConditionTrue,
			Reason: "TerminationByKubelet", Message: in.Evicted})
	}
	old := map[corev1.PodConditionType]corev1.PodCondition{}
	for _, c := range prev.Conditions {
		old[c.Type] = c
	}
	ours := map[corev1.PodConditionType]bool{}
	for _, c := range want {
		ours[c.Type] = true
		c.LastTransitionTime = t(in.Now)
		if o, ok := old[c.Type]; ok && o.Status == c.Status {
			c.LastTransitionTime = o.LastTransitionTime
			c.LastProbeTime = o.LastProbeTime
		}
		st.Conditions = append(st.Conditions, c)
	}
	for _, c := range prev.Conditions {
		if !ours[c.Type] {
			st.Conditions = append(st.Conditions, c) // PodScheduled, readiness gates, …
		}
	}
	return st
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
