package podplan

import (
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
)

func TestPullPolicy(t *testing.T) {
	for image, want := range map[string]corev1.PullPolicy{
		"busybox": corev1.PullAlways, "busybox:latest": corev1.PullAlways, "busybox:1.37": corev1.PullIfNotPresent,
		"localhost:5000/busybox": corev1.PullAlways, "localhost:5000/busybox:1": corev1.PullIfNotPresent,
		"registry.k8s.io/pause@sha256:abc": corev1.PullIfNotPresent,
	} {
		if got := PullPolicy(&corev1.Container{Image: image}); got != want {
			t.Errorf("%s: %s, want %s", image, got, want)
		}
	}
	if got := PullPolicy(&corev1.Container{Image: "busybox", ImagePullPolicy: corev1.PullNever}); got != corev1.PullNever {
		t.Errorf("an explicit policy: %s", got)
	}
}

func TestImage(t *testing.T) {
	c := func(policy corev1.PullPolicy) *corev1.Container {
		return &corev1.Container{Name: "c", Image: "busybox:1", ImagePullPolicy: policy}
	}
	never, ifNot, always := corev1.PullNever, corev1.PullIfNotPresent, corev1.PullAlways
	backoff := t0.Add(10 * time.Second)
	for _, tc := range []struct {
		name     string
		in       ImageInput
		want     ImageAction
		wantWait string
		wantMsg  string
	}{
		{"IfNotPresent, present and verified: used", ImageInput{Container: c(ifNot), ImageObserved: ImageObserved{Present: true, Verified: true}},
			ImageUse, "", `Container image "busybox:1" already present on machine`},
		{"IfNotPresent, present, not this pod's credentials: pulled", ImageInput{Container: c(ifNot), ImageObserved: ImageObserved{Present: true}},
			ImagePull, "", `Pulling image "busybox:1"`},
		{"IfNotPresent, missing: pulled", ImageInput{Container: c(ifNot)}, ImagePull, "", `Pulling image "busybox:1"`},
		{"IfNotPresent, missing, back-off running", ImageInput{Container: c(ifNot), PullBackoffUntil: backoff},
			ImageBackOff, "ImagePullBackOff", `Back-off pulling image "busybox:1"`},
		{"back-off over: pulled", ImageInput{Container: c(ifNot), PullBackoffUntil: t0}, ImagePull, "", `Pulling image "busybox:1"`},
		{"Always, present and verified: pulled", ImageInput{Container: c(always), ImageObserved: ImageObserved{Present: true, Verified: true}},
			ImagePull, "", `Pulling image "busybox:1"`},
		{"Never, present and verified: used", ImageInput{Container: c(never), ImageObserved: ImageObserved{Present: true, Verified: true}},
			ImageUse, "", `Container image "busybox:1" already present on machine`},
		{"Never, missing", ImageInput{Container: c(never), PullBackoffUntil: backoff}, ImageNeverPull, "ErrImageNeverPull",
			`Container image "busybox:1" is not present with pull policy of Never`},
		{"Never, present, not verified", ImageInput{Container: c(never), ImageObserved: ImageObserved{Present: true}}, ImageNeverPull, "ErrImageNeverPull",
			`Container image "busybox:1" is present with pull policy of "Never" but does not have the proper credentials to access it.`},
	} {
		tc.in.Now = t0
		got := Image(tc.in)
		if got.Action != tc.want || got.Waiting.Reason != tc.wantWait || got.EventMessage != tc.wantMsg {
			t.Errorf("%s: %+v, want action %d, waiting %q, event %q", tc.name, got, tc.want, tc.wantWait, tc.wantMsg)
		}
		if got.Waiting.Reason != "" && got.Waiting.Message != got.EventMessage {
			t.Errorf("%s: waiting message %q differs from the event's", tc.name, got.Waiting.Message)
		}
	}
	if !CheckCredentials(ifNot, true) || CheckCredentials(always, true) || CheckCredentials(never, false) {
		t.Error("CheckCredentials")
	}
}

// DecideImages decides each start's image; a start whose image was not observed stays
// undecided. The plan's explanation names the pulls.
func TestDecideImages(t *testing.T) {
	p := pod(corev1.RestartPolicyAlways, nil, "a", "b", "c")
	p.Spec.Containers[0].Image = "busybox:1"
	p.Spec.Containers[1].Image = "nginx:1"
	a := Plan(Input{Pod: p, Observed: Observed{}, Now: t0})
	DecideImages(&a, p, map[string]ImageObserved{
		"a": {Present: true, ImageID: "sha256:1", Verified: true},
		"b": {},
	}, Backoff{"pull/b": t0.Add(time.Minute)}, t0)
	if s := a.Start[0].Image; s == nil || s.Action != ImageUse || s.ImageID != "sha256:1" {
		t.Errorf("a: %+v", s)
	}
	if s := a.Start[1].Image; s == nil || s.Action != ImageBackOff {
		t.Errorf("b: %+v", s)
	}
	if a.Start[2].Image != nil {
		t.Errorf("c, not observed: %+v", a.Start[2].Image)
	}
	if got, want := a.String(), "create sandbox (attempt 0); start a: image busybox:1 present; start b: no pull of nginx:1 (ImagePullBackOff); start c"; got != want {
		t.Errorf("plan %q, want %q", got, want)
	}
}
