package bench

import (
	"context"
	"errors"
	"fmt"
	"net/netip"
	"os/exec"
	"runtime"
	"runtime/debug"
	"sort"
	"strings"
	"time"

	corev1 "k8s.io/api/core/v1"
	discoveryv1 "k8s.io/api/discovery/v1"
	"k8s.io/apimachinery/pkg/fields"
	"k8s.io/client-go/kubernetes/scheme"
	"k8s.io/client-go/rest"
	"k8s.io/client-go/util/retry"
	ctrl "sigs.k8s.io/controller-runtime"
	"sigs.k8s.io/controller-runtime/pkg/cache"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/config"
	"sigs.k8s.io/controller-runtime/pkg/metrics"
	metricsserver "sigs.k8s.io/controller-runtime/pkg/metrics/server"

	"github.com/nodekeeper/nodekeeper/controllers"
	"github.com/nodekeeper/nodekeeper/internal/netnstest"
	"github.com/nodekeeper/nodekeeper/netrules"
	"github.com/nodekeeper/nodekeeper/netrules/conntrack"
	"github.com/nodekeeper/nodekeeper/netrules/iptables"
	"github.com/nodekeeper/nodekeeper/netrules/nftables"
)

// Backends are the kernel backends the benchmark knows, in report order.
var Backends = []string{"iptables-legacy", "iptables-nft", "nftables"}

// NodeName is the node the benchmark's reconciler runs as (no Node object exists).
const NodeName = "bench-node"

// RunOptions configure one backend run.
type RunOptions struct {
	Backend  string
	NetNS    string // node network namespace (under /run/netns) to program
	Config   *rest.Config
	Services int // Services expected in the apiserver
	Changes  int // one-Service changes to time
	// FirstSyncTimeout bounds the wait for the first full sync.
	FirstSyncTimeout time.Duration
}

// Change is one timed one-Service change.
type Change struct {
	Service string  `json:"service"`
	E2E     float64 `json:"e2eSeconds"`     // EndpointSlice update sent → Backend.Sync including it returned
	Sync    float64 `json:"syncSeconds"`    // that Backend.Sync call
	Chains  int     `json:"chainsWritten"`  // chains the sync wrote
	Full    bool    `json:"full,omitempty"` // the sync was a full one
}

// Result is what one backend run measured. Durations are seconds.
type Result struct {
	Backend   string `json:"backend"`
	Services  int    `json:"services"`
	Endpoints int    `json:"endpoints"`
	// FirstSync is the Backend.Sync call of the first full sync (render + kernel).
	FirstSync float64 `json:"firstSyncSeconds"`
	// FirstReady is manager start → first full sync returned (cache fill from the
	// apiserver, List, netrules.Build and the sync).
	FirstReady float64 `json:"firstReadySeconds"`
	// FirstReconcile is that Reconcile call (kubeproxy_sync_full_proxy_rules_duration_seconds).
	FirstReconcile float64 `json:"firstReconcileSeconds"`
	// FollowUps are the syncs caused by events that arrived during the first one.
	FollowUps []float64 `json:"followUpSyncSeconds"`
	Changes   []Change  `json:"changes"`
	// ChangeReconcile is the mean Reconcile time of the change syncs
	// (kubeproxy_sync_partial_proxy_rules_duration_seconds).
	ChangeReconcile float64 `json:"changeReconcileSeconds"`
	Counts          Counts  `json:"counts"`
	// Memory of the process running the manager and reconciler (VmRSS; PeakKiB is VmHWM
	// since just before the manager started). Child processes (iptables-restore, nft)
	// are not included.
	MemAfterFull Memory `json:"memAfterFull"`
	MemEnd       Memory `json:"memEnd"`
	Error        string `json:"error,omitempty"`
}

// Median of the change figures.
func (r Result) Median(f func(Change) float64) float64 {
	if len(r.Changes) == 0 {
		return 0
	}
	v := make([]float64, len(r.Changes))
	for i, c := range r.Changes {
		v[i] = f(c)
	}
	sort.Float64s(v)
	if len(v)%2 == 1 {
		return v[len(v)/2]
	}
	return (v[len(v)/2-1] + v[len(v)/2]) / 2
}

// inNetns runs a backend's syncs on a thread inside the node namespace, so the nft
// processes knftables starts program that namespace (as controllers' netns tests do).
type inNetns struct {
	ns string
	be Backend
}

func (b inNetns) Sync(ctx context.Context, rs *netrules.Ruleset, full bool) (netrules.SyncStats, error) {
	return netnstest.InNetns(b.ns, func() (netrules.SyncStats, error) { return b.be.Sync(ctx, rs, full) })
}

// stateSyncer drives an incremental backend from whole Rulesets: it keeps a State,
// hands the backend the Services whose ports changed, and calls again while the
// backend reports pending work.
type stateSyncer struct {
	be interface {
		SyncState(ctx context.Context, st *netrules.State, changed []string, full bool) (netrules.SyncStats, error)
	}
	st *netrules.State
}

func (s *stateSyncer) Sync(ctx context.Context, rs *netrules.Ruleset, full bool) (netrules.SyncStats, error) {
	if s.st == nil || s.st.Node.Name != rs.Node.Name {
		s.st, full = netrules.NewState(rs.Family, rs.Node), true
	}
	by := map[string][]*netrules.ServicePort{}
	for _, p := range rs.Ports {
		k := p.Namespace + "/" + p.Name
		by[k] = append(by[k], p)
	}
	var changed []string
	for _, k := range s.st.Services() {
		if _, ok := by[k]; !ok && s.st.Set(k, nil) {
			changed = append(changed, k)
		}
	}
	for k, ps := range by {
		if s.st.Set(k, ps) {
			changed = append(changed, k)
		}
	}
	sort.Strings(changed)
	if full {
		changed = nil
	}
	var total netrules.SyncStats
	for {
		st, err := s.be.SyncState(ctx, s.st, changed, full)
		if err != nil {
			return total, err
		}
		total.Full = total.Full || st.Full
		total.ChainsWritten += st.ChainsWritten
		total.ChainsDeleted += st.ChainsDeleted
		total.Rules += st.Rules
		if st.Pending == 0 {
			return total, nil
		}
		changed, full = nil, false
	}
}

func nsenter(ns string) iptables.Exec {
	return iptables.Exec{Prefix: []string{"nsenter", "--net=/run/netns/" + ns}}
}

// NewBackend builds the named backend programming namespace ns.
func NewBackend(name, ns string) (Backend, error) {
	switch name {
	case "iptables-legacy":
		return iptables.New(iptables.Options{Family: netrules.IPv4, Variant: "legacy", Runner: nsenter(ns)}), nil
	case "iptables-nft":
		return iptables.New(iptables.Options{Family: netrules.IPv4, Variant: "nft", Runner: nsenter(ns)}), nil
	case "nftables":
		p, err := nftables.New(nftables.Options{Family: netrules.IPv4, NetNS: "/run/netns/" + ns})
		if err != nil {
			return nil, err
		}
		return &stateSyncer{be: p}, nil
	}
	return nil, fmt.Errorf("unknown backend %q (want one of %s)", name, strings.Join(Backends, ", "))
}

// CountKernel dumps what the backend left in namespace ns and counts it.
func CountKernel(ctx context.Context, backend, ns string) (Counts, error) {
	var argv []string
	switch backend {
	case "iptables-legacy", "iptables-nft":
		argv = []string{backend + "-save"}
	case "nftables":
		argv = []string{"nft", "-j", "list", "table", "ip", nftables.TableName}
	default:
		return Counts{}, fmt.Errorf("unknown backend %q", backend)
	}
	out, err := exec.CommandContext(ctx, "nsenter", append([]string{"--net=/run/netns/" + ns}, argv...)...).Output()
	if err != nil {
		return Counts{}, fmt.Errorf("%s: %w", strings.Join(argv, " "), err)
	}
	if backend == "nftables" {
		return CountNFTJSON(out)
	}
	return CountIPTablesSave(string(out)), nil
}

// histogram returns the sum and count of a histogram in controller-runtime's registry.
func histogram(name string) (sum float64, count uint64) {
	mfs, err := metrics.Registry.Gather()
	if err != nil {
		return 0, 0
	}
	for _, mf := range mfs {
		if mf.GetName() != name {
			continue
		}
		for _, m := range mf.GetMetric() {
			sum += m.GetHistogram().GetSampleSum()
			count += m.GetHistogram().GetSampleCount()
		}
	}
	return sum, count
}

// Run starts a controller-runtime manager with a ServiceReconciler for one backend
// against the apiserver, waits for the first full sync of opts.Services Services,
// counts what is in the kernel, then times opts.Changes one-Service changes. It is
// meant to run once per process (controller metrics are process-wide), in the process
// whose memory it reports.
func Run(ctx context.Context, opts RunOptions) (res Result, err error) {
	res = Result{Backend: opts.Backend, Services: opts.Services, Endpoints: opts.Services * EndpointsPerService}
	be, err := NewBackend(opts.Backend, opts.NetNS)
	if err != nil {
		return res, err
	}
	timed := &Timed{Backend: be}
	mgr, err := ctrl.NewManager(opts.Config, ctrl.Options{
		Scheme:                 scheme.Scheme,
		Metrics:                metricsserver.Options{BindAddress: "0"},
		HealthProbeBindAddress: "0",
		Controller:             config.Controller{SkipNameValidation: &[]bool{true}[0]},
		// as main.go: Services and EndpointSlices cluster-wide, only our Node
		Cache: cache.Options{ByObject: map[client.Object]cache.ByObject{
			&corev1.Node{}:               {Field: fields.OneTermEqualSelector("metadata.name", NodeName)},
			&corev1.Service{}:            {Transform: cache.TransformStripManagedFields()},
			&discoveryv1.EndpointSlice{}: {Transform: cache.TransformStripManagedFields()},
		}},
	})
	if err != nil {
		return res, fmt.Errorf("building manager: %w", err)
	}
	rec := &controllers.ServiceReconciler{
		Client: mgr.GetClient(),
		Node: netrules.Node{Name: NodeName,
			ClusterCIDRs: []netip.Prefix{netip.MustParsePrefix(ClusterCIDR)}},
		Backends:  map[netrules.Family]controllers.RulesBackend{netrules.IPv4: netrules.Whole{RulesetSyncer: timed}},
		Conntrack: &conntrack.Cleaner{NetNS: "/run/netns/" + opts.NetNS},
		// no periodic full sync during the run: every change is a partial sync
		FullSyncPeriod: 24 * time.Hour,
	}
	if err := rec.SetupWithManager(mgr); err != nil {
		return res, fmt.Errorf("setting up the reconciler: %w", err)
	}
	direct, err := client.New(opts.Config, client.Options{Scheme: scheme.Scheme})
	if err != nil {
		return res, err
	}

	runtime.GC()
	debug.FreeOSMemory()
	_ = ResetPeak()
	first := timed.Await(func(rs *netrules.Ruleset) bool { return CountServices(rs) >= opts.Services })
	mctx, stop := context.WithCancel(ctx)
	done := make(chan error, 1)
	start := time.Now()
	go func() { done <- mgr.Start(mctx) }()
	defer func() {
		stop()
		if e := <-done; e != nil && err == nil {
			err = fmt.Errorf("manager: %w", e)
		}
	}()

	timeout := time.NewTimer(opts.FirstSyncTimeout)
	defer timeout.Stop()
	select {
	case s := <-first:
		res.FirstSync = s.Duration().Seconds()
		res.FirstReady = s.End.Sub(start).Seconds()
		if !s.Stats.Full {
			return res, errors.New("the first sync with every Service was not a full one")
		}
	case <-timeout.C:
		return res, fmt.Errorf("first full sync not done after %s", opts.FirstSyncTimeout)
	case e := <-done:
		done <- e
		return res, fmt.Errorf("manager stopped: %v", e)
	case <-ctx.Done():
		return res, ctx.Err()
	}
	// events that arrived while the first sync ran make one more (partial) sync
	if err := timed.Quiet(ctx, 2*time.Second); err != nil {
		return res, err
	}
	// read after Quiet: Reconcile observes its duration only after Backend.Sync returned
	res.FirstReconcile, _ = histogram("kubeproxy_sync_full_proxy_rules_duration_seconds")
	for _, s := range timed.Records()[1:] {
		res.FollowUps = append(res.FollowUps, s.Duration().Seconds())
	}
	res.MemAfterFull, _ = ReadMemory()
	if res.Counts, err = CountKernel(ctx, opts.Backend, opts.NetNS); err != nil {
		return res, err
	}

	sum0, n0 := histogram("kubeproxy_sync_partial_proxy_rules_duration_seconds")
	for k := 0; k < opts.Changes; k++ {
		// spread the changed Services over the whole range
		i := (k*7919 + 17) % opts.Services
		c, err := change(ctx, direct, timed, i)
		if err != nil {
			return res, err
		}
		res.Changes = append(res.Changes, c)
		if err := timed.Quiet(ctx, 500*time.Millisecond); err != nil {
			return res, err
		}
	}
	if sum1, n1 := histogram("kubeproxy_sync_partial_proxy_rules_duration_seconds"); n1 > n0 {
		res.ChangeReconcile = (sum1 - sum0) / float64(n1-n0)
	}
	res.MemEnd, _ = ReadMemory()
	return res, nil
}

// change moves one endpoint of Service i to a new address and waits for the sync that
// programs it.
func change(ctx context.Context, c client.Client, timed *Timed, i int) (Change, error) {
	ch := Change{Service: ServiceName(i)}
	key := client.ObjectKey{Namespace: Namespace, Name: SliceName(i)}
	var got <-chan SyncRecord
	var sent time.Time
	err := retry.RetryOnConflict(retry.DefaultRetry, func() error {
		var s discoveryv1.EndpointSlice
		if err := c.Get(ctx, key, &s); err != nil {
			return err
		}
		ip := SpareEndpointIP()
		for used := true; used; {
			used = false
			for _, e := range s.Endpoints {
				if len(e.Addresses) > 0 && e.Addresses[0] == ip.String() {
					used, ip = true, SpareEndpointIP()
				}
			}
		}
		s.Endpoints[i%len(s.Endpoints)].Addresses = []string{ip.String()}
		got = timed.Await(HasEndpoint(Namespace, ServiceName(i), ip))
		sent = time.Now()
		return c.Update(ctx, &s)
	})
	if err != nil {
		return ch, fmt.Errorf("updating %s: %w", key, err)
	}
	select {
	case s := <-got:
		ch.E2E = s.End.Sub(sent).Seconds()
		ch.Sync = s.Duration().Seconds()
		ch.Chains = s.Stats.ChainsWritten
		ch.Full = s.Stats.Full
		return ch, nil
	case <-time.After(5 * time.Minute):
		return ch, fmt.Errorf("change of %s not programmed after 5m", ch.Service)
	case <-ctx.Done():
		return ch, ctx.Err()
	}
}
