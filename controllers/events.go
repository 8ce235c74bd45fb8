package controllers

import (
	"context"
	"fmt"

	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/kubernetes/scheme"
	typedcorev1 "k8s.io/client-go/kubernetes/typed/core/v1"
	"k8s.io/client-go/rest"
	"k8s.io/client-go/tools/record"

	"github.com/nodekeeper/nodekeeper/internal/podconfig"
)

// NewEventRecorder is the kubelet's event recorder (makeEventRecorder in
// cmd/kubelet/app/server.go): core/v1 Events with source {component: kubelet, host:
// <node>} (so reportingController kubelet, reportingInstance <node>), sent through a
// broadcaster that aggregates and rate-limits repeats, until ctx ends. (controller-runtime's
// GetEventRecorderFor leaves source.host empty.)
func NewEventRecorder(ctx context.Context, cfg *rest.Config, nodeName string) (record.EventRecorder, error) {
	cs, err := kubernetes.NewForConfig(cfg)
	if err != nil {
		return nil, fmt.Errorf("building the events client: %w", err)
	}
	b := record.NewBroadcaster(record.WithContext(ctx))
	b.StartRecordingToSink(&typedcorev1.EventSinkImpl{Interface: cs.CoreV1().Events("")})
	go func() {
		<-ctx.Done()
		b.Shutdown()
	}()
	return b.NewRecorder(scheme.Scheme, corev1.EventSource{Component: "kubelet", Host: nodeName}), nil
}

// containerRef is what the kubelet's container events are about: podconfig.ContainerRef.
func containerRef(pod *corev1.Pod, name string) runtime.Object {
	return podconfig.ContainerRef(pod, name)
}
