package eviction

// Node-pressure eviction (upstream pkg/kubelet/eviction's managerImpl.synchronize and
// Admit): hard thresholds against the observed signals, the node conditions they give,
// admission under those conditions, the ranking of pods for the resource to reclaim and
// the message of an eviction. Pure: the observations and the pods' usage are inputs.

import (
	"fmt"
	"sort"
	"strings"
	"time"

	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/api/resource"
	"k8s.io/klog/v2"

	"github.com/nodekeeper/nodekeeper/api/v1alpha1"
	"github.com/nodekeeper/nodekeeper/internal/nodestatus"
	"github.com/nodekeeper/nodekeeper/internal/podplan"
)

// Reason is upstream's eviction.Reason: the pod status reason of an evicted pod and of
// a pod refused under pressure.
const Reason = "Evicted"

// Resources the signals reclaim (upstream's signalToResource; inodes and pids are the
// eviction manager's own resource names).
const (
	ResourceInodes corev1.ResourceName = "inodes"
	ResourcePIDs   corev1.ResourceName = "pids"
)

// ResourceOf is the resource a signal reclaims.
func ResourceOf(signal string) corev1.ResourceName {
	switch signal {
	case v1alpha1.SignalMemoryAvailable:
		return corev1.ResourceMemory
	case v1alpha1.SignalNodeFsAvailable, v1alpha1.SignalImageFsAvailable:
		return corev1.ResourceEphemeralStorage
	case v1alpha1.SignalNodeFsInodesFree, v1alpha1.SignalImageFsInodesFree:
		return ResourceInodes
	case v1alpha1.SignalPIDAvailable:
		return ResourcePIDs
	}
	return ""
}

// ConditionOf is the node condition a signal's threshold gives (signalToNodeCondition).
func ConditionOf(signal string) corev1.NodeConditionType {
	switch ResourceOf(signal) {
	case corev1.ResourceMemory:
		return corev1.NodeMemoryPressure
	case corev1.ResourceEphemeralStorage, ResourceInodes:
		return corev1.NodeDiskPressure
	case ResourcePIDs:
		return corev1.NodePIDPressure
	}
	return ""
}

// Met is a threshold crossed: what is available of the signal is below the threshold
// quantity (a percentage resolved against the signal's capacity).
type Met struct {
	Signal               string
	Threshold, Available resource.Quantity
}

// ThresholdsMet is the hard thresholds the observations cross: memory first (upstream's
// byEvictionPriority), then nodefs, imagefs (here the same filesystem unless the runtime
// keeps images elsewhere: the node's own is reclaimed first) and pid signals, by name
// within each. A signal not observed crosses nothing.
func ThresholdsMet(obs map[string]nodestatus.Signal, hard nodestatus.Thresholds) []Met {
	var out []Met
	for sig, t := range hard {
		o, ok := obs[sig]
		if !ok || ResourceOf(sig) == "" {
			continue
		}
		q := t.Value(o.Capacity)
		if o.Available.Cmp(q) < 0 {
			out = append(out, Met{Signal: sig, Threshold: q, Available: o.Available})
		}
	}
	rank := func(sig string) int {
		switch {
		case sig == v1alpha1.SignalMemoryAvailable:
			return 0
		case strings.HasPrefix(sig, "nodefs."):
			return 1
		case strings.HasPrefix(sig, "imagefs."):
			return 2
		}
		return 3
	}
	sort.Slice(out, func(i, j int) bool {
		if ri, rj := rank(out[i].Signal), rank(out[j].Signal); ri != rj {
			return ri < rj
		}
		return out[i].Signal < out[j].Signal
	})
	return out
}

// Conditions is the node conditions under which admission refuses pods: those of the
// thresholds met at now or within period before (upstream's
// evictionPressureTransitionPeriod, default 5m), given when each was last met (updated
// in place with met). Sorted.
func Conditions(lastMet map[corev1.NodeConditionType]time.Time, met []Met, now time.Time, period time.Duration) []corev1.NodeConditionType {
	for _, m := range met {
		if c := ConditionOf(m.Signal); c != "" {
			lastMet[c] = now
		}
	}
	var out []corev1.NodeConditionType
	for c, t := range lastMet {
		if now.Sub(t) <= period {
			out = append(out, c)
		} else {
			delete(lastMet, c)
		}
	}
	sort.Slice(out, func(i, j int) bool { return out[i] < out[j] })
	return out
}

// Admit is the eviction manager's admit handler: nil (admitted) without pressure
// conditions and for critical pods; under MemoryPressure alone, pods that are not
// BestEffort and BestEffort pods tolerating the memory-pressure taint; every other pod
// is refused with reason Evicted and "The node had condition: [DiskPressure]. ".
func Admit(pod *corev1.Pod, conditions []corev1.NodeConditionType) *podplan.Rejection {
	if len(conditions) == 0 || IsCritical(pod) {
		return nil
	}
	if len(conditions) == 1 && conditions[0] == corev1.NodeMemoryPressure {
		if podplan.QOSClass(pod) != corev1.PodQOSBestEffort {
			return nil
		}
		taint := corev1.Taint{Key: corev1.TaintNodeMemoryPressure, Effect: corev1.TaintEffectNoSchedule}
		for _, t := range pod.Spec.Tolerations {
			if t.ToleratesTaint(klog.Background(), &taint, false) {
				return nil
			}
		}
	}
	return &podplan.Rejection{Reason: Reason, Message: fmt.Sprintf("The node had condition: %v. ", conditions)}
}

// Usage is what a pod uses of each resource eviction reclaims, with its containers'
// memory working set and ephemeral storage (rootfs + logs) for the message.
type Usage struct {
	Memory, Disk, Inodes, PIDs int64
	Containers                 map[string]ContainerUsage
}

// ContainerUsage is one container's share of Usage.
type ContainerUsage struct{ Memory, Disk int64 }

func (u Usage) of(r corev1.ResourceName) int64 {
	switch r {
	case corev1.ResourceMemory:
		return u.Memory
	case corev1.ResourceEphemeralStorage:
		return u.Disk
	case ResourceInodes:
		return u.Inodes
	case ResourcePIDs:
		return u.PIDs
	}
	return 0
}

// request is the pod's effective request of r (upstream's GetResourceRequestQuantity:
// the larger of the containers' sum and the largest init container's); 0 for inodes
// and pids.
func request(pod *corev1.Pod, r corev1.ResourceName) int64 {
	if r != corev1.ResourceMemory && r != corev1.ResourceEphemeralStorage {
		return 0
	}
	var sum, initMax int64
	for _, c := range pod.Spec.Containers {
		q := c.Resources.Requests[r]
		sum += q.Value()
	}
	for _, c := range pod.Spec.InitContainers {
		q := c.Resources.Requests[r]
		if c.RestartPolicy != nil && *c.RestartPolicy == corev1.ContainerRestartPolicyAlways {
			sum += q.Value() // a sidecar runs with the app
		} else if q.Value() > initMax {
			initMax = q.Value()
		}
	}
	return max(sum, initMax)
}

func priorityOf(pod *corev1.Pod) int32 {
	if pod.Spec.Priority != nil {
		return *pod.Spec.Priority
	}
	return 0
}

// Rank orders pods for reclaiming signal's resource, first to evict first (upstream's
// rankMemoryPressure / rankDiskPressureFunc / rankPIDPressure): pods without usage
// figures first, then those using more than they request, then lower priority, then the
// larger use above the request (pids: the larger process count, after priority). The
// sort is stable.
func Rank(signal string, pods []*corev1.Pod, usage func(*corev1.Pod) (Usage, bool)) {
	r := ResourceOf(signal)
	type key struct {
		missing, exceeds bool
		prio             int32
		above            int64
	}
	keys := make(map[*corev1.Pod]key, len(pods))
	for _, p := range pods {
		u, ok := usage(p)
		k := key{missing: !ok, prio: priorityOf(p)}
		if ok {
			k.above = u.of(r) - request(p, r)
			k.exceeds = r != ResourcePIDs && k.above > 0
		}
		keys[p] = k
	}
	sort.SliceStable(pods, func(i, j int) bool {
		a, b := keys[pods[i]], keys[pods[j]]
		if a.missing != b.missing {
			return a.missing
		}
		if a.missing {
			return a.prio < b.prio
		}
		if a.exceeds != b.exceeds {
			return a.exceeds
		}
		if a.prio != b.prio {
			return a.prio < b.prio
		}
		return a.above > b.above
	})
}

// Pick is the pod to evict for the first threshold met, and its message: the first of
// the ranked active pods that is not critical (upstream evicts one pod per cycle and
// refuses to evict critical pods). Nil when no threshold is met or no pod can go.
func Pick(met []Met, pods []*corev1.Pod, usage func(*corev1.Pod) (Usage, bool)) (*corev1.Pod, string) {
	if len(met) == 0 {
		return nil, ""
	}
	ranked := append([]*corev1.Pod(nil), pods...)
	Rank(met[0].Signal, ranked, usage)
	for _, p := range ranked {
		if IsCritical(p) {
			continue
		}
		u, ok := usage(p)
		return p, Message(met[0], p, u, ok)
	}
	return nil, ""
}

// Message is upstream's evictionMessage: "The node was low on resource: memory.
// Threshold quantity: 100Mi, available: 51200Ki. " and, for memory and ephemeral
// storage, "Container app was using 300Mi, request is 0, has larger consumption of
// memory. " for each container using more than it requests.
func Message(m Met, pod *corev1.Pod, u Usage, haveUsage bool) string {
	r := ResourceOf(m.Signal)
	var b strings.Builder
	fmt.Fprintf(&b, "The node was low on resource: %v. ", r)
	fmt.Fprintf(&b, "Threshold quantity: %v, available: %v. ", m.Threshold.String(), m.Available.String())
	if !haveUsage || (r != corev1.ResourceMemory && r != corev1.ResourceEphemeralStorage) {
		return b.String()
	}
	containers := append(append([]corev1.Container(nil), pod.Spec.Containers...), pod.Spec.InitContainers...)
	for _, c := range containers {
		cu, ok := u.Containers[c.Name]
		if !ok {
			continue
		}
		used := cu.Memory
		if r == corev1.ResourceEphemeralStorage {
			used = cu.Disk
		}
		req := c.Resources.Requests[r]
		usage := resource.NewQuantity(used, resource.BinarySI)
		if usage.Cmp(req) > 0 {
			fmt.Fprintf(&b, "Container %s was using %s, request is %s, has larger consumption of %v. ", c.Name, usage.String(), req.String(), r)
		}
	}
	return b.String()
}
