package pleg

import (
	"context"
	"errors"
	"reflect"
	"slices"
	"testing"

	"github.com/go-logr/logr"
	"k8s.io/apimachinery/pkg/types"
	runtimeapi "k8s.io/cri-api/pkg/apis/runtime/v1"

	"github.com/nodekeeper/nodekeeper/internal/podplan"
)

func labels(pod, uid string) map[string]string {
	return map[string]string{podplan.LabelPodNamespace: "ns", podplan.LabelPodName: pod, podplan.LabelPodUID: uid, podplan.LabelManaged: "true"}
}

func ctr(id, pod string, st runtimeapi.ContainerState) *runtimeapi.Container {
	return &runtimeapi.Container{Id: id, State: st, Labels: labels(pod, pod+"-uid")}
}

func sb(id, pod string, st runtimeapi.PodSandboxState) *runtimeapi.PodSandbox {
	return &runtimeapi.PodSandbox{Id: id, State: st, Labels: labels(pod, pod+"-uid")}
}

func names(m map[types.NamespacedName]bool) []string {
	var out []string
	for k := range m {
		out = append(out, k.Name)
	}
	slices.Sort(out)
	return out
}

func TestChanged(t *testing.T) {
	running, exited := runtimeapi.ContainerState_CONTAINER_RUNNING, runtimeapi.ContainerState_CONTAINER_EXITED
	ready, notReady := runtimeapi.PodSandboxState_SANDBOX_READY, runtimeapi.PodSandboxState_SANDBOX_NOTREADY
	base := Take([]*runtimeapi.Container{ctr("c1", "a", running), ctr("c2", "b", running)},
		[]*runtimeapi.PodSandbox{sb("s1", "a", ready), sb("s2", "b", ready)})
	for _, c := range []struct {
		name string
		last Snapshot
		cs   []*runtimeapi.Container
		sbs  []*runtimeapi.PodSandbox
		want []string
	}{
		{"first listing: nothing", nil, []*runtimeapi.Container{ctr("c1", "a", running)}, nil, nil},
		{"same", base, []*runtimeapi.Container{ctr("c1", "a", running), ctr("c2", "b", running)},
			[]*runtimeapi.PodSandbox{sb("s1", "a", ready), sb("s2", "b", ready)}, nil},
		{"a container exited", base, []*runtimeapi.Container{ctr("c1", "a", exited), ctr("c2", "b", running)},
			[]*runtimeapi.PodSandbox{sb("s1", "a", ready), sb("s2", "b", ready)}, []string{"a"}},
		{"a container went away", base, []*runtimeapi.Container{ctr("c1", "a", running)},
			[]*runtimeapi.PodSandbox{sb("s1", "a", ready), sb("s2", "b", ready)}, []string{"b"}},
		{"a new container and a sandbox died", base, []*runtimeapi.Container{ctr("c1", "a", running), ctr("c2", "b", running), ctr("c3", "c", running)},
			[]*runtimeapi.PodSandbox{sb("s1", "a", notReady), sb("s2", "b", ready)}, []string{"a", "c"}},
		{"an ID shared by a container and a sandbox is two entries", Take([]*runtimeapi.Container{ctr("x", "a", running)}, nil),
			[]*runtimeapi.Container{ctr("x", "a", running)}, []*runtimeapi.PodSandbox{sb("x", "b", ready)}, []string{"b"}},
	} {
		if got := names(Changed(c.last, Take(c.cs, c.sbs))); !reflect.DeepEqual(got, c.want) {
			t.Errorf("%s: changed %v, want %v", c.name, got, c.want)
		}
	}
}

func TestOrphans(t *testing.T) {
	sbs := []*runtimeapi.PodSandbox{sb("s1", "a", 0), sb("s2", "b", 0), sb("s3", "b", 0)}
	got := Orphans(sbs, map[types.UID]bool{"a-uid": true})
	want := []types.NamespacedName{{Namespace: "ns", Name: "b"}, {Namespace: "ns", Name: "b"}}
	if !reflect.DeepEqual(got, want) {
		t.Errorf("Orphans = %v, want %v", got, want)
	}
	if got := Orphans(sbs, map[types.UID]bool{"a-uid": true, "b-uid": true}); got != nil {
		t.Errorf("all known: %v", got)
	}
}

type fakeLister struct {
	cs  []*runtimeapi.Container
	sbs []*runtimeapi.PodSandbox
	err error
}

func (f *fakeLister) ListContainers(context.Context, *runtimeapi.ContainerFilter) ([]*runtimeapi.Container, error) {
	return f.cs, f.err
}
func (f *fakeLister) ListPodSandbox(context.Context, *runtimeapi.PodSandboxFilter) ([]*runtimeapi.PodSandbox, error) {
	return f.sbs, f.err
}

func TestRelist(t *testing.T) {
	rt := &fakeLister{cs: []*runtimeapi.Container{ctr("c1", "a", runtimeapi.ContainerState_CONTAINER_RUNNING)},
		sbs: []*runtimeapi.PodSandbox{sb("s1", "a", 0), sb("s9", "gone", 0)}}
	var told []string
	var knownErr error
	l := &Relister{Runtime: rt, Log: logr.Discard(),
		Known:  func(context.Context) (map[types.UID]bool, error) { return map[types.UID]bool{"a-uid": true}, knownErr },
		Notify: func(p types.NamespacedName) { told = append(told, p.Name) }}
	l.Relist(context.Background())
	if !reflect.DeepEqual(told, []string{"gone"}) {
		t.Errorf("first relist told %v, want only the orphan", told)
	}
	told = nil
	rt.cs[0] = ctr("c1", "a", runtimeapi.ContainerState_CONTAINER_EXITED)
	knownErr = errors.New("cache not synced")
	l.Relist(context.Background())
	if !reflect.DeepEqual(told, []string{"a"}) {
		t.Errorf("second relist told %v, want the pod whose container exited (no orphan check)", told)
	}
	told = nil
	rt.err = errors.New("runtime down")
	l.Relist(context.Background())
	rt.err = nil
	if told != nil {
		t.Errorf("a failed listing told %v", told)
	}
	// the failed listing did not replace the last one: nothing changed since
	knownErr = nil
	l.Relist(context.Background())
	if !reflect.DeepEqual(told, []string{"gone"}) {
		t.Errorf("after the failure told %v, want only the orphan", told)
	}
}
