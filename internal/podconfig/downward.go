package podconfig

import (
	"fmt"
	"math"
	"strconv"
	"strings"

	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/api/resource"
)

// downwardLimits are the resources whose missing limits the downward API fills from
// the node's allocatable (hugepages are never overcommitted: they always have limits).
var downwardLimits = []corev1.ResourceName{corev1.ResourceCPU, corev1.ResourceMemory, corev1.ResourceEphemeralStorage}

// MergeContainerResourceLimits sets each of the container's cpu, memory and
// ephemeral-storage limits that is missing or zero to the allocatable amount, as
// upstream's resource.MergeContainerResourceLimits.
func MergeContainerResourceLimits(c *corev1.Container, allocatable corev1.ResourceList) {
	if c.Resources.Limits == nil {
		c.Resources.Limits = corev1.ResourceList{}
	}
	for _, name := range downwardLimits {
		if q, ok := c.Resources.Limits[name]; !ok || q.IsZero() {
			if a, ok := allocatable[name]; ok {
				c.Resources.Limits[name] = a.DeepCopy()
			}
		}
	}
}

// isPodLevelResource is upstream's IsSupportedPodLevelResource: cpu, memory and hugepages.
func isPodLevelResource(name corev1.ResourceName) bool {
	return name == corev1.ResourceCPU || name == corev1.ResourceMemory || strings.HasPrefix(string(name), corev1.ResourceHugePagesPrefix)
}

// DownwardAPIEnvDefaults is the kubelet's defaultPodLimitsForDownwardAPI, used for
// environment variables: copies of the pod and of the container in which every regular
// container lacking a limit gets the pod-level limit (spec.resources.limits, cpu and
// memory) or else the node's allocatable. Init containers of the pod copy are left as
// they are, as upstream.
func DownwardAPIEnvDefaults(pod *corev1.Pod, c *corev1.Container, allocatable corev1.ResourceList) (*corev1.Pod, *corev1.Container) {
	if pod.Spec.Resources != nil && len(pod.Spec.Resources.Limits) > 0 {
		podLevel := false
		for name := range pod.Spec.Resources.Limits {
			podLevel = podLevel || isPodLevelResource(name)
		}
		if podLevel {
			allocatable = allocatable.DeepCopy()
			for _, name := range downwardLimits {
				if !isPodLevelResource(name) {
					continue
				}
				if v, ok := pod.Spec.Resources.Limits[name]; ok && !v.IsZero() {
					if _, ok := allocatable[name]; ok {
						allocatable[name] = v.DeepCopy()
					}
				}
			}
		}
	}
	out := pod.DeepCopy()
	for i := range out.Spec.Containers {
		MergeContainerResourceLimits(&out.Spec.Containers[i], allocatable)
	}
	var oc *corev1.Container
	if c != nil {
		oc = c.DeepCopy()
		MergeContainerResourceLimits(oc, allocatable)
	}
	return out, oc
}

// findPodContainer finds a regular container, then an init container, by name (upstream's
// findContainerInPod order).
func findPodContainer(pod *corev1.Pod, name string) (*corev1.Container, error) {
	for i := range pod.Spec.Containers {
		if pod.Spec.Containers[i].Name == name {
			return &pod.Spec.Containers[i], nil
		}
	}
	for i := range pod.Spec.InitContainers {
		if pod.Spec.InitContainers[i].Name == name {
			return &pod.Spec.InitContainers[i], nil
		}
	}
	return nil, fmt.Errorf("container %s not found", name)
}

// EnvResourceValue resolves an environment variable's resourceFieldRef as the kubelet
// does: against the node's allocatable for missing limits (DownwardAPIEnvDefaults), in c
// or, when the selector names one, in that container of the pod.
func EnvResourceValue(fs *corev1.ResourceFieldSelector, pod *corev1.Pod, c *corev1.Container, allocatable corev1.ResourceList) (string, error) {
	dpod, dc := DownwardAPIEnvDefaults(pod, c, allocatable)
	if fs.ContainerName == "" {
		return ContainerResourceValue(fs, dc)
	}
	target, err := findPodContainer(dpod, fs.ContainerName)
	if err != nil {
		return "", err
	}
	return ContainerResourceValue(fs, target)
}

// VolumeResourceValue resolves a downwardAPI volume item's resourceFieldRef as upstream's
// ExtractResourceValueByContainerNameAndNodeAllocatable: the named container's missing
// limits come from the node's allocatable (pod-level limits are not consulted here).
func VolumeResourceValue(fs *corev1.ResourceFieldSelector, pod *corev1.Pod, allocatable corev1.ResourceList) (string, error) {
	target, err := findPodContainer(pod, fs.ContainerName)
	if err != nil {
		return "", err
	}
	c := target.DeepCopy()
	MergeContainerResourceLimits(c, allocatable)
	return ContainerResourceValue(fs, c)
}

// ContainerResourceValue is upstream's ExtractContainerResourceValue: the container's
// request or limit divided by the divisor (default 1), rounded up.
func ContainerResourceValue(fs *corev1.ResourceFieldSelector, c *corev1.Container) (string, error) {
	divisor := resource.MustParse("1")
	if !fs.Divisor.IsZero() {
		divisor = fs.Divisor
	}
	ceil := func(v, d int64) (string, error) {
		return strconv.FormatInt(int64(math.Ceil(float64(v)/float64(d))), 10), nil
	}
	lim, req := c.Resources.Limits, c.Resources.Requests
	switch fs.Resource {
	case "limits.cpu":
		return ceil(lim.Cpu().MilliValue(), divisor.MilliValue())
	case "limits.memory":
		return ceil(lim.Memory().Value(), divisor.Value())
	case "limits.ephemeral-storage":
		return ceil(lim.StorageEphemeral().Value(), divisor.Value())
	case "requests.cpu":
		return ceil(req.Cpu().MilliValue(), divisor.MilliValue())
	case "requests.memory":
		return ceil(req.Memory().Value(), divisor.Value())
	case "requests.ephemeral-storage":
		return ceil(req.StorageEphemeral().Value(), divisor.Value())
	}
	if name, ok := strings.CutPrefix(fs.Resource, "requests."); ok && strings.HasPrefix(name, corev1.ResourceHugePagesPrefix) {
		return ceil(req.Name(corev1.ResourceName(name), resource.BinarySI).Value(), divisor.Value())
	}
	if name, ok := strings.CutPrefix(fs.Resource, "limits."); ok && strings.HasPrefix(name, corev1.ResourceHugePagesPrefix) {
		return ceil(lim.Name(corev1.ResourceName(name), resource.BinarySI).Value(), divisor.Value())
	}
	return "", fmt.Errorf("unsupported container resource : %v", fs.Resource)
}
