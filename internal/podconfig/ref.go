package podconfig

import (
	"fmt"

	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/client-go/kubernetes/scheme"
	"k8s.io/client-go/tools/reference"
)

// ContainerRef is what the kubelet's container events are about
// (kubecontainer.GenerateContainerRef): the pod, with fieldPath spec.containers{name},
// spec.initContainers{name} or spec.ephemeralContainers{name}; upstream's
// "implicitly required container <name>" for a name the spec does not have.
func ContainerRef(pod *corev1.Pod, name string) runtime.Object {
	fieldPath := ContainerFieldPath(pod, name)
	ref, err := reference.GetPartialReference(scheme.Scheme, pod, fieldPath)
	if err != nil {
		return pod // (an object the scheme does not know: not a Pod)
	}
	return ref
}

// ContainerFieldPath is the fieldPath of a container of the pod (GetContainerSpec's form).
func ContainerFieldPath(pod *corev1.Pod, name string) string {
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
