package controllers

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	goruntime "runtime"
	"sort"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/go-logr/logr"
	"golang.org/x/sys/unix"
	"golang.org/x/time/rate"
	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/client-go/tools/record"
	"k8s.io/client-go/util/workqueue"
	runtimeapi "k8s.io/cri-api/pkg/apis/runtime/v1"
	"k8s.io/klog/v2"
	"k8s.io/utils/clock"
	ctrl "sigs.k8s.io/controller-runtime"
	"sigs.k8s.io/controller-runtime/pkg/builder"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/controller"
	"sigs.k8s.io/controller-runtime/pkg/event"
	"sigs.k8s.io/controller-runtime/pkg/handler"
	"sigs.k8s.io/controller-runtime/pkg/log"
	"sigs.k8s.io/controller-runtime/pkg/predicate"
	"sigs.k8s.io/controller-runtime/pkg/reconcile"
	"sigs.k8s.io/controller-runtime/pkg/source"

	"github.com/nodekeeper/nodekeeper/api/v1alpha1"
	"github.com/nodekeeper/nodekeeper/host"
	"github.com/nodekeeper/nodekeeper/internal/credentials"
	"github.com/nodekeeper/nodekeeper/internal/devicemanager"
	"github.com/nodekeeper/nodekeeper/internal/eviction"
	"github.com/nodekeeper/nodekeeper/internal/hooks"
	"github.com/nodekeeper/nodekeeper/internal/kubeletmetrics"
	"github.com/nodekeeper/nodekeeper/internal/nodestatus"
	"github.com/nodekeeper/nodekeeper/internal/pleg"
	"github.com/nodekeeper/nodekeeper/internal/podconfig"
	"github.com/nodekeeper/nodekeeper/internal/podplan"
	"github.com/nodekeeper/nodekeeper/internal/podstart"
	"github.com/nodekeeper/nodekeeper/internal/prober"
	"github.com/nodekeeper/nodekeeper/runtime/cri"
)

// +kubebuilder:rbac:groups="",resources=pods,verbs=get;list;watch;create;delete
// +kubebuilder:rbac:groups="",resources=configmaps;secrets,verbs=get
// +kubebuilder:rbac:groups=authentication.k8s.io,resources=tokenreviews,verbs=create
// +kubebuilder:rbac:groups=authorization.k8s.io,resources=subjectaccessreviews,verbs=create
// +kubebuilder:rbac:groups=certificates.k8s.io,resources=certificatesigningrequests,verbs=create;get;list;watch
// +kubebuilder:rbac:groups="",resources=services,verbs=get;list;watch
// +kubebuilder:rbac:groups="",resources=pods/status,verbs=get;update;patch

// PodReconciler is the kubelet's core: it runs the pods bound to this node on a CRI
// runtime and reports their status. Each reconcile observes the runtime, computes a
// plan with podplan.Plan (pure), applies it, and patches the status if it changed.
type PodReconciler struct {
	Client   client.Client
	Runtime  cri.Runtime
	Recorder record.EventRecorder
	Config   *v1alpha1.AgentConfiguration
	// HostIP is reported as status.hostIP (the node's InternalIP).
	HostIP string
	// NodeHostsFile is the node's hosts file that host-network pods get (default
	// /etc/hosts).
	NodeHostsFile string
	// MemoryCapacity is the node's memory in bytes; Burstable containers' OOM score
	// adjustment is computed from it.
	MemoryCapacity int64
	// Cgroups creates and removes pod-level cgroups when Config.CgroupsPerQOS is set
	// (nil: the runtime creates them as it nests the containers, without pod limits).
	Cgroups PodCgroups
	// Backoff is the restart back-off policy (default upstream's 10s → 5m).
	Backoff podplan.BackoffPolicy
	Clock   clock.Clock
	// RelistPeriod is how often the runtime is relisted to notice exits (default 1s).
	RelistPeriod time.Duration

	// StaticContext, when set, runs static pods from SetupWithManager on, before the
	// manager starts (so they run without an API server); else they start with the manager.
	StaticContext context.Context
	// MirrorClient writes mirror pods; it must not depend on the informer cache when
	// StaticContext is set (default Client).
	MirrorClient client.Client
	// APIReader reads ConfigMaps and Secrets without caching them (default: the
	// manager's API reader).
	APIReader client.Reader
	// Workers is how many pods are reconciled at once (default 32).
	Workers int
	// StartSlots is how many pods may be in the runtime part of a start at once
	// (RunPodSandbox, image, CreateContainer, StartContainer), taken first come first
	// served (default 4 per CPU, at least 8; negative: no bound). A burst then finishes
	// its first pods early instead of every pod late.
	StartSlots int
	// StaticPodPeriod is how often the static pod folder is read (default 2s).
	StaticPodPeriod time.Duration
	// LogRotatePeriod is how often container logs are checked for rotation
	// (containerLogMaxSize/containerLogMaxFiles; default 10s).
	LogRotatePeriod time.Duration
	// EvictionPeriod is how often emptyDir volumes are measured against their
	// sizeLimit (default 10s, as the kubelet's eviction manager).
	EvictionPeriod time.Duration
	// Signals, when set, observes the eviction signals (memory.available,
	// nodefs.available, ...) every EvictionPeriod for node-pressure eviction against
	// Config.EvictionHard (nil: none); PodUsage gives the pods' usage that ranks them.
	Signals  func() (map[string]nodestatus.Signal, error)
	PodUsage func(ctx context.Context) (map[types.UID]eviction.Usage, error)
	// Devices, when set, allocates device plugins' devices to containers.
	Devices DeviceAllocator
	// AppArmor tells whether the host enforces AppArmor profiles (nil: it does;
	// default host.AppArmor, checked once): pods asking for a profile are rejected
	// when it does not, as by the kubelet's admission.
	AppArmor func() error

	appArmorOnce sync.Once
	appArmorErr  error

	// node pressure (the eviction monitor's): the hard thresholds, when each pressure
	// condition was last met, and the conditions admission refuses pods under
	pressureMu sync.Mutex
	hard       nodestatus.Thresholds
	lastMet    map[corev1.NodeConditionType]time.Time
	pressure   []corev1.NodeConditionType

	// startup follows pods to running for the kubelet_pod_start_* metrics
	startup kubeletmetrics.StartupTracker
	// timeline is each pod's start, step by step, logged when it is Ready
	timeline podstart.Tracker
	// pulled remembers the credentials each image was pulled with
	pulled *credentials.PulledRecords
	// providers are the image credential provider plugins
	providers credentials.Providers

	events      chan event.GenericEvent
	slots       chan struct{} // StartSlots (nil: no bound)
	static      staticPods
	probes      *prober.Manager
	mu          sync.Mutex
	pods        map[types.UID]*podState // per-pod memory, under mu: forget drops it whole
	runtimeName string
	admission   podplan.Admission
	// handlers is what the runtime said of its handlers (nil until it answered)
	handlers []podplan.RuntimeHandler
}

// PodCgroups makes and removes pod-level cgroups (host.Cgroups).
type PodCgroups interface {
	Ensure(path string, r podplan.CgroupResources) error
	Remove(path string) error
}

// podCgroup is the pod's cgroup parent, or "" when pods get none.
func (r *PodReconciler) podCgroup(pod *corev1.Pod) string {
	if r.Config.CgroupsPerQOS == nil || !*r.Config.CgroupsPerQOS {
		return ""
	}
	return podplan.PodCgroupParent(r.Config.CgroupRoot, pod)
}

// SetupWithManager registers the reconciler and the runtime relister that feeds it.
func (r *PodReconciler) SetupWithManager(mgr ctrl.Manager) error {
	if r.Clock == nil {
		r.Clock = clock.RealClock{}
	}
	if r.Backoff.Base == 0 {
		r.Backoff = podplan.DefaultBackoff
	}
	if r.RelistPeriod == 0 {
		r.RelistPeriod = time.Second
	}
	r.events = make(chan event.GenericEvent, 1024)
	if n := startSlots(r.StartSlots, goruntime.NumCPU()); n > 0 {
		r.slots = make(chan struct{}, n)
	}
	kubeletmetrics.Register()
	providers, err := credentials.LoadProviders(r.Config.ImageCredentialProviderConfig, r.Config.ImageCredentialProviderBinDir)
	if err != nil {
		return err
	}
	r.providers = providers
	r.pulled = &credentials.PulledRecords{File: filepath.Join(r.Config.RootDir, "image_manager", "pulled.json"),
		Policy: r.Config.ImagePullCredentialsVerificationPolicy, Allowlist: r.Config.PreloadedImagesVerificationAllowlist}
	r.probes = r.newProber()
	// as the kubelet: safe sysctls (for this kernel) and the allowed unsafe ones
	r.admission = podplan.Admission{Sysctls: append(podplan.SafeSysctls(kernelRelease()), r.Config.AllowedUnsafeSysctls...)}
	if r.APIReader == nil {
		// ConfigMaps and Secrets are read when needed, never cached (as the kubelet)
		r.APIReader = mgr.GetAPIReader()
	}
	if err := mgr.Add(periodic{r.RelistPeriod, r.newRelister(mgr.GetClient(), mgr.GetLogger().WithName("relister")).Relist}); err != nil {
		return err
	}
	if es, ok := r.Runtime.(cri.EventStreamer); ok {
		// containerd 2.x: a stopped container wakes its pod at once (upstream's evented
		// PLEG); the relist stays the source of truth
		logger := mgr.GetLogger().WithName("pleg-events")
		if err := mgr.Add(&pleg.Watcher{Events: es, Notify: r.wake(logger), Log: logger}); err != nil {
			return err
		}
	}
	if r.EvictionPeriod == 0 {
		r.EvictionPeriod = 10 * time.Second
	}
	hard, err := nodestatus.ParseThresholds(r.Config.EvictionHard)
	if err != nil {
		return err
	}
	r.hard, r.lastMet = hard, map[corev1.NodeConditionType]time.Time{}
	if err := mgr.Add(periodic{r.EvictionPeriod, (&evictionMonitor{r: r, reader: mgr.GetClient()}).check}); err != nil {
		return err
	}
	if r.LogRotatePeriod == 0 {
		r.LogRotatePeriod = 10 * time.Second // upstream's containerLogMonitorInterval
	}
	maxSize, maxFiles := r.Config.ContainerLogMaxSize, r.Config.ContainerLogMaxFiles
	if maxSize == "" {
		maxSize = "10Mi"
	}
	if maxFiles == 0 {
		maxFiles = 5
	}
	if lr := newLogRotator(r.Runtime, maxSize, maxFiles, r.Clock); lr != nil {
		if err := mgr.Add(periodic{r.LogRotatePeriod, lr.rotateAll}); err != nil {
			return err
		}
	}
	if r.Config.StaticPodPath != "" {
		if r.StaticPodPeriod == 0 {
			r.StaticPodPeriod = time.Second
		}
		src := &staticPodSource{r: r, dir: r.Config.StaticPodPath, period: r.StaticPodPeriod,
			seen: map[string]bool{}, removed: map[types.NamespacedName]bool{}}
		// read the folder now, so the controller knows which pods are static before it
		// sees their mirrors
		src.scan(context.Background())
		if r.StaticContext != nil {
			go func() { _ = src.Start(r.StaticContext) }() // runs before the manager's caches
		} else if err := mgr.Add(src); err != nil {
			return err
		}
	}
	return ctrl.NewControllerManagedBy(mgr).
		Named("pods").
		For(&corev1.Pod{}, builder.WithPredicates(r.watchSeen())).
		// pods are independent: start them side by side (one key is never run twice at once)
		WithOptions(controller.Options{MaxConcurrentReconciles: r.workers(), RateLimiter: podRetryLimiter()}).
		WatchesRawSource(source.Channel(r.events, &handler.EnqueueRequestForObject{})).
		// mirror pods are tracked from the pod watch, as the kubelet's pod manager does
		Watches(&corev1.Pod{}, r.mirrorWatch()).
		Complete(r)
}

// watchSeen notes when the watch delivers a pod of this node, before it waits in the
// queue: the kubelet's firstSeenTime and the start of the pod's timeline; and the pod as
// the watch shows it, for pod_start_sli/total_duration (upstream's
// ObservedPodOnWatch). It filters nothing.
func (r *PodReconciler) watchSeen() predicate.Funcs {
	seen := func(o client.Object) bool {
		pod, ok := o.(*corev1.Pod)
		if !ok || pod.Spec.NodeName != r.Config.NodeName {
			return true
		}
		now := r.Clock.Now()
		if pod.DeletionTimestamp == nil && !podplan.Terminal(pod) && r.startup.FirstSeen(pod.UID, now) {
			r.timeline.Mark(pod.UID, podstart.Seen, now)
		}
		r.startup.ObservePod(pod, now)
		return true
	}
	return predicate.Funcs{
		CreateFunc:  func(e event.CreateEvent) bool { return seen(e.Object) },
		UpdateFunc:  func(e event.UpdateEvent) bool { return seen(e.ObjectNew) },
		DeleteFunc:  func(event.DeleteEvent) bool { return true },
		GenericFunc: func(event.GenericEvent) bool { return true },
	}
}

// startSlots is the StartSlots bound for ncpu CPUs (0: none).
func startSlots(configured, ncpu int) int {
	switch {
	case configured < 0:
		return 0
	case configured > 0:
		return configured
	}
	return max(8, 4*ncpu)
}

// startSlot waits for a start slot (first come, first served: a channel's waiting
// senders are woken in order) and returns its release, safe to call more than once.
func (r *PodReconciler) startSlot(ctx context.Context) (func(), error) {
	if r.slots == nil {
		return func() {}, nil
	}
	select {
	case r.slots <- struct{}{}:
	case <-ctx.Done():
		return nil, ctx.Err()
	}
	var once sync.Once
	return func() { once.Do(func() { <-r.slots }) }, nil
}

func (r *PodReconciler) mirrorClient() client.Client {
	if r.MirrorClient != nil {
		return r.MirrorClient
	}
	return r.Client
}

func (r *PodReconciler) workers() int {
	if r.Workers > 0 {
		return r.Workers
	}
	return 32
}

// supportsRecursiveReadOnly tells whether the runtime's default handler makes recursive
// read-only mounts (nodekeeper runs no RuntimeClasses), asking the runtime once.
func (r *PodReconciler) supportsRecursiveReadOnly(ctx context.Context) bool {
	r.mu.Lock()
	known := r.handlers
	r.mu.Unlock()
	if known == nil {
		hs, err := r.Runtime.RuntimeHandlers(ctx)
		if err != nil {
			return false // asked again next time
		}
		known = []podplan.RuntimeHandler{}
		for _, h := range hs {
			known = append(known, podplan.RuntimeHandler{Name: h.GetName(), RecursiveReadOnlyMounts: h.GetFeatures().GetRecursiveReadOnlyMounts()})
		}
		r.mu.Lock()
		r.handlers = known
		r.mu.Unlock()
	}
	return podplan.SupportsRecursiveReadOnly(known, "")
}

func (r *PodReconciler) runtimeID() string {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.runtimeName
}

// Reconcile implements reconcile.Reconciler.
func (r *PodReconciler) Reconcile(ctx context.Context, req reconcile.Request) (reconcile.Result, error) {
	if r.static.get(req.NamespacedName) != nil || r.static.terminatingKey(req.NamespacedName) {
		return reconcile.Result{}, nil // run (or being stopped) by the static pod source
	}
	pod := &corev1.Pod{}
	if err := r.Client.Get(ctx, req.NamespacedName, pod); err != nil {
		if apierrors.IsNotFound(err) {
			// the pod is gone from the API: remove whatever still runs for it
			return reconcile.Result{}, r.removeByName(ctx, req.Namespace, req.Name, "")
		}
		return reconcile.Result{}, err
	}
	if pod.Spec.NodeName != r.Config.NodeName {
		return reconcile.Result{}, nil
	}
	if _, ok := pod.Annotations[AnnotationConfigMirror]; ok {
		// a mirror whose manifest is gone: stop the static pod and drop the mirror
		if err := r.removeByName(ctx, pod.Namespace, pod.Name, ""); err != nil {
			return reconcile.Result{}, err
		}
		err := r.Client.Delete(ctx, pod, client.GracePeriodSeconds(0), client.Preconditions{UID: &pod.UID})
		if err != nil && !apierrors.IsNotFound(err) {
			return reconcile.Result{}, fmt.Errorf("deleting mirror pod: %w", err)
		}
		return reconcile.Result{}, nil
	}
	// older incarnations of a pod with the same name are not ours to keep
	if err := r.removeByName(ctx, pod.Namespace, pod.Name, pod.UID); err != nil {
		return reconcile.Result{}, err
	}
	if pod.DeletionTimestamp != nil {
		// deletion goes through the same plan and apply (podplan: Terminate)
		defer observeWorker("kill", time.Now())
		obs, err := r.observe(ctx, pod.UID)
		if err != nil {
			return reconcile.Result{}, err
		}
		plan := podplan.Plan(podplan.Input{Pod: pod, Observed: obs, Evicted: r.evictedMessage(pod.UID), Now: r.Clock.Now()})
		log.FromContext(ctx).V(2).Info("Computed pod actions", "plan", plan.String())
		_, err = r.apply(ctx, pod, obs, plan) // a terminated pod's state is forgotten: nothing to record
		return reconcile.Result{}, err
	}
	st, res, err := r.run(ctx, pod)
	if st != nil && podplan.Changed(pod.Status, *st) {
		patched := pod.DeepCopy()
		patched.Status = *st
		if perr := r.Client.Status().Patch(ctx, patched, client.MergeFrom(pod)); perr != nil {
			return reconcile.Result{}, fmt.Errorf("patching pod status: %w", perr)
		}
		r.statusWritten(ctx, pod, *st)
	}
	return res, err
}

// statusWritten ends the pod's start timeline when the status just accepted made it
// Ready, and logs it.
func (r *PodReconciler) statusWritten(ctx context.Context, pod *corev1.Pod, st corev1.PodStatus) {
	now := r.Clock.Now()
	r.timeline.Mark(pod.UID, podstart.Status, now)
	if !podReady(st) || podReady(pod.Status) {
		return
	}
	if tl, ok := r.timeline.Finish(pod.UID, now); ok {
		log.FromContext(ctx).V(2).Info("Pod start timeline", "pod", klog.KObj(pod), "timeline", tl.String())
	}
}

func podReady(st corev1.PodStatus) bool {
	for _, c := range st.Conditions {
		if c.Type == corev1.PodReady {
			return c.Status == corev1.ConditionTrue
		}
	}
	return false
}

// reconcileStatic runs a pod from the static pod folder: the runtime side needs no API
// server; the mirror pod is kept in step when the API answers.
func (r *PodReconciler) reconcileStatic(ctx context.Context, pod *corev1.Pod) (reconcile.Result, error) {
	if err := r.removeByName(ctx, pod.Namespace, pod.Name, pod.UID); err != nil {
		return reconcile.Result{}, err
	}
	st, res, err := r.run(ctx, pod)
	if st == nil {
		return res, err
	}
	r.static.setStatus(types.NamespacedName{Namespace: pod.Namespace, Name: pod.Name}, pod.UID, *st)
	if merr := r.syncMirror(ctx, pod, *st); merr != nil {
		log.FromContext(ctx).Info("Mirror pod not in step yet, will retry", "error", merr.Error())
		if res.RequeueAfter == 0 || res.RequeueAfter > 5*time.Second {
			res.RequeueAfter = 5 * time.Second
		}
	}
	return res, err
}

// run observes the runtime, plans, applies and computes the new status.
func (r *PodReconciler) run(ctx context.Context, pod *corev1.Pod) (*corev1.PodStatus, reconcile.Result, error) {
	logger := log.FromContext(ctx)
	r.ensureRuntimeName(ctx)
	// the pod worker's sync: "create" the first time the pod is synced, "sync" after
	op := "sync"
	if r.startup.FirstSync(pod.UID, r.Clock.Now()) {
		op = "create"
	}
	r.timeline.Mark(pod.UID, podstart.Synced, r.Clock.Now())
	defer observeWorker(op, time.Now())

	obs, err := r.observe(ctx, pod.UID)
	if err != nil {
		return nil, reconcile.Result{}, err
	}
	now := r.Clock.Now()
	if rej := r.admit(ctx, pod, obs); rej != nil {
		return r.reject(ctx, pod, obs, *rej, now)
	}
	if podplan.Terminal(pod) && len(obs.Sandboxes) == 0 && len(obs.Containers) == 0 &&
		len(pod.Status.ContainerStatuses) == 0 && len(pod.Status.InitContainerStatuses) == 0 {
		return nil, reconcile.Result{}, nil // rejected: it never ran, its status stays as written
	}
	r.probe(pod, &obs)
	evicted := r.evictedMessage(pod.UID)
	entries := r.backoffs(pod.UID)
	plan := podplan.Plan(podplan.Input{Pod: pod, Observed: obs, Backoff: podplan.NotBefore(entries, obs), Entries: entries,
		Policy: r.Backoff, Evicted: evicted, Errors: r.applyErrs(pod.UID), RetryPeriod: r.Backoff.Base, Now: now})
	logger.V(2).Info("Computed pod actions", "plan", plan.String())
	if plan.DeadlineExceeded {
		r.Recorder.Eventf(pod, corev1.EventTypeNormal, podplan.DeadlineExceededReason, podplan.DeadlineExceededMessage)
	}
	r.timeline.Mark(pod.UID, podstart.Planned, r.Clock.Now())
	for name, w := range plan.Waiting {
		if w.Reason == "CrashLoopBackOff" {
			r.Recorder.Eventf(containerRef(pod, name), corev1.EventTypeWarning, "BackOff", "Back-off restarting failed container %s in pod %s_%s(%s)", name, pod.Name, pod.Namespace, pod.UID)
		}
	}
	outcome, applyErr := r.apply(ctx, pod, obs, plan)
	r.record(pod.UID, outcome)
	logger.V(4).Info("Applied pod actions", "outcome", outcome.String())
	if obs2, err := r.observe(ctx, pod.UID); err == nil {
		obs = obs2
	}
	r.addTerminationMessages(pod, &obs)
	waiting := map[string]podplan.Waiting{}
	for k, v := range plan.Waiting {
		waiting[k] = v
	}
	for k, v := range r.applyErrs(pod.UID) {
		waiting[k] = v
	}
	ready, started := r.probe(pod, &obs)
	st := podplan.Status(podplan.StatusInput{Pod: pod, Observed: obs, Waiting: waiting, HostIP: r.HostIP,
		RuntimeName: r.runtimeID(), Now: now, Ready: ready, Started: started, Evicted: evicted,
		RecursiveReadOnlyMounts: r.supportsRecursiveReadOnly(ctx)})
	r.startup.StatusComputed(pod.UID, pod.Status.Phase, st.Phase, r.Clock.Now())
	if applyErr != nil {
		return &st, reconcile.Result{}, applyErr
	}
	// the plan's wake-up with what the apply changed: a new pull back-off, new errors
	next := podplan.Wake(pod, r.backoffFor(pod.UID, obs), len(waiting) > 0, r.Backoff.Base, now)
	return &st, reconcile.Result{RequeueAfter: next}, nil
}

// podRetryBackoffMax is the longest wait before a pod whose sync failed is synced again:
// the kubelet's pod workers retry a failed sync after backOffPeriod (10 s), however
// long it has been failing. controller-runtime's default limiter doubles up to 1000 s,
// so a pod that failed for a while on a host error (a full or read-only root dir, a
// runtime outage) would wait up to a quarter of an hour after the host recovered.
const podRetryBackoffMax = 10 * time.Second

// podRetryLimiter is controller-runtime's default limiter (per-pod exponential from
// 5 ms, overall 10/s with bursts of 100) with the per-pod wait capped at
// podRetryBackoffMax.
func podRetryLimiter() workqueue.TypedRateLimiter[reconcile.Request] {
	return workqueue.NewTypedMaxOfRateLimiter(
		workqueue.NewTypedItemExponentialFailureRateLimiter[reconcile.Request](5*time.Millisecond, podRetryBackoffMax),
		&workqueue.TypedBucketRateLimiter[reconcile.Request]{Limiter: rate.NewLimiter(rate.Limit(10), 100)},
	)
}

// admit is the kubelet's admission of a pod (canAdmitPod), for the handlers nodekeeper
// has: on first sight (no status written yet, nothing in the runtime) the sysctl
// allowlist and the OS checks (podplan.Admission), then AppArmor for a Pending pod, and
// the device manager's allocation (upstream's topology manager admit handler) for a pod
// that has not run anything yet. Nil: admitted.
func (r *PodReconciler) admit(ctx context.Context, pod *corev1.Pod, obs podplan.Observed) *podplan.Rejection {
	if pod.Status.StartTime == nil && !podplan.Terminal(pod) && len(obs.Sandboxes) == 0 && len(obs.Containers) == 0 {
		// the eviction manager's admit handler first, as the kubelet's
		if rej := eviction.Admit(pod, r.pressureConditions()); rej != nil {
			return rej
		}
		if rej := r.admission.Admit(pod); rej != nil {
			return rej
		}
	}
	r.appArmorOnce.Do(func() {
		check := r.AppArmor
		if check == nil {
			check = host.AppArmor
		}
		r.appArmorErr = check()
	})
	if rej := podplan.AppArmorRejection(pod, r.appArmorErr); rej != nil {
		return rej
	}
	if r.Devices == nil || len(obs.Containers) > 0 || (pod.Status.Phase != "" && pod.Status.Phase != corev1.PodPending) {
		return nil
	}
	for _, list := range [][]corev1.Container{pod.Spec.InitContainers, pod.Spec.Containers} {
		for i := range list {
			if _, err := r.Devices.Allocate(ctx, string(pod.UID), list[i].Name, list[i].Resources.Limits); err != nil {
				r.Devices.Release(string(pod.UID))
				return &podplan.Rejection{Reason: "UnexpectedAdmissionError", Message: fmt.Sprintf("Allocate failed due to %v, which is unexpected", err)}
			}
		}
	}
	return nil
}

// reject is the kubelet's rejectPod: a Warning event with the reason and message, and
// the pod set Failed ("Pod was rejected: …"); whatever already runs for it stops.
func (r *PodReconciler) reject(ctx context.Context, pod *corev1.Pod, obs podplan.Observed, rej podplan.Rejection, now time.Time) (*corev1.PodStatus, reconcile.Result, error) {
	r.Recorder.Event(pod, corev1.EventTypeWarning, rej.Reason, rej.Message)
	st := podplan.Rejected(pod, rej, now)
	rejected := pod.DeepCopy()
	rejected.Status = st
	if plan := podplan.Plan(podplan.Input{Pod: rejected, Observed: obs, Now: now}); plan.KillPod {
		outcome, err := r.apply(ctx, rejected, obs, plan)
		r.record(pod.UID, outcome)
		if err != nil {
			return &st, reconcile.Result{}, err
		}
	}
	return &st, reconcile.Result{}, nil
}

// kernelRelease is the running kernel's release ("" when unknown).
func kernelRelease() string {
	var u unix.Utsname
	if err := unix.Uname(&u); err != nil {
		return ""
	}
	return unix.ByteSliceToString(u.Release[:])
}

// ensureRuntimeName learns the runtime's name (the prefix of container IDs) once.
func (r *PodReconciler) ensureRuntimeName(ctx context.Context) {
	if r.runtimeID() != "" {
		return
	}
	if v, err := r.Runtime.Version(ctx); err == nil {
		r.mu.Lock()
		r.runtimeName = v.GetRuntimeName()
		r.mu.Unlock()
	}
}

// addTerminationMessages fills exited containers' messages from their termination
// message files (or logs).
func (r *PodReconciler) addTerminationMessages(pod *corev1.Pod, obs *podplan.Observed) {
	for i := range obs.Containers {
		if c := &obs.Containers[i]; c.State == podplan.StateExited {
			if m := r.terminationMessage(pod, c.Name, c.Attempt, c.ExitCode, c.LogPath); m != "" {
				c.Message = m
			}
		}
	}
}

// backoffFor turns the stored back-off entries into "not before" times for Plan.
func (r *PodReconciler) backoffFor(uid types.UID, obs podplan.Observed) podplan.Backoff {
	return podplan.NotBefore(r.backoffs(uid), obs)
}

// observe lists the pod's sandboxes and containers in the runtime.
func (r *PodReconciler) observe(ctx context.Context, uid types.UID) (podplan.Observed, error) {
	sel := map[string]string{podplan.LabelPodUID: string(uid), podplan.LabelManaged: "true"}
	sbs, err := r.Runtime.ListPodSandbox(ctx, &runtimeapi.PodSandboxFilter{LabelSelector: sel})
	if err != nil {
		return podplan.Observed{}, fmt.Errorf("listing sandboxes: %w", err)
	}
	var obs podplan.Observed
	for _, sb := range sbs {
		s := podplan.Sandbox{ID: sb.Id, Attempt: sb.GetMetadata().GetAttempt(), Ready: sb.State == runtimeapi.PodSandboxState_SANDBOX_READY,
			CreatedAt: time.Unix(0, sb.CreatedAt)}
		if s.Ready {
			if st, err := r.Runtime.PodSandboxStatus(ctx, sb.Id); err == nil {
				s.IP = st.GetNetwork().GetIp()
			}
		}
		obs.Sandboxes = append(obs.Sandboxes, s)
	}
	cs, err := r.Runtime.ListContainers(ctx, &runtimeapi.ContainerFilter{LabelSelector: sel})
	if err != nil {
		return podplan.Observed{}, fmt.Errorf("listing containers: %w", err)
	}
	for _, c := range cs {
		st, err := r.Runtime.ContainerStatus(ctx, c.Id)
		if errors.Is(err, cri.ErrNotFound) {
			continue
		}
		if err != nil {
			return podplan.Observed{}, fmt.Errorf("container status: %w", err)
		}
		oc := podplan.Container{ID: c.Id, SandboxID: c.PodSandboxId, Name: c.GetMetadata().GetName(), Attempt: c.GetMetadata().GetAttempt(),
			ExitCode: st.ExitCode, Reason: st.Reason, Message: st.Message, Hash: c.Annotations[podplan.AnnotationHash],
			Image: st.GetImage().GetImage(), ImageRef: st.ImageRef, CreatedAt: time.Unix(0, st.CreatedAt), LogPath: st.LogPath}
		if st.StartedAt > 0 {
			oc.StartedAt = time.Unix(0, st.StartedAt)
		}
		if st.FinishedAt > 0 {
			oc.FinishedAt = time.Unix(0, st.FinishedAt)
		}
		switch st.State {
		case runtimeapi.ContainerState_CONTAINER_CREATED:
			oc.State = podplan.StateCreated
		case runtimeapi.ContainerState_CONTAINER_RUNNING:
			oc.State = podplan.StateRunning
		case runtimeapi.ContainerState_CONTAINER_EXITED:
			oc.State = podplan.StateExited
		default:
			oc.State = podplan.StateUnknown
		}
		obs.Containers = append(obs.Containers, oc)
	}
	return obs, nil
}

// grace is the pod's grace period (podplan.GracePeriod) with its eviction decision.
func (r *PodReconciler) grace(pod *corev1.Pod) time.Duration {
	return podplan.GracePeriod(pod, r.evictedMessage(pod.UID) != "")
}

// terminate is the last step of a deleted pod's apply (the kill, within the pod's grace
// period, came first): it writes the final status, deletes the Pod object for good, and
// only then removes its sandboxes, containers and logs.
//
// As the kubelet (SyncTerminatingPod), the final status (phase Succeeded or Failed, every
// container terminated with its exit code) is written once the runtime reports no
// container running after the kill, and before the pod is removed, so that it is seen on
// a pod that a finalizer keeps. A container the runtime still reports running right after
// a successful stop (containerd 1.6 does for a few milliseconds after the process exits,
// while it handles the exit) is not final yet: the kubelet fails the sync ("detected
// running containers after a successful KillPod") and tries again, where reporting it as
// not found would give it 137/ContainerStatusUnknown and the pod Failed.
//
// As SyncTerminatedPod, which leaves the containers to be removed in the background "to
// make sure logs are available until the pod is physically deleted", the containers (and
// so `kubectl logs` through the kubelet API) stay until the Pod object is deleted.
func (r *PodReconciler) terminate(ctx context.Context, pod *corev1.Pod) error {
	r.probes.Forget(pod.UID)
	stopped, err := r.observe(ctx, pod.UID)
	if err != nil {
		return err
	}
	var running []string
	for _, c := range stopped.Containers {
		if c.State == podplan.StateRunning {
			running = append(running, c.ID)
		}
	}
	if len(running) > 0 {
		return fmt.Errorf("detected running containers after a successful kill, CRI violation: %v", running)
	}
	r.ensureRuntimeName(ctx)
	r.addTerminationMessages(pod, &stopped)
	st := podplan.Status(podplan.StatusInput{Pod: pod, Observed: stopped, HostIP: r.HostIP,
		RuntimeName: r.runtimeID(), Now: r.Clock.Now(), Evicted: r.evictedMessage(pod.UID), Terminal: true})
	// once written, the final status stays: a pod a finalizer keeps comes back here
	// with nothing left in the runtime to compute it from
	done := podplan.Terminal(pod) && len(stopped.Containers) == 0
	if !done && podplan.Changed(pod.Status, st) {
		patched := pod.DeepCopy()
		patched.Status = st
		if err := r.Client.Status().Patch(ctx, patched, client.MergeFrom(pod)); err != nil && !apierrors.IsNotFound(err) {
			return fmt.Errorf("writing the final status of a deleted pod: %w", err)
		}
	}
	r.forget(pod.UID)
	if cg := r.podCgroup(pod); cg != "" && r.Cgroups != nil {
		start := time.Now()
		err := r.Cgroups.Remove(cg)
		kubeletmetrics.CgroupManagerDuration.WithLabelValues("destroy").Observe(time.Since(start).Seconds())
		if err != nil {
			return fmt.Errorf("removing the pod's cgroup: %w", err)
		}
	}
	if err := r.volumes().CleanUp(pod.UID); err != nil {
		return fmt.Errorf("removing the pod's folder: %w", err)
	}
	err = r.Client.Delete(ctx, pod, client.GracePeriodSeconds(0), client.Preconditions{UID: &pod.UID})
	if err != nil && !apierrors.IsNotFound(err) && !apierrors.IsConflict(err) {
		return fmt.Errorf("deleting pod: %w", err)
	}
	// the pod is deleted (or held by a finalizer, terminated): its containers and logs go
	for _, sb := range stopped.Sandboxes {
		if err := r.removeSandbox(ctx, sb.ID); err != nil {
			return fmt.Errorf("removing sandbox: %w", err)
		}
	}
	if err := os.RemoveAll(r.podLogDir(pod.Namespace, pod.Name, pod.UID)); err != nil {
		return fmt.Errorf("removing the pod's logs: %w", err)
	}
	return nil
}

// killAll stops every running container in parallel, each with grace (the pod's grace
// period). As upstream, sidecars stop last: each waits (within its grace period, after
// its preStop hook) until the app containers and the sidecars after it have stopped.
func (r *PodReconciler) killAll(ctx context.Context, pod *corev1.Pod, obs podplan.Observed, grace time.Duration, msg string) error {
	var running []podplan.Container
	var names []string
	for _, c := range obs.Containers {
		if c.State == podplan.StateRunning {
			running = append(running, c)
			names = append(names, c.Name)
		}
	}
	order := newTerminationOrder(podplan.TerminationPrereqs(pod, names))
	var wg sync.WaitGroup
	errs := make(chan error, len(running))
	for _, c := range running {
		wg.Add(1)
		go func(c podplan.Container) {
			defer wg.Done()
			r.Recorder.Eventf(containerRef(pod, c.Name), corev1.EventTypeNormal, "Killing", msg, c.Name)
			if err := r.stopContainerInTurn(ctx, pod, c, grace, order); err != nil {
				errs <- err
				return
			}
			order.stopped(c.Name)
		}(c)
	}
	wg.Wait()
	close(errs)
	var all []error
	for e := range errs {
		all = append(all, e)
	}
	return errors.Join(all...)
}

// stopContainer runs the container's preStop hook (exec, httpGet or sleep) within the
// grace period, then stops it with what is left of the grace period (at least 2s, as
// upstream).
func (r *PodReconciler) stopContainer(ctx context.Context, pod *corev1.Pod, c podplan.Container, grace time.Duration) error {
	return r.stopContainerInTurn(ctx, pod, c, grace, nil)
}

// stopContainerInTurn is stopContainer that, after the preStop hook, waits for the
// containers order says must stop first (at most what is left of the grace period).
func (r *PodReconciler) stopContainerInTurn(ctx context.Context, pod *corev1.Pod, c podplan.Container, grace time.Duration, order *terminationOrder) error {
	// as upstream's killContainer: the preStop hook, then the turn, each within what is
	// left of the grace period (a hook that used it all leaves no wait for the turn), and
	// then at least the minimum of 2s for the stop itself
	if spec := findContainer(pod, c.Name); spec != nil && spec.Lifecycle != nil && spec.Lifecycle.PreStop != nil && grace > 0 {
		grace -= r.preStop(ctx, pod, c, spec.Lifecycle.PreStop, grace)
	}
	if order.mustWait(c.Name) && grace > 0 {
		waitStart := r.Clock.Now()
		order.wait(ctx, c.Name, grace)
		// the wait counts in whole seconds, as upstream's
		grace -= r.Clock.Since(waitStart).Truncate(time.Second)
	}
	if grace < 2*time.Second {
		grace = 2 * time.Second
	}
	if err := r.Runtime.StopContainer(ctx, c.ID, grace); err != nil && !errors.Is(err, cri.ErrNotFound) {
		return fmt.Errorf("stopping %s: %w", c.Name, err)
	}
	return nil
}

// hooks runs lifecycle hooks (internal/hooks) on the reconciler's runtime and clock.
func (r *PodReconciler) hooks() hooks.Runner { return hooks.Runner{Exec: r.Runtime, Clock: r.Clock} }

// preStop runs container c's preStop hook h (hooks.Runner.PreStop) and returns the time
// the stop waited for it. A hook that fails (also after the wait) gets a
// FailedPreStopHook event, without the error: it could hold secrets.
func (r *PodReconciler) preStop(ctx context.Context, pod *corev1.Pod, c podplan.Container, h *corev1.LifecycleHandler, grace time.Duration) time.Duration {
	podIP := pod.Status.PodIP
	if podIP == "" {
		podIP = r.HostIP
	}
	t := hooks.Target{Pod: pod, Spec: findContainer(pod, c.Name), ID: c.ID, PodIP: podIP}
	waited, completed := r.hooks().PreStop(ctx, t, h, grace, func(err error) {
		log.FromContext(ctx).Info("PreStop hook failed", "pod", klog.KObj(pod), "container", c.Name, "error", err.Error())
		r.Recorder.Event(containerRef(pod, c.Name), corev1.EventTypeWarning, "FailedPreStopHook", "PreStopHook failed")
	})
	if !completed && ctx.Err() == nil {
		log.FromContext(ctx).V(2).Info("PreStop hook not completed in grace period", "pod", klog.KObj(pod), "container", c.Name, "gracePeriod", grace)
	}
	return waited
}

// postStart runs the container's postStart hook; on failure it returns upstream's
// event message for it.
func (r *PodReconciler) postStart(ctx context.Context, pod *corev1.Pod, c *corev1.Container, id, podIP string) (string, error) {
	h := c.Lifecycle.PostStart
	if err := r.hooks().Run(ctx, hooks.Target{Pod: pod, Spec: c, ID: id, PodIP: podIP}, h, 0); err != nil {
		return hooks.PostStartMessage(pod, c.Name, h, err), err
	}
	return "", nil
}

func (r *PodReconciler) forget(uid types.UID) {
	r.startup.Forget(uid)
	r.timeline.Forget(uid)
	if r.Devices != nil {
		r.Devices.Release(string(uid))
	}
	if r.probes != nil {
		r.probes.Forget(uid)
	}
	r.forgetState(uid)
}

// removeByName removes sandboxes of ours for namespace/name whose pod UID is not keep.
func (r *PodReconciler) removeByName(ctx context.Context, ns, name string, keep types.UID) error {
	sbs, err := r.Runtime.ListPodSandbox(ctx, &runtimeapi.PodSandboxFilter{LabelSelector: map[string]string{
		podplan.LabelManaged: "true", podplan.LabelPodNamespace: ns, podplan.LabelPodName: name}})
	if err != nil {
		return fmt.Errorf("listing sandboxes: %w", err)
	}
	for _, sb := range sbs {
		uid := types.UID(sb.Labels[podplan.LabelPodUID])
		if uid == keep {
			continue
		}
		if err := r.removeSandbox(ctx, sb.Id); err != nil {
			return fmt.Errorf("removing sandbox of a pod that is gone: %w", err)
		}
		r.forget(uid)
		if err := r.volumes().CleanUp(uid); err != nil {
			return fmt.Errorf("removing the folder of a pod that is gone: %w", err)
		}
		if err := os.RemoveAll(r.podLogDir(ns, name, uid)); err != nil {
			return fmt.Errorf("removing the logs of a pod that is gone: %w", err)
		}
	}
	return nil
}

// killPod stops every container of the pod (preStop, grace periods, sidecars last),
// then its ready sandboxes.
func (r *PodReconciler) killPod(ctx context.Context, pod *corev1.Pod, obs podplan.Observed, grace time.Duration) error {
	err := r.killPodOnce(ctx, pod, obs, grace)
	if err != nil && ctx.Err() == nil { // (not the agent stopping)
		// as the kubelet's SyncTerminatingPod: a Warning for each failed kill (the
		// recorder aggregates the repeats), retried
		r.Recorder.Eventf(pod, corev1.EventTypeWarning, "FailedKillPod", "error killing pod: %v", err)
	}
	return err
}

func (r *PodReconciler) killPodOnce(ctx context.Context, pod *corev1.Pod, obs podplan.Observed, grace time.Duration) error {
	if err := r.killAll(ctx, pod, obs, grace, "Stopping container %s"); err != nil {
		return err
	}
	for _, sb := range obs.Sandboxes {
		if sb.Ready {
			if err := r.Runtime.StopPodSandbox(ctx, sb.ID); err != nil && !errors.Is(err, cri.ErrNotFound) {
				return fmt.Errorf("stopping sandbox: %w", err)
			}
		}
	}
	return nil
}

// apply carries out a plan and returns what it learned (podplan.Outcome: the
// containers' waiting states, back-off updates), which the caller records once.
func (r *PodReconciler) apply(ctx context.Context, pod *corev1.Pod, obs podplan.Observed, plan podplan.Actions) (podplan.Outcome, error) {
	var out podplan.Outcome
	err := r.applySteps(ctx, pod, obs, plan, &out)
	return out, err
}

// applySteps carries out a plan in the kubelet's order (SyncPod's numbered steps):
// 0. observe and decide the images of the containers to start, 1. kill the pod, 2. kill the containers to kill, 3. set up the volumes, 4. create the
// sandbox (removing the old ones, the log folder, the pod cgroup), 5. write the hosts
// file, 6. start the containers (image, config, create, start, postStart hook); for a
// deleted pod, 7. (after 1.) its final status and clean-up (terminate).
func (r *PodReconciler) applySteps(ctx context.Context, pod *corev1.Pod, obs podplan.Observed, plan podplan.Actions, out *podplan.Outcome) error {
	// 0. the images of the containers to start: observed, then decided (podplan.Image)
	creds := r.observeImages(ctx, pod, &plan)
	if len(plan.Start) > 0 {
		log.FromContext(ctx).V(4).Info("Decided images", "plan", plan.String())
	}
	// 1. the pod (a deleted one: as upstream's workers on a deletionTimestamp, liveness
	// and startup probes stop first, so a container stopping is not restarted)
	if plan.Terminate {
		r.probes.Terminating(pod.UID)
	}
	if plan.KillPod {
		if err := r.killPod(ctx, pod, obs, plan.Grace); err != nil {
			return err
		}
	}
	if plan.Terminate {
		// 7. a deleted pod: final status, the Pod object, sandboxes, volumes and logs
		return r.terminate(ctx, pod)
	}
	// 2. the containers to kill
	for _, k := range plan.Kill {
		r.Recorder.Eventf(containerRef(pod, k.Name), corev1.EventTypeNormal, "Killing", "%s", k.Reason)
		for _, c := range obs.Containers {
			if c.ID == k.ID {
				if err := r.stopContainer(ctx, pod, c, k.Grace); err != nil {
					return err
				}
			}
		}
	}
	// 3. the volumes
	readySandbox := false
	for _, sb := range obs.Sandboxes {
		readySandbox = readySandbox || sb.Ready
	}
	if len(pod.Spec.Volumes) > 0 && (plan.CreateSandbox || readySandbox) {
		// as syncPod: the volumes are mounted before the sandbox is made (a pod whose
		// volume cannot be set up has none: PodReadyToStartContainers stays False)
		if err := r.volumes().SetUp(pod, r.volumeSources(ctx, pod)); err != nil {
			// upstream's event: MountVolume.SetUp failed for volume "x" : <why>
			r.Recorder.Eventf(pod, corev1.EventTypeWarning, "FailedMount", "%v", err)
			// the containers wait in the kubelet's default state, ContainerCreating
			// (not PodInitializing: this pod may have no init container), whatever the cause
			for _, s := range plan.Start {
				out.SetWaiting(s.Name, &podplan.Waiting{Reason: "ContainerCreating", Message: err.Error()})
			}
			var ce configError
			if !errors.As(err, &ce) {
				// the host failed (a full or read-only root dir, …): retried with back-off
				return fmt.Errorf("setting up volumes: %w", err)
			}
			return nil
		}
		r.timeline.Mark(pod.UID, podstart.Volumes, r.Clock.Now())
	}
	// 4. the sandbox
	sbConfig, err := r.sandboxConfig(pod, plan.SandboxAttempt)
	if err != nil {
		// the pod's spec cannot make a sandbox (an FQDN too long for the kernel, …): it
		// stays Pending, as upstream; a retry cannot fix it (the fields are immutable)
		r.Recorder.Eventf(pod, corev1.EventTypeWarning, "FailedCreatePodSandBox", "Failed to create pod sandbox: %v", err)
		return reconcile.TerminalError(fmt.Errorf("generating the sandbox config: %w", err))
	}
	var sandboxID, podIP string
	release := func() {}
	if plan.CreateSandbox || len(plan.Start) > 0 {
		if release, err = r.startSlot(ctx); err != nil {
			return err
		}
		defer release()
		r.timeline.Mark(pod.UID, podstart.Slot, r.Clock.Now())
	}
	if plan.CreateSandbox {
		if len(obs.Sandboxes) > 0 {
			r.Recorder.Eventf(pod, corev1.EventTypeNormal, "SandboxChanged", "Pod sandbox changed, it will be killed and re-created.")
		}
		// remove older sandboxes: their containers are done with
		for _, sb := range obs.Sandboxes {
			if err := r.removeSandbox(ctx, sb.ID); err != nil {
				return fmt.Errorf("removing old sandbox: %w", err)
			}
		}
		if err := os.MkdirAll(sbConfig.LogDirectory, 0o755); err != nil {
			// as kuberuntime's createPodSandbox (a full or read-only log folder)
			err = fmt.Errorf("create pod log directory for pod %q failed: %w", pod.Name+"_"+pod.Namespace+"("+string(pod.UID)+")", err)
			r.Recorder.Eventf(pod, corev1.EventTypeWarning, "FailedCreatePodSandBox", "Failed to create pod sandbox: %v", err)
			return err
		}
		if cg := r.podCgroup(pod); cg != "" && r.Cgroups != nil {
			start := time.Now()
			err := r.Cgroups.Ensure(cg, podplan.PodCgroupResources(pod))
			kubeletmetrics.CgroupManagerDuration.WithLabelValues("create").Observe(time.Since(start).Seconds())
			if err != nil {
				r.Recorder.Eventf(pod, corev1.EventTypeWarning, "FailedCreatePodSandBox", "Failed to create the pod's cgroup %s: %v", cg, err)
				return fmt.Errorf("creating pod cgroup: %w", err)
			}
		}
		id, err := r.Runtime.RunPodSandbox(ctx, sbConfig, "")
		if err != nil {
			r.Recorder.Eventf(pod, corev1.EventTypeWarning, "FailedCreatePodSandBox", "Failed to create pod sandbox: %v", err)
			return fmt.Errorf("creating sandbox: %w", err)
		}
		r.timeline.Mark(pod.UID, podstart.Sandbox, r.Clock.Now())
		sandboxID = id
		podIP = r.HostIP
		if st, err := r.Runtime.PodSandboxStatus(ctx, id); err == nil && st.GetNetwork().GetIp() != "" {
			podIP = st.GetNetwork().GetIp()
		}
	} else {
		best := obs.ReadySandbox()
		if best == nil {
			return nil
		}
		sandboxID = best.ID
		sbConfig.Metadata.Attempt = best.Attempt
		podIP = best.IP
		if podIP == "" {
			podIP = r.HostIP
		}
	}
	// 5. the hosts file
	if len(plan.Start) > 0 {
		if err := r.writeHostsFile(pod, podIP); err != nil {
			// as the kubelet's makeMounts (GenerateRunContainerOptions): the containers
			// cannot be configured; retried with back-off
			err = fmt.Errorf("failed to create the pod's hosts file: %w", err)
			for _, s := range plan.Start {
				out.SetWaiting(s.Name, &podplan.Waiting{Reason: "CreateContainerConfigError", Message: err.Error()})
			}
			r.Recorder.Eventf(pod, corev1.EventTypeWarning, "Failed", "Error: %v", err)
			return err
		}
	}
	// 6. the containers to start
	for _, s := range plan.Start {
		if err := r.start(ctx, pod, sandboxID, sbConfig, podIP, s, creds, out, release); err != nil {
			return err
		}
	}
	return nil
}

func findContainer(pod *corev1.Pod, name string) *corev1.Container {
	return podplan.FindContainer(pod, name)
}

// start pulls the image if needed, creates and starts one container. Image and
// config errors become the container's waiting reason, not reconcile errors. A
// postStart hook runs after release (the start slot is given back: a hook may take long).
func (r *PodReconciler) start(ctx context.Context, pod *corev1.Pod, sandboxID string, sbConfig *runtimeapi.PodSandboxConfig, podIP string, s podplan.Start, creds map[string][]credentials.Credential, out *podplan.Outcome, release func()) error {
	if podIP != "" && pod.Status.PodIP != podIP {
		// a new sandbox's IP is not in the status yet: status.podIP(s) env vars and
		// hooks get it from the sandbox, as upstream
		pod = pod.DeepCopy()
		pod.Status.PodIP, pod.Status.PodIPs = podIP, []corev1.PodIP{{IP: podIP}}
	}
	c := findContainer(pod, s.Name)
	if c == nil || s.Image == nil {
		return nil // no image decision: the image could not be observed; tried again later
	}
	cr, haveCreds := creds[c.Name]
	imageRef, err := r.ensureImage(ctx, pod, c, *s.Image, cr, haveCreds, out)
	if err != nil {
		return nil // reported as ErrImagePull / ImagePullBackOff; retried after back-off
	}
	r.timeline.Mark(pod.UID, podstart.Image, r.Clock.Now())
	cfg, err := r.containerConfig(ctx, pod, c, s, imageRef)
	if err != nil {
		var ce configError
		if !errors.As(err, &ce) {
			return err // the API server or the runtime failed: retry
		}
		out.SetWaiting(c.Name, &podplan.Waiting{Reason: "CreateContainerConfigError", Message: err.Error()})
		r.Recorder.Eventf(containerRef(pod, c.Name), corev1.EventTypeWarning, "Failed", "Error: %v", err)
		return nil
	}
	id, err := r.Runtime.CreateContainer(ctx, sandboxID, cfg, sbConfig)
	if err != nil {
		out.SetWaiting(c.Name, &podplan.Waiting{Reason: "CreateContainerError", Message: err.Error()})
		r.Recorder.Eventf(containerRef(pod, c.Name), corev1.EventTypeWarning, "Failed", "Error: %v", err)
		return nil
	}
	r.timeline.Mark(pod.UID, podstart.Created, r.Clock.Now())
	r.Recorder.Eventf(containerRef(pod, c.Name), corev1.EventTypeNormal, "Created", "Container created")
	if err := r.Runtime.StartContainer(ctx, id); err != nil {
		out.SetWaiting(c.Name, &podplan.Waiting{Reason: "RunContainerError", Message: err.Error()})
		r.Recorder.Eventf(containerRef(pod, c.Name), corev1.EventTypeWarning, "Failed", "Error: %v", err)
		return nil
	}
	r.timeline.Mark(pod.UID, podstart.Started, r.Clock.Now())
	out.SetWaiting(c.Name, nil)
	r.Recorder.Eventf(containerRef(pod, c.Name), corev1.EventTypeNormal, "Started", "Container started")
	r.linkContainerLog(pod, c, id, filepath.Join(sbConfig.LogDirectory, cfg.LogPath))
	if c.Lifecycle != nil && c.Lifecycle.PostStart != nil {
		release()
		// as upstream: a failing postStart hook kills the container, which then
		// restarts (with back-off) as its restart policy says
		if msg, err := r.postStart(ctx, pod, c, id, podIP); err != nil {
			r.Recorder.Eventf(containerRef(pod, c.Name), corev1.EventTypeWarning, "FailedPostStartHook", "%s", msg)
			r.Recorder.Eventf(containerRef(pod, c.Name), corev1.EventTypeNormal, "Killing", "FailedPostStartHook")
			if err := r.stopContainer(ctx, pod, podplan.Container{ID: id, Name: c.Name}, r.grace(pod)); err != nil {
				return err
			}
			out.SetWaiting(c.Name, &podplan.Waiting{Reason: "PostStartHookError", Message: msg})
		}
	}
	if s.Backoff != nil {
		out.SetBackoff(c.Name, s.Backoff) // a restart: the next one waits for the back-off (decided by Plan)
	}
	return nil
}

// observeImages is step 0 of an apply that starts containers: it observes the image of
// each container to start (ImageStatus, and for a present image the pod's credentials
// against the ones it was pulled with, as upstream's KubeletEnsureSecretPulledImages: one
// pulled with a pull secret is used only by pods that have that secret or the same
// credentials) and lets podplan.DecideImages decide. It returns the credentials read,
// for the pulls. A container whose image cannot be observed is not started this time.
func (r *PodReconciler) observeImages(ctx context.Context, pod *corev1.Pod, plan *podplan.Actions) map[string][]credentials.Credential {
	if len(plan.Start) == 0 {
		return nil
	}
	images := map[string]podplan.ImageObserved{}
	creds := map[string][]credentials.Credential{} // the pod's secrets' then the node's, by container
	for _, s := range plan.Start {
		c := findContainer(pod, s.Name)
		if c == nil {
			continue
		}
		img, err := r.Runtime.ImageStatus(ctx, &runtimeapi.ImageSpec{Image: c.Image})
		if err != nil {
			log.FromContext(ctx).Info("Image status failed, the container waits", "container", c.Name, "image", c.Image, "error", err.Error())
			continue
		}
		o := podplan.ImageObserved{Present: img != nil}
		if img != nil {
			o.ImageID = img.Id
		}
		if podplan.CheckCredentials(podplan.PullPolicy(c), o.Present) {
			cr, err := r.pullCredentials(ctx, pod, c.Image)
			if err != nil {
				log.FromContext(ctx).Info("Reading the pull credentials failed, the container waits", "container", c.Name, "error", err.Error())
				continue
			}
			creds[c.Name] = cr
			o.Verified = !r.pulled.MustPull(img.Id, c.Image, cr)
		}
		images[c.Name] = o
	}
	// the pull back-offs (NotBefore of the "pull/" entries: they need no observed container)
	podplan.DecideImages(plan, pod, images, r.backoffFor(pod.UID, podplan.Observed{}), r.Clock.Now())
	return creds
}

// ensureImage carries out the image decision (Start.Image): uses the present image, or
// holds the container back, or pulls. A failed pull backs off like container restarts.
func (r *PodReconciler) ensureImage(ctx context.Context, pod *corev1.Pod, c *corev1.Container, step podplan.ImageStep, creds []credentials.Credential, haveCreds bool, out *podplan.Outcome) (string, error) {
	r.Recorder.Eventf(containerRef(pod, c.Name), step.EventType, step.EventReason, "%s", step.EventMessage)
	switch step.Action {
	case podplan.ImageUse:
		return step.ImageID, nil
	case podplan.ImageNeverPull, podplan.ImageBackOff:
		out.SetWaiting(c.Name, &step.Waiting)
		return "", errors.New(step.Waiting.Message)
	}
	spec := &runtimeapi.ImageSpec{Image: c.Image}
	key := "pull/" + c.Name
	entry := r.backoffEntry(pod.UID, key)
	now := r.Clock.Now()
	var err error
	start := r.Clock.Now()
	r.startup.PullStarted(pod.UID, start)
	if !haveCreds {
		if creds, err = r.pullCredentials(ctx, pod, c.Image); err != nil {
			return "", err
		}
	}
	ref, err := r.pull(ctx, spec, creds)
	if err != nil {
		w := podplan.PullFailed(c.Image, err)
		out.SetWaiting(c.Name, &w)
		r.Recorder.Eventf(containerRef(pod, c.Name), corev1.EventTypeWarning, "Failed", "%s", w.Message)
		next := r.Backoff.Next(entry, 0, now)
		out.SetBackoff(key, &next)
		return "", err
	}
	r.startup.PullFinished(pod.UID, r.Clock.Now())
	out.SetBackoff(key, nil)
	r.Recorder.Eventf(containerRef(pod, c.Name), corev1.EventTypeNormal, "Pulled", "Successfully pulled image %q in %s", c.Image, r.Clock.Since(start).Round(time.Millisecond))
	return ref, nil
}

// pullCredentials are the credentials that match the image, as the kubelet finds them:
// the pod's imagePullSecrets first, then the node's docker config, then the credential
// provider plugins (a plugin that fails is logged and left out, as upstream).
func (r *PodReconciler) pullCredentials(ctx context.Context, pod *corev1.Pod, image string) ([]credentials.Credential, error) {
	podKeyring, err := credentials.FromSecrets(r.pullSecrets(ctx, pod))
	if err != nil {
		return nil, err
	}
	pluginKeyring, err := r.providers.Keyring(ctx, image)
	if err != nil {
		log.FromContext(ctx).Error(err, "Getting credentials from the image credential provider plugins", "image", image)
	}
	return credentials.Credentials(image, podKeyring, credentials.NodeKeyring(r.Config.RootDir), pluginKeyring), nil
}

// pull pulls the image with each credential in turn until one works (without any when
// there are none) and records which one did.
func (r *PodReconciler) pull(ctx context.Context, spec *runtimeapi.ImageSpec, creds []credentials.Credential) (string, error) {
	record := func(ref string, used *credentials.Credential) {
		if err := r.pulled.Record(ref, spec.Image, used); err != nil {
			log.FromContext(ctx).Error(err, "Recording the image pull's credentials")
		}
	}
	if len(creds) == 0 {
		ref, err := r.Runtime.PullImage(ctx, spec, nil, nil)
		if err == nil {
			record(ref, nil)
		}
		return ref, err
	}
	var errs []error
	for i := range creds {
		ref, err := r.Runtime.PullImage(ctx, spec, creds[i].Auth, nil)
		if err == nil {
			record(ref, &creds[i])
			return ref, nil
		}
		errs = append(errs, err)
	}
	return "", errors.Join(errs...)
}

// pullSecrets reads the pod's imagePullSecrets (upstream's getPullSecretsForPod): one
// that cannot be read is left out with a warning event, and the pull goes on.
func (r *PodReconciler) pullSecrets(ctx context.Context, pod *corev1.Pod) []corev1.Secret {
	var out []corev1.Secret
	var failed []string
	for _, ref := range pod.Spec.ImagePullSecrets {
		if ref.Name == "" {
			continue
		}
		s := &corev1.Secret{}
		if err := r.apiReader().Get(ctx, client.ObjectKey{Namespace: pod.Namespace, Name: ref.Name}, s); err != nil {
			log.FromContext(ctx).Info("Unable to retrieve pull secret, the image pull may not succeed.", "secret", ref.Name, "error", err.Error())
			failed = append(failed, ref.Name)
			continue
		}
		out = append(out, *s)
	}
	if len(failed) > 0 {
		r.Recorder.Eventf(pod, corev1.EventTypeWarning, "FailedToRetrieveImagePullSecret",
			"Unable to retrieve some image pull secrets (%s); attempting to pull the image may not succeed.", strings.Join(failed, ", "))
	}
	return out
}

// podLogDir is the pod's folder of container logs (upstream's BuildPodLogsDirectory).
func (r *PodReconciler) podLogDir(ns, name string, uid types.UID) string {
	root := r.Config.PodLogsDir
	if root == "" {
		root = filepath.Join(r.Config.RootDir, "logs")
	}
	return filepath.Join(root, ns+"_"+name+"_"+string(uid))
}

// legacyLogSymlink is where the link to a container's log goes in ContainerLogsDir
// (upstream's legacyLogSymlink: <pod>_<ns>_<container>-<id>.log, cut to the 255 bytes
// of a file name); "" when there is no such folder.
func (r *PodReconciler) legacyLogSymlink(podName, ns, container, id string) string {
	if r.Config.ContainerLogsDir == "" {
		return ""
	}
	const suffix = ".log"
	name := podName + "_" + ns + "_" + container + "-" + id
	if len(name) > 255-len(suffix) {
		name = name[:255-len(suffix)]
	}
	return filepath.Join(r.Config.ContainerLogsDir, name+suffix)
}

// linkContainerLog links a started container's log into ContainerLogsDir, as the
// kubelet does for log collectors (only when the log exists: no dangling links).
func (r *PodReconciler) linkContainerLog(pod *corev1.Pod, c *corev1.Container, id, logPath string) {
	link := r.legacyLogSymlink(pod.Name, pod.Namespace, c.Name, id)
	if link == "" {
		return
	}
	if _, err := os.Stat(logPath); os.IsNotExist(err) {
		return
	}
	if err := os.MkdirAll(filepath.Dir(link), 0o755); err == nil {
		err = os.Symlink(logPath, link)
		if err != nil && !os.IsExist(err) {
			log.Log.V(2).Info("Linking a container log failed", "pod", client.ObjectKeyFromObject(pod), "container", c.Name, "error", err.Error())
		}
	}
}

// removeSandbox removes a sandbox with its containers and their log links.
func (r *PodReconciler) removeSandbox(ctx context.Context, id string) error {
	if r.Config.ContainerLogsDir != "" {
		cs, err := r.Runtime.ListContainers(ctx, &runtimeapi.ContainerFilter{PodSandboxId: id})
		if err != nil {
			return fmt.Errorf("listing the sandbox's containers: %w", err)
		}
		for _, c := range cs {
			link := r.legacyLogSymlink(c.Labels[podplan.LabelPodName], c.Labels[podplan.LabelPodNamespace], c.GetMetadata().GetName(), c.Id)
			if err := os.Remove(link); err != nil && !os.IsNotExist(err) {
				return fmt.Errorf("removing a container log link: %w", err)
			}
		}
	}
	return r.Runtime.RemovePodSandbox(ctx, id)
}

// podDir is where the pod's logs and volumes live.
func (r *PodReconciler) podDir(pod *corev1.Pod) string { return r.volumes().PodDir(pod.UID) }

// sandboxConfig is the pod's CRI sandbox config (podconfig.Sandbox).
func (r *PodReconciler) sandboxConfig(pod *corev1.Pod, attempt uint32) (*runtimeapi.PodSandboxConfig, error) {
	return podconfig.Sandbox(pod, podconfig.SandboxInputs{Attempt: attempt, LogDirectory: r.podLogDir(pod.Namespace, pod.Name, pod.UID),
		CgroupParent: r.podCgroup(pod), ClusterDomain: r.Config.ClusterDomain,
		DNS: func() *runtimeapi.DNSConfig { return r.dnsConfig(pod) }})
}

// dnsConfig is the pod's resolver (podconfig.PodDNS) from the node's resolver file; events go to
// the pod.
func (r *PodReconciler) dnsConfig(pod *corev1.Pod) *runtimeapi.DNSConfig {
	in := podconfig.DNSInputs{ClusterDNS: r.Config.ClusterDNS, ClusterDomain: r.Config.ClusterDomain}
	if r.Config.ResolvConf != nil {
		in.ResolvConf = *r.Config.ResolvConf
	}
	if r.HostIP != "" {
		in.NodeIPs = []string{r.HostIP}
	}
	if in.ResolvConf != "" {
		b, err := os.ReadFile(in.ResolvConf)
		if err != nil {
			r.Recorder.Eventf(pod, corev1.EventTypeWarning, "DNSConfigForming", "reading %s: %v", in.ResolvConf, err)
		}
		in.HostResolv = b
	}
	cfg, events := podconfig.PodDNS(pod, in)
	for _, e := range events {
		r.Recorder.Eventf(pod, corev1.EventTypeWarning, e.Reason, "%s", e.Message)
	}
	return cfg
}

func (r *PodReconciler) containerConfig(ctx context.Context, pod *corev1.Pod, c *corev1.Container, s podplan.Start, imageRef string) (*runtimeapi.ContainerConfig, error) {
	envs, err := r.env(ctx, pod, c)
	if err != nil {
		return nil, err
	}
	mounts, err := r.volumes().Mounts(pod, c, r.supportsRecursiveReadOnly(ctx))
	if err != nil {
		return nil, err
	}
	if m := r.hostsMount(pod, c); m != nil {
		mounts = append(mounts, m)
	}
	sc, err := podconfig.ContainerSecurityContext(pod, c, func() (*runtimeapi.Image, error) {
		return r.Runtime.ImageStatus(ctx, &runtimeapi.ImageSpec{Image: imageRef})
	}, defaultMaskedPaths())
	if err != nil {
		return nil, err
	}
	cfg := podconfig.Container(pod, c, podconfig.ContainerInputs{Start: s, ImageRef: imageRef, Env: envs, Mounts: mounts,
		GracePeriod: int64(r.grace(pod).Seconds()), MemoryCapacity: r.MemoryCapacity, Security: sc})
	// the termination message file, mounted from the host so it outlives the container
	if path := c.TerminationMessagePath; path != "" {
		host := r.terminationLogPath(pod, c.Name, s.Attempt)
		err := os.MkdirAll(filepath.Dir(host), 0o755)
		if err == nil {
			err = os.WriteFile(host, nil, 0o666)
		}
		if err != nil {
			// as kuberuntime's makeMounts: logged, and the container runs without it
			log.FromContext(ctx).Error(err, "Creating the termination-log file", "pod", client.ObjectKeyFromObject(pod), "container", c.Name)
		} else {
			_ = os.Chmod(host, 0o666)
			cfg.Mounts = append(cfg.Mounts, &runtimeapi.Mount{ContainerPath: path, HostPath: host})
		}
	}
	if err := r.addDevices(ctx, pod, c, cfg); err != nil {
		return nil, err
	}
	return cfg, nil
}

// DeviceAllocator gives containers the devices of device plugins (devicemanager.Manager).
type DeviceAllocator interface {
	Allocate(ctx context.Context, podUID, container string, limits corev1.ResourceList) (*devicemanager.ContainerDevices, error)
	PreStart(ctx context.Context, podUID, container string) error
	Release(podUID string)
}

// addDevices is upstream's device part of GenerateRunContainerOptions: the container's
// device plugin allocation (made at admission, kept across restarts) as env, mounts,
// device nodes, annotations and CDI devices, after the plugins' PreStartContainer.
func (r *PodReconciler) addDevices(ctx context.Context, pod *corev1.Pod, c *corev1.Container, cfg *runtimeapi.ContainerConfig) error {
	if r.Devices == nil {
		return nil
	}
	d, err := r.Devices.Allocate(ctx, string(pod.UID), c.Name, c.Resources.Limits)
	if err != nil {
		return err
	}
	if d == nil {
		return nil
	}
	if err := r.Devices.PreStart(ctx, string(pod.UID), c.Name); err != nil {
		return err
	}
	keys := make([]string, 0, len(d.Envs))
	for k := range d.Envs {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	var envs []*runtimeapi.KeyValue
	for _, k := range keys {
		envs = append(envs, &runtimeapi.KeyValue{Key: k, Value: []byte(d.Envs[k])})
	}
	cfg.Envs = append(envs, cfg.Envs...) // the container's own come after (and win)
	for _, m := range d.Mounts {
		cfg.Mounts = append(cfg.Mounts, &runtimeapi.Mount{ContainerPath: m.ContainerPath, HostPath: m.HostPath, Readonly: m.ReadOnly})
	}
	for _, dev := range d.Devices {
		cfg.Devices = append(cfg.Devices, &runtimeapi.Device{ContainerPath: dev.ContainerPath, HostPath: dev.HostPath, Permissions: dev.Permissions})
	}
	for k, v := range d.Annotations {
		cfg.Annotations[k] = v
	}
	for _, cdi := range d.CDIDevices {
		cfg.CDIDevices = append(cfg.CDIDevices, &runtimeapi.CDIDevice{Name: cdi.Name})
	}
	return nil
}

func (r *PodReconciler) terminationLogPath(pod *corev1.Pod, name string, attempt uint32) string {
	return filepath.Join(r.podDir(pod), "containers", name, strconv.Itoa(int(attempt))+"-termination-log")
}

// terminationMessage reads what an exited container left in its termination message
// file, or (FallbackToLogsOnError, on failure, when the file is empty) the end of its log.
func (r *PodReconciler) terminationMessage(pod *corev1.Pod, name string, attempt uint32, exitCode int32, logPath string) string {
	spec := findContainer(pod, name)
	if spec == nil {
		return ""
	}
	read := func(p string, limit int64) string {
		f, err := os.Open(p)
		if err != nil {
			return ""
		}
		defer f.Close()
		if st, err := f.Stat(); err == nil && st.Size() > limit {
			_, _ = f.Seek(st.Size()-limit, 0)
		}
		b := make([]byte, limit)
		n, _ := f.Read(b)
		return string(b[:n])
	}
	msg := read(r.terminationLogPath(pod, name, attempt), 4096)
	if msg == "" && exitCode != 0 && spec.TerminationMessagePolicy == corev1.TerminationMessageFallbackToLogsOnError && logPath != "" {
		// CRI log lines are "<time> <stream> <tag> <text>": keep the text of the last 80 lines
		lines := strings.Split(strings.TrimRight(read(logPath, 2048), "\n"), "\n")
		if len(lines) > 80 {
			lines = lines[len(lines)-80:]
		}
		var texts []string
		for _, l := range lines {
			if parts := strings.SplitN(l, " ", 4); len(parts) == 4 {
				texts = append(texts, parts[3])
			}
		}
		msg = strings.Join(texts, "\n")
	}
	return msg
}

// configError is a container configuration problem (a missing ConfigMap, Secret or
// key): the container waits with CreateContainerConfigError until it is fixed.
type configError = podconfig.ConfigError

// env resolves the container's environment (podconfig.Env): Service links from the
// Services the client lists, ConfigMaps and Secrets read from the API server (APIReader),
// the node's allocatable for missing limits, env files from the pod's volume folders.
func (r *PodReconciler) env(ctx context.Context, pod *corev1.Pod, c *corev1.Container) ([]*runtimeapi.KeyValue, error) {
	svcEnv, err := r.serviceEnv(ctx, pod)
	if err != nil {
		if pod.Annotations[AnnotationConfigSource] != "file" {
			return nil, err
		}
		// as upstream: a static pod does not wait for Services to be readable
		log.FromContext(ctx).V(2).Info("Starting a static pod without Service variables", "error", err.Error())
		svcEnv = nil
	}
	return podconfig.Env(pod, c, podconfig.EnvInputs{
		ServiceEnv:  svcEnv,
		HostIP:      r.HostIP,
		Objects:     apiObjects{ctx: ctx, reader: r.apiReader(), namespace: pod.Namespace},
		Allocatable: func() corev1.ResourceList { return r.nodeAllocatable(ctx) },
		ReadEnvFile: func(vol *corev1.Volume, path string) ([]byte, error) {
			dir := r.volumeDir(pod, vol.Name)
			if vol.HostPath != nil {
				dir = vol.HostPath.Path
			}
			return os.ReadFile(filepath.Join(dir, path))
		},
	})
}

// apiObjects reads one namespace's ConfigMaps and Secrets (podconfig.Objects).
type apiObjects struct {
	ctx       context.Context
	reader    client.Reader
	namespace string
}

func (o apiObjects) ConfigMap(name string) (*corev1.ConfigMap, error) {
	cm := &corev1.ConfigMap{}
	return cm, o.reader.Get(o.ctx, types.NamespacedName{Namespace: o.namespace, Name: name}, cm)
}

func (o apiObjects) Secret(name string) (*corev1.Secret, error) {
	sec := &corev1.Secret{}
	return sec, o.reader.Get(o.ctx, types.NamespacedName{Namespace: o.namespace, Name: name}, sec)
}

func (r *PodReconciler) apiReader() client.Reader {
	if r.APIReader != nil {
		return r.APIReader
	}
	return r.Client
}

// serviceEnv is the Service link variables for the pod (podconfig.ServiceLinks) from
// the Services the client lists.
func (r *PodReconciler) serviceEnv(ctx context.Context, pod *corev1.Pod) ([]corev1.EnvVar, error) {
	svcs := &corev1.ServiceList{}
	lctx, cancel := context.WithTimeout(ctx, 5*time.Second)
	defer cancel()
	if err := r.Client.List(lctx, svcs); err != nil {
		return nil, fmt.Errorf("listing services for environment variables: %w", err)
	}
	return podconfig.ServiceLinks(pod, svcs.Items), nil
}

// newRelister makes the relister (internal/pleg) that notices runtime changes (a
// container exited, a sandbox died) every RelistPeriod and feeds the pods concerned, and
// those of sandboxes whose pod is not bound here any more, to the reconciler.
func (r *PodReconciler) newRelister(reader client.Reader, logger logr.Logger) *pleg.Relister {
	return &pleg.Relister{Runtime: r.Runtime, Log: logger,
		Known: func(ctx context.Context) (map[types.UID]bool, error) {
			pods := &corev1.PodList{}
			if err := reader.List(ctx, pods); err != nil {
				return nil, err
			}
			uids := make(map[types.UID]bool, len(pods.Items))
			for _, p := range pods.Items {
				uids[p.UID] = true
			}
			return uids, nil
		},
		Notify: r.wake(logger)}
}

// wake returns a function that queues a pod's reconcile (the relister's and the event
// stream's way in).
func (r *PodReconciler) wake(logger logr.Logger) func(types.NamespacedName) {
	return func(key types.NamespacedName) {
		ev := event.GenericEvent{Object: &corev1.Pod{ObjectMeta: metav1.ObjectMeta{Namespace: key.Namespace, Name: key.Name}}}
		select {
		case r.events <- ev:
		default:
			logger.Info("Dropping relist event, queue full", "pod", key)
		}
	}
}

// periodic is a manager runnable that calls run every period until the manager stops
// (on every replica: it is node-local work).
type periodic struct {
	period time.Duration
	run    func(context.Context)
}

func (p periodic) NeedLeaderElection() bool { return false }

func (p periodic) Start(ctx context.Context) error {
	t := time.NewTicker(p.period)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return nil
		case <-t.C:
			p.run(ctx)
		}
	}
}

// observeWorker records one pod sync (kubelet_pod_worker_duration_seconds).
func observeWorker(op string, start time.Time) {
	kubeletmetrics.PodWorkerDuration.WithLabelValues(op).Observe(time.Since(start).Seconds())
}
