package pleg

import (
	"context"
	"errors"
	"time"

	"github.com/go-logr/logr"
	"k8s.io/apimachinery/pkg/types"
	runtimeapi "k8s.io/cri-api/pkg/apis/runtime/v1"

	"github.com/nodekeeper/nodekeeper/internal/kubeletmetrics"
	"github.com/nodekeeper/nodekeeper/internal/podplan"
	"github.com/nodekeeper/nodekeeper/runtime/cri"
)

// MaxStreamRetries is how often a broken event stream is reopened before the fast path
// is given up (upstream's eventedPlegMaxStreamRetries).
const MaxStreamRetries = 5

// EventPod is the pod a runtime event concerns, when it is one of ours and a container
// stopped: the one event the relisting cannot see at once (upstream's evented PLEG, a
// fast path for container termination; created/started/deleted are the agent's own
// doing and the relist sees them).
func EventPod(ev *runtimeapi.ContainerEventResponse) (types.NamespacedName, bool) {
	if ev.GetContainerEventType() != runtimeapi.ContainerEventType_CONTAINER_STOPPED_EVENT {
		return types.NamespacedName{}, false
	}
	sb := ev.GetPodSandboxStatus()
	if sb == nil || sb.GetLabels()[podplan.LabelManaged] != "true" {
		return types.NamespacedName{}, false
	}
	p := PodOf(sb.GetLabels())
	return p, p.Name != ""
}

// Watcher streams the runtime's container events and tells Notify at once about a
// pod whose container stopped, beside the relist (which stays the source of truth).
type Watcher struct {
	Events cri.EventStreamer
	Notify func(types.NamespacedName)
	Log    logr.Logger
	// RetryDelay is the wait before reopening a broken stream (default 1s).
	RetryDelay time.Duration
}

// NeedLeaderElection: node-local work, on every replica.
func (w *Watcher) NeedLeaderElection() bool { return false }

// Start watches until ctx ends, the runtime has no event stream (containerd 1.6: the
// relist alone serves, as before) or the stream broke MaxStreamRetries times. It never
// fails the manager.
func (w *Watcher) Start(ctx context.Context) error {
	delay := w.RetryDelay
	if delay == 0 {
		delay = time.Second
	}
	for attempts := 0; ; {
		gotEvent := false
		err := w.Events.ContainerEvents(ctx, kubeletmetrics.EventedPLEGConn.Inc, func(ev *runtimeapi.ContainerEventResponse) {
			gotEvent = true
			if ev.GetCreatedAt() > 0 {
				kubeletmetrics.EventedPLEGConnLatency.Observe(time.Since(time.Unix(0, ev.GetCreatedAt())).Seconds())
			}
			if p, ok := EventPod(ev); ok {
				w.Notify(p)
			}
		})
		if ctx.Err() != nil {
			return nil
		}
		if errors.Is(err, cri.ErrUnimplemented) {
			w.Log.Info("The runtime has no container event stream, relisting only", "error", err.Error())
			return nil
		}
		kubeletmetrics.EventedPLEGConnErr.Inc()
		if gotEvent {
			attempts = 0 // it worked for a while: count afresh
		}
		attempts++
		if attempts >= MaxStreamRetries {
			w.Log.Error(err, "Disabling the container-termination fast path after exhausting event stream retries, relisting only", "retries", attempts)
			return nil
		}
		w.Log.V(4).Info("Container event stream failed, retrying", "error", errString(err))
		select {
		case <-ctx.Done():
			return nil
		case <-time.After(delay):
		}
	}
}

func errString(err error) string {
	if err == nil {
		return "stream closed"
	}
	return err.Error()
}
