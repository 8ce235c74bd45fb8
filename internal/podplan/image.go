package podplan

import (
	"fmt"
	"strings"
	"time"

	corev1 "k8s.io/api/core/v1"
)

// PullPolicy is a container's effective imagePullPolicy: its own, else (as the API
// server's defaulting) Always for an image without a tag or tagged :latest, and
// IfNotPresent for any other.
func PullPolicy(c *corev1.Container) corev1.PullPolicy {
	if c.ImagePullPolicy != "" {
		return c.ImagePullPolicy
	}
	if !strings.Contains(c.Image[strings.LastIndex(c.Image, "/")+1:], ":") || strings.HasSuffix(c.Image, ":latest") {
		return corev1.PullAlways
	}
	return corev1.PullIfNotPresent
}

// CheckCredentials tells whether the decision about a present image needs to know if
// the pod may use it (its pull credentials verified, as upstream's
// KubeletEnsureSecretPulledImages): only a present image that the policy may use
// without pulling.
func CheckCredentials(policy corev1.PullPolicy, present bool) bool {
	return present && policy != corev1.PullAlways
}

// ImageAction is what to do about a container's image before it starts.
type ImageAction int

const (
	// ImageUse: the image is present and may be used.
	ImageUse ImageAction = iota
	// ImagePull: pull it (Pulling event; a failure is ErrImagePull with a pull back-off).
	ImagePull
	// ImageNeverPull: missing (or not verified for this pod) with policy Never: the
	// container waits in ErrImageNeverPull.
	ImageNeverPull
	// ImageBackOff: the last pull failed and its back-off runs: ImagePullBackOff.
	ImageBackOff
)

// ImageObserved is what the node has of a container's image.
type ImageObserved struct {
	Present bool
	// ImageID is the present image's ID.
	ImageID string
	// Verified: the present image may be used by this pod (its credentials match the
	// ones it was pulled with); only looked at when CheckCredentials says so.
	Verified bool
}

// ImageInput is what the image decision needs.
type ImageInput struct {
	Container *corev1.Container
	ImageObserved
	// PullBackoffUntil is when the pull back-off of this container ends (zero: none).
	PullBackoffUntil time.Time
	Now              time.Time
}

// ImageStep is the decision about a container's image: the action, the waiting state
// of the container when it does not start (ImageNeverPull, ImageBackOff), and the
// event to record (reason and message; "" for none).
type ImageStep struct {
	Action ImageAction
	// Image is the container's image; ImageID the present image to use (ImageUse).
	Image, ImageID            string
	Waiting                   Waiting
	EventType                 string
	EventReason, EventMessage string
}

// Image decides about a container's image as the kubelet's image manager
// (EnsureImageExists): Never uses what is present, IfNotPresent pulls only when the
// image is missing (or present but not verified for this pod's credentials), Always
// pulls; a pull is held back while its back-off runs.
func Image(in ImageInput) ImageStep {
	c := in.Container
	policy := PullPolicy(c)
	if CheckCredentials(policy, in.Present) && in.Verified {
		return ImageStep{Action: ImageUse, Image: c.Image, ImageID: in.ImageID, EventType: corev1.EventTypeNormal, EventReason: "Pulled",
			EventMessage: fmt.Sprintf("Container image %q already present on machine", c.Image)}
	}
	if policy == corev1.PullNever {
		msg := fmt.Sprintf("Container image %q is not present with pull policy of Never", c.Image)
		if in.Present {
			msg = fmt.Sprintf("Container image %q is present with pull policy of %q but does not have the proper credentials to access it.", c.Image, policy)
		}
		return ImageStep{Action: ImageNeverPull, Image: c.Image, Waiting: Waiting{Reason: "ErrImageNeverPull", Message: msg},
			EventType: corev1.EventTypeWarning, EventReason: "ErrImageNeverPull", EventMessage: msg}
	}
	if in.Now.Before(in.PullBackoffUntil) {
		msg := fmt.Sprintf("Back-off pulling image %q", c.Image)
		return ImageStep{Action: ImageBackOff, Image: c.Image, Waiting: Waiting{Reason: "ImagePullBackOff", Message: msg},
			EventType: corev1.EventTypeNormal, EventReason: "BackOff", EventMessage: msg}
	}
	return ImageStep{Action: ImagePull, Image: c.Image, EventType: corev1.EventTypeNormal, EventReason: "Pulling",
		EventMessage: fmt.Sprintf("Pulling image %q", c.Image)}
}

// PullFailed is the waiting state of a container whose image pull failed.
func PullFailed(image string, err error) Waiting {
	return Waiting{Reason: "ErrImagePull", Message: fmt.Sprintf("Failed to pull image %q: %v", image, err)}
}

// DecideImages decides the image of each container the plan starts (Start.Image) from
// what was observed of it (images, by container name; a start without an observation
// stays undecided and is not started this time) and the pull back-off.
func DecideImages(a *Actions, pod *corev1.Pod, images map[string]ImageObserved, backoff Backoff, now time.Time) {
	for i := range a.Start {
		s := &a.Start[i]
		c := FindContainer(pod, s.Name)
		obs, ok := images[s.Name]
		if c == nil || !ok {
			continue
		}
		step := Image(ImageInput{Container: c, ImageObserved: obs, PullBackoffUntil: backoff["pull/"+s.Name], Now: now})
		s.Image = &step
	}
}

// FindContainer is the pod's init, app or ephemeral container of that name, or nil.
func FindContainer(pod *corev1.Pod, name string) *corev1.Container {
	for i := range pod.Spec.InitContainers {
		if pod.Spec.InitContainers[i].Name == name {
			return &pod.Spec.InitContainers[i]
		}
	}
	for i := range pod.Spec.Containers {
		if pod.Spec.Containers[i].Name == name {
			return &pod.Spec.Containers[i]
		}
	}
	for i := range pod.Spec.EphemeralContainers {
		if pod.Spec.EphemeralContainers[i].Name == name {
			return (*corev1.Container)(&pod.Spec.EphemeralContainers[i].EphemeralContainerCommon)
		}
	}
	return nil
}

// String says what is done about the image: "pull busybox:1", "image present", "no pull
// (ErrImageNeverPull)", "pull back-off (ImagePullBackOff)".
func (s ImageStep) String() string {
	switch s.Action {
	case ImageUse:
		return "image " + s.Image + " present"
	case ImagePull:
		return "pull " + s.Image
	}
	return "no pull of " + s.Image + " (" + s.Waiting.Reason + ")"
}
