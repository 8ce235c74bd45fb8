package controllers

import (
	"testing"

	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/api/resource"
	"k8s.io/utils/ptr"
)

func TestEmptyDirEviction(t *testing.T) {
	p := &corev1.Pod{Spec: corev1.PodSpec{Volumes: []corev1.Volume{
		{Name: "nolimit", VolumeSource: corev1.VolumeSource{EmptyDir: &corev1.EmptyDirVolumeSource{}}},
		{Name: "small", VolumeSource: corev1.VolumeSource{EmptyDir: &corev1.EmptyDirVolumeSource{SizeLimit: ptr.To(resource.MustParse("100Mi"))}}},
		{Name: "mem", VolumeSource: corev1.VolumeSource{EmptyDir: &corev1.EmptyDirVolumeSource{Medium: corev1.StorageMediumMemory, SizeLimit: ptr.To(resource.MustParse("1G"))}}},
	}}}
	for _, tt := range []struct {
		usage map[string]int64
		want  string
	}{
		{map[string]int64{"nolimit": 1 << 40, "small": 100 << 20, "mem": 1e9}, ""},
		{map[string]int64{"small": 100<<20 + 1}, `Usage of EmptyDir volume "small" exceeds the limit "100Mi". `},
		{map[string]int64{"mem": 1e9 + 1}, `Usage of EmptyDir volume "mem" exceeds the limit "1G". `},
		{map[string]int64{}, ""},
	} {
		if got := emptyDirEviction(p, tt.usage); got != tt.want {
			t.Errorf("usage %v: %q, want %q", tt.usage, got, tt.want)
		}
	}
}
