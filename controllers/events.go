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
	"k8s.io/client-go/tools/reference"
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

// containerRef is what the kubelet's container events are about
// (kubecontainer.GenerateContainerRef): the pod, with fieldPath spec.containers{name},
// spec.initContainers{name} or spec.ephemeralContainers{name}; upstream's
// "implicitly required container <name>" for a name the spec does not have.
func containerRef(pod *corev1.Pod, name string) runtime.Object {
	fieldPath := containerFieldPath(pod, name)
	ref, err := reference.GetPartialReference(scheme.Scheme, pod, fieldPath)
	if err != nil {
		return pod // (an object the scheme does not know: not a Pod)
	}
	return ref
}

func containerFieldPath(pod *corev1.Pod, name string) string {
	for i, c := range pod.Spec.Containers {
		if c.Name == name {
			if name == "" {
				return fmt.Sprintf("spec.containers[%d]", i)
			}
			return fmt.Sprintf("spec.containers{%s}", name)
		}
	}
	for i, c := range pod.Spec.InitContainers {
		if c.Name == name {
			if name == "" {
				return fmt.Sprintf("spec.initContainers[%d]", i)
			}
			return fmt.Sprintf("spec.initContainers{%s}", name)
		}
	}
	for i, c := range pod.Spec.EphemeralContainers {
		if c.Name == name {
			if name == "" {
				return fmt.Sprintf("spec.ephemeralContainers[%d]", i)
			}
			return fmt.Sprintf("spec.ephemeralContainers{%s}", name)
		}
	}
	return "implicitly required container " + name
}
