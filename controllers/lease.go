package controllers

import (
	"context"
	"fmt"
	"time"

	coordinationv1 "k8s.io/api/coordination/v1"
	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/apimachinery/pkg/util/wait"
	"k8s.io/utils/clock"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/log"

	"github.com/nodekeeper/nodekeeper/internal/nodestatus"
)

// +kubebuilder:rbac:groups=coordination.k8s.io,resources=leases,verbs=get;create;update;patch;delete

// NodeLeaseRenewer keeps this node's Lease in kube-node-lease renewed every quarter of
// its duration, the kubelet's heartbeat. It is a manager Runnable with its own cadence,
// independent of status updates. It reads through an uncached reader so that no
// cluster-wide Lease informer is started.
type NodeLeaseRenewer struct {
	Client          client.Client
	Reader          client.Reader
	NodeName        string
	DurationSeconds int32
	Clock           clock.PassiveClock
}

// Start implements manager.Runnable.
func (l *NodeLeaseRenewer) Start(ctx context.Context) error {
	if l.Clock == nil {
		l.Clock = clock.RealClock{}
	}
	logger := log.FromContext(ctx).WithName("nodelease")
	interval := time.Duration(l.DurationSeconds) * time.Second / 4
	// upstream retries a failed renewal quickly, backing off, then waits the interval
	backoff := wait.Backoff{Duration: 200 * time.Millisecond, Factor: 2, Steps: 5, Cap: interval}
	wait.UntilWithContext(ctx, func(ctx context.Context) {
		b := backoff
		for {
			err := l.Renew(ctx)
			if err == nil || ctx.Err() != nil || b.Steps == 0 {
				if err != nil {
					logger.Error(err, "Renewing node lease failed, will retry next interval")
				}
				return
			}
			logger.V(2).Info("Renewing node lease failed, retrying", "error", err.Error())
			select {
			case <-ctx.Done():
				return
			case <-time.After(b.Step()):
			}
		}
	}, interval)
	return nil
}

// Renew creates or renews the Lease. It needs the Node to exist (the Lease is owned by it).
func (l *NodeLeaseRenewer) Renew(ctx context.Context) error {
	node := &corev1.Node{}
	if err := l.Reader.Get(ctx, types.NamespacedName{Name: l.NodeName}, node); err != nil {
		return fmt.Errorf("getting node for its lease: %w", err)
	}
	now := metav1.NewMicroTime(l.Clock.Now())
	prev := &coordinationv1.Lease{}
	err := l.Reader.Get(ctx, types.NamespacedName{Namespace: nodestatus.LeaseNamespace, Name: l.NodeName}, prev)
	switch {
	case apierrors.IsNotFound(err):
		lease := nodestatus.Lease(nil, node, l.DurationSeconds, now)
		if err := l.Client.Create(ctx, lease); err != nil {
			return fmt.Errorf("creating node lease: %w", err)
		}
		return nil
	case err != nil:
		return fmt.Errorf("getting node lease: %w", err)
	}
	lease := nodestatus.Lease(prev, node, l.DurationSeconds, now)
	if err := l.Client.Update(ctx, lease); err != nil {
		return fmt.Errorf("renewing node lease: %w", err)
	}
	return nil
}

// NeedLeaderElection implements manager.LeaderElectionRunnable: every node renews its own.
func (l *NodeLeaseRenewer) NeedLeaderElection() bool { return false }
