package controllers

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"os"
	"path/filepath"
	"sort"
	"strings"
	"sync"
	"time"

	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/apimachinery/pkg/util/validation"
	"k8s.io/utils/ptr"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/log"
	"sigs.k8s.io/yaml"

	"github.com/nodekeeper/nodekeeper/internal/podplan"
)

// Annotations of static and mirror pods, as the kubelet sets them.
const (
	AnnotationConfigSource = "kubernetes.io/config.source"
	AnnotationConfigHash   = "kubernetes.io/config.hash"
	AnnotationConfigSeen   = "kubernetes.io/config.seen"
	AnnotationConfigMirror = "kubernetes.io/config.mirror"
)

// staticPods holds the pods read from the static pod folder, by namespace/name. The
// PodReconciler runs them from here, whether or not the API server answers, and keeps a
// mirror pod in the API for each.
type staticPods struct {
	mu   sync.Mutex
	pods map[types.NamespacedName]*corev1.Pod
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

// ParseStaticPod decodes one manifest strictly and turns it into the pod the node runs:
// name suffixed with the node name, namespace defaulted, bound to the node, with a UID
// and config hash derived from the file's content (as upstream).
func ParseStaticPod(path string, data []byte, nodeName string) (*corev1.Pod, error) {
	pod := &corev1.Pod{}
	if err := yaml.UnmarshalStrict(data, pod); err != nil {
		return nil, fmt.Errorf("decoding %s: %w", path, err)
	}
	if pod.Kind != "" && pod.Kind != "Pod" {
		return nil, fmt.Errorf("%s: kind %q is not Pod", path, pod.Kind)
	}
	if pod.Name == "" {
		return nil, fmt.Errorf("%s: metadata.name is required", path)
	}
	if len(pod.Spec.Containers) == 0 {
		return nil, fmt.Errorf("%s: spec.containers must not be empty", path)
	}
	for _, c := range append(append([]corev1.Container(nil), pod.Spec.InitContainers...), pod.Spec.Containers...) {
		if c.Name == "" || c.Image == "" {
			return nil, fmt.Errorf("%s: every container needs a name and an image", path)
		}
	}
	if pod.Namespace == "" {
		pod.Namespace = metav1.NamespaceDefault
	}
	pod.Name = pod.Name + "-" + strings.ToLower(nodeName)
	for _, msg := range validation.IsDNS1123Subdomain(pod.Name) {
		return nil, fmt.Errorf("%s: pod name %q: %s", path, pod.Name, msg)
	}
	sum := sha256.Sum256(append([]byte(nodeName+"\x00"+path+"\x00"), data...))
	hash := hex.EncodeToString(sum[:16])
	pod.UID = types.UID(hash)
	pod.Spec.NodeName = nodeName
	if pod.Spec.RestartPolicy == "" {
		pod.Spec.RestartPolicy = corev1.RestartPolicyAlways
	}
	if pod.Annotations == nil {
		pod.Annotations = map[string]string{}
	}
	pod.Annotations[AnnotationConfigSource] = "file"
	pod.Annotations[AnnotationConfigHash] = hash
	pod.Spec.Tolerations = append(pod.Spec.Tolerations, corev1.Toleration{Operator: corev1.TolerationOpExists, Effect: corev1.TaintEffectNoExecute})
	return pod, nil
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
		if _, err := s.r.reconcileStatic(ctx, p); err != nil {
			logger.Error(err, "Running a static pod failed, will retry", "pod", client.ObjectKeyFromObject(p))
		}
	}
	for k := range s.removed {
		if err := s.r.removeByName(ctx, k.Namespace, k.Name, ""); err != nil {
			logger.Error(err, "Stopping a removed static pod failed, will retry", "pod", k)
			continue
		}
		mirror := &corev1.Pod{}
		err := s.r.mirrorClient().Get(ctx, k, mirror)
		if err == nil && mirror.Annotations[AnnotationConfigMirror] != "" {
			err = s.r.mirrorClient().Delete(ctx, mirror, client.GracePeriodSeconds(0), client.Preconditions{UID: &mirror.UID})
		}
		if err != nil && !apierrors.IsNotFound(err) {
			logger.Info("Mirror pod not removed yet, will retry", "pod", k, "error", err.Error())
			continue
		}
		delete(s.removed, k)
	}
}

func (s *staticPodSource) scan(ctx context.Context) {
	logger := log.FromContext(ctx).WithName("staticpods")
	entries, err := os.ReadDir(s.dir)
	if err != nil && !os.IsNotExist(err) {
		logger.Error(err, "Reading the static pod folder failed", "path", s.dir)
		return
	}
	next := map[types.NamespacedName]*corev1.Pod{}
	names := make([]string, 0, len(entries))
	for _, e := range entries {
		n := e.Name()
		if e.IsDir() || strings.HasPrefix(n, ".") || !(strings.HasSuffix(n, ".yaml") || strings.HasSuffix(n, ".yml") || strings.HasSuffix(n, ".json")) {
			continue
		}
		names = append(names, n)
	}
	sort.Strings(names)
	for _, n := range names {
		path := filepath.Join(s.dir, n)
		data, err := os.ReadFile(path)
		if err != nil {
			logger.Error(err, "Reading a static pod manifest failed", "path", path)
			continue
		}
		pod, err := ParseStaticPod(path, data, s.r.Config.NodeName)
		if err != nil {
			key := fmt.Sprintf("%s/%x", path, sha256.Sum256(data))
			if !s.seen[key] {
				logger.Error(err, "Skipping a broken static pod manifest", "path", path)
				s.seen[key] = true
			}
			continue
		}
		k := types.NamespacedName{Namespace: pod.Namespace, Name: pod.Name}
		if _, dup := next[k]; dup {
			logger.Error(fmt.Errorf("pod %s is defined twice", k), "Skipping a duplicate static pod manifest", "path", path)
			continue
		}
		next[k] = pod
	}
	st := &s.r.static
	st.mu.Lock()
	var changed []types.NamespacedName
	for k, p := range next {
		if old, ok := st.pods[k]; !ok || old.UID != p.UID {
			changed = append(changed, k)
		} else {
			next[k] = old // keep the status computed so far
		}
	}
	for k := range st.pods {
		if _, ok := next[k]; !ok {
			changed = append(changed, k)
			s.removed[k] = true
		}
	}
	for k := range next {
		delete(s.removed, k)
	}
	st.pods = next
	st.mu.Unlock()
	for _, k := range changed {
		logger.Info("Static pod changed", "pod", k)
	}
}

// syncMirror makes the API hold a mirror of a static pod (creating or replacing it)
// and writes the status into it. Failures are returned; the static pod keeps running.
func (r *PodReconciler) syncMirror(ctx context.Context, static *corev1.Pod, st corev1.PodStatus) error {
	hash := static.Annotations[AnnotationConfigHash]
	c := r.mirrorClient()
	mirror := &corev1.Pod{}
	err := c.Get(ctx, client.ObjectKeyFromObject(static), mirror)
	switch {
	case apierrors.IsNotFound(err):
		mirror = nil
	case err != nil:
		return err
	case mirror.Annotations[AnnotationConfigMirror] != hash || mirror.DeletionTimestamp != nil:
		// an older version of the manifest, a pod that is not our mirror, or a mirror
		// someone deleted: the static pod runs on, so the mirror is made anew
		if err := c.Delete(ctx, mirror, client.GracePeriodSeconds(0), client.Preconditions{UID: &mirror.UID}); err != nil && !apierrors.IsNotFound(err) {
			return fmt.Errorf("deleting stale mirror pod: %w", err)
		}
		mirror = nil
	}
	if mirror == nil {
		m := static.DeepCopy()
		m.UID, m.ResourceVersion, m.Status = "", "", corev1.PodStatus{}
		m.Annotations[AnnotationConfigMirror] = hash
		node := &corev1.Node{}
		if err := c.Get(ctx, types.NamespacedName{Name: r.Config.NodeName}, node); err == nil {
			m.OwnerReferences = []metav1.OwnerReference{{APIVersion: "v1", Kind: "Node", Name: node.Name, UID: node.UID, Controller: ptr.To(true)}}
		}
		if err := c.Create(ctx, m); err != nil {
			return fmt.Errorf("creating mirror pod: %w", err)
		}
		mirror = m
	}
	if podplan.Changed(mirror.Status, st) {
		patched := mirror.DeepCopy()
		patched.Status = st
		if err := c.Status().Patch(ctx, patched, client.MergeFrom(mirror)); err != nil {
			return fmt.Errorf("patching mirror pod status: %w", err)
		}
	}
	return nil
}
