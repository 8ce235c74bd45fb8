package podconfig

import (
	"fmt"
	"strconv"
	"strings"

	corev1 "k8s.io/api/core/v1"
	runtimeapi "k8s.io/cri-api/pkg/apis/runtime/v1"
)

// HasPrivilegedContainer tells whether any container of the pod (init, regular or
// ephemeral) is privileged: its sandbox must then be privileged too (containerd refuses
// a privileged container in an unprivileged sandbox), as upstream's HasPrivilegedContainer.
func HasPrivilegedContainer(pod *corev1.Pod) bool {
	privileged := func(sc *corev1.SecurityContext) bool {
		return sc != nil && sc.Privileged != nil && *sc.Privileged
	}
	for i := range pod.Spec.InitContainers {
		if privileged(pod.Spec.InitContainers[i].SecurityContext) {
			return true
		}
	}
	for i := range pod.Spec.Containers {
		if privileged(pod.Spec.Containers[i].SecurityContext) {
			return true
		}
	}
	for i := range pod.Spec.EphemeralContainers {
		if privileged(pod.Spec.EphemeralContainers[i].SecurityContext) {
			return true
		}
	}
	return false
}

// NamespacesForPod is upstream's NamespacesForPod (without user namespaces): IPC and
// network are the pod's unless hostIPC/hostNetwork; the PID namespace is the node's with
// hostPID, the pod's with shareProcessNamespace, and each container's own otherwise.
func NamespacesForPod(pod *corev1.Pod) *runtimeapi.NamespaceOption {
	ns := &runtimeapi.NamespaceOption{Ipc: runtimeapi.NamespaceMode_POD, Network: runtimeapi.NamespaceMode_POD,
		Pid: runtimeapi.NamespaceMode_CONTAINER}
	if pod.Spec.HostIPC {
		ns.Ipc = runtimeapi.NamespaceMode_NODE
	}
	if pod.Spec.HostNetwork {
		ns.Network = runtimeapi.NamespaceMode_NODE
	}
	switch {
	case pod.Spec.HostPID:
		ns.Pid = runtimeapi.NamespaceMode_NODE
	case pod.Spec.ShareProcessNamespace != nil && *pod.Spec.ShareProcessNamespace:
		ns.Pid = runtimeapi.NamespaceMode_POD
	}
	return ns
}

// SandboxSysctls are the pod's securityContext.sysctls, set on its sandbox (the
// kubelet's DefaultPodSysctls, alpha and off in v1.37, adds none).
func SandboxSysctls(pod *corev1.Pod) map[string]string {
	out := map[string]string{}
	if sc := pod.Spec.SecurityContext; sc != nil {
		for _, s := range sc.Sysctls {
			out[s.Name] = s.Value
		}
	}
	return out
}

// EffectiveSecurityContext is upstream's DetermineEffectiveSecurityContext: the pod's
// securityContext fields a container can have (SELinux options, runAsUser, runAsGroup,
// runAsNonRoot), overridden field by field by the container's own.
func EffectiveSecurityContext(pod *corev1.Pod, c *corev1.Container) *corev1.SecurityContext {
	var eff *corev1.SecurityContext
	if psc := pod.Spec.SecurityContext; psc != nil {
		eff = &corev1.SecurityContext{SELinuxOptions: psc.SELinuxOptions.DeepCopy(), WindowsOptions: psc.WindowsOptions.DeepCopy()}
		eff.RunAsUser, eff.RunAsGroup, eff.RunAsNonRoot = copyPtr(psc.RunAsUser), copyPtr(psc.RunAsGroup), copyPtr(psc.RunAsNonRoot)
	}
	csc := c.SecurityContext
	switch {
	case eff == nil && csc == nil:
		return &corev1.SecurityContext{}
	case csc == nil:
		return eff
	case eff == nil:
		return csc.DeepCopy()
	}
	if csc.SELinuxOptions != nil {
		eff.SELinuxOptions = csc.SELinuxOptions.DeepCopy()
	}
	if csc.Capabilities != nil {
		eff.Capabilities = csc.Capabilities.DeepCopy()
	}
	override(&eff.Privileged, csc.Privileged)
	override(&eff.RunAsUser, csc.RunAsUser)
	override(&eff.RunAsGroup, csc.RunAsGroup)
	override(&eff.RunAsNonRoot, csc.RunAsNonRoot)
	override(&eff.ReadOnlyRootFilesystem, csc.ReadOnlyRootFilesystem)
	override(&eff.AllowPrivilegeEscalation, csc.AllowPrivilegeEscalation)
	override(&eff.ProcMount, csc.ProcMount)
	return eff
}

// override sets *dst to a copy of src when src is set.
func override[T any](dst **T, src *T) {
	if src != nil {
		*dst = copyPtr(src)
	}
}

func copyPtr[T any](p *T) *T {
	if p == nil {
		return nil
	}
	v := *p
	return &v
}

// defaultMaskedPaths and defaultReadonlyPaths are upstream's (kept in step with moby's
// oci defaults); the per-CPU thermal_throttle folders are added when they exist.
var (
	defaultMaskedPaths = []string{"/proc/asound", "/proc/acpi", "/proc/interrupts", "/proc/kcore", "/proc/keys",
		"/proc/latency_stats", "/proc/timer_list", "/proc/timer_stats", "/proc/sched_debug", "/proc/scsi",
		"/sys/firmware", "/sys/devices/virtual/powercap"}
	defaultReadonlyPaths = []string{"/proc/bus", "/proc/fs", "/proc/irq", "/proc/sys", "/proc/sysrq-trigger"}
)

// ThermalThrottlePath is the folder of one CPU that upstream masks when it exists.
func ThermalThrottlePath(cpu int) string {
	return fmt.Sprintf("/sys/devices/system/cpu/cpu%d/thermal_throttle", cpu)
}

// DefaultMaskedPaths is upstream's default list of masked paths, with the
// thermal_throttle folders of the given CPUs that exist.
func DefaultMaskedPaths(cpus []int, exists func(string) bool) []string {
	out := append([]string(nil), defaultMaskedPaths...)
	for _, cpu := range cpus {
		if p := ThermalThrottlePath(cpu); exists(p) {
			out = append(out, p)
		}
	}
	return out
}

// MaskedPaths is upstream's ConvertToRuntimeMaskedPaths: none for procMount Unmasked,
// else the defaults.
func MaskedPaths(procMount *corev1.ProcMountType, defaults []string) []string {
	if procMount != nil && *procMount == corev1.UnmaskedProcMount {
		return []string{}
	}
	return defaults
}

// ReadonlyPaths is upstream's ConvertToRuntimeReadonlyPaths: none for procMount
// Unmasked, else the defaults.
func ReadonlyPaths(procMount *corev1.ProcMountType) []string {
	if procMount != nil && *procMount == corev1.UnmaskedProcMount {
		return []string{}
	}
	return append([]string(nil), defaultReadonlyPaths...)
}

// ParseCPUList parses a kernel CPU list such as /sys/devices/system/cpu/possible
// ("0-3,8,10-11"); nil when it is not one (upstream then counts runtime.NumCPU()).
func ParseCPUList(s string) []int {
	var cpus []int
	for _, r := range strings.Split(strings.TrimSpace(s), ",") {
		lo, hi, isRange := strings.Cut(r, "-")
		start, err := strconv.Atoi(lo)
		if err != nil {
			return nil
		}
		end := start
		if isRange {
			if end, err = strconv.Atoi(hi); err != nil || end < start {
				return nil
			}
		}
		for c := start; c <= end; c++ {
			cpus = append(cpus, c)
		}
	}
	return cpus
}
