package podplan

import (
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	"k8s.io/utils/ptr"
)

func TestContainerShouldRestart(t *testing.T) {
	rules := func(op corev1.ContainerRestartRuleOnExitCodesOperator, action corev1.ContainerRestartRuleAction, codes ...int32) []corev1.ContainerRestartRule {
		return []corev1.ContainerRestartRule{{Action: action, ExitCodes: &corev1.ContainerRestartRuleOnExitCodes{Operator: op, Values: codes}}}
	}
	restart := corev1.ContainerRestartRuleActionRestart
	for _, tt := range []struct {
		name      string
		podPolicy corev1.RestartPolicy
		policy    *corev1.ContainerRestartPolicy
		rules     []corev1.ContainerRestartRule
		exit      int32
		want      bool
	}{
		{"pod Always", corev1.RestartPolicyAlways, nil, nil, 0, true},
		{"pod unset is Always", "", nil, nil, 0, true},
		{"pod OnFailure, success", corev1.RestartPolicyOnFailure, nil, nil, 0, false},
		{"pod OnFailure, failure", corev1.RestartPolicyOnFailure, nil, nil, 1, true},
		{"pod Never", corev1.RestartPolicyNever, nil, nil, 1, false},
		{"rules without a container policy are ignored", corev1.RestartPolicyNever, nil, rules(corev1.ContainerRestartRuleOnExitCodesOpIn, restart, 42), 42, false},
		{"container Never beats pod Always", corev1.RestartPolicyAlways, ptr.To(corev1.ContainerRestartPolicyNever), nil, 1, false},
		{"container Always beats pod Never", corev1.RestartPolicyNever, ptr.To(corev1.ContainerRestartPolicyAlways), nil, 0, true},
		{"container OnFailure", corev1.RestartPolicyNever, ptr.To(corev1.ContainerRestartPolicyOnFailure), nil, 3, true},
		{"In rule matches", corev1.RestartPolicyNever, ptr.To(corev1.ContainerRestartPolicyNever), rules(corev1.ContainerRestartRuleOnExitCodesOpIn, restart, 42, 43), 43, true},
		{"In rule does not match", corev1.RestartPolicyNever, ptr.To(corev1.ContainerRestartPolicyNever), rules(corev1.ContainerRestartRuleOnExitCodesOpIn, restart, 42), 1, false},
		{"NotIn rule matches", corev1.RestartPolicyNever, ptr.To(corev1.ContainerRestartPolicyNever), rules(corev1.ContainerRestartRuleOnExitCodesOpNotIn, restart, 0), 1, true},
		{"NotIn rule does not match", corev1.RestartPolicyNever, ptr.To(corev1.ContainerRestartPolicyNever), rules(corev1.ContainerRestartRuleOnExitCodesOpNotIn, restart, 0), 0, false},
		{"RestartAllContainers falls back to the container policy", corev1.RestartPolicyAlways, ptr.To(corev1.ContainerRestartPolicyNever),
			rules(corev1.ContainerRestartRuleOnExitCodesOpIn, corev1.ContainerRestartRuleActionRestartAllContainers, 1), 1, false},
	} {
		c := &corev1.Container{Name: "c", RestartPolicy: tt.policy, RestartPolicyRules: tt.rules}
		if got := ContainerShouldRestart(c, &corev1.PodSpec{RestartPolicy: tt.podPolicy}, tt.exit); got != tt.want {
			t.Errorf("%s: got %v, want %v", tt.name, got, tt.want)
		}
	}
}

func TestPlanAndPhaseFollowContainerRestartRules(t *testing.T) {
	rule := []corev1.ContainerRestartRule{{Action: corev1.ContainerRestartRuleActionRestart,
		ExitCodes: &corev1.ContainerRestartRuleOnExitCodes{Operator: corev1.ContainerRestartRuleOnExitCodesOpIn, Values: []int32{42}}}}
	for _, tt := range []struct {
		name      string
		podPolicy corev1.RestartPolicy
		exit      int32
		restart   bool
		phase     corev1.PodPhase
	}{
		{"pod Never, exit code in the rule: restarted", corev1.RestartPolicyNever, 42, true, corev1.PodRunning},
		{"pod Never, other exit code: done, Failed", corev1.RestartPolicyNever, 1, false, corev1.PodFailed},
		{"pod Never, success: done, Succeeded", corev1.RestartPolicyNever, 0, false, corev1.PodSucceeded},
		{"pod Always, container Never: done, Failed", corev1.RestartPolicyAlways, 1, false, corev1.PodFailed},
	} {
		t.Run(tt.name, func(t *testing.T) {
			p := pod(tt.podPolicy, nil, "app")
			p.Spec.Containers[0].RestartPolicy = ptr.To(corev1.ContainerRestartPolicyNever)
			p.Spec.Containers[0].RestartPolicyRules = rule
			obs := Observed{Sandboxes: []Sandbox{ready("sb", 0)}, Containers: []Container{ctr(p, "app", "sb", 0, StateExited, tt.exit)}}
			a := Plan(Input{Pod: p, Observed: obs, Now: t0.Add(time.Minute)})
			if got := len(a.Start) == 1 && a.Start[0].Name == "app" && a.Start[0].Attempt == 1; got != tt.restart {
				t.Errorf("plan %s: restart %v, want %v", a.String(), got, tt.restart)
			}
			if done := PodDone(p, obs); done == tt.restart {
				t.Errorf("PodDone %v", done)
			}
			if st := Status(StatusInput{Pod: p, Observed: obs, Now: t0}); st.Phase != tt.phase {
				t.Errorf("phase %s, want %s", st.Phase, tt.phase)
			}
		})
	}

	// an init container whose rule says restart keeps the pod Pending under restartPolicy Never
	p := pod(corev1.RestartPolicyNever, []string{"init"}, "app")
	p.Spec.InitContainers[0].RestartPolicy = ptr.To(corev1.ContainerRestartPolicyNever)
	p.Spec.InitContainers[0].RestartPolicyRules = rule
	for exit, want := range map[int32]corev1.PodPhase{42: corev1.PodPending, 1: corev1.PodFailed} {
		obs := Observed{Sandboxes: []Sandbox{ready("sb", 0)}, Containers: []Container{ctr(p, "init", "sb", 0, StateExited, exit)}}
		if st := Status(StatusInput{Pod: p, Observed: obs, Now: t0}); st.Phase != want {
			t.Errorf("init exit %d: phase %s, want %s", exit, st.Phase, want)
		}
		a := Plan(Input{Pod: p, Observed: obs, Now: t0.Add(time.Minute)})
		if restarted := len(a.Start) == 1 && a.Start[0].Name == "init"; restarted != (exit == 42) {
			t.Errorf("init exit %d: plan %s", exit, a.String())
		}
	}
}
