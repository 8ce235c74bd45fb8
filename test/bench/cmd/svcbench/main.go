// Command svcbench benchmarks the ServiceReconciler (nodekeeper's kube-proxy) and prints
// figures. Run it as root, through `make bench` (hack/bench.sh).
//
// It starts a real kube-apiserver + etcd (envtest), loads N ClusterIP Services with one
// EndpointSlice of 5 endpoints each (16 writers; sizes are loaded incrementally, once),
// and for each size and backend runs itself again as a child process that creates
// nothing but a controller-runtime manager with the ServiceReconciler, programming a
// fresh network namespace made by the parent (internal/netnstest) — so the memory
// reported is that of an agent-like process, not of the loader. The child times every
// Backend.Sync with a decorator (it never polls the kernel), counts the rules once
// after the first full sync, times one-Service changes, and hands back JSON.
//
// Environment:
//
//	BENCH_SIZES     Service counts, comma-separated (default 1000,5000,10000)
//	BENCH_BACKENDS  backends (default iptables-legacy,iptables-nft,nftables)
//	BENCH_CHANGES   one-Service changes timed per run (default 9)
//	BENCH_TIMEOUT   limit for one first full sync (default 5m)
//	BENCH_WORKERS   concurrent writers loading the apiserver (default 16)
//	BENCH_JSON      if set, a file to write every result to as JSON
package main

import (
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"os/exec"
	"os/signal"
	"path/filepath"
	"runtime"
	"slices"
	"strconv"
	"strings"
	"syscall"
	"time"

	"github.com/go-logr/logr"
	"k8s.io/apimachinery/pkg/util/rand"
	"k8s.io/client-go/kubernetes/scheme"
	"k8s.io/client-go/rest"
	"k8s.io/client-go/tools/clientcmd"
	ctrl "sigs.k8s.io/controller-runtime"
	"sigs.k8s.io/controller-runtime/pkg/client"

	testenv "github.com/nodekeeper/nodekeeper/envtest"
	"github.com/nodekeeper/nodekeeper/internal/netnstest"
	"github.com/nodekeeper/nodekeeper/test/bench"
)

func main() {
	fs := flag.NewFlagSet("svcbench", flag.ExitOnError) // not flag.CommandLine: controller-runtime owns -kubeconfig there
	child := fs.Bool("child", false, "internal: run one backend (started by the parent)")
	backend := fs.String("backend", "", "internal: backend")
	netns := fs.String("netns", "", "internal: node network namespace")
	kubeconfig := fs.String("kubeconfig", "", "internal: apiserver kubeconfig")
	services := fs.Int("services", 0, "internal: Services loaded")
	changes := fs.Int("changes", 0, "internal: changes to time")
	timeout := fs.Duration("timeout", 5*time.Minute, "internal: first sync timeout")
	out := fs.String("out", "", "internal: result file")
	_ = fs.Parse(os.Args[1:])
	var err error
	if *child {
		err = runChild(*backend, *netns, *kubeconfig, *services, *changes, *timeout, *out)
	} else {
		err = runParent()
	}
	if err != nil {
		fmt.Fprintln(os.Stderr, "svcbench:", err)
		os.Exit(1)
	}
}

func logf(format string, args ...any) {
	fmt.Fprintf(os.Stderr, "[%s] %s\n", time.Now().Format("15:04:05"), fmt.Sprintf(format, args...))
}

// ---- the child: one backend, one process ----

// errSink is a logr sink that prints errors only (controller-runtime is chatty).
type errSink struct{ name string }

func (errSink) Init(logr.RuntimeInfo)            {}
func (errSink) Enabled(int) bool                 { return false }
func (errSink) Info(int, string, ...any)         {}
func (s errSink) WithValues(...any) logr.LogSink { return s }
func (s errSink) WithName(n string) logr.LogSink {
	return errSink{name: strings.TrimPrefix(s.name+"/"+n, "/")}
}
func (s errSink) Error(err error, msg string, _ ...any) {
	logf("  %s: %s: %v", s.name, msg, err)
}

func runChild(backend, netns, kubeconfig string, services, changes int, timeout time.Duration, out string) error {
	ctrl.SetLogger(logr.New(errSink{}))
	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGTERM, syscall.SIGINT)
	defer stop()
	cfg, err := clientcmd.BuildConfigFromFlags("", kubeconfig) // as the agent does
	if err != nil {
		return err
	}
	res, err := bench.Run(ctx, bench.RunOptions{Backend: backend, NetNS: netns, Config: cfg,
		Services: services, Changes: changes, FirstSyncTimeout: timeout})
	if err != nil {
		res.Error = err.Error()
	}
	b, _ := json.Marshal(res)
	if werr := os.WriteFile(out, b, 0o600); werr != nil {
		return werr
	}
	return err
}

// ---- the parent: apiserver, objects, namespaces, report ----

func envInt(name string, def int) int {
	if v, err := strconv.Atoi(os.Getenv(name)); err == nil && v > 0 {
		return v
	}
	return def
}

func envList(name, def string) []string {
	v := os.Getenv(name)
	if strings.TrimSpace(v) == "" {
		v = def
	}
	var out []string
	for _, s := range strings.Split(v, ",") {
		if s = strings.TrimSpace(s); s != "" {
			out = append(out, s)
		}
	}
	return out
}

func runParent() error {
	if os.Geteuid() != 0 {
		return errors.New("must run as root (it creates network namespaces and programs their rules)")
	}
	if why := netnstest.Available(); why != "" {
		return errors.New(why)
	}
	var sizes []int
	for _, s := range envList("BENCH_SIZES", "1000,5000,10000") {
		n, err := strconv.Atoi(s)
		if err != nil || n <= 0 || n > bench.MaxServices {
			return fmt.Errorf("BENCH_SIZES: %q is not a count in 1..%d", s, bench.MaxServices)
		}
		sizes = append(sizes, n)
	}
	slices.Sort(sizes)
	sizes = slices.Compact(sizes)
	backends := envList("BENCH_BACKENDS", strings.Join(bench.Backends, ","))
	for _, b := range backends {
		if !slices.Contains(bench.Backends, b) {
			return fmt.Errorf("BENCH_BACKENDS: unknown backend %q (want %s)", b, strings.Join(bench.Backends, ", "))
		}
		if b == "nftables" {
			if _, err := exec.LookPath("nft"); err != nil {
				return errors.New("nft not installed (hack/net-deps.sh installs it)")
			}
		}
	}
	changes := envInt("BENCH_CHANGES", 9)
	workers := envInt("BENCH_WORKERS", 16)
	timeout := 5 * time.Minute
	if v := os.Getenv("BENCH_TIMEOUT"); v != "" {
		d, err := time.ParseDuration(v)
		if err != nil {
			return fmt.Errorf("BENCH_TIMEOUT: %w", err)
		}
		timeout = d
	}
	self, err := os.Executable()
	if err != nil {
		return err
	}

	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGTERM, syscall.SIGINT)
	defer stop()
	tmp, err := os.MkdirTemp("", "svcbench-")
	if err != nil {
		return err
	}
	defer os.RemoveAll(tmp)

	logf("starting kube-apiserver + etcd (envtest)")
	env, err := testenv.Start()
	if err != nil {
		return err
	}
	defer func() {
		if err := env.Stop(); err != nil {
			logf("stopping envtest: %v", err)
		}
	}()
	cfg := rest.CopyConfig(env.Config)
	cfg.QPS = -1 // no client-side rate limit for the loader
	c, err := client.New(cfg, client.Options{Scheme: scheme.Scheme})
	if err != nil {
		return err
	}
	if err := bench.Prepare(ctx, c); err != nil {
		return err
	}

	var results []bench.Result
	loaded := 0
	for _, n := range sizes {
		t0 := time.Now()
		logf("loading Services %d..%d (+ one EndpointSlice of %d endpoints each, %d writers)", loaded, n-1, bench.EndpointsPerService, workers)
		if err := bench.Load(ctx, c, loaded, n, workers, func(d int) { logf("  %d loaded", d) }); err != nil {
			return err
		}
		logf("loaded %d Services + %d EndpointSlices in %.1fs", n-loaded, n-loaded, time.Since(t0).Seconds())
		loaded = n
		for _, b := range backends {
			if ctx.Err() != nil {
				break
			}
			logf("%s, %d Services: running", b, n)
			r := runOne(ctx, self, env.Kubeconfig, tmp, b, n, changes, timeout)
			results = append(results, r)
			logf("%s", summary(r))
		}
		if ctx.Err() != nil {
			break
		}
	}
	if p := os.Getenv("BENCH_JSON"); p != "" {
		b, _ := json.MarshalIndent(results, "", "  ")
		if err := os.WriteFile(p, b, 0o644); err != nil {
			logf("writing %s: %v", p, err)
		}
	}
	printTable(os.Stdout, results, changes)
	return ctx.Err()
}

// runOne creates a fresh node namespace, runs the child for one backend in it and
// removes the namespace whatever happened.
func runOne(ctx context.Context, self, kubeconfig, tmp, backend string, n, changes int, timeout time.Duration) bench.Result {
	res := bench.Result{Backend: backend, Services: n, Endpoints: n * bench.EndpointsPerService}
	topo, err := netnstest.Up("nkb" + rand.String(4) + "-")
	if err != nil {
		res.Error = "creating the network namespace: " + err.Error()
		return res
	}
	defer topo.Down()
	out := filepath.Join(tmp, fmt.Sprintf("%s-%d.json", backend, n))
	cctx, cancel := context.WithTimeout(ctx, timeout+time.Duration(changes)*2*time.Minute+5*time.Minute)
	defer cancel()
	cmd := exec.CommandContext(cctx, self, "-child", "-backend", backend, "-netns", topo.Node,
		"-kubeconfig", kubeconfig, "-services", strconv.Itoa(n), "-changes", strconv.Itoa(changes),
		"-timeout", timeout.String(), "-out", out)
	// a private xtables lock: the benchmark's long iptables-restore runs must not make
	// other iptables users on the machine (tests in other namespaces) wait
	cmd.Env = append(os.Environ(), "XTABLES_LOCKFILE="+filepath.Join(tmp, "xtables.lock"))
	cmd.Stdout, cmd.Stderr = os.Stderr, os.Stderr
	// on cancel ask the child to stop (it cancels its iptables-restore / nft), then kill
	cmd.Cancel = func() error { return cmd.Process.Signal(syscall.SIGTERM) }
	cmd.WaitDelay = 30 * time.Second
	runErr := cmd.Run()
	b, err := os.ReadFile(out)
	if err == nil {
		err = json.Unmarshal(b, &res)
	}
	if err != nil && res.Error == "" {
		res.Error = fmt.Sprintf("child: %v (no result: %v)", runErr, err)
	}
	return res
}

func dur(s float64) string {
	switch {
	case s == 0:
		return "–"
	case s < 1:
		return fmt.Sprintf("%.0f ms", s*1000)
	case s < 10:
		return fmt.Sprintf("%.2f s", s)
	default:
		return fmt.Sprintf("%.1f s", s)
	}
}

func mib(kib int64) string {
	if kib == 0 {
		return "–"
	}
	return fmt.Sprintf("%.0f MiB", float64(kib)/1024)
}

func summary(r bench.Result) string {
	if r.Error != "" && r.FirstSync == 0 {
		return fmt.Sprintf("%s, %d Services: FAILED: %s", r.Backend, r.Services, r.Error)
	}
	s := fmt.Sprintf("%s, %d Services: first full sync %s (start→programmed %s, reconcile %s, follow-ups %v); "+
		"one Service changed: e2e median %s, sync median %s; %d rules, %d chains, %d map elements; RSS %s (peak %s, end %s)",
		r.Backend, r.Services, dur(r.FirstSync), dur(r.FirstReady), dur(r.FirstReconcile), r.FollowUps,
		dur(r.Median(func(c bench.Change) float64 { return c.E2E })), dur(r.Median(func(c bench.Change) float64 { return c.Sync })),
		r.Counts.Rules, r.Counts.Chains, r.Counts.MapElements, mib(r.MemAfterFull.RSSKiB), mib(r.MemEnd.PeakKiB), mib(r.MemEnd.RSSKiB))
	if r.Error != "" {
		s += "; ERROR: " + r.Error
	}
	return s
}

func printTable(w io.Writer, rs []bench.Result, changes int) {
	host, _ := os.Hostname()
	fmt.Fprintf(w, "\nServiceReconciler benchmark, %s, %s, %d CPUs (%s)\n", time.Now().Format("2006-01-02"), host, runtime.NumCPU(), runtime.Version())
	fmt.Fprintf(w, "N Services × %d endpoints, ClusterIP/TCP; one-Service change = median of %d endpoint moves\n\n", bench.EndpointsPerService, changes)
	fmt.Fprintln(w, "| Services | backend | first full sync (Backend.Sync) | start → programmed | one Service changed: API write → programmed | its Backend.Sync | its Reconcile | rules | chains | map elements | agent RSS after full sync (peak over the run) |")
	fmt.Fprintln(w, "|---:|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|")
	for _, r := range rs {
		if r.Error != "" && r.FirstSync == 0 {
			fmt.Fprintf(w, "| %d | %s | failed: %s | | | | | | | | |\n", r.Services, r.Backend, strings.ReplaceAll(r.Error, "|", "/"))
			continue
		}
		elems := "–"
		if r.Backend == "nftables" {
			elems = strconv.Itoa(r.Counts.MapElements)
		}
		fmt.Fprintf(w, "| %d | %s | %s | %s | %s | %s | %s | %d | %d | %s | %s (%s) |\n", r.Services, r.Backend,
			dur(r.FirstSync), dur(r.FirstReady),
			dur(r.Median(func(c bench.Change) float64 { return c.E2E })), dur(r.Median(func(c bench.Change) float64 { return c.Sync })),
			dur(r.ChangeReconcile), r.Counts.Rules, r.Counts.Chains, elems, mib(r.MemAfterFull.RSSKiB), mib(r.MemEnd.PeakKiB))
	}
	for _, r := range rs {
		if r.Error != "" && r.FirstSync != 0 {
			fmt.Fprintf(w, "\nnote: %s %d: %s\n", r.Backend, r.Services, r.Error)
		}
	}
}
