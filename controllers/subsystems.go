package controllers

import (
	"context"

	"k8s.io/apimachinery/pkg/api/resource"
	"k8s.io/utils/clock"
	"sigs.k8s.io/controller-runtime/pkg/log"

	"github.com/nodekeeper/nodekeeper/internal/logrotate"
	"github.com/nodekeeper/nodekeeper/internal/podplan"
	"github.com/nodekeeper/nodekeeper/runtime/cri"
)

// The PodReconciler's thin adapters to the subsystem packages: they supply the I/O and
// report what the packages return.

// logRotator rotates the logs of the containers nodekeeper runs (internal/logrotate).
type logRotator struct{ rot *logrotate.Rotator }

// newLogRotator builds the rotator from the configuration (nil when maxSize cannot
// parse, which Validate has refused already).
func newLogRotator(rt cri.Runtime, maxSize string, maxFiles int32, c clock.PassiveClock) *logRotator {
	q, err := resource.ParseQuantity(maxSize)
	if err != nil || q.Value() <= 0 {
		return nil
	}
	return &logRotator{rot: &logrotate.Rotator{Runtime: rt, Clock: c, Policy: logrotate.Policy{MaxSize: q.Value(), MaxFiles: int(maxFiles)},
		Labels: map[string]string{podplan.LabelManaged: "true"}}}
}

func (l *logRotator) rotateAll(ctx context.Context) {
	if err := l.rot.RotateAll(ctx); err != nil {
		log.FromContext(ctx).WithName("logs").Error(err, "Rotating container logs failed")
	}
}
