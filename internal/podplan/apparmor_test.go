package podplan

import (
	"errors"
	"testing"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	runtimeapi "k8s.io/cri-api/pkg/apis/runtime/v1"
	"k8s.io/utils/ptr"
)

func TestAppArmorRejection(t *testing.T) {
	noAppArmor := errors.New("AppArmor is not enabled on the host")
	base := func(mut func(*corev1.Pod)) *corev1.Pod {
		p := &corev1.Pod{ObjectMeta: metav1.ObjectMeta{Name: "p"},
			Spec: corev1.PodSpec{Containers: []corev1.Container{{Name: "test"}}}}
		mut(p)
		return p
	}
	field := func(typ corev1.AppArmorProfileType) func(*corev1.Pod) {
		return func(p *corev1.Pod) {
			p.Spec.Containers[0].SecurityContext = &corev1.SecurityContext{AppArmorProfile: &corev1.AppArmorProfile{Type: typ}}
		}
	}
	annotation := func(v string) func(*corev1.Pod) {
		return func(p *corev1.Pod) {
			p.Annotations = map[string]string{corev1.DeprecatedAppArmorBetaContainerAnnotationKeyPrefix + "test": v}
		}
	}
	for _, tc := range []struct {
		name    string
		pod     *corev1.Pod
		hostErr error
		want    string // the message, "" admitted
	}{
		{"no profile, no AppArmor", base(func(*corev1.Pod) {}), noAppArmor, ""},
		{"field, no AppArmor", base(field(corev1.AppArmorProfileTypeRuntimeDefault)), noAppArmor,
			"Cannot enforce AppArmor: AppArmor is not enabled on the host"},
		{"annotation, no AppArmor", base(annotation("runtime/default")), noAppArmor,
			"Cannot enforce AppArmor: AppArmor is not enabled on the host"},
		{"pod-level field, no AppArmor", base(func(p *corev1.Pod) {
			p.Spec.SecurityContext = &corev1.PodSecurityContext{AppArmorProfile: &corev1.AppArmorProfile{Type: corev1.AppArmorProfileTypeRuntimeDefault}}
		}), noAppArmor, "Cannot enforce AppArmor: AppArmor is not enabled on the host"},
		{"unconfined needs nothing", base(field(corev1.AppArmorProfileTypeUnconfined)), noAppArmor, ""},
		{"unconfined annotation needs nothing", base(annotation("unconfined")), noAppArmor, ""},
		{"running pods are not checked again", base(func(p *corev1.Pod) {
			field(corev1.AppArmorProfileTypeRuntimeDefault)(p)
			p.Status.Phase = corev1.PodRunning
		}), noAppArmor, ""},
		{"AppArmor on: admitted", base(field(corev1.AppArmorProfileTypeRuntimeDefault)), nil, ""},
		{"AppArmor on, empty localhost profile", base(func(p *corev1.Pod) {
			p.Spec.Containers[0].SecurityContext = &corev1.SecurityContext{AppArmorProfile: &corev1.AppArmorProfile{
				Type: corev1.AppArmorProfileTypeLocalhost, LocalhostProfile: ptr.To(" ")}}
		}), nil, `Cannot enforce AppArmor: invalid empty AppArmor profile name: "&AppArmorProfile{Type:Localhost,LocalhostProfile:* ,}"`},
	} {
		t.Run(tc.name, func(t *testing.T) {
			r := AppArmorRejection(tc.pod, tc.hostErr)
			switch {
			case tc.want == "" && r != nil:
				t.Errorf("rejected: %+v", *r)
			case tc.want != "" && (r == nil || r.Reason != "AppArmor" || r.Message != tc.want):
				t.Errorf("got %+v, want reason AppArmor, message %q", r, tc.want)
			}
		})
	}
}

// The profile passed to the runtime, as upstream's getAppArmorProfile: the container's,
// else its beta annotation's, else the pod's; with the deprecated string alongside.
func TestCRIAppArmor(t *testing.T) {
	name := "k8s-nginx"
	pod := &corev1.Pod{ObjectMeta: metav1.ObjectMeta{Annotations: map[string]string{
		corev1.DeprecatedAppArmorBetaContainerAnnotationKeyPrefix + "annotated": "localhost/from-annotation"}},
		Spec: corev1.PodSpec{SecurityContext: &corev1.PodSecurityContext{AppArmorProfile: &corev1.AppArmorProfile{Type: corev1.AppArmorProfileTypeRuntimeDefault}}}}
	for _, tc := range []struct {
		c          corev1.Container
		typ        runtimeapi.SecurityProfile_ProfileType
		ref, depr  string
		none, fail bool
	}{
		{c: corev1.Container{Name: "pod-default"}, typ: runtimeapi.SecurityProfile_RuntimeDefault, depr: "runtime/default"},
		{c: corev1.Container{Name: "own", SecurityContext: &corev1.SecurityContext{AppArmorProfile: &corev1.AppArmorProfile{
			Type: corev1.AppArmorProfileTypeLocalhost, LocalhostProfile: &name}}}, typ: runtimeapi.SecurityProfile_Localhost, ref: name, depr: "localhost/k8s-nginx"},
		{c: corev1.Container{Name: "annotated"}, typ: runtimeapi.SecurityProfile_Localhost, ref: "from-annotation", depr: "localhost/from-annotation"},
		{c: corev1.Container{Name: "unconfined", SecurityContext: &corev1.SecurityContext{AppArmorProfile: &corev1.AppArmorProfile{
			Type: corev1.AppArmorProfileTypeUnconfined}}}, typ: runtimeapi.SecurityProfile_Unconfined, depr: "unconfined"},
		{c: corev1.Container{Name: "broken", SecurityContext: &corev1.SecurityContext{AppArmorProfile: &corev1.AppArmorProfile{
			Type: corev1.AppArmorProfileTypeLocalhost}}}, fail: true},
	} {
		sp, depr, err := CRIAppArmor(pod, &tc.c)
		if tc.fail {
			if err == nil {
				t.Errorf("%s: no error", tc.c.Name)
			}
			continue
		}
		if err != nil || sp == nil || sp.ProfileType != tc.typ || sp.LocalhostRef != tc.ref || depr != tc.depr {
			t.Errorf("%s: %v %q %v", tc.c.Name, sp, depr, err)
		}
	}
	if sp, depr, err := CRIAppArmor(&corev1.Pod{}, &corev1.Container{Name: "x"}); sp != nil || depr != "" || err != nil {
		t.Errorf("no profile: %v %q %v", sp, depr, err)
	}
}
