package controllers

import (
	"context"
	"time"

	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/api/resource"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/klog/v2"
	statsapi "k8s.io/kubelet/pkg/apis/stats/v1alpha1"
	"k8s.io/utils/clock"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/event"
	"sigs.k8s.io/controller-runtime/pkg/log"

	"github.com/nodekeeper/nodekeeper/host"
	"github.com/nodekeeper/nodekeeper/internal/eviction"
	"github.com/nodekeeper/nodekeeper/internal/logrotate"
	"github.com/nodekeeper/nodekeeper/internal/nodestatus"
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

// pressureTransitionPeriod is upstream's evictionPressureTransitionPeriod default: a
// pressure condition stays this long after its threshold was last met.
const pressureTransitionPeriod = 5 * time.Minute

// pressureConditions is the node's pressure conditions as last observed (with the
// transition period), under which admission refuses pods.
func (r *PodReconciler) pressureConditions() []corev1.NodeConditionType {
	r.pressureMu.Lock()
	defer r.pressureMu.Unlock()
	return r.pressure
}

// check is one cycle of the kubelet's eviction manager (synchronize): observe the
// signals and update the pressure conditions, evict the pods whose emptyDir outgrew its
// sizeLimit, and when none was and a hard threshold is met, evict one pod, the first of
// the ranking for the resource to reclaim (upstream: at most one per cycle).
func (m *evictionMonitor) check(ctx context.Context) {
	logger := log.FromContext(ctx).WithName("eviction")
	var met []eviction.Met
	if m.r.Signals != nil {
		obs, err := m.r.Signals()
		if err != nil {
			logger.Error(err, "Observing the eviction signals failed")
		} else {
			met = eviction.ThresholdsMet(obs, m.r.hard)
			m.r.pressureMu.Lock()
			m.r.pressure = eviction.Conditions(m.r.lastMet, met, m.r.Clock.Now(), pressureTransitionPeriod)
			m.r.pressureMu.Unlock()
		}
	}
	evicted := 0
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
			evicted++
		},
	}
	if err := mon.Check(ctx); err != nil {
		logger.Error(err, "Checking pods for eviction failed")
	}
	if evicted > 0 || len(met) == 0 {
		return
	}
	res := eviction.ResourceOf(met[0].Signal)
	logger.Info("Eviction manager: attempting to reclaim", "resourceName", res, "signal", met[0].Signal,
		"threshold", met[0].Threshold.String(), "available", met[0].Available.String())
	m.r.Recorder.Eventf(&corev1.ObjectReference{Kind: "Node", Name: m.r.Config.NodeName, UID: types.UID(m.r.Config.NodeName)},
		corev1.EventTypeWarning, "EvictionThresholdMet", "Attempting to reclaim %s", res)
	list := &corev1.PodList{}
	if err := m.reader.List(ctx, list); err != nil {
		logger.Error(err, "Listing pods for eviction failed")
		return
	}
	var active []*corev1.Pod
	for i := range list.Items {
		p := &list.Items[i]
		if p.Spec.NodeName == m.r.Config.NodeName && !podplan.Terminal(p) && m.r.evictedMessage(p.UID) == "" {
			active = append(active, p)
		}
	}
	var usage map[types.UID]eviction.Usage
	if m.r.PodUsage != nil {
		var err error
		if usage, err = m.r.PodUsage(ctx); err != nil {
			logger.Error(err, "Reading the pods' usage failed") // ranked without: by priority
		}
	}
	pod, msg := eviction.Pick(met, active, func(p *corev1.Pod) (eviction.Usage, bool) {
		u, ok := usage[p.UID]
		return u, ok
	})
	if pod == nil {
		logger.Info("Eviction manager: unable to evict any pods from the node", "resourceName", res)
		return
	}
	logger.Info("Evicting pod", "pod", klog.KObj(pod), "reason", msg)
	m.r.evict(pod, msg)
}

// SummaryUsage is the pods' usage in a stats summary, by pod UID, as the eviction
// manager ranks them: memory working set, ephemeral storage (rootfs, logs, local
// volumes) and its inodes, process count; per container, working set and rootfs + logs.
func SummaryUsage(s *statsapi.Summary) map[types.UID]eviction.Usage {
	out := map[types.UID]eviction.Usage{}
	val := func(p *uint64) int64 {
		if p == nil {
			return 0
		}
		return int64(*p)
	}
	for _, ps := range s.Pods {
		u := eviction.Usage{Containers: map[string]eviction.ContainerUsage{}}
		if ps.Memory != nil {
			u.Memory = val(ps.Memory.WorkingSetBytes)
		}
		if ps.EphemeralStorage != nil {
			u.Disk, u.Inodes = val(ps.EphemeralStorage.UsedBytes), val(ps.EphemeralStorage.InodesUsed)
		}
		if ps.ProcessStats != nil {
			u.PIDs = val(ps.ProcessStats.ProcessCount)
		}
		for _, c := range ps.Containers {
			var cu eviction.ContainerUsage
			if c.Memory != nil {
				cu.Memory = val(c.Memory.WorkingSetBytes)
			}
			if c.Rootfs != nil {
				cu.Disk += val(c.Rootfs.UsedBytes)
			}
			if c.Logs != nil {
				cu.Disk += val(c.Logs.UsedBytes)
			}
			u.Containers[c.Name] = cu
		}
		out[types.UID(ps.PodRef.UID)] = u
	}
	return out
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

// HostSignals observes the eviction signals of the machine, nodefs being rootDir's
// filesystem (host.Linux's Stats).
func HostSignals(rootDir string) func() (map[string]nodestatus.Signal, error) {
	return func() (map[string]nodestatus.Signal, error) {
		st, err := (&host.Linux{RootDir: rootDir}).Stats()
		out := make(map[string]nodestatus.Signal, len(st))
		for k, v := range st {
			out[k] = nodestatus.Signal{Available: v.Available, Capacity: v.Capacity}
		}
		return out, err
	}
}
