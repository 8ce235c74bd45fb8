package controllers

import (
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"sigs.k8s.io/controller-runtime/pkg/event"
	"sigs.k8s.io/controller-runtime/pkg/metrics"

	"github.com/nodekeeper/nodekeeper/internal/podplan"
	"github.com/nodekeeper/nodekeeper/internal/prober"
)

// newProber makes the probe workers (internal/prober) on the reconciler's runtime and
// clock: a change of a container's results wakes the pod's reconcile.
func (r *PodReconciler) newProber() *prober.Manager {
	prober.RegisterMetrics(metrics.Registry)
	return prober.New(prober.Options{Exec: r.Runtime, Recorder: r.Recorder, Clock: r.Clock,
		Changed: func(pod *corev1.Pod) {
			select {
			case r.events <- event.GenericEvent{Object: &corev1.Pod{ObjectMeta: metav1.ObjectMeta{Namespace: pod.Namespace, Name: pod.Name}}}:
			default:
			}
		}})
}

// probe keeps a probe worker on each running probed container and reads its results:
// readiness and startup per container name, and failed liveness into obs.Unhealthy.
func (r *PodReconciler) probe(pod *corev1.Pod, obs *podplan.Observed) (ready, started map[string]bool) {
	running := map[string]prober.Running{}
	if pod.DeletionTimestamp == nil && !podplan.Terminal(pod) {
		for _, c := range obs.Containers {
			if c.State == podplan.StateRunning {
				if spec := findContainer(pod, c.Name); spec != nil {
					running[c.ID] = prober.Running{Spec: spec, StartedAt: c.StartedAt}
				}
			}
		}
	}
	podIP := r.HostIP // host-network pods
	if newest := obs.ReadySandbox(); newest != nil && newest.IP != "" {
		podIP = newest.IP
	}
	r.probes.Sync(pod, running, podIP)
	ready, started = map[string]bool{}, map[string]bool{}
	obs.Unhealthy = map[string]string{}
	obs.NotStarted = map[string]bool{}
	for id, rc := range running {
		name := rc.Spec.Name
		res := r.probes.Results(pod.UID, id, rc.Spec)
		ready[name] = (res.Ready || r.probes.KeepReady(pod, rc.Spec, res, rc.StartedAt)) && res.Started
		started[name] = res.Started
		if !res.Started {
			obs.NotStarted[id] = true
		}
		if res.Failed != "" {
			obs.Unhealthy[id] = res.Failed
		}
	}
	return ready, started
}
