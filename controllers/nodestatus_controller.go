package controllers

import (
	"context"
	"errors"
	"fmt"
	"sort"
	"time"

	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/client-go/tools/record"
	"k8s.io/client-go/util/workqueue"
	"k8s.io/klog/v2"
	"k8s.io/utils/clock"
	ctrl "sigs.k8s.io/controller-runtime"
	"sigs.k8s.io/controller-runtime/pkg/builder"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/log"
	"sigs.k8s.io/controller-runtime/pkg/predicate"
	"sigs.k8s.io/controller-runtime/pkg/reconcile"
	"sigs.k8s.io/controller-runtime/pkg/source"

	"github.com/nodekeeper/nodekeeper/api/v1alpha1"
	"github.com/nodekeeper/nodekeeper/host"
	"github.com/nodekeeper/nodekeeper/internal/nodestatus"
	"github.com/nodekeeper/nodekeeper/runtime/cri"
)

// +kubebuilder:rbac:groups="",resources=nodes,verbs=get;list;watch;create;update;patch;delete
// +kubebuilder:rbac:groups="",resources=nodes/status,verbs=get;update;patch
// +kubebuilder:rbac:groups="",resources=events,verbs=create;patch;update
// +kubebuilder:rbac:groups=events.k8s.io,resources=events,verbs=create;patch;update

// NodeStatusReconciler registers this agent's Node and keeps its status true:
// capacity, allocatable, node info, addresses and the Ready/pressure conditions. It
// writes status only when something changed, or every NodeStatusReportFrequency.
type NodeStatusReconciler struct {
	Client   client.Client
	Config   *v1alpha1.AgentConfiguration
	Host     host.Host
	Runtime  cri.Runtime
	Recorder record.EventRecorder
	Clock    clock.PassiveClock
	// Version is reported as nodeInfo.kubeletVersion.
	Version string
	// Images, when set, lists the runtime's images for status.images.
	Images func(ctx context.Context) ([]corev1.ContainerImage, error)
	// KubeletPort, when non-zero, is published as status.daemonEndpoints.kubeletEndpoint.port.
	KubeletPort int32
	// Devices, when set, reports the device plugins' resources (devicemanager.Manager).
	Devices DeviceCapacity

	hard nodestatus.Thresholds
}

// DeviceCapacity is what the device manager reports for the node status: per device
// plugin resource, all its devices and the healthy ones.
type DeviceCapacity interface {
	Capacity() (capacity, allocatable corev1.ResourceList)
}

// SetupWithManager registers the reconciler. It reconciles the one Node named in the
// config: on every change to it, at start (so a missing Node gets registered), and every
// NodeStatusUpdateFrequency.
func (r *NodeStatusReconciler) SetupWithManager(mgr ctrl.Manager) error {
	hard, err := nodestatus.ParseThresholds(r.Config.EvictionHard)
	if err != nil {
		return err
	}
	r.hard = hard
	if r.Clock == nil {
		r.Clock = clock.RealClock{}
	}
	name := r.Config.NodeName
	kick := source.Func(func(_ context.Context, q workqueue.TypedRateLimitingInterface[reconcile.Request]) error {
		q.Add(reconcile.Request{NamespacedName: types.NamespacedName{Name: name}})
		return nil
	})
	return ctrl.NewControllerManagedBy(mgr).
		Named("nodestatus").
		For(&corev1.Node{}, builder.WithPredicates(predicate.NewPredicateFuncs(func(o client.Object) bool {
			return o.GetName() == name
		}))).
		WatchesRawSource(kick).
		Complete(r)
}

// Reconcile implements reconcile.Reconciler.
func (r *NodeStatusReconciler) Reconcile(ctx context.Context, req reconcile.Request) (reconcile.Result, error) {
	logger := log.FromContext(ctx)
	requeue := reconcile.Result{RequeueAfter: r.Config.NodeStatusUpdateFrequency.Duration}

	node := &corev1.Node{}
	err := r.Client.Get(ctx, req.NamespacedName, node)
	if apierrors.IsNotFound(err) {
		if node, err = r.register(ctx); err != nil {
			return reconcile.Result{}, err
		}
	} else if err != nil {
		return reconcile.Result{}, err
	}
	if err := r.ensureDefaultLabels(ctx, node); err != nil {
		return reconcile.Result{}, err
	}

	obs, err := r.observe(ctx)
	if err != nil {
		return reconcile.Result{}, err
	}
	now := metav1.NewTime(r.Clock.Now().Truncate(time.Second))
	next := nodestatus.Status(node.Status, obs, now)
	changed := nodestatus.Changed(node.Status, next)
	last := nodestatus.LastHeartbeat(node.Status)
	due := last.IsZero() || now.Sub(last.Time) >= r.Config.NodeStatusReportFrequency.Duration
	if !changed && !due {
		return requeue, nil
	}
	logger.V(2).Info("Updating node status", "changed", changed, "lastReport", last)
	patched := node.DeepCopy()
	patched.Status = next
	if err := r.Client.Status().Patch(ctx, patched, client.MergeFrom(node)); err != nil {
		return reconcile.Result{}, fmt.Errorf("patching node status: %w", err)
	}
	r.recordTransitions(node, node.Status.Conditions, next.Conditions)
	return requeue, nil
}

// register creates the Node with its labels, taints and a first status.
func (r *NodeStatusReconciler) register(ctx context.Context) (*corev1.Node, error) {
	info, err := r.Host.Info()
	if err != nil {
		return nil, fmt.Errorf("reading host info: %w", err)
	}
	labels := nodestatus.RegistrationLabels(r.Config.NodeName, info.OperatingSystem, info.Architecture, r.Config.NodeLabels)
	node := nodestatus.NewNode(r.Config.NodeName, labels, r.Config.RegisterWithTaints, r.Config.PodCIDR)
	log.FromContext(ctx).Info("Registering node", "node", klog.KObj(node))
	if err := r.Client.Create(ctx, node); err != nil {
		if apierrors.IsAlreadyExists(err) {
			// our cache has not seen it yet; the watch event will bring us back
			return nil, fmt.Errorf("node %s exists but is not in the cache yet: %w", r.Config.NodeName, err)
		}
		return nil, fmt.Errorf("registering node: %w", err)
	}
	return node, nil
}

// ensureDefaultLabels restores the well-known labels on an existing node, as the
// kubelet does when it finds its Node already registered.
func (r *NodeStatusReconciler) ensureDefaultLabels(ctx context.Context, node *corev1.Node) error {
	info, err := r.Host.Info()
	if err != nil {
		return fmt.Errorf("reading host info: %w", err)
	}
	want := nodestatus.RegistrationLabels(r.Config.NodeName, info.OperatingSystem, info.Architecture, nil)
	patched := node.DeepCopy()
	changed := false
	for k, v := range want {
		if node.Labels[k] != v {
			if patched.Labels == nil {
				patched.Labels = map[string]string{}
			}
			patched.Labels[k] = v
			changed = true
		}
	}
	if !changed {
		return nil
	}
	if err := r.Client.Patch(ctx, patched, client.MergeFrom(node)); err != nil {
		return fmt.Errorf("restoring node labels: %w", err)
	}
	*node = *patched
	return nil
}

// observe gathers everything the status is computed from. A runtime that cannot be
// reached is an observation (Ready=False), not an error.
func (r *NodeStatusReconciler) observe(ctx context.Context) (nodestatus.Observed, error) {
	capacity, err := r.Host.Capacity()
	if err != nil {
		return nodestatus.Observed{}, fmt.Errorf("reading host capacity: %w", err)
	}
	info, err := r.Host.Info()
	if err != nil {
		return nodestatus.Observed{}, fmt.Errorf("reading host info: %w", err)
	}
	stats, err := r.Host.Stats()
	if err != nil {
		return nodestatus.Observed{}, fmt.Errorf("reading host stats: %w", err)
	}
	addrs, err := r.Host.Addresses(r.Config.NodeIP, r.Config.NodeName)
	if err != nil {
		return nodestatus.Observed{}, fmt.Errorf("reading node addresses: %w", err)
	}
	signals := map[string]nodestatus.Signal{}
	for k, v := range stats {
		signals[k] = nodestatus.Signal{Available: v.Available, Capacity: v.Capacity}
	}
	obs := nodestatus.Observed{
		Capacity:       capacity,
		SystemReserved: v1alpha1.ReservedList(r.Config.SystemReserved),
		KubeReserved:   v1alpha1.ReservedList(r.Config.KubeReserved),
		Hard:           r.hard,
		Signals:        signals,
		Addresses:      addrs,
		KubeletPort:    r.KubeletPort,
		NodeInfo: corev1.NodeSystemInfo{
			MachineID: info.MachineID, SystemUUID: info.SystemUUID, BootID: info.BootID,
			KernelVersion: info.KernelVersion, OSImage: info.OSImage,
			OperatingSystem: info.OperatingSystem, Architecture: info.Architecture,
			KubeletVersion: r.Version,
		},
	}
	if r.Devices != nil {
		obs.DeviceCapacity, obs.DeviceAllocatable = r.Devices.Capacity()
	}
	if v, err := r.Runtime.Version(ctx); err == nil {
		obs.RuntimeVersion = fmt.Sprintf("%s://%s", v.GetRuntimeName(), v.GetRuntimeVersion())
	}
	st, err := r.Runtime.Status(ctx)
	if err != nil {
		obs.Runtime.Err = err
	} else {
		for _, c := range st.GetConditions() {
			obs.Runtime.Conditions = append(obs.Runtime.Conditions, nodestatus.RuntimeCondition{
				Type: c.GetType(), Status: c.GetStatus(), Reason: c.GetReason(), Message: c.GetMessage()})
		}
	}
	if r.Images != nil && obs.Runtime.Err == nil {
		imgs, err := r.Images(ctx)
		if err != nil && !errors.Is(err, cri.ErrUnavailable) {
			return nodestatus.Observed{}, fmt.Errorf("listing images: %w", err)
		}
		obs.Images = imgs
	}
	return obs, nil
}

// recordTransitions emits the kubelet's events for conditions that changed status.
func (r *NodeStatusReconciler) recordTransitions(node *corev1.Node, prev, next []corev1.NodeCondition) {
	old := map[corev1.NodeConditionType]corev1.ConditionStatus{}
	for _, c := range prev {
		old[c.Type] = c.Status
	}
	reasons := map[corev1.NodeConditionType][2]string{
		corev1.NodeReady:          {"NodeReady", "NodeNotReady"},
		corev1.NodeMemoryPressure: {"NodeHasInsufficientMemory", "NodeHasSufficientMemory"},
		corev1.NodeDiskPressure:   {"NodeHasDiskPressure", "NodeHasNoDiskPressure"},
		corev1.NodePIDPressure:    {"NodeHasInsufficientPID", "NodeHasSufficientPID"},
	}
	for _, c := range next {
		rs, ok := reasons[c.Type]
		if !ok || old[c.Type] == c.Status {
			continue
		}
		reason := rs[1]
		if c.Status == corev1.ConditionTrue {
			reason = rs[0]
		}
		r.Recorder.Eventf(nodeRef(node), corev1.EventTypeNormal, reason, "Node %s status is now: %s", node.Name, reason)
	}
}

// nodeRef is how the kubelet refers to its node in events: the UID is the node name.
func nodeRef(node *corev1.Node) *corev1.ObjectReference {
	return &corev1.ObjectReference{Kind: "Node", Name: node.Name, UID: types.UID(node.Name)}
}

// RuntimeImages lists the runtime's images for status.images as the kubelet does:
// largest first, at most 50, names being tags and digests.
func RuntimeImages(rt cri.Runtime) func(ctx context.Context) ([]corev1.ContainerImage, error) {
	return func(ctx context.Context) ([]corev1.ContainerImage, error) {
		imgs, err := rt.ListImages(ctx, nil)
		if err != nil {
			return nil, err
		}
		var out []corev1.ContainerImage
		for _, img := range imgs {
			names := append(append([]string(nil), img.RepoTags...), img.RepoDigests...)
			if len(names) == 0 {
				continue
			}
			out = append(out, corev1.ContainerImage{Names: names, SizeBytes: int64(img.GetSize())})
		}
		sort.SliceStable(out, func(i, j int) bool {
			if out[i].SizeBytes != out[j].SizeBytes {
				return out[i].SizeBytes > out[j].SizeBytes
			}
			return out[i].Names[0] < out[j].Names[0]
		})
		if len(out) > 50 {
			out = out[:50]
		}
		return out, nil
	}
}
