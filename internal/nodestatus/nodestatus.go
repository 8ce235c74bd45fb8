// Package nodestatus holds the pure part of the NodeStatusReconciler: allocatable
// arithmetic, pressure and Ready conditions, the registered Node, the Lease, and the
// "did anything change" test. Nothing here does I/O or reads a clock.
package nodestatus

import (
	"fmt"
	"sort"
	"strings"

	coordinationv1 "k8s.io/api/coordination/v1"
	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/api/equality"
	"k8s.io/apimachinery/pkg/api/resource"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/utils/ptr"

	"github.com/nodekeeper/nodekeeper/api/v1alpha1"
)

// Upstream kubelet condition reasons and messages.
const (
	ReasonReady                  = "KubeletReady"
	ReasonNotReady               = "KubeletNotReady"
	ReasonSufficientMemory       = "KubeletHasSufficientMemory"
	ReasonInsufficientMemory     = "KubeletHasInsufficientMemory"
	ReasonNoDiskPressure         = "KubeletHasNoDiskPressure"
	ReasonDiskPressure           = "KubeletHasDiskPressure"
	ReasonSufficientPID          = "KubeletHasSufficientPID"
	ReasonInsufficientPID        = "KubeletHasInsufficientPID"
	MessageReady                 = "kubelet is posting ready status"
	LeaseNamespace               = "kube-node-lease"
	evictionSignalMemory         = v1alpha1.SignalMemoryAvailable
	evictionSignalNodeFs         = v1alpha1.SignalNodeFsAvailable
	evictionSignalPID            = v1alpha1.SignalPIDAvailable
	hugePagesResourceNamePrefix  = corev1.ResourceHugePagesPrefix
	runtimeConditionRuntimeReady = "RuntimeReady"
	runtimeConditionNetworkReady = "NetworkReady"
)

// Thresholds are parsed hard eviction thresholds by signal name.
type Thresholds map[string]v1alpha1.Threshold

// ParseThresholds parses a validated evictionHard map.
func ParseThresholds(m map[string]string) (Thresholds, error) {
	out := Thresholds{}
	for sig, v := range m {
		t, err := v1alpha1.ParseThreshold(v)
		if err != nil {
			return nil, fmt.Errorf("evictionHard[%s]: %w", sig, err)
		}
		out[sig] = t
	}
	return out, nil
}

// Allocatable is capacity − systemReserved − kubeReserved − the hard eviction
// threshold of the resource (memory.available for memory, nodefs.available for
// ephemeral-storage), never below zero. As upstream, memory set aside as hugepages is
// also not allocatable as memory.
func Allocatable(capacity, systemReserved, kubeReserved corev1.ResourceList, hard Thresholds) corev1.ResourceList {
	out := corev1.ResourceList{}
	for name, c := range capacity {
		v := c.DeepCopy()
		if r, ok := systemReserved[name]; ok {
			v.Sub(r)
		}
		if r, ok := kubeReserved[name]; ok {
			v.Sub(r)
		}
		if sig := evictionSignalFor(name); sig != "" {
			if t, ok := hard[sig]; ok {
				v.Sub(t.Value(c))
			}
		}
		if v.Sign() < 0 {
			v = *resource.NewQuantity(0, c.Format)
		}
		out[name] = v
	}
	for name, hp := range capacity {
		if !strings.HasPrefix(string(name), hugePagesResourceNamePrefix) {
			continue
		}
		if m, ok := out[corev1.ResourceMemory]; ok {
			m.Sub(hp)
			if m.Sign() < 0 {
				m = *resource.NewQuantity(0, m.Format)
			}
			out[corev1.ResourceMemory] = m
		}
	}
	return out
}

func evictionSignalFor(r corev1.ResourceName) string {
	switch r {
	case corev1.ResourceMemory:
		return evictionSignalMemory
	case corev1.ResourceEphemeralStorage:
		return evictionSignalNodeFs
	}
	return ""
}

// Signal is one observation of an eviction signal.
type Signal struct {
	Available resource.Quantity
	Capacity  resource.Quantity
}

// Pressure tells which pressures the observed signals put the node under: a signal
// is over its threshold when what is available is below it.
type Pressure struct{ Memory, Disk, PID bool }

// ComputePressure compares observations with hard thresholds.
func ComputePressure(obs map[string]Signal, hard Thresholds) Pressure {
	over := func(sig string) bool {
		t, ok := hard[sig]
		o, seen := obs[sig]
		if !ok || !seen {
			return false
		}
		th := t.Value(o.Capacity)
		return o.Available.Cmp(th) < 0
	}
	return Pressure{
		Memory: over(evictionSignalMemory),
		Disk: over(evictionSignalNodeFs) || over(v1alpha1.SignalNodeFsInodesFree) ||
			over(v1alpha1.SignalImageFsAvailable) || over(v1alpha1.SignalImageFsInodesFree),
		PID: over(evictionSignalPID),
	}
}

// RuntimeHealth is what the runtime said about itself: Err when it could not be
// asked, else its RuntimeReady/NetworkReady conditions.
type RuntimeHealth struct {
	Err        error
	Conditions []RuntimeCondition
}

// RuntimeCondition mirrors a CRI RuntimeCondition.
type RuntimeCondition struct {
	Type, Reason, Message string
	Status                bool
}

// readyErrors lists why the node is not ready, in upstream's wording.
func readyErrors(rt RuntimeHealth, capacity corev1.ResourceList) []string {
	var errs []string
	if rt.Err != nil {
		errs = append(errs, fmt.Sprintf("container runtime is down: %v", rt.Err))
	} else {
		seen := map[string]RuntimeCondition{}
		for _, c := range rt.Conditions {
			seen[c.Type] = c
		}
		for _, t := range []string{runtimeConditionRuntimeReady, runtimeConditionNetworkReady} {
			c, ok := seen[t]
			switch {
			case !ok:
				errs = append(errs, fmt.Sprintf("container runtime status check may not have completed yet: %s missing", t))
			case !c.Status && t == runtimeConditionNetworkReady:
				errs = append(errs, fmt.Sprintf("container runtime network not ready: NetworkReady=false reason:%s message:%s", c.Reason, c.Message))
			case !c.Status:
				errs = append(errs, fmt.Sprintf("container runtime not ready: RuntimeReady=false reason:%s message:%s", c.Reason, c.Message))
			}
		}
	}
	var missing []string
	for _, r := range []corev1.ResourceName{corev1.ResourceCPU, corev1.ResourceMemory, corev1.ResourcePods} {
		if _, ok := capacity[r]; !ok {
			missing = append(missing, string(r))
		}
	}
	if len(missing) > 0 {
		errs = append(errs, fmt.Sprintf("missing node capacity for resources: %s", strings.Join(missing, ", ")))
	}
	return errs
}

// Conditions returns the node's four conditions for the observations, keeping each
// previous condition's lastTransitionTime unless its status changed. Heartbeat times are
// set to now. Conditions of other types in prev (set by others) are kept as they were.
func Conditions(prev []corev1.NodeCondition, rt RuntimeHealth, capacity corev1.ResourceList, p Pressure, now metav1.Time) []corev1.NodeCondition {
	ready := corev1.NodeCondition{Type: corev1.NodeReady, Status: corev1.ConditionTrue, Reason: ReasonReady, Message: MessageReady}
	if errs := readyErrors(rt, capacity); len(errs) > 0 {
		ready.Status, ready.Reason, ready.Message = corev1.ConditionFalse, ReasonNotReady, strings.Join(errs, ", ")
	}
	pick := func(t corev1.NodeConditionType, on bool, yes, yesMsg, no, noMsg string) corev1.NodeCondition {
		if on {
			return corev1.NodeCondition{Type: t, Status: corev1.ConditionTrue, Reason: yes, Message: yesMsg}
		}
		return corev1.NodeCondition{Type: t, Status: corev1.ConditionFalse, Reason: no, Message: noMsg}
	}
	want := []corev1.NodeCondition{
		pick(corev1.NodeMemoryPressure, p.Memory, ReasonInsufficientMemory, "kubelet has insufficient memory available", ReasonSufficientMemory, "kubelet has sufficient memory available"),
		pick(corev1.NodeDiskPressure, p.Disk, ReasonDiskPressure, "kubelet has disk pressure", ReasonNoDiskPressure, "kubelet has no disk pressure"),
		pick(corev1.NodePIDPressure, p.PID, ReasonInsufficientPID, "kubelet has insufficient PID available", ReasonSufficientPID, "kubelet has sufficient PID available"),
		ready,
	}
	old := map[corev1.NodeConditionType]corev1.NodeCondition{}
	for _, c := range prev {
		old[c.Type] = c
	}
	var out []corev1.NodeCondition
	ours := map[corev1.NodeConditionType]bool{}
	for _, c := range want {
		ours[c.Type] = true
		c.LastHeartbeatTime = now
		c.LastTransitionTime = now
		if o, ok := old[c.Type]; ok && o.Status == c.Status && !o.LastTransitionTime.IsZero() {
			c.LastTransitionTime = o.LastTransitionTime
		}
		out = append(out, c)
	}
	for _, c := range prev {
		if !ours[c.Type] {
			out = append(out, c)
		}
	}
	return out
}

// Observed is everything the node status is computed from.
type Observed struct {
	Capacity       corev1.ResourceList
	SystemReserved corev1.ResourceList
	KubeReserved   corev1.ResourceList
	Hard           Thresholds
	Signals        map[string]Signal
	Runtime        RuntimeHealth
	RuntimeVersion string // "name://version", empty when unknown
	NodeInfo       corev1.NodeSystemInfo
	Addresses      []corev1.NodeAddress
	Images         []corev1.ContainerImage
	KubeletPort    int32
	// DeviceCapacity and DeviceAllocatable are the device plugins' resources: all
	// their devices, and the healthy ones.
	DeviceCapacity, DeviceAllocatable corev1.ResourceList
}

// Status computes the node's status from observations and the previous status.
func Status(prev corev1.NodeStatus, o Observed, now metav1.Time) corev1.NodeStatus {
	st := *prev.DeepCopy()
	// as upstream's MachineInfo setter: the device plugins' resources join the capacity,
	// allocatable is computed over it and then takes the plugins' healthy counts
	capacity := o.Capacity.DeepCopy()
	for k, v := range o.DeviceCapacity {
		if capacity == nil {
			capacity = corev1.ResourceList{}
		}
		capacity[k] = v.DeepCopy()
	}
	st.Capacity = capacity
	st.Allocatable = Allocatable(capacity, o.SystemReserved, o.KubeReserved, o.Hard)
	for k, v := range o.DeviceAllocatable {
		st.Allocatable[k] = v.DeepCopy()
	}
	st.Conditions = Conditions(prev.Conditions, o.Runtime, o.Capacity, ComputePressure(o.Signals, o.Hard), now)
	st.NodeInfo = o.NodeInfo
	if o.RuntimeVersion != "" {
		st.NodeInfo.ContainerRuntimeVersion = o.RuntimeVersion
	} else {
		st.NodeInfo.ContainerRuntimeVersion = prev.NodeInfo.ContainerRuntimeVersion
	}
	st.Addresses = o.Addresses
	if o.Images != nil {
		st.Images = o.Images
	}
	if o.KubeletPort != 0 {
		st.DaemonEndpoints.KubeletEndpoint.Port = o.KubeletPort
	}
	return st
}

// Changed tells whether next differs from prev in anything but heartbeat times.
func Changed(prev, next corev1.NodeStatus) bool {
	strip := func(s corev1.NodeStatus) corev1.NodeStatus {
		s = *s.DeepCopy()
		for i := range s.Conditions {
			s.Conditions[i].LastHeartbeatTime = metav1.Time{}
		}
		sort.Slice(s.Conditions, func(i, j int) bool { return s.Conditions[i].Type < s.Conditions[j].Type })
		return s
	}
	return !equality.Semantic.DeepEqual(strip(prev), strip(next))
}

// LastHeartbeat is when the status was last written: the Ready condition's heartbeat.
func LastHeartbeat(st corev1.NodeStatus) metav1.Time {
	for _, c := range st.Conditions {
		if c.Type == corev1.NodeReady {
			return c.LastHeartbeatTime
		}
	}
	return metav1.Time{}
}

// RegistrationLabels are the labels a node registers with: the well-known ones, then
// the configured ones (which may not override the well-known ones).
func RegistrationLabels(nodeName, goos, goarch string, extra map[string]string) map[string]string {
	out := map[string]string{}
	for k, v := range extra {
		out[k] = v
	}
	out[corev1.LabelHostname] = nodeName
	out[corev1.LabelOSStable] = goos
	out[corev1.LabelArchStable] = goarch
	return out
}

// NewNode is the Node to register.
func NewNode(name string, labels map[string]string, taints []corev1.Taint, podCIDR string) *corev1.Node {
	n := &corev1.Node{
		ObjectMeta: metav1.ObjectMeta{Name: name, Labels: labels,
			Annotations: map[string]string{"volumes.kubernetes.io/controller-managed-attach-detach": "true"}},
		Spec: corev1.NodeSpec{Taints: taints},
	}
	if podCIDR != "" {
		cidrs := strings.Split(podCIDR, ",")
		n.Spec.PodCIDR = strings.TrimSpace(cidrs[0])
		for _, c := range cidrs {
			n.Spec.PodCIDRs = append(n.Spec.PodCIDRs, strings.TrimSpace(c))
		}
	}
	return n
}

// Lease returns the desired node Lease renewed at now: holder is the node, exactly
// one ownerReference pointing at the Node.
func Lease(prev *coordinationv1.Lease, node *corev1.Node, durationSeconds int32, now metav1.MicroTime) *coordinationv1.Lease {
	l := &coordinationv1.Lease{}
	if prev != nil {
		l = prev.DeepCopy()
	}
	l.Name, l.Namespace = node.Name, LeaseNamespace
	l.Spec.HolderIdentity = ptr.To(node.Name)
	l.Spec.LeaseDurationSeconds = ptr.To(durationSeconds)
	l.Spec.RenewTime = &now
	l.OwnerReferences = []metav1.OwnerReference{{
		APIVersion: "v1", Kind: "Node", Name: node.Name, UID: node.UID,
	}}
	return l
}
