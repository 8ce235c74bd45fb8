package pleg

import (
	"context"
	"errors"
	"fmt"
	"reflect"
	"sync"
	"testing"
	"time"

	"github.com/go-logr/logr"
	"k8s.io/apimachinery/pkg/types"
	runtimeapi "k8s.io/cri-api/pkg/apis/runtime/v1"

	"github.com/nodekeeper/nodekeeper/internal/podplan"
	"github.com/nodekeeper/nodekeeper/runtime/cri"
)

func event(typ runtimeapi.ContainerEventType, pod string, managed bool) *runtimeapi.ContainerEventResponse {
	l := labels(pod, pod+"-uid")
	if !managed {
		delete(l, podplan.LabelManaged)
	}
	return &runtimeapi.ContainerEventResponse{ContainerId: "c-" + pod, ContainerEventType: typ, CreatedAt: time.Now().UnixNano(),
		PodSandboxStatus: &runtimeapi.PodSandboxStatus{Labels: l}}
}

func TestEventPod(t *testing.T) {
	stopped, started := runtimeapi.ContainerEventType_CONTAINER_STOPPED_EVENT, runtimeapi.ContainerEventType_CONTAINER_STARTED_EVENT
	for _, c := range []struct {
		name string
		ev   *runtimeapi.ContainerEventResponse
		want string
	}{
		{"ours stopped", event(stopped, "a", true), "a"},
		{"ours started: the agent's own doing", event(started, "a", true), ""},
		{"not ours", event(stopped, "b", false), ""},
		{"no sandbox status", &runtimeapi.ContainerEventResponse{ContainerEventType: stopped}, ""},
	} {
		p, ok := EventPod(c.ev)
		if got := p.Name; got != c.want || ok != (c.want != "") {
			t.Errorf("%s: EventPod = %v %v, want %q", c.name, p, ok, c.want)
		}
	}
}

// streams plays one script per ContainerEvents call: events, then an error.
type streams struct {
	mu      sync.Mutex
	scripts []script
	calls   int
}

type script struct {
	events []*runtimeapi.ContainerEventResponse
	err    error // nil: block until ctx ends
}

func (s *streams) ContainerEvents(ctx context.Context, opened func(), each func(*runtimeapi.ContainerEventResponse)) error {
	s.mu.Lock()
	i := s.calls
	s.calls++
	s.mu.Unlock()
	if i >= len(s.scripts) {
		return fmt.Errorf("unexpected call %d", i)
	}
	sc := s.scripts[i]
	if opened != nil && !errors.Is(sc.err, cri.ErrUnimplemented) {
		opened()
	}
	for _, ev := range sc.events {
		each(ev)
	}
	if sc.err == nil {
		<-ctx.Done()
		return nil
	}
	return sc.err
}

func run(t *testing.T, s *streams, wait func([]string) bool) ([]string, int) {
	t.Helper()
	var mu sync.Mutex
	var told []string
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	w := &Watcher{Events: s, Log: logr.Discard(), RetryDelay: time.Millisecond,
		Notify: func(p types.NamespacedName) { mu.Lock(); told = append(told, p.Name); mu.Unlock() }}
	done := make(chan error)
	go func() { done <- w.Start(ctx) }()
	deadline := time.After(5 * time.Second)
	for {
		mu.Lock()
		ok := wait(told)
		mu.Unlock()
		if ok {
			break
		}
		select {
		case err := <-done: // the watcher gave up by itself
			if err != nil {
				t.Fatal(err)
			}
			s.mu.Lock()
			defer s.mu.Unlock()
			return told, s.calls
		case <-deadline:
			t.Fatalf("timed out; told %v", told)
		case <-time.After(time.Millisecond):
		}
	}
	cancel()
	if err := <-done; err != nil {
		t.Fatal(err)
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	return told, s.calls
}

func TestWatcher(t *testing.T) {
	stopped := runtimeapi.ContainerEventType_CONTAINER_STOPPED_EVENT
	broken := errors.New("transport is closing")
	never := func([]string) bool { return false }

	// containerd 1.6: no stream, the relist alone serves; one call, nothing told
	told, calls := run(t, &streams{scripts: []script{{err: fmt.Errorf("GetContainerEvents: %w", cri.ErrUnimplemented)}}}, never)
	if told != nil || calls != 1 {
		t.Errorf("unimplemented: told %v after %d calls, want nothing after 1", told, calls)
	}

	// a stream that breaks is reopened and goes on telling
	told, _ = run(t, &streams{scripts: []script{
		{events: []*runtimeapi.ContainerEventResponse{event(stopped, "a", true), event(stopped, "x", false)}, err: broken},
		{events: []*runtimeapi.ContainerEventResponse{event(stopped, "b", true)}},
	}}, func(told []string) bool { return len(told) == 2 })
	if !reflect.DeepEqual(told, []string{"a", "b"}) {
		t.Errorf("told %v, want [a b]", told)
	}

	// a stream that breaks at once MaxStreamRetries times is given up
	var s []script
	for i := 0; i < MaxStreamRetries+3; i++ {
		s = append(s, script{err: broken})
	}
	_, calls = run(t, &streams{scripts: s}, never)
	if calls != MaxStreamRetries {
		t.Errorf("gave up after %d calls, want %d", calls, MaxStreamRetries)
	}
}
