package controllers

import (
	"context"
	"fmt"
	"io/fs"
	"path/filepath"

	corev1 "k8s.io/api/core/v1"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/event"
	"sigs.k8s.io/controller-runtime/pkg/log"

	"github.com/nodekeeper/nodekeeper/internal/podplan"
)

// emptyDirEviction is upstream's local-storage eviction message for the first emptyDir
// volume whose usage (bytes, by volume name) exceeds its sizeLimit, or "".
func emptyDirEviction(pod *corev1.Pod, usage map[string]int64) string {
	for _, v := range pod.Spec.Volumes {
		if v.EmptyDir == nil || v.EmptyDir.SizeLimit == nil || v.EmptyDir.SizeLimit.IsZero() {
			continue
		}
		if used, ok := usage[v.Name]; ok && used > v.EmptyDir.SizeLimit.Value() {
			return fmt.Sprintf("Usage of EmptyDir volume %q exceeds the limit %q. ", v.Name, v.EmptyDir.SizeLimit.String())
		}
	}
	return ""
}

// dirUsage is the disk space the files below dir use (allocated blocks, as du).
func dirUsage(dir string) int64 {
	var total int64
	_ = filepath.WalkDir(dir, func(_ string, d fs.DirEntry, err error) error {
		if err != nil {
			return nil
		}
		if info, err := d.Info(); err == nil {
			total += blocksOf(info)
		}
		return nil
	})
	return total
}

// evictionMonitor measures the emptyDir volumes of running pods every period (the
// kubelet's eviction manager does it every 10s) and evicts a pod whose volume exceeds
// its sizeLimit: the pod is killed at once and ends Failed, reason Evicted.
type evictionMonitor struct {
	r      *PodReconciler
	reader client.Reader
}

func (m *evictionMonitor) check(ctx context.Context) {
	pods := &corev1.PodList{}
	if err := m.reader.List(ctx, pods); err != nil {
		return
	}
	for i := range pods.Items {
		pod := &pods.Items[i]
		if pod.Spec.NodeName != m.r.Config.NodeName || pod.DeletionTimestamp != nil || podplan.Terminal(pod) || m.r.evictedMessage(pod.UID) != "" {
			continue
		}
		usage := map[string]int64{}
		for _, v := range pod.Spec.Volumes {
			if v.EmptyDir != nil && v.EmptyDir.SizeLimit != nil {
				usage[v.Name] = dirUsage(m.r.volumeDir(pod, v.Name))
			}
		}
		if msg := emptyDirEviction(pod, usage); msg != "" {
			log.FromContext(ctx).Info("Evicting pod", "pod", client.ObjectKeyFromObject(pod), "reason", msg)
			m.r.evict(pod, msg)
		}
	}
}

// evict marks the pod evicted, records the Evicted event and wakes its reconcile.
func (r *PodReconciler) evict(pod *corev1.Pod, msg string) {
	r.setEvicted(pod.UID, msg)
	r.Recorder.Eventf(pod, corev1.EventTypeWarning, "Evicted", "%s", msg)
	select {
	case r.events <- event.GenericEvent{Object: &corev1.Pod{ObjectMeta: pod.ObjectMeta}}:
	default:
	}
}
