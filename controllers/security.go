package controllers

import (
	"fmt"
	"os"
	"runtime"
	"sync"

	corev1 "k8s.io/api/core/v1"
	runtimeapi "k8s.io/cri-api/pkg/apis/runtime/v1"

	"github.com/nodekeeper/nodekeeper/internal/podplan"
)

// defaultMaskedPaths is upstream's default masked paths on this machine (the
// thermal_throttle folders of its possible CPUs that exist), computed once.
var defaultMaskedPaths = sync.OnceValue(func() []string {
	var cpus []int
	if b, err := os.ReadFile("/sys/devices/system/cpu/possible"); err == nil {
		cpus = podplan.ParseCPUList(string(b))
	}
	if cpus == nil {
		for i := range runtime.NumCPU() {
			cpus = append(cpus, i)
		}
	}
	return podplan.DefaultMaskedPaths(cpus, func(p string) bool {
		_, err := os.Stat(p)
		return err == nil
	})
})

// sandboxSecurityContext is the sandbox's security context as upstream's
// generatePodSandboxLinuxConfig: privileged when any container is, seccomp
// RuntimeDefault for the infra container, the pod's namespaces, user, group,
// supplemental groups and SELinux options.
func sandboxSecurityContext(pod *corev1.Pod) (*runtimeapi.LinuxSandboxSecurityContext, error) {
	sc := &runtimeapi.LinuxSandboxSecurityContext{
		Privileged:       podplan.HasPrivilegedContainer(pod),
		Seccomp:          &runtimeapi.SecurityProfile{ProfileType: runtimeapi.SecurityProfile_RuntimeDefault},
		NamespaceOptions: podplan.NamespacesForPod(pod),
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
	if psc.FSGroup != nil {
		sc.SupplementalGroups = append(sc.SupplementalGroups, *psc.FSGroup)
	}
	sc.SupplementalGroups = append(sc.SupplementalGroups, psc.SupplementalGroups...)
	policy, err := supplementalGroupsPolicy(psc.SupplementalGroupsPolicy)
	if err != nil {
		return nil, err
	}
	sc.SupplementalGroupsPolicy = policy
	sc.SelinuxOptions = selinuxOptions(psc.SELinuxOptions)
	return sc, nil
}

func supplementalGroupsPolicy(p *corev1.SupplementalGroupsPolicy) (runtimeapi.SupplementalGroupsPolicy, error) {
	if p == nil {
		return runtimeapi.SupplementalGroupsPolicy_Merge, nil
	}
	v, ok := runtimeapi.SupplementalGroupsPolicy_value[string(*p)]
	if !ok {
		return 0, fmt.Errorf("unsupported supplementalGroupsPolicy: %s", string(*p))
	}
	return runtimeapi.SupplementalGroupsPolicy(v), nil
}

func selinuxOptions(o *corev1.SELinuxOptions) *runtimeapi.SELinuxOption {
	if o == nil {
		return nil
	}
	return &runtimeapi.SELinuxOption{User: o.User, Role: o.Role, Type: o.Type, Level: o.Level}
}
