// Package fake is an in-memory cri.Runtime for fast tests. It keeps state and follows
// the same rules as a real runtime; tests change its health with SetDown and SetCondition.
package fake

import (
	"context"
	"fmt"
	"sync"

	runtimeapi "k8s.io/cri-api/pkg/apis/runtime/v1"

	"github.com/nodekeeper/nodekeeper/runtime/cri"
)

// Runtime is a fake container runtime. The zero value is not usable; call New.
type Runtime struct {
	mu         sync.Mutex
	name, ver  string
	down       bool
	conditions map[string]*runtimeapi.RuntimeCondition
}

var _ cri.Runtime = (*Runtime)(nil)

// New returns a healthy fake runtime calling itself fake-runtime 0.1.0.
func New() *Runtime {
	return &Runtime{
		name: "fake-runtime", ver: "0.1.0",
		conditions: map[string]*runtimeapi.RuntimeCondition{
			runtimeapi.RuntimeReady: {Type: runtimeapi.RuntimeReady, Status: true},
			runtimeapi.NetworkReady: {Type: runtimeapi.NetworkReady, Status: true},
		},
	}
}

// SetDown makes every call fail as if the socket were gone (or brings it back).
func (f *Runtime) SetDown(down bool) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.down = down
}

// SetCondition sets one runtime condition (RuntimeReady or NetworkReady).
func (f *Runtime) SetCondition(typ string, ok bool, reason, message string) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.conditions[typ] = &runtimeapi.RuntimeCondition{Type: typ, Status: ok, Reason: reason, Message: message}
}

func (f *Runtime) check(call string) error {
	if f.down {
		return fmt.Errorf("%w: %s: connection refused", cri.ErrUnavailable, call)
	}
	return nil
}

// Version implements cri.Runtime.
func (f *Runtime) Version(context.Context) (*runtimeapi.VersionResponse, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	if err := f.check("Version"); err != nil {
		return nil, err
	}
	return &runtimeapi.VersionResponse{Version: "0.1.0", RuntimeName: f.name, RuntimeVersion: f.ver, RuntimeApiVersion: "v1"}, nil
}

// Status implements cri.Runtime.
func (f *Runtime) Status(context.Context) (*runtimeapi.RuntimeStatus, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	if err := f.check("Status"); err != nil {
		return nil, err
	}
	st := &runtimeapi.RuntimeStatus{}
	for _, t := range []string{runtimeapi.RuntimeReady, runtimeapi.NetworkReady} {
		if c, ok := f.conditions[t]; ok {
			st.Conditions = append(st.Conditions, &runtimeapi.RuntimeCondition{
				Type: c.Type, Status: c.Status, Reason: c.Reason, Message: c.Message})
		}
	}
	return st, nil
}
