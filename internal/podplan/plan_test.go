package podplan

import (
	"reflect"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/api/resource"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/utils/ptr"
)

var t0 = time.Date(2026, 11, 23, 12, 0, 0, 0, time.UTC)

func pod(policy corev1.RestartPolicy, inits []string, apps ...string) *corev1.Pod {
	p := &corev1.Pod{ObjectMeta: metav1.ObjectMeta{Name: "p", Namespace: "ns", UID: "u1"},
		Spec: corev1.PodSpec{RestartPolicy: policy}}
	for _, n := range inits {
		c := corev1.Container{Name: n, Image: "busybox"}
		if n[0] == 's' { // "s…" names are sidecars
			c.RestartPolicy = ptr.To(corev1.ContainerRestartPolicyAlways)
		}
		p.Spec.InitContainers = append(p.Spec.InitContainers, c)
	}
	for _, n := range apps {
		p.Spec.Containers = append(p.Spec.Containers, corev1.Container{Name: n, Image: "busybox"})
	}
	return p
}

func ready(id string, attempt uint32) Sandbox {
	return Sandbox{ID: id, Attempt: attempt, Ready: true, IP: "10.244.0.5", CreatedAt: t0}
}

func ctr(p *corev1.Pod, name, sb string, attempt uint32, state ContainerState, exit int32) Container {
	c := Container{ID: name + "-" + sb + "-" + string(rune('0'+attempt)), SandboxID: sb, Name: name, Attempt: attempt,
		State: state, ExitCode: exit, CreatedAt: t0.Add(time.Duration(attempt) * time.Second),
		StartedAt: t0.Add(time.Duration(attempt) * time.Second)}
	if state == StateExited {
		c.FinishedAt = c.StartedAt.Add(time.Second)
	}
	for _, list := range [][]corev1.Container{p.Spec.InitContainers, p.Spec.Containers} {
		for i := range list {
			if list[i].Name == name {
				c.Hash = HashContainer(&list[i])
			}
		}
	}
	return c
}

func starts(a Actions) []string {
	var out []string
	for _, s := range a.Start {
		out = append(out, s.Name)
	}
	return out
}

func TestPlan(t *testing.T) {
	always, never, onFailure := corev1.RestartPolicyAlways, corev1.RestartPolicyNever, corev1.RestartPolicyOnFailure
	tests := []struct {
		name        string
		pod         *corev1.Pod
		obs         func(p *corev1.Pod) Observed
		backoff     Backoff
		wantSandbox bool
		wantAttempt uint32
		wantKillPod bool
		wantStart   []string
		wantKill    int
		wantWaiting string
	}{
		{name: "new pod: sandbox and its first init container", pod: pod(always, []string{"i1", "i2"}, "app"),
			obs: func(*corev1.Pod) Observed { return Observed{} }, wantSandbox: true, wantStart: []string{"i1"}},
		{name: "new pod without init containers: every app container", pod: pod(always, nil, "a", "b"),
			obs: func(*corev1.Pod) Observed { return Observed{} }, wantSandbox: true, wantStart: []string{"a", "b"}},
		{name: "init container running: wait", pod: pod(always, []string{"i1", "i2"}, "app"),
			obs: func(p *corev1.Pod) Observed {
				return Observed{Sandboxes: []Sandbox{ready("s", 0)}, Containers: []Container{ctr(p, "i1", "s", 0, StateRunning, 0)}}
			}},
		{name: "init containers in order", pod: pod(always, []string{"i1", "i2"}, "app"),
			obs: func(p *corev1.Pod) Observed {
				return Observed{Sandboxes: []Sandbox{ready("s", 0)}, Containers: []Container{ctr(p, "i1", "s", 0, StateExited, 0)}}
			}, wantStart: []string{"i2"}},
		{name: "all init done: apps", pod: pod(always, []string{"i1"}, "a", "b"),
			obs: func(p *corev1.Pod) Observed {
				return Observed{Sandboxes: []Sandbox{ready("s", 0)}, Containers: []Container{ctr(p, "i1", "s", 0, StateExited, 0)}}
			}, wantStart: []string{"a", "b"}},
		{name: "failed init container restarts", pod: pod(always, []string{"i1"}, "a"),
			obs: func(p *corev1.Pod) Observed {
				return Observed{Sandboxes: []Sandbox{ready("s", 0)}, Containers: []Container{ctr(p, "i1", "s", 0, StateExited, 1)}}
			}, wantStart: []string{"i1"}},
		{name: "failed init container with restartPolicy Never ends the pod", pod: pod(never, []string{"i1"}, "a"),
			obs: func(p *corev1.Pod) Observed {
				return Observed{Sandboxes: []Sandbox{ready("s", 0)}, Containers: []Container{ctr(p, "i1", "s", 0, StateExited, 1)}}
			}, wantKillPod: true},
		{name: "sidecar starts, then the next init container once it runs", pod: pod(always, []string{"side", "i2"}, "a"),
			obs: func(p *corev1.Pod) Observed {
				return Observed{Sandboxes: []Sandbox{ready("s", 0)}, Containers: []Container{ctr(p, "side", "s", 0, StateRunning, 0)}}
			}, wantStart: []string{"i2"}},
		{name: "an exited sidecar is restarted", pod: pod(never, []string{"side"}, "a"),
			obs: func(p *corev1.Pod) Observed {
				return Observed{Sandboxes: []Sandbox{ready("s", 0)}, Containers: []Container{
					ctr(p, "side", "s", 0, StateExited, 1), ctr(p, "a", "s", 0, StateRunning, 0)}}
			}, wantStart: []string{"side"}},
		{name: "Always restarts a container that exited 0", pod: pod(always, nil, "a"),
			obs: func(p *corev1.Pod) Observed {
				return Observed{Sandboxes: []Sandbox{ready("s", 0)}, Containers: []Container{ctr(p, "a", "s", 0, StateExited, 0)}}
			}, wantStart: []string{"a"}},
		{name: "in back-off: CrashLoopBackOff, no start", pod: pod(always, nil, "a"),
			obs: func(p *corev1.Pod) Observed {
				return Observed{Sandboxes: []Sandbox{ready("s", 0)}, Containers: []Container{ctr(p, "a", "s", 2, StateExited, 1)}}
			}, backoff: Backoff{"a": t0.Add(time.Hour)}, wantWaiting: "CrashLoopBackOff"},
		{name: "OnFailure: exit 0 is the end", pod: pod(onFailure, nil, "a"),
			obs: func(p *corev1.Pod) Observed {
				return Observed{Sandboxes: []Sandbox{ready("s", 0)}, Containers: []Container{ctr(p, "a", "s", 0, StateExited, 0)}}
			}, wantKillPod: true},
		{name: "OnFailure: exit 1 restarts", pod: pod(onFailure, nil, "a"),
			obs: func(p *corev1.Pod) Observed {
				return Observed{Sandboxes: []Sandbox{ready("s", 0)}, Containers: []Container{ctr(p, "a", "s", 0, StateExited, 1)}}
			}, wantStart: []string{"a"}},
		{name: "Never: one exited, one running: keep going", pod: pod(never, nil, "a", "b"),
			obs: func(p *corev1.Pod) Observed {
				return Observed{Sandboxes: []Sandbox{ready("s", 0)}, Containers: []Container{
					ctr(p, "a", "s", 0, StateExited, 1), ctr(p, "b", "s", 0, StateRunning, 0)}}
			}},
		{name: "changed spec kills the container and starts it again at once", pod: pod(always, nil, "a"),
			obs: func(p *corev1.Pod) Observed {
				c := ctr(p, "a", "s", 0, StateRunning, 0)
				c.Hash = "stale"
				return Observed{Sandboxes: []Sandbox{ready("s", 0)}, Containers: []Container{c}}
			}, wantKill: 1, wantStart: []string{"a"}},
		{name: "changed spec restarts the container under Never too", pod: pod(never, nil, "a"),
			obs: func(p *corev1.Pod) Observed {
				c := ctr(p, "a", "s", 0, StateRunning, 0)
				c.Hash = "stale"
				return Observed{Sandboxes: []Sandbox{ready("s", 0)}, Containers: []Container{c}}
			}, wantKill: 1, wantStart: []string{"a"}},
		{name: "dead sandbox: new one with the next attempt, everything restarts", pod: pod(always, []string{"i1"}, "a"),
			obs: func(p *corev1.Pod) Observed {
				sb := ready("s", 3)
				sb.Ready = false
				return Observed{Sandboxes: []Sandbox{sb}, Containers: []Container{
					ctr(p, "i1", "s", 0, StateExited, 0), ctr(p, "a", "s", 0, StateRunning, 0)}}
			}, wantSandbox: true, wantAttempt: 4, wantKillPod: true, wantStart: []string{"i1"}},
		{name: "deleted pod: kill it", pod: func() *corev1.Pod {
			p := pod(always, nil, "a")
			p.DeletionTimestamp = ptr.To(metav1.NewTime(t0))
			return p
		}(), obs: func(p *corev1.Pod) Observed {
			return Observed{Sandboxes: []Sandbox{ready("s", 0)}, Containers: []Container{ctr(p, "a", "s", 0, StateRunning, 0)}}
		}, wantKillPod: true},
		{name: "terminal pod is never restarted", pod: func() *corev1.Pod {
			p := pod(always, nil, "a")
			p.Status.Phase = corev1.PodFailed
			return p
		}(), obs: func(p *corev1.Pod) Observed {
			return Observed{Containers: []Container{ctr(p, "a", "s", 0, StateExited, 1)}}
		}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			a := Plan(Input{Pod: tt.pod, Observed: tt.obs(tt.pod), Backoff: tt.backoff, Now: t0})
			if a.CreateSandbox != tt.wantSandbox || a.SandboxAttempt != tt.wantAttempt || a.KillPod != tt.wantKillPod {
				t.Errorf("plan %s: sandbox=%v attempt=%d killPod=%v", a, a.CreateSandbox, a.SandboxAttempt, a.KillPod)
			}
			if got := starts(a); !reflect.DeepEqual(got, tt.wantStart) {
				t.Errorf("starts = %v, want %v (plan %s)", got, tt.wantStart, a)
			}
			if len(a.Kill) != tt.wantKill {
				t.Errorf("kills = %v", a.Kill)
			}
			if tt.wantWaiting != "" && a.Waiting["a"].Reason != tt.wantWaiting {
				t.Errorf("waiting = %v", a.Waiting)
			}
		})
	}
}

// A failed liveness or startup probe kills the container with the upstream reason and
// the probe's own terminationGracePeriodSeconds when it has one.
func TestProbeFailureKills(t *testing.T) {
	for _, tt := range []struct {
		kind      string
		probeTGPS *int64
		wantGrace time.Duration
	}{
		{"liveness", nil, 30 * time.Second}, // the pod's
		{"liveness", ptr.To[int64](3), 3 * time.Second},
		{"startup", ptr.To[int64](1), time.Second},
	} {
		p := pod(corev1.RestartPolicyAlways, nil, "a")
		pr := &corev1.Probe{TerminationGracePeriodSeconds: tt.probeTGPS}
		if tt.kind == "startup" {
			p.Spec.Containers[0].StartupProbe = pr
		} else {
			p.Spec.Containers[0].LivenessProbe = pr
		}
		c := ctr(p, "a", "s", 0, StateRunning, 0)
		a := Plan(Input{Pod: p, Observed: Observed{Sandboxes: []Sandbox{ready("s", 0)}, Containers: []Container{c},
			Unhealthy: map[string]string{c.ID: tt.kind}}, Now: t0})
		if len(a.Kill) != 1 || a.Kill[0].ID != c.ID {
			t.Fatalf("%s: kills = %v", tt.kind, a.Kill)
		}
		if want := "Container a failed " + tt.kind + " probe, will be restarted"; a.Kill[0].Reason != want {
			t.Errorf("reason %q, want %q", a.Kill[0].Reason, want)
		}
		if a.Kill[0].Grace != tt.wantGrace {
			t.Errorf("%s with probe TGPS %v: grace %v, want %v", tt.kind, tt.probeTGPS, a.Kill[0].Grace, tt.wantGrace)
		}
	}
	// restarted in the same plan (no back-off), whatever the exit code will be, unless
	// the restart policy is Never
	for _, tt := range []struct {
		policy    corev1.RestartPolicy
		container *corev1.ContainerRestartPolicy
		restart   bool
	}{
		{corev1.RestartPolicyAlways, nil, true},
		{corev1.RestartPolicyOnFailure, nil, true},
		{corev1.RestartPolicyNever, nil, false},
		{corev1.RestartPolicyNever, ptr.To(corev1.ContainerRestartPolicyOnFailure), true},
		{corev1.RestartPolicyAlways, ptr.To(corev1.ContainerRestartPolicyNever), false},
	} {
		p := pod(tt.policy, nil, "a")
		p.Spec.Containers[0].RestartPolicy = tt.container
		p.Spec.Containers[0].LivenessProbe = &corev1.Probe{}
		c := ctr(p, "a", "s", 2, StateRunning, 0)
		a := Plan(Input{Pod: p, Observed: Observed{Sandboxes: []Sandbox{ready("s", 0)}, Containers: []Container{c},
			Unhealthy: map[string]string{c.ID: "liveness"}}, Backoff: Backoff{"a": t0.Add(time.Hour)}, Now: t0})
		restarted := len(a.Start) == 1 && a.Start[0].Name == "a" && a.Start[0].Attempt == 3
		if len(a.Kill) != 1 || restarted != tt.restart || (!tt.restart && len(a.Start) != 0) {
			t.Errorf("policy %s/%v: kills %v starts %v, want restart %v", tt.policy, tt.container, a.Kill, a.Start, tt.restart)
		}
		if !tt.restart && a.Kill[0].Reason != "Container a failed liveness probe" {
			t.Errorf("reason without restart: %q", a.Kill[0].Reason)
		}
	}
}

func TestRestartAttemptNumbers(t *testing.T) {
	p := pod(corev1.RestartPolicyAlways, nil, "a")
	o := Observed{Sandboxes: []Sandbox{ready("s", 0)}, Containers: []Container{ctr(p, "a", "s", 0, StateExited, 1), ctr(p, "a", "s", 1, StateExited, 1)}}
	a := Plan(Input{Pod: p, Observed: o, Now: t0})
	if len(a.Start) != 1 || a.Start[0].Attempt != 2 {
		t.Errorf("want attempt 2, got %+v", a.Start)
	}
}

func TestBackoffPolicy(t *testing.T) {
	p := BackoffPolicy{Base: 10 * time.Second, Max: 40 * time.Second, Reset: 10 * time.Minute}
	e := p.Next(nil, time.Second, t0)
	var got []time.Duration
	for i := 0; i < 5; i++ {
		got = append(got, e.Delay)
		e = p.Next(&e, time.Second, t0.Add(time.Duration(i)*time.Second))
	}
	if want := []time.Duration{10 * time.Second, 20 * time.Second, 40 * time.Second, 40 * time.Second, 40 * time.Second}; !reflect.DeepEqual(got, want) {
		t.Errorf("delays %v, want %v", got, want)
	}
	if r := p.Next(&e, 11*time.Minute, t0); r.Delay != 10*time.Second {
		t.Errorf("a long clean run must reset the back-off, got %v", r.Delay)
	}
}

func status(p *corev1.Pod, o Observed, waiting map[string]Waiting) corev1.PodStatus {
	return Status(StatusInput{Pod: p, Observed: o, Waiting: waiting, HostIP: "192.0.2.1", RuntimeName: "containerd", Now: t0})
}

func condStatus(st corev1.PodStatus, typ corev1.PodConditionType) corev1.ConditionStatus {
	for _, c := range st.Conditions {
		if c.Type == typ {
			return c.Status
		}
	}
	return ""
}

func TestStatus(t *testing.T) {
	always, never := corev1.RestartPolicyAlways, corev1.RestartPolicyNever
	p := pod(always, []string{"i1"}, "a")
	// pending: no sandbox yet
	st := status(p, Observed{}, nil)
	if st.Phase != corev1.PodPending || st.ContainerStatuses[0].State.Waiting.Reason != "PodInitializing" || condStatus(st, corev1.PodReady) != corev1.ConditionFalse {
		t.Errorf("new pod status = %+v", st)
	}
	// running and ready
	o := Observed{Sandboxes: []Sandbox{ready("s", 0)}, Containers: []Container{ctr(p, "i1", "s", 0, StateExited, 0), ctr(p, "a", "s", 0, StateRunning, 0)}}
	st = status(p, o, nil)
	cs := st.ContainerStatuses[0]
	if st.Phase != corev1.PodRunning || st.PodIP != "10.244.0.5" || !cs.Ready || cs.State.Running == nil || cs.ContainerID != "containerd://"+o.Containers[1].ID {
		t.Errorf("running status = %+v", st)
	}
	for _, c := range []corev1.PodConditionType{corev1.PodReadyToStartContainers, corev1.PodInitialized, corev1.ContainersReady, corev1.PodReady} {
		if condStatus(st, c) != corev1.ConditionTrue {
			t.Errorf("%s not True", c)
		}
	}
	if st.InitContainerStatuses[0].State.Terminated == nil || st.InitContainerStatuses[0].State.Terminated.Reason != "Completed" {
		t.Errorf("init status = %+v", st.InitContainerStatuses[0])
	}
	if st.QOSClass != corev1.PodQOSBestEffort || st.HostIP != "192.0.2.1" {
		t.Errorf("qos %s hostIP %s", st.QOSClass, st.HostIP)
	}
	// crash looping: waiting with the last termination, restartCount
	o = Observed{Sandboxes: []Sandbox{ready("s", 0)}, Containers: []Container{ctr(p, "i1", "s", 0, StateExited, 0), ctr(p, "a", "s", 0, StateExited, 2), ctr(p, "a", "s", 1, StateExited, 2)}}
	st = status(p, o, map[string]Waiting{"a": {Reason: "CrashLoopBackOff", Message: "back-off 20s"}})
	cs = st.ContainerStatuses[0]
	if cs.State.Waiting == nil || cs.State.Waiting.Reason != "CrashLoopBackOff" || cs.RestartCount != 1 ||
		cs.LastTerminationState.Terminated == nil || cs.LastTerminationState.Terminated.ExitCode != 2 || st.Phase != corev1.PodRunning {
		t.Errorf("crash loop status = %+v phase %s", cs, st.Phase)
	}
	// Never: exit 3 → Failed; exit 0 → Succeeded
	pn := pod(never, nil, "a")
	on := Observed{Sandboxes: []Sandbox{ready("s", 0)}, Containers: []Container{ctr(pn, "a", "s", 0, StateExited, 3)}}
	if st := status(pn, on, nil); st.Phase != corev1.PodFailed || st.ContainerStatuses[0].State.Terminated.ExitCode != 3 {
		t.Errorf("never/exit 3: %s %+v", st.Phase, st.ContainerStatuses[0].State)
	}
	on.Containers[0].ExitCode = 0
	if st := status(pn, on, nil); st.Phase != corev1.PodSucceeded || condStatus(st, corev1.PodReady) != corev1.ConditionFalse {
		t.Errorf("never/exit 0: %s", st.Phase)
	}
	// image pull error shows as the container's waiting reason
	st = status(pod(always, nil, "a"), Observed{Sandboxes: []Sandbox{ready("s", 0)}}, map[string]Waiting{"a": {Reason: "ErrImagePull", Message: "not found"}})
	if w := st.ContainerStatuses[0].State.Waiting; w == nil || w.Reason != "ErrImagePull" || w.Message != "not found" || st.Phase != corev1.PodPending {
		t.Errorf("pull error status = %+v", st.ContainerStatuses[0])
	}
}

func TestConditionTransitionTimesKept(t *testing.T) {
	p := pod(corev1.RestartPolicyAlways, nil, "a")
	o := Observed{Sandboxes: []Sandbox{ready("s", 0)}, Containers: []Container{ctr(p, "a", "s", 0, StateRunning, 0)}}
	first := Status(StatusInput{Pod: p, Observed: o, RuntimeName: "containerd", Now: t0})
	p.Status = first
	again := Status(StatusInput{Pod: p, Observed: o, RuntimeName: "containerd", Now: t0.Add(time.Hour)})
	if Changed(first, again) {
		t.Errorf("nothing changed but the status differs:\n%+v\n%+v", first, again)
	}
}

func TestQOSClass(t *testing.T) {
	p := pod(corev1.RestartPolicyAlways, nil, "a")
	if QOSClass(p) != corev1.PodQOSBestEffort {
		t.Error("want BestEffort")
	}
	p.Spec.Containers[0].Resources.Requests = corev1.ResourceList{"memory": resource.MustParse("10Mi")}
	if QOSClass(p) != corev1.PodQOSBurstable {
		t.Error("want Burstable")
	}
	p.Spec.Containers[0].Resources.Limits = corev1.ResourceList{"memory": resource.MustParse("10Mi"), "cpu": resource.MustParse("1")}
	p.Spec.Containers[0].Resources.Requests = nil
	if QOSClass(p) != corev1.PodQOSGuaranteed {
		t.Error("want Guaranteed (requests default to limits)")
	}
}

// An evicted pod ends Failed with reason Evicted and a DisruptionTarget condition, and
// keeps them once terminal.
func TestStatusEvicted(t *testing.T) {
	p := pod(corev1.RestartPolicyAlways, nil, "a")
	o := Observed{Sandboxes: []Sandbox{ready("s", 0)}, Containers: []Container{ctr(p, "a", "s", 0, StateExited, 137)}}
	st := Status(StatusInput{Pod: p, Observed: o, Now: t0, Evicted: "Usage of EmptyDir volume \"x\" exceeds the limit \"1Mi\". "})
	if st.Phase != corev1.PodFailed || st.Reason != "Evicted" || st.Message == "" {
		t.Fatalf("phase %s reason %q message %q", st.Phase, st.Reason, st.Message)
	}
	var dt *corev1.PodCondition
	for i := range st.Conditions {
		if st.Conditions[i].Type == corev1.DisruptionTarget {
			dt = &st.Conditions[i]
		}
	}
	if dt == nil || dt.Status != corev1.ConditionTrue || dt.Reason != "TerminationByKubelet" {
		t.Fatalf("DisruptionTarget condition: %+v", dt)
	}
	p.Status = st
	again := Status(StatusInput{Pod: p, Observed: o, Now: t0.Add(time.Minute)})
	if again.Phase != corev1.PodFailed || again.Reason != "Evicted" || again.Message != st.Message || Changed(st, again) {
		t.Errorf("terminal evicted status not kept: %+v", again)
	}
}

// The kubelet marks every pod it runs scheduled (generateAPIPodStatus), also one created
// with spec.nodeName and no scheduler, pending or running.
func TestPodScheduledCondition(t *testing.T) {
	p := pod(corev1.RestartPolicyAlways, nil, "a")
	for name, o := range map[string]Observed{
		"pending": {},
		"running": {Sandboxes: []Sandbox{ready("s", 0)}, Containers: []Container{ctr(p, "a", "s", 0, StateRunning, 0)}},
	} {
		if got := condStatus(status(p, o, nil), corev1.PodScheduled); got != corev1.ConditionTrue {
			t.Errorf("%s: PodScheduled = %q, want True", name, got)
		}
	}
}

// Ephemeral containers start in a ready sandbox (before initialization is done), once,
// joining their target's PID namespace; they are reported apart and never restarted.
func TestEphemeralContainers(t *testing.T) {
	p := pod(corev1.RestartPolicyAlways, []string{"i1"}, "a")
	p.Spec.EphemeralContainers = []corev1.EphemeralContainer{
		{EphemeralContainerCommon: corev1.EphemeralContainerCommon{Name: "debugger", Image: "busybox"}},
		{EphemeralContainerCommon: corev1.EphemeralContainerCommon{Name: "peek", Image: "busybox"}, TargetContainerName: "a"},
	}
	// initializing: the first ephemeral one starts, the targeted one waits for its target
	o := Observed{Sandboxes: []Sandbox{ready("s", 0)}, Containers: []Container{ctr(p, "i1", "s", 0, StateRunning, 0)}}
	a := Plan(Input{Pod: p, Observed: o, Now: t0})
	if len(a.Start) != 1 || a.Start[0] != (Start{Name: "debugger", Ephemeral: true}) {
		t.Errorf("starts while initializing: %+v", a.Start)
	}
	st := status(p, o, nil)
	if len(st.EphemeralContainerStatuses) != 2 || st.EphemeralContainerStatuses[0].State.Waiting.Reason != "PodInitializing" {
		t.Errorf("ephemeral statuses: %+v", st.EphemeralContainerStatuses)
	}
	// running app: the targeted one starts with the app's ID; an exited one stays so
	app := ctr(p, "a", "s", 0, StateRunning, 0)
	o = Observed{Sandboxes: []Sandbox{ready("s", 0)}, Containers: []Container{ctr(p, "i1", "s", 0, StateExited, 0), app,
		{ID: "dbg", SandboxID: "s", Name: "debugger", State: StateExited, ExitCode: 1, CreatedAt: t0}}}
	a = Plan(Input{Pod: p, Observed: o, Now: t0})
	if len(a.Start) != 1 || a.Start[0] != (Start{Name: "peek", Ephemeral: true, TargetID: app.ID}) {
		t.Errorf("starts once running: %+v", a.Start)
	}
	st = status(p, o, nil)
	if cs := st.EphemeralContainerStatuses[0]; cs.State.Terminated == nil || cs.State.Terminated.ExitCode != 1 || cs.Ready {
		t.Errorf("exited ephemeral container: %+v", cs)
	}
	if st.Phase != corev1.PodRunning || condStatus(st, corev1.PodReady) != corev1.ConditionTrue {
		t.Errorf("ephemeral containers must not count for phase or readiness: %s", st.Phase)
	}
}

// A container's status names the image the runtime runs it from, not the spec's: an
// init container that finished keeps its image after the spec's is changed.
func TestStatusImageFromRuntime(t *testing.T) {
	p := pod(corev1.RestartPolicyAlways, []string{"i1"}, "a")
	p.Spec.InitContainers[0].Image = "busybox:new"
	i1 := ctr(p, "i1", "s", 0, StateExited, 0)
	i1.Image = "docker.io/library/busybox:old"
	st := status(p, Observed{Sandboxes: []Sandbox{ready("s", 0)}, Containers: []Container{i1, ctr(p, "a", "s", 0, StateRunning, 0)}}, nil)
	if got := st.InitContainerStatuses[0].Image; got != "docker.io/library/busybox:old" {
		t.Errorf("init container image %q, want the runtime's", got)
	}
	if got := st.ContainerStatuses[0].Image; got != "busybox" {
		t.Errorf("without the runtime's image name the spec's is reported, got %q", got)
	}
}

func TestReadySandbox(t *testing.T) {
	t0 := time.Unix(1000, 0)
	for _, c := range []struct {
		name string
		sbs  []Sandbox
		want string
	}{
		{"none", nil, ""},
		{"none ready", []Sandbox{{ID: "a", Attempt: 2}}, ""},
		{"the newer attempt", []Sandbox{{ID: "a", Ready: true}, {ID: "b", Attempt: 1, Ready: true}}, "b"},
		{"a newer attempt not ready", []Sandbox{{ID: "a", Ready: true}, {ID: "b", Attempt: 1}}, "a"},
		{"same attempt: the newer", []Sandbox{{ID: "a", Ready: true, CreatedAt: t0.Add(time.Second)}, {ID: "b", Ready: true, CreatedAt: t0}}, "a"},
	} {
		got := ""
		if sb := (Observed{Sandboxes: c.sbs}).ReadySandbox(); sb != nil {
			got = sb.ID
		}
		if got != c.want {
			t.Errorf("%s: ReadySandbox = %q, want %q", c.name, got, c.want)
		}
	}
}
