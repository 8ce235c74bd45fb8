package podplan

import (
	"path"
	"strings"

	corev1 "k8s.io/api/core/v1"
)

// Upstream's OOM score adjustments (pkg/kubelet/qos).
const (
	GuaranteedOOMScoreAdj = -997
	BestEffortOOMScoreAdj = 1000
)

// CPU constants as upstream's cm package: shares per CPU and their bounds, and the
// default CFS period (µs).
const (
	minShares     = 2
	maxShares     = 262144
	sharesPerCPU  = 1024
	DefaultPeriod = 100000
	minQuota      = 1000
)

// OOMScoreAdj is the container's oom_score_adj as upstream's GetContainerOOMScoreAdjust:
// Guaranteed -997, BestEffort 1000, Burstable 1000 - 1000*memoryRequest/memoryCapacity
// kept within [3, 999] (above Guaranteed pods, below BestEffort ones).
func OOMScoreAdj(pod *corev1.Pod, c *corev1.Container, memoryCapacity int64) int64 {
	switch QOSClass(pod) {
	case corev1.PodQOSGuaranteed:
		return GuaranteedOOMScoreAdj
	case corev1.PodQOSBestEffort:
		return BestEffortOOMScoreAdj
	}
	if memoryCapacity <= 0 {
		return BestEffortOOMScoreAdj - 1
	}
	req := c.Resources.Requests.Memory().Value()
	adj := int64(1000) - (1000*req)/memoryCapacity
	if adj < 1000+GuaranteedOOMScoreAdj {
		return 1000 + GuaranteedOOMScoreAdj
	}
	if adj >= BestEffortOOMScoreAdj {
		return BestEffortOOMScoreAdj - 1
	}
	return adj
}

// MilliCPUToShares is upstream's conversion of a CPU request to cpu.shares.
func MilliCPUToShares(milli int64) int64 {
	if milli == 0 {
		return minShares
	}
	s := milli * sharesPerCPU / 1000
	if s < minShares {
		return minShares
	}
	if s > maxShares {
		return maxShares
	}
	return s
}

// MilliCPUToQuota is upstream's conversion of a CPU limit to a CFS quota for period.
func MilliCPUToQuota(milli, period int64) int64 {
	if milli == 0 {
		return 0
	}
	q := milli * period / 1000
	if q < minQuota {
		return minQuota
	}
	return q
}

// CgroupResources is what a pod-level cgroup enforces; nil fields are left alone.
type CgroupResources struct {
	CPUShares   *int64
	CPUQuota    *int64
	CPUPeriod   *int64
	MemoryLimit *int64
}

// PodCgroupParent is the pod's cgroup (cgroupfs driver) under root, as upstream names
// it: root/kubepods/pod<uid> for Guaranteed pods, root/kubepods/burstable/pod<uid> and
// root/kubepods/besteffort/pod<uid> for the others.
func PodCgroupParent(root string, pod *corev1.Pod) string {
	if root == "" {
		root = "/"
	}
	switch QOSClass(pod) {
	case corev1.PodQOSBurstable:
		return path.Join(root, "kubepods", "burstable", "pod"+string(pod.UID))
	case corev1.PodQOSBestEffort:
		return path.Join(root, "kubepods", "besteffort", "pod"+string(pod.UID))
	}
	return path.Join(root, "kubepods", "pod"+string(pod.UID))
}

// podTotals is the pod's effective requests or limits for one resource, as upstream's
// PodRequests/PodLimits: the larger of the app containers plus sidecars and of each
// init container plus the sidecars started before it, plus the pod's overhead (for
// limits only when a container has a limit for it). allSet: every container has a
// non-zero value for it.
func podTotals(pod *corev1.Pod, name corev1.ResourceName, limits bool) (total int64, allSet bool) {
	anySet := false
	get := func(c *corev1.Container) (int64, bool) {
		l := c.Resources.Requests
		if limits {
			l = c.Resources.Limits
		}
		q, ok := l[name]
		if !ok {
			return 0, false
		}
		anySet = true
		if name == corev1.ResourceCPU {
			return q.MilliValue(), !q.IsZero()
		}
		return q.Value(), !q.IsZero()
	}
	allSet = true
	var sidecars, initMax int64
	for i := range pod.Spec.InitContainers {
		c := &pod.Spec.InitContainers[i]
		v, ok := get(c)
		allSet = allSet && ok
		if c.RestartPolicy != nil && *c.RestartPolicy == corev1.ContainerRestartPolicyAlways {
			sidecars += v
			initMax = max(initMax, sidecars)
			continue
		}
		initMax = max(initMax, sidecars+v)
	}
	var apps int64
	for i := range pod.Spec.Containers {
		v, ok := get(&pod.Spec.Containers[i])
		allSet = allSet && ok
		apps += v
	}
	total = max(apps+sidecars, initMax)
	if q, ok := pod.Spec.Overhead[name]; ok && (!limits || anySet) {
		if name == corev1.ResourceCPU {
			total += q.MilliValue()
		} else {
			total += q.Value()
		}
	}
	return total, allSet
}

// PodCgroupResources is upstream's ResourceConfigForPod (CPU limits enforced): CPU
// shares from the requests, and a CFS quota and a memory limit from the limits when
// every container declares one; Guaranteed pods always get all; BestEffort pods get
// the minimum shares only.
func PodCgroupResources(pod *corev1.Pod) CgroupResources {
	qos := QOSClass(pod)
	if qos == corev1.PodQOSBestEffort {
		s := int64(minShares)
		return CgroupResources{CPUShares: &s}
	}
	cpuReq, _ := podTotals(pod, corev1.ResourceCPU, false)
	cpuLim, cpuAll := podTotals(pod, corev1.ResourceCPU, true)
	memLim, memAll := podTotals(pod, corev1.ResourceMemory, true)
	shares, period := MilliCPUToShares(cpuReq), int64(DefaultPeriod)
	quota := MilliCPUToQuota(cpuLim, period)
	out := CgroupResources{CPUShares: &shares}
	if qos == corev1.PodQOSGuaranteed || cpuAll {
		out.CPUQuota, out.CPUPeriod = &quota, &period
	}
	if qos == corev1.PodQOSGuaranteed || memAll {
		out.MemoryLimit = &memLim
	}
	return out
}

// SystemdCgroupName is a cgroupfs-style cgroup name (e.g. /kubepods/burstable/pod<uid>)
// as the systemd cgroup driver names it (upstream's CgroupName.ToSystemd): each part's
// "-" escaped to "_", the parts joined with "-" into a slice and expanded to its
// parents, e.g. /kubepods.slice/kubepods-burstable.slice/kubepods-burstable-pod<uid>.slice.
// The runtime derives the container's "slice:prefix:name" cgroupsPath for runc's
// systemd driver from this parent (containerd: "<last slice>:cri-containerd:<id>").
func SystemdCgroupName(name string) string {
	var parts []string
	for _, p := range strings.Split(name, "/") {
		if p != "" {
			parts = append(parts, strings.ReplaceAll(p, "-", "_"))
		}
	}
	if len(parts) == 0 {
		return "/"
	}
	var b strings.Builder
	for i := range parts {
		b.WriteString("/" + strings.Join(parts[:i+1], "-") + ".slice")
	}
	return b.String()
}

// SystemdCgroupsPath is runc's systemd-driver form "slice:prefix:name" of a container's
// cgroup under a systemd parent (the last slice of parent), as containerd builds it.
func SystemdCgroupsPath(parent, prefix, id string) string {
	return path.Base(parent) + ":" + prefix + ":" + id
}
