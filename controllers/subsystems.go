package controllers

import (
	"context"

	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/api/resource"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/klog/v2"
	"k8s.io/utils/clock"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/event"
	"sigs.k8s.io/controller-runtime/pkg/log"

	"github.com/nodekeeper/nodekeeper/internal/eviction"
	"github.com/nodekeeper/nodekeeper/internal/logrotate"
	"github.com/nodekeeper/nodekeeper/internal/podplan"
	"github.com/nodekeeper/nodekeeper/runtime/cri"
)

// The PodReconciler's thin adapters to the subsystem packages: they supply the I/O and
// report what the packages return.

// logRotator rotates the logs of the containers nodekeeper runs (internal/logrotate).
type logRotator struct{ rot *logrotate.Rotator }

// newLogRotator builds the rotator from the configuration (nil when maxSize cannot
// parse, which Validate has refused already).
func newLogRotator(rt cri.Runtime, maxSize string, maxFiles int32, c clock.PassiveClock) *logRotator {
	q, err := resource.ParseQuantity(maxSize)
	if err != nil || q.Value() <= 0 {
		return nil
	}
	return &logRotator{rot: &logrotate.Rotator{Runtime: rt, Clock: c, Policy: logrotate.Policy{MaxSize: q.Value(), MaxFiles: int(maxFiles)},
		Labels: map[string]string{podplan.LabelManaged: "true"}}}
}

func (l *logRotator) rotateAll(ctx context.Context) {
	if err := l.rot.RotateAll(ctx); err != nil {
		log.FromContext(ctx).WithName("logs").Error(err, "Rotating container logs failed")
	}
}

// evictionMonitor evicts pods whose emptyDir outgrew its sizeLimit (internal/eviction):
// the pods come from the cache, the volumes from the pod's folder.
type evictionMonitor struct {
	r      *PodReconciler
	reader client.Reader
}

func (m *evictionMonitor) check(ctx context.Context) {
	mon := &eviction.Monitor{NodeName: m.r.Config.NodeName,
		List: func(ctx context.Context) ([]corev1.Pod, error) {
			pods := &corev1.PodList{}
			err := m.reader.List(ctx, pods)
			return pods.Items, err
		},
		Evicted:   func(uid types.UID) bool { return m.r.evictedMessage(uid) != "" },
		VolumeDir: m.r.volumeDir,
		Evict: func(ctx context.Context, pod *corev1.Pod, msg string) {
			log.FromContext(ctx).Info("Evicting pod", "pod", klog.KObj(pod), "reason", msg)
			m.r.evict(pod, msg)
		},
	}
	if err := mon.Check(ctx); err != nil {
		log.FromContext(ctx).WithName("eviction").Error(err, "Checking pods for eviction failed")
	}
}

// evict marks the pod evicted, records the Evicted event and wakes its reconcile, which
// kills it at once (it ends Failed, reason Evicted).
func (r *PodReconciler) evict(pod *corev1.Pod, msg string) {
	r.setEvicted(pod.UID, msg)
	r.Recorder.Eventf(pod, corev1.EventTypeWarning, "Evicted", "%s", msg)
	select {
	case r.events <- event.GenericEvent{Object: &corev1.Pod{ObjectMeta: pod.ObjectMeta}}:
	default:
	}
}
