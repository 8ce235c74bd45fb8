package controllers

import (
	"context"
	"errors"
	"fmt"
	"sort"
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	corev1 "k8s.io/api/core/v1"
	discoveryv1 "k8s.io/api/discovery/v1"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/client-go/util/workqueue"
	"k8s.io/utils/clock"
	ctrl "sigs.k8s.io/controller-runtime"
	"sigs.k8s.io/controller-runtime/pkg/builder"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/log"
	"sigs.k8s.io/controller-runtime/pkg/metrics"
	"sigs.k8s.io/controller-runtime/pkg/predicate"
	"sigs.k8s.io/controller-runtime/pkg/reconcile"
	"sigs.k8s.io/controller-runtime/pkg/source"

	"github.com/nodekeeper/nodekeeper/netrules"
	"github.com/nodekeeper/nodekeeper/netrules/healthcheck"
)

// +kubebuilder:rbac:groups="",resources=services,verbs=get;list;watch
// +kubebuilder:rbac:groups=discovery.k8s.io,resources=endpointslices,verbs=get;list;watch

// RulesBackend programs one family's rules into the kernel. SyncState is called from
// one goroutine at a time. changed names the Services (sorted "namespace/name" keys)
// whose ports in st differ from what the previous successful call saw; full asks the
// backend to rewrite and repair everything (changed is then nil). A backend that works
// from the whole Ruleset every time is wrapped in netrules.Whole.
type RulesBackend interface {
	SyncState(ctx context.Context, st *netrules.State, changed []string, full bool) (netrules.SyncStats, error)
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
//
// It tracks changes rather than rebuilding: its event handlers keep the Services and an
// index Service → EndpointSlices (pointers into the informer cache, never modified) and
// mark the Services an event touches dirty; a sync rebuilds the dirty Services only
// (netrules.BuildService), updates one netrules.State per family and hands each backend
// the Services that changed. Nothing in the hot path lists the cluster.
type ServiceReconciler struct {
	// Client is not used by the sync path (the event handlers feed it); kept for callers.
	Client client.Client
	// Node carries the static node facts (name, CIDRs, masquerade, node port addresses);
	// the zone comes from this node's Node object.
	Node     netrules.Node
	Backends map[netrules.Family]RulesBackend
	// Conntrack, when set, clears stale conntrack entries (netrules.StaleConntrack) after a
	// successful sync.
	Conntrack ConntrackCleaner
	// FullSyncPeriod is how often a periodic sync asks every backend to repair what was
	// changed from outside (default 1 minute; the agent passes proxySyncPeriod). What
	// that costs is the backend's choice: iptables rewrites its fixed chains and checks
	// its jumps, and rewrites everything only hourly (never in the large cluster mode),
	// as kube-proxy; nftables checks the ruleset generation and rewrites on tampering.
	FullSyncPeriod time.Duration
	// HealthChecks, when set, is told the local endpoint counts of eTP=Local Services.
	HealthChecks *healthcheck.Services
	// ProxyHealth, when set, is told when changes arrive, when each family's rules are
	// in sync, and this node's Node (kube-proxy's ProxyHealthServer: /healthz, /livez).
	ProxyHealth *healthcheck.Proxy
	Clock       clock.PassiveClock
	// Mode is the proxy mode ("iptables", "nftables", "ipvs"): it picks which of
	// upstream's sync-failure counters failures go to.
	Mode string

	tracker serviceTracker

	// the sync state below is used by the one worker only
	lastFull time.Time
	states   map[netrules.Family]*netrules.State
	failed   map[netrules.Family]bool // the last sync of the family failed: the next is full
	// pending: the backend left work for its next call (a bounded full rewrite): it is
	// called again at once, with or without changes
	pending map[netrules.Family]bool
	// callAt: the backend has work due then (stale objects to delete)
	callAt map[netrules.Family]time.Time
	zone   string
	// hc holds the ports with a health check node port, per Service and family
	hc map[string]map[netrules.Family][]*netrules.ServicePort
	// noLocal counts, per Service, its ports with a Local traffic policy and no local
	// endpoints ([0] internal, [1] external)
	noLocal map[string]map[netrules.Family][2]int
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
	r.tracker.init(r.Node.Name, r.Clock, r.queued, r.ProxyHealth)
	kick := source.Func(func(_ context.Context, q workqueue.TypedRateLimitingInterface[reconcile.Request]) error {
		if r.ProxyHealth != nil {
			// as kube-proxy's SyncLoop: healthy from the start, in case no sync succeeds
			for fam := range r.Backends {
				r.ProxyHealth.Updated(corev1.IPFamily(familyLabel(fam)))
			}
		}
		q.Add(syncKey)
		return nil
	})
	name := r.Node.Name
	return ctrl.NewControllerManagedBy(mgr).
		Named("servicerules").
		Watches(&corev1.Service{}, r.tracker.serviceHandler()).
		Watches(&discoveryv1.EndpointSlice{}, r.tracker.sliceHandler()).
		Watches(&corev1.Node{}, r.tracker.nodeHandler(), builder.WithPredicates(predicate.NewPredicateFuncs(func(o client.Object) bool {
			return o.GetName() == name
		}))).
		WatchesRawSource(kick).
		Complete(r)
}

// Reconcile rebuilds the Services that changed since the last sync and syncs each
// backend with them; periodically (FullSyncPeriod) every rule is rewritten and repaired.
func (r *ServiceReconciler) Reconcile(ctx context.Context, _ reconcile.Request) (reconcile.Result, error) {
	logger := log.FromContext(ctx)
	start := r.Clock.Now()
	batch := r.tracker.take()

	node := r.Node
	node.Zone = batch.zone
	nodeChanged := false
	if r.states == nil {
		r.states = map[netrules.Family]*netrules.State{}
		for fam := range r.Backends {
			r.states[fam] = netrules.NewState(fam, node)
		}
		r.hc, r.noLocal = map[string]map[netrules.Family][]*netrules.ServicePort{}, map[string]map[netrules.Family][2]int{}
		r.zone = node.Zone
	}
	if node.Zone != r.zone {
		// the node's facts changed: every Service is rebuilt, and synced in full
		nodeChanged = true
		r.zone = node.Zone
		var known []string
		for _, st := range r.states {
			st.Node = node
			known = append(known, st.Services()...)
		}
		batch.services = r.tracker.allServiceKeys(append(batch.services, known...))
	}
	hcDirty := false
	changed := map[netrules.Family][]string{}
	prev := map[netrules.Family]*netrules.Ruleset{}
	for _, key := range batch.services {
		svc, slices := r.tracker.get(key)
		ports := netrules.BuildService(svc, slices, node)
		hcDirty = r.account(key, ports) || hcDirty
		for fam, st := range r.states {
			old := st.Ports(key)
			if st.Set(key, ports[fam]) {
				changed[fam] = append(changed[fam], key)
				if r.Conntrack != nil {
					if prev[fam] == nil {
						prev[fam] = &netrules.Ruleset{Family: fam, Node: node}
					}
					prev[fam].Ports = append(prev[fam].Ports, old...)
				}
			}
		}
	}
	full := nodeChanged || r.lastFull.IsZero() || start.Sub(r.lastFull) >= r.FullSyncPeriod

	buildTime := r.Clock.Since(start)
	var errs []error
	anyFailed := false
	synced := map[netrules.Family]bool{}
	for fam, be := range r.Backends {
		famStart := r.Clock.Now()
		st := r.states[fam]
		famFull := full || r.failed[fam]
		var ch []string
		if !famFull {
			ch = changed[fam]
			sort.Strings(ch)
		}
		if at, due := r.callAt[fam]; !famFull && len(ch) == 0 && !r.pending[fam] && (!due || famStart.Before(at)) {
			continue
		}
		stats, err := be.SyncState(ctx, st, ch, famFull)
		ipFamily := familyLabel(fam)
		elapsed := (buildTime + r.Clock.Since(famStart)).Seconds()
		syncDuration.WithLabelValues(ipFamily).Observe(elapsed)
		// what the backend did, not what was asked: a periodic sync may well be partial
		// (iptables between its hourly full syncs, as upstream)
		if stats.Full {
			syncFullDuration.WithLabelValues(ipFamily).Observe(elapsed)
		} else {
			syncPartialDuration.WithLabelValues(ipFamily).Observe(elapsed)
		}
		if r.pending == nil {
			r.pending = map[netrules.Family]bool{}
		}
		r.pending[fam] = err == nil && stats.Pending > 0
		if r.callAt == nil {
			r.callAt = map[netrules.Family]time.Time{}
		}
		delete(r.callAt, fam)
		if err == nil && stats.CallAfter > 0 {
			r.callAt[fam] = r.Clock.Now().Add(stats.CallAfter)
		}
		if err != nil {
			if r.Mode == "nftables" {
				nftablesFailures.WithLabelValues(ipFamily).Inc()
			} else {
				restoreFailures.WithLabelValues(ipFamily).Inc()
			}
			errs = append(errs, fmt.Errorf("IPv%d: %w", fam, err))
			if r.failed == nil {
				r.failed = map[netrules.Family]bool{}
			}
			r.failed[fam] = true
			anyFailed = true
			continue
		}
		delete(r.failed, fam)
		synced[fam] = true
		if v := logger.V(2); v.Enabled() {
			var waited time.Duration
			if !batch.since.IsZero() {
				waited = start.Sub(batch.since)
			}
			v.Info("Synced service rules", "family", fam, "full", stats.Full, "services", len(ch),
				"chainsWritten", stats.ChainsWritten, "chainsDeleted", stats.ChainsDeleted, "rules", stats.Rules,
				"waited", waited, "build", buildTime, "backend", r.Clock.Since(famStart))
		}
		if r.Conntrack != nil && len(changed[fam]) > 0 {
			if flows := netrules.StaleConntrack(sortedRuleset(prev[fam], fam, node), st.Subset(changed[fam])); len(flows) > 0 {
				if err := r.Conntrack.Delete(ctx, flows); err != nil {
					logger.Error(err, "Clearing stale conntrack entries failed")
				}
			}
		}
	}
	if r.HealthChecks != nil && hcDirty {
		r.HealthChecks.Update(r.healthRulesets())
	}
	r.publishNoLocal()
	now := r.Clock.Now()
	var keep []trigger
	for _, t := range batch.triggers {
		if synced[t.family] {
			programmingDuration.WithLabelValues(familyLabel(t.family)).Observe(now.Sub(t.at).Seconds())
		} else if _, ours := r.Backends[t.family]; ours {
			keep = append(keep, t) // observed when that family syncs
		}
	}
	batch.triggers = keep
	for fam := range synced {
		syncLastTimestamp.WithLabelValues(familyLabel(fam)).Set(float64(now.UnixNano()) / 1e9)
	}
	if r.ProxyHealth != nil {
		// a family with nothing to do is in sync too
		for fam := range r.Backends {
			if !r.failed[fam] {
				r.ProxyHealth.Updated(corev1.IPFamily(familyLabel(fam)))
			}
		}
	}
	if anyFailed {
		// the changes stay in the States; the failed families sync in full next time
		r.tracker.pendingAgain(batch)
		return reconcile.Result{}, errors.Join(errs...)
	}
	if full {
		r.lastFull = start
	}
	next := r.FullSyncPeriod - now.Sub(r.lastFull)
	if next < time.Second {
		next = time.Second
	}
	for _, at := range r.callAt {
		if d := at.Sub(now); d < next {
			next = max(d, time.Millisecond)
		}
	}
	for _, more := range r.pending {
		if more {
			// come back at once: changes that arrived meanwhile go first, then the
			// next chunk of the backend's rewrite
			next = time.Millisecond
		}
	}
	return reconcile.Result{RequeueAfter: next}, nil
}

func sortedRuleset(rs *netrules.Ruleset, fam netrules.Family, node netrules.Node) *netrules.Ruleset {
	if rs == nil {
		return &netrules.Ruleset{Family: fam, Node: node}
	}
	sort.Slice(rs.Ports, func(i, j int) bool { return rs.Ports[i].Key() < rs.Ports[j].Key() })
	return rs
}

// account keeps the per-Service facts that cut across Services: health check ports and
// the no-local-endpoints counts. It tells whether the Service has or had health checks.
func (r *ServiceReconciler) account(key string, ports map[netrules.Family][]*netrules.ServicePort) bool {
	_, had := r.hc[key]
	var hc map[netrules.Family][]*netrules.ServicePort
	var nl map[netrules.Family][2]int
	for fam, ps := range ports {
		for _, p := range ps {
			if p.HealthCheckNodePort != 0 {
				if hc == nil {
					hc = map[netrules.Family][]*netrules.ServicePort{}
				}
				hc[fam] = append(hc[fam], p)
			}
			var n [2]int
			if p.InternalLocal && len(p.ClusterEndpoints) == 0 {
				n[0] = 1
			}
			if p.ExternalLocal && len(p.LocalEndpoints) == 0 {
				n[1] = 1
			}
			if n != [2]int{} {
				if nl == nil {
					nl = map[netrules.Family][2]int{}
				}
				c := nl[fam]
				c[0], c[1] = c[0]+n[0], c[1]+n[1]
				nl[fam] = c
			}
		}
	}
	if hc == nil {
		delete(r.hc, key)
	} else {
		r.hc[key] = hc
	}
	if nl == nil {
		delete(r.noLocal, key)
	} else {
		r.noLocal[key] = nl
	}
	return had || hc != nil
}

func (r *ServiceReconciler) healthRulesets() map[netrules.Family]*netrules.Ruleset {
	out := map[netrules.Family]*netrules.Ruleset{}
	for _, byFam := range r.hc {
		for fam, ps := range byFam {
			if out[fam] == nil {
				out[fam] = &netrules.Ruleset{Family: fam}
			}
			out[fam].Ports = append(out[fam].Ports, ps...)
		}
	}
	return out
}

func (r *ServiceReconciler) publishNoLocal() {
	sum := map[netrules.Family][2]int{}
	for _, byFam := range r.noLocal {
		for fam, n := range byFam {
			s := sum[fam]
			s[0], s[1] = s[0]+n[0], s[1]+n[1]
			sum[fam] = s
		}
	}
	for fam := range r.Backends {
		noLocalEndpoints.WithLabelValues("internal", familyLabel(fam)).Set(float64(sum[fam][0]))
		noLocalEndpoints.WithLabelValues("external", familyLabel(fam)).Set(float64(sum[fam][1]))
	}
}

// familyLabel is upstream's ip_family label value.
func familyLabel(f netrules.Family) string {
	if f == netrules.IPv6 {
		return string(corev1.IPv6Protocol)
	}
	return string(corev1.IPv4Protocol)
}

// queued tells the proxy health that every family has a change to sync (kube-proxy's
// QueuedUpdate on each Service, EndpointSlice or Node change).
func (r *ServiceReconciler) queued() {
	if r.ProxyHealth == nil {
		return
	}
	for fam := range r.Backends {
		r.ProxyHealth.QueuedUpdate(corev1.IPFamily(familyLabel(fam)))
	}
}

var (
	metricsOnce sync.Once
	// as upstream (pkg/proxy/metrics), per ip_family ("IPv4", "IPv6")
	syncDuration        = prometheus.NewHistogramVec(prometheus.HistogramOpts{Subsystem: "kubeproxy", Name: "sync_proxy_rules_duration_seconds", Help: "SyncProxyRules latency in seconds", Buckets: prometheus.ExponentialBuckets(0.001, 2, 15)}, []string{"ip_family"})
	syncFullDuration    = prometheus.NewHistogramVec(prometheus.HistogramOpts{Subsystem: "kubeproxy", Name: "sync_full_proxy_rules_duration_seconds", Help: "SyncProxyRules latency in seconds for full resyncs", Buckets: prometheus.ExponentialBuckets(0.001, 2, 15)}, []string{"ip_family"})
	syncPartialDuration = prometheus.NewHistogramVec(prometheus.HistogramOpts{Subsystem: "kubeproxy", Name: "sync_partial_proxy_rules_duration_seconds", Help: "SyncProxyRules latency in seconds for partial resyncs", Buckets: prometheus.ExponentialBuckets(0.001, 2, 15)}, []string{"ip_family"})
	syncLastTimestamp   = prometheus.NewGaugeVec(prometheus.GaugeOpts{Subsystem: "kubeproxy", Name: "sync_proxy_rules_last_timestamp_seconds", Help: "The last time proxy rules were successfully synced"}, []string{"ip_family"})
	// upstream's buckets (pkg/proxy/metrics): 0.25, 0.5, 1..59 by 1, 60..115 by 5, 120..300 by 30
	programmingDuration    = prometheus.NewHistogramVec(prometheus.HistogramOpts{Subsystem: "kubeproxy", Name: "network_programming_duration_seconds", Help: "In Cluster Network Programming Latency in seconds", Buckets: programmingBuckets()}, []string{"ip_family"})
	restoreFailures        = prometheus.NewCounterVec(prometheus.CounterOpts{Subsystem: "kubeproxy", Name: "sync_proxy_rules_iptables_restore_failures_total", Help: "Cumulative proxy iptables restore failures"}, []string{"ip_family"})
	nftablesFailures       = prometheus.NewCounterVec(prometheus.CounterOpts{Subsystem: "kubeproxy", Name: "sync_proxy_rules_nftables_sync_failures_total", Help: "Cumulative proxy nftables sync failures"}, []string{"ip_family"})
	endpointChangesPending = prometheus.NewGauge(prometheus.GaugeOpts{Subsystem: "kubeproxy", Name: "sync_proxy_rules_endpoint_changes_pending", Help: "Pending proxy rules Endpoint changes"})
	endpointChangesTotal   = prometheus.NewCounter(prometheus.CounterOpts{Subsystem: "kubeproxy", Name: "sync_proxy_rules_endpoint_changes_total", Help: "Cumulative proxy rules Endpoint changes"})
	serviceChangesPending  = prometheus.NewGauge(prometheus.GaugeOpts{Subsystem: "kubeproxy", Name: "sync_proxy_rules_service_changes_pending", Help: "Pending proxy rules Service changes"})
	serviceChangesTotal    = prometheus.NewCounter(prometheus.CounterOpts{Subsystem: "kubeproxy", Name: "sync_proxy_rules_service_changes_total", Help: "Cumulative proxy rules Service changes"})
	lastQueuedTimestamp    = prometheus.NewGaugeVec(prometheus.GaugeOpts{Subsystem: "kubeproxy", Name: "sync_proxy_rules_last_queued_timestamp_seconds", Help: "The last time a sync of proxy rules was queued"}, []string{"ip_family"})
	noLocalEndpoints       = prometheus.NewGaugeVec(prometheus.GaugeOpts{Subsystem: "kubeproxy", Name: "sync_proxy_rules_no_local_endpoints_total", Help: "Number of services with a Local traffic policy and no endpoints"}, []string{"traffic_policy", "ip_family"})
)

func programmingBuckets() []float64 {
	b := []float64{0.25, 0.5}
	for v := 1.0; v <= 59; v++ {
		b = append(b, v)
	}
	for v := 60.0; v <= 115; v += 5 {
		b = append(b, v)
	}
	for v := 120.0; v <= 300; v += 30 {
		b = append(b, v)
	}
	return b
}

func registerProxyMetrics() {
	metricsOnce.Do(func() {
		metrics.Registry.MustRegister(syncDuration, syncFullDuration, syncPartialDuration, syncLastTimestamp, programmingDuration, restoreFailures, nftablesFailures,
			endpointChangesPending, endpointChangesTotal, serviceChangesPending, serviceChangesTotal, lastQueuedTimestamp, noLocalEndpoints)
	})
}
