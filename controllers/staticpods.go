package controllers

import (
	"context"
	"fmt"
	"sort"
	"sync"
	"time"

	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/client-go/util/workqueue"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/event"
	"sigs.k8s.io/controller-runtime/pkg/handler"
	"sigs.k8s.io/controller-runtime/pkg/log"
	"sigs.k8s.io/controller-runtime/pkg/reconcile"

	"github.com/nodekeeper/nodekeeper/internal/podplan"
	"github.com/nodekeeper/nodekeeper/internal/staticpod"
)

// Annotations of static and mirror pods, as the kubelet sets them.
const (
	AnnotationConfigSource = podplan.AnnotationConfigSource
	AnnotationConfigHash   = podplan.AnnotationConfigHash
	AnnotationConfigSeen   = podplan.AnnotationConfigSeen
	AnnotationConfigMirror = podplan.AnnotationConfigMirror
)

// staticPods holds the pods read from the static pod folder, by namespace/name. The
// PodReconciler runs them from here, whether or not the API server answers, and keeps a
// mirror pod in the API for each.
type staticPods struct {
	mu   sync.Mutex
	pods map[types.NamespacedName]*corev1.Pod
	// mirrors are the mirror pods as last seen, from the pod watch or from the
	// answers to our own writes. As the kubelet, the agent never GETs a mirror pod to
	// learn whether it exists: the Node authorizer forbids a node to read a pod that
	// does not exist (no relationship found).
	mirrors map[types.NamespacedName]*corev1.Pod
	// terminating are the static pods being stopped (their file removed, replaced or
	// written anew), by UID: as the kubelet's pod workers, they stop within their grace
	// period, and a static pod of the same name starts only once they have
	// (allowStaticPodStart); their mirror stays until then.
	terminating map[types.UID]*staticTermination
}

// staticTermination is one static pod being stopped.
type staticTermination struct {
	key  types.NamespacedName
	done bool
}

// terminatingKey tells whether a static pod named key is still being stopped.
func (s *staticPods) terminatingKey(key types.NamespacedName) bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	for _, t := range s.terminating {
		if t.key == key && !t.done {
			return true
		}
	}
	return false
}

// mirror is the mirror pod last seen for a static pod, or nil.
func (s *staticPods) mirror(key types.NamespacedName) *corev1.Pod {
	s.mu.Lock()
	defer s.mu.Unlock()
	if m, ok := s.mirrors[key]; ok {
		return m.DeepCopy()
	}
	return nil
}

// sawMirror records a mirror pod seen in the API. An older version of the same pod
// (a watch event behind the answer to our last write) does not replace a newer one.
func (s *staticPods) sawMirror(m *corev1.Pod) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.mirrors == nil {
		s.mirrors = map[types.NamespacedName]*corev1.Pod{}
	}
	key := types.NamespacedName{Namespace: m.Namespace, Name: m.Name}
	if old, ok := s.mirrors[key]; ok && old.UID == m.UID && staticpod.OlderVersion(m.ResourceVersion, old.ResourceVersion) {
		return
	}
	s.mirrors[key] = m.DeepCopy()
}

// mirrorGone records that the mirror pod for key (with uid, or any when uid is "")
// is not in the API.
func (s *staticPods) mirrorGone(key types.NamespacedName, uid types.UID) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if old, ok := s.mirrors[key]; ok && (uid == "" || old.UID == uid) {
		delete(s.mirrors, key)
	}
}

// mirrorWatch keeps the static pods' mirrors as the pod watch reports them.
func (r *PodReconciler) mirrorWatch() handler.EventHandler {
	isMirror := func(o client.Object) (*corev1.Pod, bool) {
		p, ok := o.(*corev1.Pod)
		if !ok {
			return nil, false
		}
		_, mirror := p.Annotations[AnnotationConfigMirror]
		return p, mirror
	}
	type queue = workqueue.TypedRateLimitingInterface[reconcile.Request]
	return handler.Funcs{
		CreateFunc: func(_ context.Context, e event.CreateEvent, _ queue) {
			if p, ok := isMirror(e.Object); ok {
				r.static.sawMirror(p)
			}
		},
		UpdateFunc: func(_ context.Context, e event.UpdateEvent, _ queue) {
			if p, ok := isMirror(e.ObjectNew); ok {
				r.static.sawMirror(p)
			}
		},
		DeleteFunc: func(_ context.Context, e event.DeleteEvent, _ queue) {
			if p, ok := isMirror(e.Object); ok {
				r.static.mirrorGone(types.NamespacedName{Namespace: p.Namespace, Name: p.Name}, p.UID)
			}
		},
	}
}

func (s *staticPods) get(key types.NamespacedName) *corev1.Pod {
	s.mu.Lock()
	defer s.mu.Unlock()
	if p, ok := s.pods[key]; ok {
		return p.DeepCopy()
	}
	return nil
}

// setStatus keeps the last status computed for a static pod.
func (s *staticPods) setStatus(key types.NamespacedName, uid types.UID, st corev1.PodStatus) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if p, ok := s.pods[key]; ok && p.UID == uid {
		p.Status = st
	}
}

// staticPodSource reads the static pod folder every period and runs the static pods
// itself, one after the other, without the work queue or the informer cache: they run
// even when the API server cannot be reached, from the agent's first second. A broken
// manifest is logged and skipped.
type staticPodSource struct {
	r       *PodReconciler
	dir     string
	period  time.Duration
	seen    map[string]bool // broken files already reported, by path+content hash
	removed map[types.NamespacedName]bool
	idents  map[types.NamespacedName]string // the file each pod was read from (fileIdentity)
}

func (s *staticPodSource) NeedLeaderElection() bool { return false }

func (s *staticPodSource) Start(ctx context.Context) error {
	t := time.NewTicker(s.period)
	defer t.Stop()
	for {
		s.scan(ctx)
		s.sync(ctx)
		select {
		case <-ctx.Done():
			return nil
		case <-t.C:
		}
	}
}

// sync runs every static pod once, and finishes removing those whose file went away.
func (s *staticPodSource) sync(ctx context.Context) {
	logger := log.FromContext(ctx).WithName("staticpods")
	s.r.static.mu.Lock()
	var pods []*corev1.Pod
	for _, p := range s.r.static.pods {
		pods = append(pods, p.DeepCopy())
	}
	s.r.static.mu.Unlock()
	sort.Slice(pods, func(i, j int) bool { return pods[i].Name < pods[j].Name })
	for _, p := range pods {
		if s.r.static.terminatingKey(client.ObjectKeyFromObject(p)) {
			continue // it starts once the pod it replaces has stopped
		}
		if _, err := s.r.reconcileStatic(ctx, p); err != nil {
			logger.Error(err, "Running a static pod failed, will retry", "pod", client.ObjectKeyFromObject(p))
		}
	}
	for k := range s.removed {
		if s.r.static.terminatingKey(k) {
			continue // the mirror stays while the pod stops
		}
		if err := s.r.removeByName(ctx, k.Namespace, k.Name, ""); err != nil {
			logger.Error(err, "Stopping a removed static pod failed, will retry", "pod", k)
			continue
		}
		// the mirror we know of goes; one we have not seen yet is removed when the
		// pod watch brings it (Reconcile: a mirror without its static pod)
		if mirror := s.r.static.mirror(k); mirror != nil {
			if err := s.r.deleteMirror(ctx, mirror); err != nil {
				logger.Info("Mirror pod not removed yet, will retry", "pod", k, "error", err.Error())
				continue
			}
		}
		delete(s.removed, k)
	}
}

func (s *staticPodSource) scan(ctx context.Context) {
	logger := log.FromContext(ctx).WithName("staticpods")
	files, unread, err := staticpod.ReadDir(s.dir)
	if err != nil {
		logger.Error(err, "Reading the static pod folder failed", "path", s.dir)
		return
	}
	next, problems := staticpod.Read(files, s.r.Config.NodeName)
	for _, p := range append(unread, problems...) {
		switch {
		case p.Duplicate:
			logger.Error(p.Err, "Skipping a duplicate static pod manifest", "path", p.Path)
		case p.Key == "":
			logger.Error(p.Err, "Reading a static pod manifest failed", "path", p.Path)
		case !s.seen[p.Key]:
			logger.Error(p.Err, "Skipping a broken static pod manifest", "path", p.Path)
			s.seen[p.Key] = true
		}
	}
	st := &s.r.static
	st.mu.Lock()
	diff := staticpod.Compare(staticpod.Set{Pods: st.pods, Identities: s.idents}, next)
	for _, k := range diff.Removed {
		s.removed[k] = true
	}
	for k := range next.Pods {
		delete(s.removed, k)
	}
	st.pods = diff.Pods
	s.idents = next.Identities
	st.mu.Unlock()
	for _, k := range diff.Changed {
		logger.Info("Static pod changed", "pod", k)
	}
	for _, p := range diff.Stop {
		s.r.terminateStatic(ctx, p)
	}
}

// terminateStatic stops a static pod that was removed or replaced, in the background,
// as the kubelet's pod worker: its containers get its grace period (preStop hooks,
// sidecars last) and its sandboxes are stopped; they are removed later (when a pod of
// the same name runs, or the mirror goes). Until it is done, no static pod of that
// name runs and its mirror stays.
func (r *PodReconciler) terminateStatic(ctx context.Context, pod *corev1.Pod) {
	key := client.ObjectKeyFromObject(pod)
	r.static.mu.Lock()
	if r.static.terminating == nil {
		r.static.terminating = map[types.UID]*staticTermination{}
	}
	if t, ok := r.static.terminating[pod.UID]; ok && !t.done {
		r.static.mu.Unlock()
		return
	}
	t := &staticTermination{key: key}
	r.static.terminating[pod.UID] = t
	r.static.mu.Unlock()
	go func() {
		logger := log.FromContext(ctx).WithName("staticpods")
		defer func() {
			r.static.mu.Lock()
			t.done = true
			delete(r.static.terminating, pod.UID)
			r.static.mu.Unlock()
		}()
		for ctx.Err() == nil {
			err := r.stopStatic(ctx, pod)
			if err == nil {
				return
			}
			logger.Error(err, "Stopping a static pod failed, will retry", "pod", key)
			select {
			case <-ctx.Done():
			case <-time.After(time.Second):
			}
		}
	}()
}

func (r *PodReconciler) stopStatic(ctx context.Context, pod *corev1.Pod) error {
	obs, err := r.observe(ctx, pod.UID)
	if err != nil {
		return err
	}
	if err := r.killPod(ctx, pod, obs, r.grace(pod)); err != nil {
		return err
	}
	r.forget(pod.UID)
	return nil
}

// syncMirror makes the API hold a mirror of a static pod (creating or replacing it)
// and writes the status into it, as the kubelet's tryReconcileMirrorPods and status
// manager: the mirror is known from the pod watch and from the answers to our writes,
// never looked up (a node may not read a pod that does not exist). Failures are
// returned; the static pod keeps running.
func (r *PodReconciler) syncMirror(ctx context.Context, static *corev1.Pod, st corev1.PodStatus) error {
	c := r.mirrorClient()
	key := client.ObjectKeyFromObject(static)
	mirror := r.static.mirror(key)
	if mirror != nil && staticpod.MirrorStale(static, mirror) {
		// an older version of the manifest, a pod that is not our mirror, or a mirror
		// someone deleted: the static pod runs on, so the mirror is made anew
		log.FromContext(ctx).Info("Deleting a mirror pod that does not match its static pod", "pod", key, "podUID", mirror.UID)
		if err := r.deleteMirror(ctx, mirror); err != nil {
			return fmt.Errorf("deleting stale mirror pod: %w", err)
		}
		mirror = nil
	}
	if mirror == nil {
		node := &corev1.Node{}
		if err := c.Get(ctx, types.NamespacedName{Name: r.Config.NodeName}, node); err != nil {
			// as upstream: a mirror pod needs its node's UID for the owner reference
			// (the NodeRestriction admission plugin checks it)
			return fmt.Errorf("no mirror pod before the node is registered: %w", err)
		}
		m := staticpod.NewMirror(static, node)
		log.FromContext(ctx).Info("Creating a mirror pod for static pod", "pod", key)
		if err := c.Create(ctx, m); err != nil {
			if apierrors.IsAlreadyExists(err) {
				// made by an earlier run of the agent, or not ours: the pod watch tells
				// which, and a stale one is replaced then
				return fmt.Errorf("creating mirror pod: %w (waiting for the pod watch to report it)", err)
			}
			return fmt.Errorf("creating mirror pod: %w", err)
		}
		r.static.sawMirror(m)
		mirror = m
	}
	if podplan.Changed(mirror.Status, st) {
		patched := mirror.DeepCopy()
		patched.Status = st
		if err := c.Status().Patch(ctx, patched, client.MergeFrom(mirror)); err != nil {
			if apierrors.IsNotFound(err) {
				r.static.mirrorGone(key, mirror.UID)
			}
			return fmt.Errorf("patching mirror pod status: %w", err)
		}
		r.static.sawMirror(patched)
	}
	return nil
}

// deleteMirror deletes a mirror pod by UID (grace 0, as upstream's DeleteMirrorPod);
// one already gone or replaced is no error.
func (r *PodReconciler) deleteMirror(ctx context.Context, mirror *corev1.Pod) error {
	err := r.mirrorClient().Delete(ctx, mirror, client.GracePeriodSeconds(0), client.Preconditions{UID: &mirror.UID})
	if err != nil && !apierrors.IsNotFound(err) && !apierrors.IsConflict(err) {
		return err
	}
	r.static.mirrorGone(types.NamespacedName{Namespace: mirror.Namespace, Name: mirror.Name}, mirror.UID)
	return nil
}
