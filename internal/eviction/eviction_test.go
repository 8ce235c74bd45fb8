package eviction

import (
	"context"
	"os"
	"path/filepath"
	"reflect"
	"testing"

	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/api/resource"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/utils/ptr"

	"github.com/nodekeeper/nodekeeper/internal/podplan"
)

func emptyDir(name, limit string, medium corev1.StorageMedium) corev1.Volume {
	v := corev1.Volume{Name: name, VolumeSource: corev1.VolumeSource{EmptyDir: &corev1.EmptyDirVolumeSource{Medium: medium}}}
	if limit != "" {
		v.EmptyDir.SizeLimit = ptr.To(resource.MustParse(limit))
	}
	return v
}

func TestEmptyDirViolation(t *testing.T) {
	p := &corev1.Pod{Spec: corev1.PodSpec{Volumes: []corev1.Volume{
		emptyDir("nolimit", "", ""),
		emptyDir("zero", "0", ""),
		emptyDir("small", "100Mi", ""),
		emptyDir("mem", "1G", corev1.StorageMediumMemory),
		{Name: "cm", VolumeSource: corev1.VolumeSource{ConfigMap: &corev1.ConfigMapVolumeSource{}}},
	}}}
	for _, tt := range []struct {
		usage map[string]int64
		want  string
	}{
		{map[string]int64{"nolimit": 1 << 40, "zero": 1 << 40, "small": 100 << 20, "mem": 1e9, "cm": 1 << 40}, ""},
		{map[string]int64{"small": 100<<20 + 1}, `Usage of EmptyDir volume "small" exceeds the limit "100Mi". `},
		{map[string]int64{"mem": 1e9 + 1}, `Usage of EmptyDir volume "mem" exceeds the limit "1G". `},
		{map[string]int64{"small": 200 << 20, "mem": 2e9}, `Usage of EmptyDir volume "small" exceeds the limit "100Mi". `}, // the first in spec order
		{map[string]int64{}, ""}, // not measured: not judged
	} {
		if got := EmptyDirViolation(p, tt.usage); got != tt.want {
			t.Errorf("usage %v: %q, want %q", tt.usage, got, tt.want)
		}
	}
}

func TestMeasured(t *testing.T) {
	base := func(f func(*corev1.Pod)) *corev1.Pod {
		p := &corev1.Pod{Spec: corev1.PodSpec{NodeName: "n1", Volumes: []corev1.Volume{emptyDir("a", "1Mi", ""), emptyDir("b", "", ""), emptyDir("c", "1Gi", "")}}}
		if f != nil {
			f(p)
		}
		return p
	}
	both := []string{"a", "c"}
	for _, tt := range []struct {
		name    string
		pod     *corev1.Pod
		evicted bool
		want    []string
	}{
		{"running here", base(nil), false, both},
		{"another node's", base(func(p *corev1.Pod) { p.Spec.NodeName = "n2" }), false, nil},
		{"being deleted", base(func(p *corev1.Pod) { p.DeletionTimestamp = &metav1.Time{} }), false, nil},
		{"finished", base(func(p *corev1.Pod) { p.Status.Phase = corev1.PodSucceeded }), false, nil},
		{"evicted already", base(nil), true, nil},
		{"no limited volume", base(func(p *corev1.Pod) { p.Spec.Volumes = p.Spec.Volumes[1:2] }), false, nil},
		{"static pod: critical", base(func(p *corev1.Pod) { p.Annotations = map[string]string{podplan.AnnotationConfigSource: "file"} }), false, nil},
		{"from the API server: not critical", base(func(p *corev1.Pod) { p.Annotations = map[string]string{podplan.AnnotationConfigSource: "api"} }), false, both},
		{"mirror pod: critical", base(func(p *corev1.Pod) { p.Annotations = map[string]string{podplan.AnnotationConfigMirror: "h"} }), false, nil},
		{"system-node-critical priority", base(func(p *corev1.Pod) { p.Spec.Priority = ptr.To(int32(2000001000)) }), false, nil},
		{"system-cluster-critical priority (2e9)", base(func(p *corev1.Pod) { p.Spec.Priority = ptr.To(int32(2000000000)) }), false, nil},
		{"the highest user priority", base(func(p *corev1.Pod) { p.Spec.Priority = ptr.To(int32(1000000000)) }), false, both},
	} {
		if got := Measured(tt.pod, "n1", tt.evicted); !reflect.DeepEqual(got, tt.want) {
			t.Errorf("%s: %v, want %v", tt.name, got, tt.want)
		}
	}
}

// The monitor measures what Measured names on disk and evicts the pod EmptyDirViolation
// finds; a volume not set up yet is not judged.
func TestMonitor(t *testing.T) {
	root := t.TempDir()
	dir := func(pod *corev1.Pod, v string) string { return filepath.Join(root, string(pod.UID), v) }
	pod := func(uid string) corev1.Pod {
		return corev1.Pod{ObjectMeta: metav1.ObjectMeta{UID: types.UID(uid)},
			Spec: corev1.PodSpec{NodeName: "n1", Volumes: []corev1.Volume{emptyDir("v", "32Ki", "")}}}
	}
	full, fine, missing, done := pod("full"), pod("fine"), pod("missing"), pod("done")
	for p, size := range map[*corev1.Pod]int{&full: 64 << 10, &fine: 1 << 10, &done: 64 << 10} {
		d := dir(p, "v")
		if err := os.MkdirAll(filepath.Join(d, "sub"), 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(filepath.Join(d, "sub", "f"), make([]byte, size), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	evicted := map[types.UID]string{"done": "earlier"}
	m := &Monitor{NodeName: "n1",
		List:      func(context.Context) ([]corev1.Pod, error) { return []corev1.Pod{full, fine, missing, done}, nil },
		Evicted:   func(uid types.UID) bool { return evicted[uid] != "" },
		VolumeDir: dir,
		Evict:     func(_ context.Context, p *corev1.Pod, msg string) { evicted[p.UID] = msg },
	}
	if err := m.Check(context.Background()); err != nil {
		t.Fatal(err)
	}
	want := map[types.UID]string{"done": "earlier", "full": `Usage of EmptyDir volume "v" exceeds the limit "32Ki". `}
	if !reflect.DeepEqual(evicted, want) {
		t.Errorf("evicted %v, want %v", evicted, want)
	}
	if n, err := DirUsage(dir(&full, "v")); err != nil || n < 64<<10 {
		t.Errorf("usage %d %v: want at least the file's 64Ki", n, err)
	}
	if _, err := DirUsage(dir(&missing, "v")); err == nil {
		t.Errorf("a missing folder must be an error")
	}
}
