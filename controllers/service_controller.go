package controllers

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	corev1 "k8s.io/api/core/v1"
	discoveryv1 "k8s.io/api/discovery/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/client-go/util/workqueue"
	"k8s.io/utils/clock"
	ctrl "sigs.k8s.io/controller-runtime"
	"sigs.k8s.io/controller-runtime/pkg/builder"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/handler"
	"sigs.k8s.io/controller-runtime/pkg/log"
	"sigs.k8s.io/controller-runtime/pkg/metrics"
	"sigs.k8s.io/controller-runtime/pkg/predicate"
	"sigs.k8s.io/controller-runtime/pkg/reconcile"
	"sigs.k8s.io/controller-runtime/pkg/source"

	"github.com/nodekeeper/nodekeeper/netrules"
)

// +kubebuilder:rbac:groups="",resources=services,verbs=get;list;watch
// +kubebuilder:rbac:groups=discovery.k8s.io,resources=endpointslices,verbs=get;list;watch

// RulesBackend programs one family's rules into the kernel. Sync is called from one
// goroutine at a time; full asks it to rewrite and repair everything.
type RulesBackend interface {
	Sync(ctx context.Context, rs *netrules.Ruleset, full bool) (netrules.SyncStats, error)
}

// ConntrackCleaner deletes conntrack entries.
type ConntrackCleaner interface {
	Delete(ctx context.Context, flows []netrules.ConntrackFlow) error
}

// syncKey is the one request every Service/EndpointSlice/Node event maps to, so a burst
// of events coalesces into one sync.
var syncKey = reconcile.Request{NamespacedName: types.NamespacedName{Name: "service-rules"}}

// ServiceReconciler is nodekeeper's kube-proxy: it turns Services and EndpointSlices
// into kernel rules for each IP family through a RulesBackend.
type ServiceReconciler struct {
	Client client.Client
	// Node carries the static node facts (name, CIDRs, masquerade, node port addresses);
	// the zone is read from the Node object on each sync.
	Node     netrules.Node
	Backends map[netrules.Family]RulesBackend
	// Conntrack, when set, clears stale UDP entries after a successful sync.
	Conntrack ConntrackCleaner
	// FullSyncPeriod is how often every rule is rewritten and repaired (default 1 minute).
	FullSyncPeriod time.Duration
	// HealthChecks, when set, is told the local endpoint counts of eTP=Local Services.
	HealthChecks *HealthCheckServer
	Clock        clock.PassiveClock

	mu       sync.Mutex
	lastFull time.Time
	lastSync time.Time
	applied  map[netrules.Family]*netrules.Ruleset
	observed map[types.UID]string // EndpointSlice resourceVersions whose trigger time was recorded
}

// SetupWithManager registers the reconciler.
func (r *ServiceReconciler) SetupWithManager(mgr ctrl.Manager) error {
	if r.Clock == nil {
		r.Clock = clock.RealClock{}
	}
	if r.FullSyncPeriod == 0 {
		r.FullSyncPeriod = time.Minute
	}
	registerProxyMetrics()
	toKey := handler.EnqueueRequestsFromMapFunc(func(context.Context, client.Object) []reconcile.Request {
		return []reconcile.Request{syncKey}
	})
	kick := source.Func(func(_ context.Context, q workqueue.TypedRateLimitingInterface[reconcile.Request]) error {
		q.Add(syncKey)
		return nil
	})
	name := r.Node.Name
	return ctrl.NewControllerManagedBy(mgr).
		Named("servicerules").
		Watches(&corev1.Service{}, toKey).
		Watches(&discoveryv1.EndpointSlice{}, toKey).
		Watches(&corev1.Node{}, toKey, builder.WithPredicates(predicate.NewPredicateFuncs(func(o client.Object) bool {
			return o.GetName() == name
		}))).
		WatchesRawSource(kick).
		Complete(r)
}

// Reconcile rebuilds the desired rules from the cache and syncs each backend.
func (r *ServiceReconciler) Reconcile(ctx context.Context, _ reconcile.Request) (reconcile.Result, error) {
	logger := log.FromContext(ctx)
	start := r.Clock.Now()
	var svcs corev1.ServiceList
	if err := r.Client.List(ctx, &svcs); err != nil {
		return reconcile.Result{}, err
	}
	var slices discoveryv1.EndpointSliceList
	if err := r.Client.List(ctx, &slices); err != nil {
		return reconcile.Result{}, err
	}
	node := r.Node
	var n corev1.Node
	if err := r.Client.Get(ctx, types.NamespacedName{Name: node.Name}, &n); err == nil {
		node.Zone = n.Labels[corev1.LabelTopologyZone]
	} else if !apierrors.IsNotFound(err) {
		return reconcile.Result{}, err
	}
	svcPtrs := make([]*corev1.Service, len(svcs.Items))
	for i := range svcs.Items {
		svcPtrs[i] = &svcs.Items[i]
	}
	slicePtrs := make([]*discoveryv1.EndpointSlice, len(slices.Items))
	for i := range slices.Items {
		slicePtrs[i] = &slices.Items[i]
	}
	desired := netrules.Build(svcPtrs, slicePtrs, node)

	r.mu.Lock()
	full := r.lastFull.IsZero() || start.Sub(r.lastFull) >= r.FullSyncPeriod
	r.mu.Unlock()

	var errs []error
	for fam, be := range r.Backends {
		rs := desired[fam]
		st, err := be.Sync(ctx, rs, full)
		if err != nil {
			restoreFailures.Inc()
			errs = append(errs, fmt.Errorf("IPv%d: %w", fam, err))
			continue
		}
		logger.V(2).Info("Synced service rules", "family", fam, "full", st.Full, "chainsWritten", st.ChainsWritten,
			"chainsDeleted", st.ChainsDeleted, "rules", st.Rules)
		if r.Conntrack != nil {
			r.mu.Lock()
			prev := r.applied[fam]
			r.mu.Unlock()
			if flows := netrules.StaleConntrack(prev, rs); len(flows) > 0 {
				if err := r.Conntrack.Delete(ctx, flows); err != nil {
					logger.Error(err, "Clearing stale UDP conntrack entries failed")
				}
			}
		}
		r.mu.Lock()
		if r.applied == nil {
			r.applied = map[netrules.Family]*netrules.Ruleset{}
		}
		r.applied[fam] = rs
		r.mu.Unlock()
	}
	if r.HealthChecks != nil {
		r.HealthChecks.Update(desired)
	}
	elapsed := r.Clock.Since(start).Seconds()
	syncDuration.Observe(elapsed)
	if full {
		syncFullDuration.Observe(elapsed)
	} else {
		syncPartialDuration.Observe(elapsed)
	}
	if len(errs) > 0 {
		return reconcile.Result{}, errors.Join(errs...)
	}
	now := r.Clock.Now()
	r.mu.Lock()
	r.lastSync = now
	if full {
		r.lastFull = start
	}
	next := r.FullSyncPeriod - now.Sub(r.lastFull)
	r.mu.Unlock()
	syncLastTimestamp.SetToCurrentTime()
	r.observeProgrammingLatency(slicePtrs, now)
	if next < time.Second {
		next = time.Second
	}
	return reconcile.Result{RequeueAfter: next}, nil
}

// LastSync is when rules were last applied successfully (zero before the first sync).
func (r *ServiceReconciler) LastSync() time.Time {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.lastSync
}

var (
	metricsOnce         sync.Once
	syncDuration        = prometheus.NewHistogram(prometheus.HistogramOpts{Subsystem: "kubeproxy", Name: "sync_proxy_rules_duration_seconds", Help: "SyncProxyRules latency in seconds", Buckets: prometheus.ExponentialBuckets(0.001, 2, 15)})
	syncFullDuration    = prometheus.NewHistogram(prometheus.HistogramOpts{Subsystem: "kubeproxy", Name: "sync_full_proxy_rules_duration_seconds", Help: "SyncProxyRules latency in seconds for full resyncs", Buckets: prometheus.ExponentialBuckets(0.001, 2, 15)})
	syncPartialDuration = prometheus.NewHistogram(prometheus.HistogramOpts{Subsystem: "kubeproxy", Name: "sync_partial_proxy_rules_duration_seconds", Help: "SyncProxyRules latency in seconds for partial resyncs", Buckets: prometheus.ExponentialBuckets(0.001, 2, 15)})
	syncLastTimestamp   = prometheus.NewGauge(prometheus.GaugeOpts{Subsystem: "kubeproxy", Name: "sync_proxy_rules_last_timestamp_seconds", Help: "The last time proxy rules were successfully synced"})
	programmingDuration = prometheus.NewHistogram(prometheus.HistogramOpts{Subsystem: "kubeproxy", Name: "network_programming_duration_seconds", Help: "In Cluster Network Programming Latency in seconds", Buckets: prometheus.LinearBuckets(0.25, 0.25, 2*4*60/1)})
	restoreFailures     = prometheus.NewCounter(prometheus.CounterOpts{Subsystem: "kubeproxy", Name: "sync_proxy_rules_iptables_restore_failures_total", Help: "Cumulative proxy iptables restore failures"})
)

func registerProxyMetrics() {
	metricsOnce.Do(func() {
		metrics.Registry.MustRegister(syncDuration, syncFullDuration, syncPartialDuration, syncLastTimestamp, programmingDuration, restoreFailures)
	})
}

// observeProgrammingLatency records, once per EndpointSlice version, the time from the
// change that triggered it (the endpoints.kubernetes.io/last-change-trigger-time
// annotation) to the rules being in the kernel.
func (r *ServiceReconciler) observeProgrammingLatency(slices []*discoveryv1.EndpointSlice, now time.Time) {
	r.mu.Lock()
	defer r.mu.Unlock()
	seen := make(map[types.UID]string, len(slices))
	for _, s := range slices {
		seen[s.UID] = s.ResourceVersion
		v, ok := s.Annotations[corev1.EndpointsLastChangeTriggerTime]
		if !ok || r.observed[s.UID] == s.ResourceVersion {
			continue
		}
		t, err := time.Parse(time.RFC3339Nano, v)
		if err != nil {
			continue
		}
		programmingDuration.Observe(now.Sub(t).Seconds())
	}
	r.observed = seen
}
