package controllers

import (
	"context"
	"fmt"
	"time"

	authenticationv1 "k8s.io/api/authentication/v1"
	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/nodekeeper/nodekeeper/internal/volume"
)

// +kubebuilder:rbac:groups="",resources=serviceaccounts/token,verbs=create

// volumes is the pods' volumes (internal/volume) under the root dir.
func (r *PodReconciler) volumes() *volume.Manager {
	return &volume.Manager{RootDir: r.Config.RootDir, Mounter: volume.HostMounter{}, Now: r.now}
}

// now is the reconciler's clock (the real one before SetupWithManager).
func (r *PodReconciler) now() time.Time {
	if r.Clock == nil {
		return time.Now()
	}
	return r.Clock.Now()
}

// volumeDir is the host folder of one volume.
func (r *PodReconciler) volumeDir(pod *corev1.Pod, name string) string {
	return r.volumes().Dir(pod, name)
}

// volumeSources is where the pod's volumes' content comes from: its namespace's
// ConfigMaps and Secrets read from the API (never cached, as the kubelet), service
// account tokens from the TokenRequest API, the node's allocatable.
func (r *PodReconciler) volumeSources(ctx context.Context, pod *corev1.Pod) volume.Sources {
	return volume.Sources{
		Objects: apiObjects{ctx: ctx, reader: r.apiReader(), namespace: pod.Namespace},
		Token: func(src *corev1.ServiceAccountTokenProjection) (string, error) {
			return r.serviceAccountToken(ctx, pod, src)
		},
		Allocatable: func() corev1.ResourceList { return r.nodeAllocatable(ctx) },
		HostIP:      r.HostIP,
	}
}

// serviceAccountToken asks the TokenRequest API for a token bound to the pod, reusing
// it until 80% of its life has passed (as the kubelet's token manager).
func (r *PodReconciler) serviceAccountToken(ctx context.Context, pod *corev1.Pod, src *corev1.ServiceAccountTokenProjection) (string, error) {
	sa := pod.Spec.ServiceAccountName
	if sa == "" {
		sa = "default"
	}
	exp := int64(3600)
	if src.ExpirationSeconds != nil {
		exp = *src.ExpirationSeconds
	}
	key := fmt.Sprintf("%s/%s/%s/%d", sa, src.Audience, src.Path, exp)
	if t, ok := r.cachedTokenFor(pod.UID, key, r.Clock.Now()); ok {
		return t, nil
	}
	tr := &authenticationv1.TokenRequest{Spec: authenticationv1.TokenRequestSpec{
		ExpirationSeconds: &exp,
		BoundObjectRef:    &authenticationv1.BoundObjectReference{Kind: "Pod", APIVersion: "v1", Name: pod.Name, UID: pod.UID},
	}}
	if src.Audience != "" {
		tr.Spec.Audiences = []string{src.Audience}
	}
	acct := &corev1.ServiceAccount{ObjectMeta: metav1.ObjectMeta{Namespace: pod.Namespace, Name: sa}}
	if err := r.Client.SubResource("token").Create(ctx, acct, tr); err != nil {
		if apierrors.IsNotFound(err) {
			return "", configError{Msg: fmt.Sprintf("serviceaccount %q not found", sa)}
		}
		return "", fmt.Errorf("requesting a service account token: %w", err)
	}
	life := tr.Status.ExpirationTimestamp.Sub(r.Clock.Now())
	r.cacheToken(pod.UID, key, cachedToken{token: tr.Status.Token, refresh: r.Clock.Now().Add(life * 8 / 10)})
	return tr.Status.Token, nil
}

type cachedToken struct {
	token   string
	refresh time.Time
}
