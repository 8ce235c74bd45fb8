package podplan

import (
	"reflect"
	"testing"

	corev1 "k8s.io/api/core/v1"
	"k8s.io/utils/ptr"
)

func TestResolveRecursiveReadOnly(t *testing.T) {
	mount := func(ro bool, mode *corev1.RecursiveReadOnlyMode, prop *corev1.MountPropagationMode) corev1.VolumeMount {
		return corev1.VolumeMount{Name: "mnt", MountPath: "/mnt", ReadOnly: ro, RecursiveReadOnly: mode, MountPropagation: prop}
	}
	enabled, ifPossible, disabled := ptr.To(corev1.RecursiveReadOnlyEnabled), ptr.To(corev1.RecursiveReadOnlyIfPossible), ptr.To(corev1.RecursiveReadOnlyDisabled)
	for _, tt := range []struct {
		name     string
		m        corev1.VolumeMount
		supports bool
		want     bool
		err      string
	}{
		{"unset", mount(true, nil, nil), true, false, ""},
		{"disabled", mount(true, disabled, nil), true, false, ""},
		{"disabled on a rw mount", mount(false, disabled, nil), true, false, ""},
		{"enabled, supported", mount(true, enabled, nil), true, true, ""},
		{"enabled, unsupported", mount(true, enabled, nil), false, false,
			`volume "mnt" requested recursive read-only mode, but it is not supported by the runtime`},
		{"if possible, supported", mount(true, ifPossible, nil), true, true, ""},
		{"if possible, unsupported: plain read-only", mount(true, ifPossible, nil), false, false, ""},
		{"enabled on a rw mount", mount(false, enabled, nil), true, false, `volume "mnt" requested recursive read-only mode, but it is not read-only`},
		{"enabled with propagation", mount(true, enabled, ptr.To(corev1.MountPropagationHostToContainer)), true, false,
			`volume "mnt" requested recursive read-only mode, but it is not compatible with propagation "HostToContainer"`},
		{"enabled with propagation None", mount(true, enabled, ptr.To(corev1.MountPropagationNone)), true, true, ""},
		{"unknown mode", mount(true, ptr.To(corev1.RecursiveReadOnlyMode("Sometimes")), nil), true, false, `unknown recursive read-only mode "Sometimes"`},
	} {
		t.Run(tt.name, func(t *testing.T) {
			got, err := ResolveRecursiveReadOnly(tt.m, tt.supports)
			gotErr := ""
			if err != nil {
				gotErr = err.Error()
			}
			if got != tt.want || gotErr != tt.err {
				t.Errorf("got %v, %q; want %v, %q", got, gotErr, tt.want, tt.err)
			}
		})
	}
}

func TestVolumeMountStatuses(t *testing.T) {
	c := &corev1.Container{VolumeMounts: []corev1.VolumeMount{
		{Name: "mnt", MountPath: "/mnt-rro", ReadOnly: true, RecursiveReadOnly: ptr.To(corev1.RecursiveReadOnlyEnabled)},
		{Name: "mnt", MountPath: "/mnt-rro-if-possible", ReadOnly: true, RecursiveReadOnly: ptr.To(corev1.RecursiveReadOnlyIfPossible)},
		{Name: "mnt", MountPath: "/mnt-ro", ReadOnly: true},
		{Name: "mnt", MountPath: "/mnt-rw"},
	}}
	en, dis := ptr.To(corev1.RecursiveReadOnlyEnabled), ptr.To(corev1.RecursiveReadOnlyDisabled)
	for supports, modes := range map[bool][]*corev1.RecursiveReadOnlyMode{true: {en, en, dis, nil}, false: {dis, dis, dis, nil}} {
		var want []corev1.VolumeMountStatus
		for i, m := range c.VolumeMounts {
			want = append(want, corev1.VolumeMountStatus{Name: m.Name, MountPath: m.MountPath, ReadOnly: m.ReadOnly, RecursiveReadOnly: modes[i]})
		}
		if got := VolumeMountStatuses(c, supports); !reflect.DeepEqual(got, want) {
			t.Errorf("supports=%v: got %+v", supports, got)
		}
	}
	if SupportsRecursiveReadOnly(nil, "") || !SupportsRecursiveReadOnly([]RuntimeHandler{{Name: "", RecursiveReadOnlyMounts: true}}, "") ||
		SupportsRecursiveReadOnly([]RuntimeHandler{{Name: "runc", RecursiveReadOnlyMounts: true}}, "") {
		t.Error("SupportsRecursiveReadOnly")
	}
}
