package kubeletmetrics

import (
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus/testutil"
	"google.golang.org/grpc"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	runtimeapi "k8s.io/cri-api/pkg/apis/runtime/v1"
)

func TestRunningCounts(t *testing.T) {
	cs := []*runtimeapi.Container{{State: runtimeapi.ContainerState_CONTAINER_RUNNING}, {State: runtimeapi.ContainerState_CONTAINER_RUNNING},
		{State: runtimeapi.ContainerState_CONTAINER_EXITED}, {State: runtimeapi.ContainerState_CONTAINER_CREATED}, {State: runtimeapi.ContainerState_CONTAINER_UNKNOWN}}
	sbs := []*runtimeapi.PodSandbox{
		{State: runtimeapi.PodSandboxState_SANDBOX_READY, Metadata: &runtimeapi.PodSandboxMetadata{Uid: "a"}},
		{State: runtimeapi.PodSandboxState_SANDBOX_READY, Metadata: &runtimeapi.PodSandboxMetadata{Uid: "a", Attempt: 1}}, // one pod
		{State: runtimeapi.PodSandboxState_SANDBOX_NOTREADY, Metadata: &runtimeapi.PodSandboxMetadata{Uid: "b"}},
	}
	pods, byState := RunningCounts(cs, sbs)
	if pods != 1 {
		t.Errorf("running pods = %d, want 1 (one pod with a ready sandbox)", pods)
	}
	want := map[string]int{"running": 2, "exited": 1, "created": 1, "unknown": 1}
	for k, v := range want {
		if byState[k] != v {
			t.Errorf("containers %s = %d, want %d (%v)", k, byState[k], v, byState)
		}
	}
}

// Every CRI method has upstream's operation name.
func TestOperationTypesCoverCRI(t *testing.T) {
	for _, sd := range []grpc.ServiceDesc{runtimeapi.RuntimeService_ServiceDesc, runtimeapi.ImageService_ServiceDesc} {
		var names []string
		for _, m := range sd.Methods {
			names = append(names, m.MethodName)
		}
		for _, m := range sd.Streams {
			names = append(names, m.StreamName)
		}
		for _, m := range names {
			if OperationType("/"+sd.ServiceName+"/"+m) == "" {
				t.Errorf("%s.%s has no operation_type", sd.ServiceName, m)
			}
		}
	}
	if OperationType("/runtime.v1.RuntimeService/RunPodSandbox") != "run_podsandbox" || OperationType("PullImage") != "pull_image" {
		t.Error("names differ from upstream's")
	}
}

func TestRuntimeOperationCounted(t *testing.T) {
	before := testutil.ToFloat64(RuntimeOperations.WithLabelValues("exec_sync"))
	errsBefore := testutil.ToFloat64(RuntimeOperationsErrors.WithLabelValues("exec_sync"))
	ObserveRuntimeOperation("/runtime.v1.RuntimeService/ExecSync", time.Now(), nil)
	ObserveRuntimeOperation("/runtime.v1.RuntimeService/ExecSync", time.Now(), errTest)
	if d := testutil.ToFloat64(RuntimeOperations.WithLabelValues("exec_sync")) - before; d != 2 {
		t.Errorf("operations +%v, want +2", d)
	}
	if d := testutil.ToFloat64(RuntimeOperationsErrors.WithLabelValues("exec_sync")) - errsBefore; d != 1 {
		t.Errorf("errors +%v, want +1", d)
	}
}

type testErr struct{}

func (testErr) Error() string { return "boom" }

var errTest = testErr{}

func TestPullTimeCountsOverlapsOnce(t *testing.T) {
	at := func(s int) time.Time { return time.Unix(int64(s), 0) }
	got := pullTime([]pull{{at(0), at(10)}, {at(5), at(12)}, {at(8), at(9)}, {at(20), at(25)}, {at(30), time.Time{}}})
	if got != 17*time.Second {
		t.Errorf("pull time %v, want 17s (0–12 and 20–25; an unfinished pull not counted)", got)
	}
}

func TestStartupTracker(t *testing.T) {
	created := time.Unix(1000, 0)
	pod := &corev1.Pod{ObjectMeta: metav1.ObjectMeta{UID: "p1", CreationTimestamp: metav1.NewTime(created)}}
	var tr StartupTracker
	if !tr.FirstSeen("p1", created.Add(time.Second)) || tr.FirstSeen("p1", created.Add(2*time.Second)) {
		t.Fatal("FirstSeen must be true only the first time")
	}
	// the first sync is the worker's "create" even though the watch saw the pod before
	if !tr.FirstSync("p1", created.Add(3*time.Second)) || tr.FirstSync("p1", created.Add(4*time.Second)) {
		t.Fatal("FirstSync must be true only the first time")
	}
	tr.PullStarted("p1", created.Add(2*time.Second))
	tr.PullFinished("p1", created.Add(6*time.Second))
	if o := tr.ObservePod(pod, created.Add(7*time.Second)); o.TotalDuration != 0 {
		t.Fatal("nothing is observed before the containers run")
	}
	if d := tr.StatusComputed("p1", corev1.PodPending, corev1.PodRunning, created.Add(8*time.Second)); d != 7*time.Second {
		t.Errorf("pod_start_duration %v, want 7s (first seen on the watch → Running, not first sync)", d)
	}
	if d := tr.StatusComputed("p1", corev1.PodRunning, corev1.PodRunning, created.Add(9*time.Second)); d != 0 {
		t.Error("observed twice")
	}
	pod.Status = corev1.PodStatus{Phase: corev1.PodRunning, ContainerStatuses: []corev1.ContainerStatus{
		{State: corev1.ContainerState{Running: &corev1.ContainerStateRunning{StartedAt: metav1.NewTime(created.Add(8 * time.Second))}}}}}
	o := tr.ObservePod(pod, created.Add(10*time.Second))
	if o.TotalDuration != 10*time.Second || !o.SLI || o.SLIDuration != 6*time.Second {
		t.Errorf("observation %+v, want total 10s and SLI 6s (4s of pulling left out)", o)
	}
	if o := tr.ObservePod(pod, created.Add(11*time.Second)); o.TotalDuration != 0 {
		t.Error("observed twice")
	}
	// a stateful pod: total only
	st := pod.DeepCopy()
	st.UID = "p2"
	st.Spec.Volumes = []corev1.Volume{{Name: "data", VolumeSource: corev1.VolumeSource{PersistentVolumeClaim: &corev1.PersistentVolumeClaimVolumeSource{ClaimName: "c"}}}}
	tr.FirstSeen("p2", created)
	if o := tr.ObservePod(st, created.Add(5*time.Second)); o.TotalDuration != 5*time.Second || o.SLI {
		t.Errorf("stateful pod: %+v", o)
	}
}
