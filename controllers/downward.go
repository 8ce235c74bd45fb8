package controllers

import (
	"context"
	"runtime"

	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/api/resource"
	"k8s.io/apimachinery/pkg/types"
	"sigs.k8s.io/controller-runtime/pkg/log"

	"github.com/nodekeeper/nodekeeper/api/v1alpha1"
	"github.com/nodekeeper/nodekeeper/internal/nodestatus"
)

// nodeAllocatable is what the downward API gives for a limit a container does not set:
// the Node's status.allocatable, as the kubelet reads it from its node lister. When the
// Node cannot be read (a static pod before the node is registered), it is computed as
// the kubelet's initial node would have it: this machine's CPUs and memory less the
// configured reservations and hard eviction thresholds.
func (r *PodReconciler) nodeAllocatable(ctx context.Context) corev1.ResourceList {
	node := &corev1.Node{}
	err := r.Client.Get(ctx, types.NamespacedName{Name: r.Config.NodeName}, node)
	if err == nil && len(node.Status.Allocatable) > 0 {
		return node.Status.Allocatable
	}
	capacity := corev1.ResourceList{corev1.ResourceCPU: *resource.NewQuantity(int64(runtime.NumCPU()), resource.DecimalSI)}
	if r.MemoryCapacity > 0 {
		capacity[corev1.ResourceMemory] = *resource.NewQuantity(r.MemoryCapacity, resource.BinarySI)
	}
	hard, terr := nodestatus.ParseThresholds(r.Config.EvictionHard)
	if terr != nil {
		hard = nil // validated at load: cannot happen with a loaded config
	}
	log.FromContext(ctx).V(2).Info("Node not readable, using the machine's capacity for downward API limits", "error", err)
	return nodestatus.Allocatable(capacity, v1alpha1.ReservedList(r.Config.SystemReserved), v1alpha1.ReservedList(r.Config.KubeReserved), hard)
}
