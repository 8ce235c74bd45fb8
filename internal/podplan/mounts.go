package podplan

import (
	"fmt"

	corev1 "k8s.io/api/core/v1"
	runtimeapi "k8s.io/cri-api/pkg/apis/runtime/v1"
)

// ResolveRecursiveReadOnly is upstream's resolveRecursiveReadOnly: whether a volume mount
// is made recursively read-only. Enabled needs a read-only mount without propagation and
// a runtime that supports it; IfPossible falls back to a plain read-only mount when the
// runtime does not.
func ResolveRecursiveReadOnly(m corev1.VolumeMount, runtimeSupportsRRO bool) (bool, error) {
	if m.RecursiveReadOnly == nil || *m.RecursiveReadOnly == corev1.RecursiveReadOnlyDisabled {
		return false, nil
	}
	if !m.ReadOnly {
		return false, fmt.Errorf("volume %q requested recursive read-only mode, but it is not read-only", m.Name)
	}
	if m.MountPropagation != nil && *m.MountPropagation != corev1.MountPropagationNone {
		return false, fmt.Errorf("volume %q requested recursive read-only mode, but it is not compatible with propagation %q",
			m.Name, *m.MountPropagation)
	}
	switch mode := *m.RecursiveReadOnly; mode {
	case corev1.RecursiveReadOnlyIfPossible:
		return runtimeSupportsRRO, nil
	case corev1.RecursiveReadOnlyEnabled:
		if !runtimeSupportsRRO {
			return false, fmt.Errorf("volume %q requested recursive read-only mode, but it is not supported by the runtime", m.Name)
		}
		return true, nil
	default:
		return false, fmt.Errorf("unknown recursive read-only mode %q", mode)
	}
}

// VolumeMountStatuses is a container status's volumeMounts as upstream reports them:
// every mount of the spec with its read-only flag and, for read-only ones, whether it is
// recursively read-only (Enabled) or not (Disabled). A mount whose mode cannot be
// resolved reports Disabled (its container cannot be created anyway).
func VolumeMountStatuses(c *corev1.Container, runtimeSupportsRRO bool) []corev1.VolumeMountStatus {
	var out []corev1.VolumeMountStatus
	for _, m := range c.VolumeMounts {
		st := corev1.VolumeMountStatus{Name: m.Name, MountPath: m.MountPath, ReadOnly: m.ReadOnly}
		if m.ReadOnly {
			mode := corev1.RecursiveReadOnlyDisabled
			if rro, err := ResolveRecursiveReadOnly(m, runtimeSupportsRRO); err == nil && rro {
				mode = corev1.RecursiveReadOnlyEnabled
			}
			st.RecursiveReadOnly = &mode
		}
		out = append(out, st)
	}
	return out
}

// SupportsRecursiveReadOnly tells whether the named runtime handler ("" is the default)
// supports recursive read-only mounts; false when the runtime reports no handlers, as
// upstream's runtimeHandlerSupportsRecursiveReadOnlyMounts.
func SupportsRecursiveReadOnly(handlers []RuntimeHandler, name string) bool {
	for _, h := range handlers {
		if h.Name == name {
			return h.RecursiveReadOnlyMounts
		}
	}
	return false
}

// RuntimeHandler is what the runtime says of one of its handlers.
type RuntimeHandler struct {
	Name                    string
	RecursiveReadOnlyMounts bool
}

// MountPropagation is upstream's translateMountPropagation: a volume mount's
// propagation for the runtime (private unless HostToContainer or Bidirectional).
func MountPropagation(mode *corev1.MountPropagationMode) (runtimeapi.MountPropagation, error) {
	switch {
	case mode == nil, *mode == corev1.MountPropagationNone:
		return runtimeapi.MountPropagation_PROPAGATION_PRIVATE, nil
	case *mode == corev1.MountPropagationHostToContainer:
		return runtimeapi.MountPropagation_PROPAGATION_HOST_TO_CONTAINER, nil
	case *mode == corev1.MountPropagationBidirectional:
		return runtimeapi.MountPropagation_PROPAGATION_BIDIRECTIONAL, nil
	}
	return 0, fmt.Errorf("invalid MountPropagation mode: %q", *mode)
}
