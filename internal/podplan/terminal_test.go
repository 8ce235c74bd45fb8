package podplan

import (
	"strconv"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/utils/ptr"
)

// The final status of a pod whose containers were killed on deletion: what the
// kubelet posts before it removes the pod (generateAPIPodStatus with podIsTerminal,
// then TerminatePod).
func TestTerminalStatus(t *testing.T) {
	always, never, onFailure := corev1.RestartPolicyAlways, corev1.RestartPolicyNever, corev1.RestartPolicyOnFailure
	type want struct {
		phase  corev1.PodPhase
		state  string // of app container "a": "terminated:<code>:<reason>" or "waiting:<reason>"
		istate string // of the first init container, when there is one
	}
	state := func(cs corev1.ContainerStatus) string {
		switch {
		case cs.State.Terminated != nil:
			return "terminated:" + strconv.Itoa(int(cs.State.Terminated.ExitCode)) + ":" + cs.State.Terminated.Reason
		case cs.State.Running != nil:
			return "running"
		case cs.State.Waiting != nil:
			return "waiting:" + cs.State.Waiting.Reason
		}
		return "none"
	}
	tests := []struct {
		name string
		pod  *corev1.Pod
		obs  func(p *corev1.Pod) Observed
		api  func(p *corev1.Pod) // the status the API held before
		want want
	}{
		{name: "killed by SIGKILL under Always: Failed, 137", pod: pod(always, nil, "a"),
			obs: func(p *corev1.Pod) Observed {
				return Observed{Sandboxes: []Sandbox{ready("s", 0)}, Containers: []Container{ctr(p, "a", "s", 0, StateExited, 137)}}
			},
			want: want{phase: corev1.PodFailed, state: "terminated:137:Error"}},
		{name: "exited 0 on SIGTERM under Always: Succeeded", pod: pod(always, nil, "a"),
			obs: func(p *corev1.Pod) Observed {
				return Observed{Sandboxes: []Sandbox{ready("s", 0)}, Containers: []Container{ctr(p, "a", "s", 0, StateExited, 0)}}
			},
			want: want{phase: corev1.PodSucceeded, state: "terminated:0:Completed"}},
		{name: "exited 0 under OnFailure: Succeeded", pod: pod(onFailure, nil, "a"),
			obs: func(p *corev1.Pod) Observed {
				return Observed{Sandboxes: []Sandbox{ready("s", 0)}, Containers: []Container{ctr(p, "a", "s", 0, StateExited, 0)}}
			},
			want: want{phase: corev1.PodSucceeded, state: "terminated:0:Completed"}},
		{name: "one of two failed under Never: Failed", pod: pod(never, nil, "a", "b"),
			obs: func(p *corev1.Pod) Observed {
				return Observed{Sandboxes: []Sandbox{ready("s", 0)}, Containers: []Container{ctr(p, "a", "s", 0, StateExited, 0), ctr(p, "b", "s", 0, StateExited, 143)}}
			},
			want: want{phase: corev1.PodFailed, state: "terminated:0:Completed"}},
		{name: "deleted while pending (image never pulled): Failed, container unknown 137", pod: pod(always, nil, "a"),
			obs:  func(*corev1.Pod) Observed { return Observed{Sandboxes: []Sandbox{ready("s", 0)}} },
			want: want{phase: corev1.PodFailed, state: "terminated:137:ContainerStatusUnknown"}},
		{name: "crash looping when deleted: the last exit is the final state", pod: pod(always, nil, "a"),
			obs: func(p *corev1.Pod) Observed {
				return Observed{Sandboxes: []Sandbox{ready("s", 0)}, Containers: []Container{ctr(p, "a", "s", 0, StateExited, 2), ctr(p, "a", "s", 1, StateExited, 2)}}
			},
			want: want{phase: corev1.PodFailed, state: "terminated:2:Error"}},
		{name: "deleted during its first init container: init unknown, app left waiting", pod: pod(always, []string{"i1", "i2"}, "a"),
			obs: func(p *corev1.Pod) Observed {
				return Observed{Sandboxes: []Sandbox{ready("s", 0)}, Containers: []Container{ctr(p, "i1", "s", 0, StateExited, 137)}}
			},
			api: func(p *corev1.Pod) {
				p.Status.InitContainerStatuses = []corev1.ContainerStatus{{Name: "i1", State: corev1.ContainerState{Running: &corev1.ContainerStateRunning{}}},
					{Name: "i2", State: corev1.ContainerState{Waiting: &corev1.ContainerStateWaiting{Reason: "PodInitializing"}}}}
				p.Status.ContainerStatuses = []corev1.ContainerStatus{{Name: "a", State: corev1.ContainerState{Waiting: &corev1.ContainerStateWaiting{Reason: "PodInitializing"}}}}
			},
			want: want{phase: corev1.PodFailed, state: "waiting:PodInitializing", istate: "terminated:137:Error"}},
		{name: "sidecar killed after the app: app's exit decides", pod: pod(never, []string{"s1"}, "a"),
			obs: func(p *corev1.Pod) Observed {
				return Observed{Sandboxes: []Sandbox{ready("s", 0)}, Containers: []Container{ctr(p, "s1", "s", 0, StateExited, 143), ctr(p, "a", "s", 0, StateExited, 0)}}
			},
			want: want{phase: corev1.PodSucceeded, state: "terminated:0:Completed", istate: "terminated:143:Error"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			p := tt.pod
			p.Status.Phase = corev1.PodRunning
			if tt.api != nil {
				tt.api(p)
			}
			st := Status(StatusInput{Pod: p, Observed: tt.obs(p), RuntimeName: "containerd", Now: t0, Terminal: true})
			got := want{phase: st.Phase, state: state(st.ContainerStatuses[0])}
			if len(st.InitContainerStatuses) > 0 {
				got.istate = state(st.InitContainerStatuses[0])
			}
			if got != tt.want {
				t.Errorf("got %+v, want %+v", got, tt.want)
			}
			for _, c := range []corev1.PodConditionType{corev1.ContainersReady, corev1.PodReady} {
				if condStatus(st, c) != corev1.ConditionFalse {
					t.Errorf("%s is not False on a terminated pod", c)
				}
			}
			// written once, the final status stays as it is
			p.Status = st
			if again := Status(StatusInput{Pod: p, Observed: tt.obs(p), RuntimeName: "containerd", Now: t0, Terminal: true}); Changed(st, again) {
				t.Errorf("final status not stable:\n%+v\n%+v", st, again)
			}
		})
	}
}

// Without Terminal, a Running pod whose container was killed under restartPolicy
// Always is restarting, not terminal.
func TestNotTerminalKeepsRunning(t *testing.T) {
	p := pod(corev1.RestartPolicyAlways, nil, "a")
	o := Observed{Sandboxes: []Sandbox{ready("s", 0)}, Containers: []Container{ctr(p, "a", "s", 0, StateExited, 137)}}
	if st := status(p, o, nil); st.Phase != corev1.PodRunning {
		t.Errorf("phase %s, want Running", st.Phase)
	}
}

// A static pod gets no terminal phase on termination (upstream's TODO #116484).
func TestTerminalStaticPodKeepsPhase(t *testing.T) {
	p := pod(corev1.RestartPolicyAlways, nil, "a")
	p.Annotations = map[string]string{"kubernetes.io/config.source": "file"}
	o := Observed{Sandboxes: []Sandbox{ready("s", 0)}, Containers: []Container{ctr(p, "a", "s", 0, StateExited, 137)}}
	if st := Status(StatusInput{Pod: p, Observed: o, Now: t0, Terminal: true}); st.Phase != corev1.PodRunning {
		t.Errorf("phase %s, want Running", st.Phase)
	}
}

// As the kubelet's PLEG (getPodIPs): once no sandbox of the pod is ready (it finished
// and its sandbox was stopped), the pod keeps the IPs it had; a ready sandbox's IP
// wins; host-network pods have the node's IP.
func TestPodIPsKept(t *testing.T) {
	p := pod(corev1.RestartPolicyNever, nil, "a")
	p.Status.PodIP, p.Status.PodIPs = "10.244.0.7", []corev1.PodIP{{IP: "10.244.0.7"}}
	stopped := Sandbox{ID: "s", Ready: false, CreatedAt: t0}
	st := status(p, Observed{Sandboxes: []Sandbox{stopped}, Containers: []Container{ctr(p, "a", "s", 0, StateExited, 42)}}, nil)
	if st.Phase != corev1.PodFailed || st.PodIP != "10.244.0.7" || len(st.PodIPs) != 1 || st.PodIPs[0].IP != "10.244.0.7" {
		t.Errorf("finished pod: phase %s podIP %q podIPs %v, want Failed with its IP kept", st.Phase, st.PodIP, st.PodIPs)
	}
	st = status(p, Observed{Sandboxes: []Sandbox{stopped, ready("s2", 1)}}, nil)
	if st.PodIP != "10.244.0.5" {
		t.Errorf("a ready sandbox's IP must win, got %q", st.PodIP)
	}
	fresh := pod(corev1.RestartPolicyNever, nil, "a")
	if st := status(fresh, Observed{}, nil); st.PodIP != "" {
		t.Errorf("a pod that never had a sandbox has no IP, got %q", st.PodIP)
	}
	fresh.Spec.HostNetwork = true
	if st := status(fresh, Observed{}, nil); st.PodIP != "192.0.2.1" || len(st.PodIPs) != 1 {
		t.Errorf("host-network pod: podIP %q podIPs %v, want the node's", st.PodIP, st.PodIPs)
	}
}

// A pod past its activeDeadlineSeconds (from status.startTime) is Failed with
// DeadlineExceeded, as the kubelet's activeDeadlineHandler; a terminal pod stays as it is.
func TestActiveDeadline(t *testing.T) {
	p := pod(corev1.RestartPolicyAlways, nil, "a")
	start := metav1.NewTime(t0.Add(-10 * time.Second))
	p.Status.StartTime = &start
	o := Observed{Sandboxes: []Sandbox{ready("s", 0)}, Containers: []Container{ctr(p, "a", "s", 0, StateRunning, 0)}}
	if st := status(p, o, nil); st.Phase != corev1.PodRunning {
		t.Fatalf("no deadline: phase %s", st.Phase)
	}
	p.Spec.ActiveDeadlineSeconds = ptr.To[int64](30)
	if d, ok := ActiveDeadline(p); !ok || !d.Equal(t0.Add(20*time.Second)) || PastActiveDeadline(p, t0) {
		t.Errorf("deadline %v %v, want 20s after now and not past", d, ok)
	}
	if st := status(p, o, nil); st.Phase != corev1.PodRunning {
		t.Errorf("before the deadline: phase %s", st.Phase)
	}
	p.Spec.ActiveDeadlineSeconds = ptr.To[int64](5)
	st := status(p, o, nil)
	if st.Phase != corev1.PodFailed || st.Reason != "DeadlineExceeded" || st.Message != "Pod was active on the node longer than the specified deadline" {
		t.Errorf("past the deadline: %s %q %q", st.Phase, st.Reason, st.Message)
	}
	p.Status.Phase = corev1.PodSucceeded
	if st := status(p, o, nil); st.Phase != corev1.PodSucceeded || st.Reason == "DeadlineExceeded" {
		t.Errorf("terminal pod changed: %s %q", st.Phase, st.Reason)
	}
}
