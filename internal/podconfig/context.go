package podconfig

import (
	"fmt"

	corev1 "k8s.io/api/core/v1"
	runtimeapi "k8s.io/cri-api/pkg/apis/runtime/v1"

	"github.com/nodekeeper/nodekeeper/internal/podplan"
)

// SandboxSecurityContext is the sandbox's security context as upstream's
// generatePodSandboxLinuxConfig: privileged when any container is, seccomp
// RuntimeDefault for the infra container, the pod's namespaces, user, group,
// supplemental groups (fsGroup first) and policy, and SELinux options.
func SandboxSecurityContext(pod *corev1.Pod) (*runtimeapi.LinuxSandboxSecurityContext, error) {
	sc := &runtimeapi.LinuxSandboxSecurityContext{
		Privileged:       HasPrivilegedContainer(pod),
		Seccomp:          &runtimeapi.SecurityProfile{ProfileType: runtimeapi.SecurityProfile_RuntimeDefault},
		NamespaceOptions: NamespacesForPod(pod),
	}
	psc := pod.Spec.SecurityContext
	if psc == nil {
		return sc, nil
	}
	if psc.RunAsUser != nil {
		sc.RunAsUser = &runtimeapi.Int64Value{Value: *psc.RunAsUser}
	}
	if psc.RunAsGroup != nil {
		sc.RunAsGroup = &runtimeapi.Int64Value{Value: *psc.RunAsGroup}
	}
	var err error
	if sc.SupplementalGroups, sc.SupplementalGroupsPolicy, err = supplementalGroups(psc); err != nil {
		return nil, err
	}
	sc.SelinuxOptions = selinuxOptions(psc.SELinuxOptions)
	return sc, nil
}

// ImageUser tells the user an image runs as (the runtime's ImageStatus; nil when the
// image is not there). ContainerSecurityContext asks it only to check runAsNonRoot.
type ImageUser func() (*runtimeapi.Image, error)

// ContainerSecurityContext is the container's CRI security context, as upstream's
// determineEffectiveSecurityContext: the pod's and the container's securityContext
// merged (EffectiveSecurityContext: the container's fields win), the pod's namespaces,
// fsGroup and supplemental groups, the seccomp and AppArmor profiles, and the masked
// (from defaultMasked, see DefaultMaskedPaths) and read-only /proc paths of its
// procMount. runAsNonRoot refuses runAsUser 0, and, without a runAsUser, an image that
// would run as root (uid 0, or no uid and the user "" or "root"). Refusals are
// ConfigErrors; an error of image is returned as it is.
func ContainerSecurityContext(pod *corev1.Pod, c *corev1.Container, image ImageUser, defaultMasked []string) (*runtimeapi.LinuxContainerSecurityContext, error) {
	eff := EffectiveSecurityContext(pod, c)
	out := &runtimeapi.LinuxContainerSecurityContext{NamespaceOptions: NamespacesForPod(pod),
		SelinuxOptions: selinuxOptions(eff.SELinuxOptions)}
	if eff.RunAsUser != nil {
		out.RunAsUser = &runtimeapi.Int64Value{Value: *eff.RunAsUser}
	}
	if eff.RunAsGroup != nil {
		out.RunAsGroup = &runtimeapi.Int64Value{Value: *eff.RunAsGroup}
	}
	if psc := pod.Spec.SecurityContext; psc != nil {
		var err error
		if out.SupplementalGroups, out.SupplementalGroupsPolicy, err = supplementalGroups(psc); err != nil {
			return nil, err
		}
	}
	if err := verifyRunAsNonRoot(pod, c, eff, image); err != nil {
		return nil, err
	}
	if eff.Privileged != nil {
		out.Privileged = *eff.Privileged
	}
	if eff.ReadOnlyRootFilesystem != nil {
		out.ReadonlyRootfs = *eff.ReadOnlyRootFilesystem
	}
	if eff.AllowPrivilegeEscalation != nil {
		out.NoNewPrivs = !*eff.AllowPrivilegeEscalation
	}
	if caps := eff.Capabilities; caps != nil {
		out.Capabilities = &runtimeapi.Capability{AddCapabilities: []string{}, DropCapabilities: []string{}}
		for _, a := range caps.Add {
			out.Capabilities.AddCapabilities = append(out.Capabilities.AddCapabilities, string(a))
		}
		for _, d := range caps.Drop {
			out.Capabilities.DropCapabilities = append(out.Capabilities.DropCapabilities, string(d))
		}
	}
	out.Seccomp = seccomp(pod, c)
	aa, deprecated, err := podplan.CRIAppArmor(pod, c)
	if err != nil {
		return nil, ConfigError{err.Error()}
	}
	out.Apparmor, out.ApparmorProfile = aa, deprecated
	out.MaskedPaths = MaskedPaths(eff.ProcMount, defaultMasked)
	out.ReadonlyPaths = ReadonlyPaths(eff.ProcMount)
	return out, nil
}

func verifyRunAsNonRoot(pod *corev1.Pod, c *corev1.Container, eff *corev1.SecurityContext, image ImageUser) error {
	if eff.RunAsNonRoot == nil || !*eff.RunAsNonRoot {
		return nil
	}
	if eff.RunAsUser != nil {
		if *eff.RunAsUser == 0 {
			return ConfigError{"container's runAsUser breaks non-root policy (pod: \"" + pod.Name + "\", container: " + c.Name + ")"}
		}
		return nil
	}
	img, err := image()
	if err != nil {
		return err
	}
	if img == nil || (img.Uid == nil && (img.Username == "" || img.Username == "root")) || (img.Uid != nil && img.Uid.Value == 0) {
		return ConfigError{"container has runAsNonRoot and image will run as root (pod: \"" + pod.Name + "\", container: " + c.Name + ")"}
	}
	return nil
}

// seccomp is the container's seccomp profile, else the pod's; none when neither names
// one (the runtime's default then: unconfined) or a localhost one names no file.
func seccomp(pod *corev1.Pod, c *corev1.Container) *runtimeapi.SecurityProfile {
	var prof *corev1.SeccompProfile
	if psc := pod.Spec.SecurityContext; psc != nil {
		prof = psc.SeccompProfile
	}
	if c.SecurityContext != nil && c.SecurityContext.SeccompProfile != nil {
		prof = c.SecurityContext.SeccompProfile
	}
	if prof == nil {
		return nil
	}
	switch prof.Type {
	case corev1.SeccompProfileTypeRuntimeDefault:
		return &runtimeapi.SecurityProfile{ProfileType: runtimeapi.SecurityProfile_RuntimeDefault}
	case corev1.SeccompProfileTypeUnconfined:
		return &runtimeapi.SecurityProfile{ProfileType: runtimeapi.SecurityProfile_Unconfined}
	case corev1.SeccompProfileTypeLocalhost:
		if prof.LocalhostProfile != nil {
			return &runtimeapi.SecurityProfile{ProfileType: runtimeapi.SecurityProfile_Localhost, LocalhostRef: *prof.LocalhostProfile}
		}
	}
	return nil
}

// supplementalGroups are the pod's fsGroup and supplementalGroups, in that order, and
// its supplementalGroupsPolicy (default Merge).
func supplementalGroups(psc *corev1.PodSecurityContext) ([]int64, runtimeapi.SupplementalGroupsPolicy, error) {
	var groups []int64
	if psc.FSGroup != nil {
		groups = append(groups, *psc.FSGroup)
	}
	groups = append(groups, psc.SupplementalGroups...)
	if psc.SupplementalGroupsPolicy == nil {
		return groups, runtimeapi.SupplementalGroupsPolicy_Merge, nil
	}
	v, ok := runtimeapi.SupplementalGroupsPolicy_value[string(*psc.SupplementalGroupsPolicy)]
	if !ok {
		return nil, 0, fmt.Errorf("unsupported supplementalGroupsPolicy: %s", string(*psc.SupplementalGroupsPolicy))
	}
	return groups, runtimeapi.SupplementalGroupsPolicy(v), nil
}

func selinuxOptions(o *corev1.SELinuxOptions) *runtimeapi.SELinuxOption {
	if o == nil {
		return nil
	}
	return &runtimeapi.SELinuxOption{User: o.User, Role: o.Role, Type: o.Type, Level: o.Level}
}
