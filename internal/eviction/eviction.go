// Package eviction is the kubelet's eviction manager (upstream pkg/kubelet/eviction):
// local storage eviction of pods whose emptyDir volume outgrows its sizeLimit, and
// node-pressure eviction (pressure.go): hard thresholds against the observed signals,
// the node conditions they give, admission under them, ranking and picking the pod to
// evict and its message.
//
// Measured, EmptyDirViolation, ThresholdsMet, Admit, Rank and Pick decide; Monitor
// lists the pods, measures the volumes and hands each decision to its Evict function.
package eviction

import (
	"context"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"syscall"

	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/types"

	"github.com/nodekeeper/nodekeeper/internal/podplan"
)

// SystemCriticalPriority is upstream's scheduling.SystemCriticalPriority (2 × the
// highest user-definable priority): pods at or above it are critical.
const SystemCriticalPriority = 2 * 1000000000

// IsCritical is upstream's kubelettypes.IsCriticalPod: static and mirror pods, and pods
// at or above SystemCriticalPriority. The eviction manager never evicts them.
func IsCritical(pod *corev1.Pod) bool {
	if src, ok := pod.Annotations[podplan.AnnotationConfigSource]; ok && src != "api" {
		return true
	}
	if _, ok := pod.Annotations[podplan.AnnotationConfigMirror]; ok {
		return true
	}
	return pod.Spec.Priority != nil && *pod.Spec.Priority >= SystemCriticalPriority
}

// Measured is the pod's volumes whose usage decides its eviction (emptyDirs with a
// positive sizeLimit), or nil when none needs measuring: the pod is not this node's,
// is being deleted, has finished, is already evicted, or is critical.
func Measured(pod *corev1.Pod, nodeName string, evicted bool) []string {
	if pod.Spec.NodeName != nodeName || pod.DeletionTimestamp != nil || podplan.Terminal(pod) || evicted || IsCritical(pod) {
		return nil
	}
	var out []string
	for _, v := range pod.Spec.Volumes {
		if limited(v) {
			out = append(out, v.Name)
		}
	}
	return out
}

func limited(v corev1.Volume) bool {
	return v.EmptyDir != nil && v.EmptyDir.SizeLimit != nil && v.EmptyDir.SizeLimit.Sign() == 1
}

// EmptyDirViolation is upstream's emptyDirLimitEviction message for the first emptyDir
// volume whose usage (bytes, by volume name; a volume not measured is not judged)
// exceeds its sizeLimit, or "" when none does.
func EmptyDirViolation(pod *corev1.Pod, usage map[string]int64) string {
	for _, v := range pod.Spec.Volumes {
		if !limited(v) {
			continue
		}
		if used, ok := usage[v.Name]; ok && used > v.EmptyDir.SizeLimit.Value() {
			return fmt.Sprintf("Usage of EmptyDir volume %q exceeds the limit %q. ", v.Name, v.EmptyDir.SizeLimit.String())
		}
	}
	return ""
}

// Monitor checks every period (the kubelet's eviction manager: 10 s) the pods of the
// node and evicts each one EmptyDirViolation finds.
type Monitor struct {
	NodeName string
	// List is the pods to check.
	List func(ctx context.Context) ([]corev1.Pod, error)
	// Evicted tells whether the pod is evicted already.
	Evicted func(types.UID) bool
	// VolumeDir is the host folder of one of the pod's volumes.
	VolumeDir func(pod *corev1.Pod, volume string) string
	// Evict kills the pod at once and records why (the message).
	Evict func(ctx context.Context, pod *corev1.Pod, message string)
}

// Check measures and evicts once.
func (m *Monitor) Check(ctx context.Context) error {
	pods, err := m.List(ctx)
	if err != nil {
		return fmt.Errorf("listing pods: %w", err)
	}
	for i := range pods {
		pod := &pods[i]
		vols := Measured(pod, m.NodeName, m.Evicted(pod.UID))
		if len(vols) == 0 {
			continue
		}
		usage := make(map[string]int64, len(vols))
		for _, v := range vols {
			// a volume not set up yet has no figure, and is not judged (as upstream's
			// missing volume stats)
			if n, err := DirUsage(m.VolumeDir(pod, v)); err == nil {
				usage[v] = n
			}
		}
		if msg := EmptyDirViolation(pod, usage); msg != "" {
			m.Evict(ctx, pod, msg)
		}
	}
	return nil
}

// DirUsage is the disk space the files below dir use (allocated blocks, as du): an
// error when dir cannot be read; files below it that cannot be read count nothing.
func DirUsage(dir string) (int64, error) {
	var total int64
	err := filepath.WalkDir(dir, func(path string, d fs.DirEntry, err error) error {
		if err != nil {
			if path == dir {
				return err
			}
			return nil // gone or unreadable meanwhile: skipped, as du goes on
		}
		if info, err := d.Info(); err == nil {
			total += blocksOf(info)
		}
		return nil
	})
	return total, err
}

func blocksOf(info os.FileInfo) int64 {
	if st, ok := info.Sys().(*syscall.Stat_t); ok {
		return st.Blocks * 512
	}
	return info.Size()
}
