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

// ImageInput is what the image decision needs.
type ImageInput struct {
	Container *corev1.Container
	Present   bool
	// Verified: the present image may be used by this pod (its credentials match the
	// ones it was pulled with); only looked at when CheckCredentials says so.
	Verified bool
	// PullBackoffUntil is when the pull back-off of this container ends (zero: none).
	PullBackoffUntil time.Time
	Now              time.Time
}

// ImageStep is the decision about a container's image: the action, the waiting state
// of the container when it does not start (ImageNeverPull, ImageBackOff), and the
// event to record (reason and message; "" for none).
type ImageStep struct {
	Action                    ImageAction
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
		return ImageStep{Action: ImageUse, EventType: corev1.EventTypeNormal, EventReason: "Pulled",
			EventMessage: fmt.Sprintf("Container image %q already present on machine", c.Image)}
	}
	if policy == corev1.PullNever {
		msg := fmt.Sprintf("Container image %q is not present with pull policy of Never", c.Image)
		if in.Present {
			msg = fmt.Sprintf("Container image %q is present with pull policy of %q but does not have the proper credentials to access it.", c.Image, policy)
		}
		return ImageStep{Action: ImageNeverPull, Waiting: Waiting{Reason: "ErrImageNeverPull", Message: msg},
			EventType: corev1.EventTypeWarning, EventReason: "ErrImageNeverPull", EventMessage: msg}
	}
	if in.Now.Before(in.PullBackoffUntil) {
		msg := fmt.Sprintf("Back-off pulling image %q", c.Image)
		return ImageStep{Action: ImageBackOff, Waiting: Waiting{Reason: "ImagePullBackOff", Message: msg},
			EventType: corev1.EventTypeNormal, EventReason: "BackOff", EventMessage: msg}
	}
	return ImageStep{Action: ImagePull, EventType: corev1.EventTypeNormal, EventReason: "Pulling",
		EventMessage: fmt.Sprintf("Pulling image %q", c.Image)}
}

// PullFailed is the waiting state of a container whose image pull failed.
func PullFailed(image string, err error) Waiting {
	return Waiting{Reason: "ErrImagePull", Message: fmt.Sprintf("Failed to pull image %q: %v", image, err)}
}
