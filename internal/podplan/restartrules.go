package podplan

import corev1 "k8s.io/api/core/v1"

// matchingRestartRule is upstream's FindMatchingContainerRestartRule: the first of the
// container's restartPolicyRules whose exitCodes requirement the exit code meets.
func matchingRestartRule(c *corev1.Container, exitCode int32) (corev1.ContainerRestartRule, bool) {
	for _, rule := range c.RestartPolicyRules {
		if rule.ExitCodes == nil {
			continue
		}
		matched := false
		for _, v := range rule.ExitCodes.Values {
			if v == exitCode {
				matched = true
			}
		}
		switch rule.ExitCodes.Operator {
		case corev1.ContainerRestartRuleOnExitCodesOpIn:
			if matched {
				return rule, true
			}
		case corev1.ContainerRestartRuleOnExitCodesOpNotIn:
			if !matched {
				return rule, true
			}
		}
	}
	return corev1.ContainerRestartRule{}, false
}

// ContainerShouldRestart is upstream's ContainerShouldRestart (ContainerRestartRules,
// beta and on in v1.37): whether a container that exited with exitCode runs again. A
// container with its own restartPolicy first applies its restartPolicyRules in order
// (a matching Restart rule restarts it), then its restartPolicy; otherwise the pod's
// restartPolicy decides (Always when unset).
//
// The RestartAllContainers action (RestartAllContainersOnContainerExits) restarts the
// whole pod upstream; nodekeeper does not do pod-wide restarts, so such a rule falls
// back to the container's restartPolicy, as upstream does with that gate off.
func ContainerShouldRestart(c *corev1.Container, spec *corev1.PodSpec, exitCode int32) bool {
	if c.RestartPolicy != nil {
		if rule, ok := matchingRestartRule(c, exitCode); ok && rule.Action == corev1.ContainerRestartRuleActionRestart {
			return true
		}
		switch *c.RestartPolicy {
		case corev1.ContainerRestartPolicyAlways:
			return true
		case corev1.ContainerRestartPolicyOnFailure:
			return exitCode != 0
		case corev1.ContainerRestartPolicyNever:
			return false
		}
	}
	switch spec.RestartPolicy {
	case corev1.RestartPolicyOnFailure:
		return exitCode != 0
	case corev1.RestartPolicyNever:
		return false
	}
	return true
}
