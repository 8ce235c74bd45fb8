package podplan

import (
	"reflect"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	"k8s.io/utils/ptr"
)

func withProbes(p *corev1.Pod, name string, startup, liveness bool) *corev1.Pod {
	probe := &corev1.Probe{ProbeHandler: corev1.ProbeHandler{Exec: &corev1.ExecAction{Command: []string{"true"}}}}
	for i := range p.Spec.InitContainers {
		if c := &p.Spec.InitContainers[i]; c.Name == name {
			if startup {
				c.StartupProbe = probe.DeepCopy()
			}
			if liveness {
				c.LivenessProbe = probe.DeepCopy()
				c.LivenessProbe.TerminationGracePeriodSeconds = ptr.To[int64](3)
			}
		}
	}
	return p
}

func kills(a Actions) []string {
	var out []string
	for _, k := range a.Kill {
		out = append(out, k.Name+": "+k.Reason)
	}
	return out
}

// Restartable init containers as upstream's computeInitContainerActions.
func TestPlanSidecars(t *testing.T) {
	always, never := corev1.RestartPolicyAlways, corev1.RestartPolicyNever
	run := func(p *corev1.Pod, name string, attempt uint32) Container {
		return ctr(p, name, "s", attempt, StateRunning, 0)
	}
	tests := []struct {
		name        string
		pod         *corev1.Pod
		obs         func(p *corev1.Pod) Observed
		backoff     Backoff
		wantStart   []string
		wantKill    []string
		wantKillPod bool
		wantWaiting string // reason for s1
	}{
		{name: "sidecar before its startup probe passed: the next init container waits",
			pod: withProbes(pod(always, []string{"s1", "i1"}, "a"), "s1", true, false),
			obs: func(p *corev1.Pod) Observed {
				c := run(p, "s1", 0)
				return Observed{Sandboxes: []Sandbox{ready("s", 0)}, Containers: []Container{c}, NotStarted: map[string]bool{c.ID: true}}
			}},
		{name: "sidecar started: the next init container starts",
			pod: withProbes(pod(always, []string{"s1", "i1"}, "a"), "s1", true, false),
			obs: func(p *corev1.Pod) Observed {
				return Observed{Sandboxes: []Sandbox{ready("s", 0)}, Containers: []Container{run(p, "s1", 0)}}
			},
			wantStart: []string{"i1"}},
		{name: "last init container is a started sidecar: the app starts",
			pod: pod(always, []string{"i1", "s1"}, "a"),
			obs: func(p *corev1.Pod) Observed {
				return Observed{Sandboxes: []Sandbox{ready("s", 0)}, Containers: []Container{ctr(p, "i1", "s", 0, StateExited, 0), run(p, "s1", 0)}}
			},
			wantStart: []string{"a"}},
		{name: "last sidecar not started yet: the app waits",
			pod: withProbes(pod(always, []string{"i1", "s1"}, "a"), "s1", true, false),
			obs: func(p *corev1.Pod) Observed {
				c := run(p, "s1", 0)
				return Observed{Sandboxes: []Sandbox{ready("s", 0)}, Containers: []Container{ctr(p, "i1", "s", 0, StateExited, 0), c},
					NotStarted: map[string]bool{c.ID: true}}
			}},
		{name: "sidecar failing its liveness probe is killed and restarted",
			pod: withProbes(pod(always, []string{"s1"}, "a"), "s1", false, true),
			obs: func(p *corev1.Pod) Observed {
				c := run(p, "s1", 0)
				return Observed{Sandboxes: []Sandbox{ready("s", 0)}, Containers: []Container{c, run(p, "a", 0)},
					Unhealthy: map[string]string{c.ID: "liveness"}}
			},
			wantStart: []string{"s1"}, wantKill: []string{"s1: Init container s1 failed liveness probe"}},
		{name: "sidecar failing its startup probe is killed and restarted; the app still waits",
			pod: withProbes(pod(always, []string{"s1"}, "a"), "s1", true, false),
			obs: func(p *corev1.Pod) Observed {
				c := run(p, "s1", 0)
				return Observed{Sandboxes: []Sandbox{ready("s", 0)}, Containers: []Container{c},
					Unhealthy: map[string]string{c.ID: "startup"}, NotStarted: map[string]bool{c.ID: true}}
			},
			wantStart: []string{"s1"}, wantKill: []string{"s1: Init container s1 failed startup probe"}},
		{name: "sidecar exited after the pod initialized: restarted alone, init containers not rerun",
			pod: pod(always, []string{"i1", "s1", "i2"}, "a"),
			obs: func(p *corev1.Pod) Observed {
				return Observed{Sandboxes: []Sandbox{ready("s", 0)}, Containers: []Container{ctr(p, "i1", "s", 0, StateExited, 0),
					ctr(p, "s1", "s", 0, StateExited, 1), ctr(p, "i2", "s", 0, StateExited, 0), run(p, "a", 0)}}
			},
			wantStart: []string{"s1"}},
		{name: "sidecar crash looping: back-off",
			pod: pod(always, []string{"s1"}, "a"),
			obs: func(p *corev1.Pod) Observed {
				return Observed{Sandboxes: []Sandbox{ready("s", 0)}, Containers: []Container{ctr(p, "s1", "s", 1, StateExited, 1), run(p, "a", 0)}}
			},
			backoff: Backoff{"s1": t0.Add(time.Minute)}, wantWaiting: "CrashLoopBackOff"},
		{name: "sidecar changed: killed and started again",
			pod: pod(always, []string{"s1"}, "a"),
			obs: func(p *corev1.Pod) Observed {
				c := run(p, "s1", 0)
				c.Hash = "old"
				return Observed{Sandboxes: []Sandbox{ready("s", 0)}, Containers: []Container{c, run(p, "a", 0)}}
			},
			wantStart: []string{"s1"}, wantKill: []string{"s1: Init container s1 definition changed"}},
		{name: "regular containers done under Never: the pod is killed, sidecar included",
			pod: pod(never, []string{"s1"}, "a"),
			obs: func(p *corev1.Pod) Observed {
				return Observed{Sandboxes: []Sandbox{ready("s", 0)}, Containers: []Container{run(p, "s1", 0), ctr(p, "a", "s", 0, StateExited, 0)}}
			},
			wantKillPod: true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			a := Plan(Input{Pod: tt.pod, Observed: tt.obs(tt.pod), Backoff: tt.backoff, Now: t0})
			if !reflect.DeepEqual(starts(a), tt.wantStart) {
				t.Errorf("start %v, want %v (plan %s)", starts(a), tt.wantStart, a)
			}
			if !reflect.DeepEqual(kills(a), tt.wantKill) {
				t.Errorf("kill %v, want %v", kills(a), tt.wantKill)
			}
			if a.KillPod != tt.wantKillPod {
				t.Errorf("killPod %v, want %v", a.KillPod, tt.wantKillPod)
			}
			if got := a.Waiting["s1"].Reason; got != tt.wantWaiting {
				t.Errorf("s1 waiting %q, want %q", got, tt.wantWaiting)
			}
			for _, k := range a.Kill {
				if k.Reason == "Init container s1 failed liveness probe" && k.Grace != 3*time.Second {
					t.Errorf("liveness kill without the probe's grace period: %+v", k)
				}
			}
		})
	}
}

func cond(st corev1.PodStatus, typ corev1.PodConditionType) corev1.PodCondition {
	for _, c := range st.Conditions {
		if c.Type == typ {
			return c
		}
	}
	return corev1.PodCondition{}
}

func TestStatusSidecars(t *testing.T) {
	never, always := corev1.RestartPolicyNever, corev1.RestartPolicyAlways
	// the app completed, the sidecar was stopped after it: Succeeded and Initialized
	p := pod(never, []string{"s1"}, "a")
	o := Observed{Sandboxes: []Sandbox{ready("s", 0)}, Containers: []Container{ctr(p, "s1", "s", 0, StateExited, 143), ctr(p, "a", "s", 0, StateExited, 0)}}
	st := status(p, o, nil)
	if st.Phase != corev1.PodSucceeded || cond(st, corev1.PodInitialized).Status != corev1.ConditionTrue {
		t.Errorf("completed pod with a stopped sidecar: phase %s, initialized %+v", st.Phase, cond(st, corev1.PodInitialized))
	}
	// the app completed, the sidecar still runs (being stopped): Running
	o = Observed{Sandboxes: []Sandbox{ready("s", 0)}, Containers: []Container{ctr(p, "s1", "s", 0, StateRunning, 0), ctr(p, "a", "s", 0, StateExited, 0)}}
	if st := status(p, o, nil); st.Phase != corev1.PodRunning {
		t.Errorf("sidecar still running: phase %s", st.Phase)
	}

	// sidecar not started yet: Pending, not Initialized
	p = pod(always, []string{"s1"}, "a")
	o = Observed{Sandboxes: []Sandbox{ready("s", 0)}, Containers: []Container{ctr(p, "s1", "s", 0, StateRunning, 0)}}
	st = Status(StatusInput{Pod: p, Observed: o, Now: t0, Started: map[string]bool{"s1": false}})
	if c := cond(st, corev1.PodInitialized); st.Phase != corev1.PodPending || c.Status != corev1.ConditionFalse ||
		c.Reason != "ContainersNotInitialized" || c.Message != "containers with incomplete status: [s1]" {
		t.Errorf("sidecar not started: phase %s, initialized %+v", st.Phase, c)
	}
	if st.InitContainerStatuses[0].Started == nil || *st.InitContainerStatuses[0].Started {
		t.Errorf("sidecar started = %v", st.InitContainerStatuses[0].Started)
	}

	// sidecar running but not ready: the pod is not Ready
	o = Observed{Sandboxes: []Sandbox{ready("s", 0)}, Containers: []Container{ctr(p, "s1", "s", 0, StateRunning, 0), ctr(p, "a", "s", 0, StateRunning, 0)}}
	st = Status(StatusInput{Pod: p, Observed: o, Now: t0, Ready: map[string]bool{"s1": false}})
	if c := cond(st, corev1.ContainersReady); c.Status != corev1.ConditionFalse || c.Reason != "ContainersNotReady" ||
		c.Message != "containers with unready status: [s1]" || cond(st, corev1.PodReady).Status != corev1.ConditionFalse {
		t.Errorf("unready sidecar: %+v / %+v", c, cond(st, corev1.PodReady))
	}
	if st.Phase != corev1.PodRunning || cond(st, corev1.PodInitialized).Status != corev1.ConditionTrue {
		t.Errorf("unready sidecar: phase %s initialized %+v", st.Phase, cond(st, corev1.PodInitialized))
	}
	st = Status(StatusInput{Pod: p, Observed: o, Now: t0})
	if cond(st, corev1.PodReady).Status != corev1.ConditionTrue || !st.InitContainerStatuses[0].Ready {
		t.Errorf("ready sidecar and app: %+v", cond(st, corev1.PodReady))
	}

	// a sidecar restarting after the app ran does not take the pod back to Pending
	o = Observed{Sandboxes: []Sandbox{ready("s", 0)}, Containers: []Container{ctr(p, "s1", "s", 0, StateExited, 1), ctr(p, "a", "s", 0, StateRunning, 0)}}
	st = status(p, o, map[string]Waiting{"s1": {Reason: "CrashLoopBackOff"}})
	if st.Phase != corev1.PodRunning || cond(st, corev1.PodInitialized).Status != corev1.ConditionTrue {
		t.Errorf("restarting sidecar: phase %s initialized %+v", st.Phase, cond(st, corev1.PodInitialized))
	}
}

func TestTerminationPrereqs(t *testing.T) {
	p := pod(corev1.RestartPolicyAlways, []string{"s1", "i1", "s2", "s3"}, "a", "b")
	got := TerminationPrereqs(p, []string{"s1", "s2", "s3", "a"})
	want := map[string][]string{"s3": {"a"}, "s2": {"a", "s3"}, "s1": {"a", "s2"}}
	if !reflect.DeepEqual(got, want) {
		t.Errorf("prereqs %v, want %v", got, want)
	}
	// a sidecar that is not running is not waited for
	got = TerminationPrereqs(p, []string{"s1", "s3"})
	want = map[string][]string{}
	if !reflect.DeepEqual(got, want) {
		t.Errorf("prereqs %v, want %v", got, want)
	}
	if TerminationPrereqs(pod(corev1.RestartPolicyAlways, []string{"i1"}, "a"), []string{"a"}) != nil {
		t.Error("a pod without sidecars has an order")
	}
}
