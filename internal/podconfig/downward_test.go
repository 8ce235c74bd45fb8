package podconfig

import (
	"testing"

	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/api/resource"
)

func TestDownwardAPIResourceValues(t *testing.T) {
	alloc := corev1.ResourceList{corev1.ResourceCPU: resource.MustParse("2"), corev1.ResourceMemory: resource.MustParse("8Gi"),
		corev1.ResourceEphemeralStorage: resource.MustParse("20Gi")}
	q := resource.MustParse
	sel := func(r, div, container string) *corev1.ResourceFieldSelector {
		s := &corev1.ResourceFieldSelector{Resource: r, ContainerName: container}
		if div != "" {
			s.Divisor = q(div)
		}
		return s
	}
	pod := func(podLimits corev1.ResourceList, cs ...corev1.Container) *corev1.Pod {
		p := &corev1.Pod{Spec: corev1.PodSpec{Containers: cs,
			InitContainers: []corev1.Container{{Name: "init"}}}}
		if podLimits != nil {
			p.Spec.Resources = &corev1.ResourceRequirements{Limits: podLimits}
		}
		return p
	}
	none := corev1.Container{Name: "none"}
	set := corev1.Container{Name: "set", Resources: corev1.ResourceRequirements{
		Requests: corev1.ResourceList{corev1.ResourceCPU: q("250m"), corev1.ResourceMemory: q("32Mi"), "hugepages-2Mi": q("4Mi")},
		Limits:   corev1.ResourceList{corev1.ResourceCPU: q("1250m"), corev1.ResourceMemory: q("64Mi"), "hugepages-2Mi": q("4Mi")}}}
	zero := corev1.Container{Name: "zero", Resources: corev1.ResourceRequirements{Limits: corev1.ResourceList{corev1.ResourceCPU: q("0")}}}

	for _, tt := range []struct {
		name   string
		volume bool
		pod    *corev1.Pod
		c      *corev1.Container
		fs     *corev1.ResourceFieldSelector
		want   string
		err    bool
	}{
		{name: "no cpu limit: allocatable", pod: pod(nil, none), c: &none, fs: sel("limits.cpu", "", ""), want: "2"},
		{name: "no memory limit: allocatable", pod: pod(nil, none), c: &none, fs: sel("limits.memory", "", ""), want: "8589934592"},
		{name: "memory limit in Mi", pod: pod(nil, none), c: &none, fs: sel("limits.memory", "1Mi", ""), want: "8192"},
		{name: "ephemeral-storage limit from allocatable", pod: pod(nil, none), c: &none, fs: sel("limits.ephemeral-storage", "1Gi", ""), want: "20"},
		{name: "zero limit counts as none", pod: pod(nil, zero), c: &zero, fs: sel("limits.cpu", "1m", ""), want: "2000"},
		{name: "own limit, rounded up", pod: pod(nil, set), c: &set, fs: sel("limits.cpu", "", ""), want: "2"},
		{name: "own limit in millicores", pod: pod(nil, set), c: &set, fs: sel("limits.cpu", "1m", ""), want: "1250"},
		{name: "request", pod: pod(nil, set), c: &set, fs: sel("requests.memory", "", ""), want: "33554432"},
		{name: "missing request is 0, not defaulted", pod: pod(nil, none), c: &none, fs: sel("requests.cpu", "", ""), want: "0"},
		{name: "hugepages limit", pod: pod(nil, set), c: &set, fs: sel("limits.hugepages-2Mi", "1Mi", ""), want: "4"},
		{name: "other container by name, defaulted", pod: pod(nil, set, none), c: &set, fs: sel("limits.memory", "1Gi", "none"), want: "8"},
		{name: "pod-level limit before allocatable", pod: pod(corev1.ResourceList{corev1.ResourceCPU: q("500m")}, none), c: &none,
			fs: sel("limits.cpu", "1m", ""), want: "500"},
		{name: "pod-level memory only keeps allocatable cpu", pod: pod(corev1.ResourceList{corev1.ResourceMemory: q("1Gi")}, none), c: &none,
			fs: sel("limits.cpu", "1m", ""), want: "2000"},
		{name: "init container by name is not defaulted (env)", pod: pod(nil, none), c: &none, fs: sel("limits.cpu", "", "init"), want: "0"},
		{name: "unknown container", pod: pod(nil, none), c: &none, fs: sel("limits.cpu", "", "nope"), err: true},
		{name: "unsupported resource", pod: pod(nil, none), c: &none, fs: sel("limits.nvidia.com/gpu", "", ""), err: true},

		{name: "volume: allocatable", volume: true, pod: pod(nil, none), fs: sel("limits.memory", "1Mi", "none"), want: "8192"},
		{name: "volume: own limit", volume: true, pod: pod(nil, set), fs: sel("limits.cpu", "1m", "set"), want: "1250"},
		{name: "volume: init container defaulted too", volume: true, pod: pod(nil, none), fs: sel("limits.cpu", "", "init"), want: "2"},
		{name: "volume: pod-level limit not consulted", volume: true, pod: pod(corev1.ResourceList{corev1.ResourceCPU: q("500m")}, none),
			fs: sel("limits.cpu", "1m", "none"), want: "2000"},
		{name: "volume: unknown container", volume: true, pod: pod(nil, none), fs: sel("limits.cpu", "", "nope"), err: true},
	} {
		t.Run(tt.name, func(t *testing.T) {
			before := tt.pod.DeepCopy()
			var got string
			var err error
			if tt.volume {
				got, err = VolumeResourceValue(tt.fs, tt.pod, alloc)
			} else {
				got, err = EnvResourceValue(tt.fs, tt.pod, tt.c, alloc)
			}
			if tt.err {
				if err == nil {
					t.Fatalf("got %q, want an error", got)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if got != tt.want {
				t.Errorf("got %s, want %s", got, tt.want)
			}
			if tt.pod.Spec.Containers[0].Resources.Limits.Cpu().Cmp(*before.Spec.Containers[0].Resources.Limits.Cpu()) != 0 {
				t.Errorf("the input pod was changed")
			}
		})
	}
}
