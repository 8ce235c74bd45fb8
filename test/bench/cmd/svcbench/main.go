// Command svcbench compares nodekeeper's Service proxy with upstream kube-proxy v1.37.2
// and prints figures. Run it as root, through `make bench` (hack/bench.sh).
//
// It starts a real kube-apiserver + etcd (envtest), loads N ClusterIP Services with one
// EndpointSlice of 5 endpoints each (sizes are loaded incrementally, once) and a Node,
// and for each size, mode and agent starts the agent as its own process (the
// kube-proxy binary; the nodekeeper binary with the services reconciler only) in a
// fresh node network namespace, one agent after the other. The agent reaches the
// apiserver through a forwarder listening inside its namespace. Both run with the same
// sync period. The harness treats the agent as a black box:
//
//   - first sync: agent start → its kubeproxy_sync_proxy_rules_last_timestamp_seconds,
//     accepted once a netlink (or iptables-legacy-save) read finds every Service's chain;
//   - changes: an idle phase and a phase with background churn, each of BENCH_CHANGES
//     changes (70 % an endpoint moved, 15 % a Service created, 15 % one deleted, on
//     random Services) spread over BENCH_PHASE (≥ 2 sync periods, so some land during a
//     periodic sync), then a "repair" phase aiming 10 changes at each of the next
//     BENCH_REPAIR_ROUNDS periodic full syncs (predicted from the agent's
//     kubeproxy_sync_full_proxy_rules_duration_seconds); latency = API write sent → the probe sees the expected chain in the
//     kernel (the new endpoint's chain with its rules; a created Service's chain and its
//     endpoint's; a deleted Service's chain gone or flushed);
//   - CPU: utime+stime (+ reaped children: iptables-restore, nft) of the agent from
//     /proc/<pid>/stat over a phase, divided by the changes made in it (churn included);
//     peak RSS: VmHWM of the agent process at the end; kernel objects: nft -j list ruleset
//     (iptables-legacy-save for legacy) after the first sync.
//
// Between agents every change is undone, so each agent starts from the same objects.
//
// Environment:
//
//	BENCH_SIZES          Service counts (default 1000,10000,50000)
//	BENCH_MODES          nftables,iptables-nft,iptables-legacy (default nftables,iptables-nft)
//	BENCH_AGENTS         kube-proxy,nodekeeper (default both)
//	BENCH_CHANGES        timed changes per phase (default 100)
//	BENCH_PHASE          length of one phase (default 2 sync periods + 5s)
//	BENCH_CHURN          background endpoint moves per second in the churn phase (default 20; 0: no churn phase)
//	BENCH_REPAIR_ROUNDS  a last phase aims 10 changes at each of this many periodic full syncs (default 2; 0: none)
//	BENCH_SYNC_PERIOD    both agents' sync period (default 30s)
//	BENCH_KP_MIN_SYNC    kube-proxy's minSyncPeriod (default 1s, upstream's default; 0s is defaulted to 1s upstream)
//	BENCH_CHANGE_TIMEOUT a change not seen after this counts as timed out (default 120s)
//	BENCH_TIMEOUT        limit for one first sync (default 15m)
//	BENCH_WORKERS        concurrent writers loading the apiserver (default 16)
//	BENCH_JSON           if set, a file to write every result to as JSON
//	BENCH_WORKDIR        agent configs and logs (default a temporary folder, kept on failure)
//	BENCH_NETNS_PREFIX   start of the node namespaces' names (default nk-bench-: nk-bench-kp, nk-bench-nk)
//	NK_BENCH_NODEKEEPER  the nodekeeper binary (hack/bench.sh builds it from NK_BENCH_SRC)
//	NK_BENCH_KUBE_PROXY  the kube-proxy binary (default $KUBEBUILDER_ASSETS/kube-proxy)
//
// `svcbench -report FILE` prints the tables again from a BENCH_JSON file.
package main

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net/url"
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

	"k8s.io/client-go/kubernetes/scheme"
	"k8s.io/client-go/rest"
	"sigs.k8s.io/controller-runtime/pkg/client"

	testenv "github.com/nodekeeper/nodekeeper/envtest"
	"github.com/nodekeeper/nodekeeper/test/bench"
)

func main() {
	if len(os.Args) == 3 && os.Args[1] == "-report" {
		// print the tables again from a BENCH_JSON file
		b, err := os.ReadFile(os.Args[2])
		var rs []bench.Result
		if err == nil {
			err = json.Unmarshal(b, &rs)
		}
		if err != nil {
			fmt.Fprintln(os.Stderr, "svcbench:", err)
			os.Exit(1)
		}
		bench.PrintTable(os.Stdout, rs, bench.PhasesOf(rs))
		return
	}
	if err := run(); err != nil {
		fmt.Fprintln(os.Stderr, "svcbench:", err)
		os.Exit(1)
	}
}

func logf(format string, args ...any) {
	fmt.Fprintf(os.Stderr, "[%s] %s\n", time.Now().Format("15:04:05"), fmt.Sprintf(format, args...))
}

func envInt(name string, def int) (int, error) {
	v := os.Getenv(name)
	if v == "" {
		return def, nil
	}
	n, err := strconv.Atoi(v)
	if err != nil || n < 0 {
		return 0, fmt.Errorf("%s: %q is not a count", name, v)
	}
	return n, nil
}

func envDur(name string, def time.Duration) (time.Duration, error) {
	v := os.Getenv(name)
	if v == "" {
		return def, nil
	}
	d, err := time.ParseDuration(v)
	if err != nil {
		return 0, fmt.Errorf("%s: %w", name, err)
	}
	return d, nil
}

func envList(name, def string, allowed []string) ([]string, error) {
	v := os.Getenv(name)
	if strings.TrimSpace(v) == "" {
		v = def
	}
	var out []string
	for _, s := range strings.Split(v, ",") {
		if s = strings.TrimSpace(s); s == "" {
			continue
		}
		if allowed != nil && !slices.Contains(allowed, s) {
			return nil, fmt.Errorf("%s: unknown %q (want %s)", name, s, strings.Join(allowed, ", "))
		}
		out = append(out, s)
	}
	return out, nil
}

func run() error {
	if os.Geteuid() != 0 {
		return errors.New("must run as root (it creates network namespaces and reads their rules)")
	}
	var sizes []int
	ss, _ := envList("BENCH_SIZES", "1000,10000,50000", nil)
	for _, s := range ss {
		n, err := strconv.Atoi(s)
		if err != nil || n <= 0 || n > bench.MaxServices {
			return fmt.Errorf("BENCH_SIZES: %q is not a count in 1..%d", s, bench.MaxServices)
		}
		sizes = append(sizes, n)
	}
	slices.Sort(sizes)
	sizes = slices.Compact(sizes)
	modes, err := envList("BENCH_MODES", "nftables,iptables-nft", bench.Modes)
	if err != nil {
		return err
	}
	agents, err := envList("BENCH_AGENTS", strings.Join(bench.Agents, ","), bench.Agents)
	if err != nil {
		return err
	}
	changes, err := envInt("BENCH_CHANGES", 100)
	if err != nil {
		return err
	}
	workers, err := envInt("BENCH_WORKERS", 16)
	if err != nil {
		return err
	}
	syncPeriod, err := envDur("BENCH_SYNC_PERIOD", 30*time.Second)
	if err != nil {
		return err
	}
	phaseLen, err := envDur("BENCH_PHASE", 2*syncPeriod+5*time.Second)
	if err != nil {
		return err
	}
	minSync, err := envDur("BENCH_KP_MIN_SYNC", time.Second)
	if err != nil {
		return err
	}
	changeTimeout, err := envDur("BENCH_CHANGE_TIMEOUT", 2*time.Minute)
	if err != nil {
		return err
	}
	firstTimeout, err := envDur("BENCH_TIMEOUT", 15*time.Minute)
	if err != nil {
		return err
	}
	repair, err := envInt("BENCH_REPAIR_ROUNDS", 2)
	if err != nil {
		return err
	}
	churn := 20.0
	if v := os.Getenv("BENCH_CHURN"); v != "" {
		if churn, err = strconv.ParseFloat(v, 64); err != nil || churn < 0 {
			return fmt.Errorf("BENCH_CHURN: %q is not a rate", v)
		}
	}
	bins := map[string]string{bench.AgentNodekeeper: os.Getenv("NK_BENCH_NODEKEEPER"), bench.AgentKubeProxy: os.Getenv("NK_BENCH_KUBE_PROXY")}
	if bins[bench.AgentKubeProxy] == "" {
		if dir, err := testenv.AssetsDir(); err == nil {
			bins[bench.AgentKubeProxy] = filepath.Join(dir, "kube-proxy")
		}
	}
	for _, a := range agents {
		if bins[a] == "" {
			return fmt.Errorf("no %s binary: set NK_BENCH_NODEKEEPER / NK_BENCH_KUBE_PROXY (hack/bench.sh does)", a)
		}
		if _, err := os.Stat(bins[a]); err != nil {
			return fmt.Errorf("%s binary: %w", a, err)
		}
	}
	for _, b := range []string{"nsenter", "ip", "nft", "iptables-legacy-save"} {
		if _, err := exec.LookPath(b); err != nil {
			return fmt.Errorf("%s not installed (hack/net-deps.sh installs it)", b)
		}
	}
	phases := []string{"idle"}
	if churn > 0 {
		phases = append(phases, "churn")
	}
	if repair > 0 {
		phases = append(phases, "repair")
	}

	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGTERM, syscall.SIGINT)
	defer stop()
	work := os.Getenv("BENCH_WORKDIR")
	if work == "" {
		if work, err = os.MkdirTemp("", "svcbench-"); err != nil {
			return err
		}
	}
	failed := false
	defer func() {
		if !failed && os.Getenv("BENCH_WORKDIR") == "" {
			os.RemoveAll(work)
		} else {
			logf("agent configs and logs kept in %s", work)
		}
	}()

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
	u, err := url.Parse(env.Config.Host)
	if err != nil {
		return err
	}
	cfg := rest.CopyConfig(env.Config)
	cfg.QPS = -1 // no client-side rate limit for the loader and the changes
	c, err := client.New(cfg, client.Options{Scheme: scheme.Scheme})
	if err != nil {
		return err
	}
	if err := bench.Prepare(ctx, c); err != nil {
		return err
	}
	world := bench.NewWorld(c, 0, uint64(time.Now().UnixNano()))
	refWatch, err := bench.StartWatcher(ctx, cfg)
	if err != nil {
		return err
	}

	logf("plan: sizes %v, modes %v, agents %v one after the other, %d changes per phase over %s, phases %v (churn %.0f/s), sync period %s, kube-proxy minSyncPeriod %s",
		sizes, modes, agents, changes, phaseLen, phases, churn, syncPeriod, minSync)
	var results []bench.Result
	loaded := 0
	for _, n := range sizes {
		t0 := time.Now()
		logf("loading Services %d..%d (+ one EndpointSlice of %d endpoints each, %d writers)", loaded, n-1, bench.EndpointsPerService, workers)
		if err := bench.Load(ctx, c, loaded, n, max(workers, 1), func(d int) { logf("  %d loaded", d) }); err != nil {
			return err
		}
		logf("loaded %d Services + EndpointSlices in %.1fs", n-loaded, time.Since(t0).Seconds())
		loaded = n
		world.Grow(n)
		for _, mode := range modes {
			for _, a := range agents {
				if ctx.Err() != nil {
					break
				}
				if k, err := world.Restore(ctx); err != nil {
					return err
				} else if k > 0 {
					logf("restored %d changed Services", k)
				}
				short := map[string]string{bench.AgentKubeProxy: "kp", bench.AgentNodekeeper: "nk"}[a]
				logf("%s, %s, %d Services: running", a, mode, n)
				r := bench.Run(ctx, bench.RunOptions{
					AgentOptions: bench.AgentOptions{Agent: a, Mode: mode, Binary: bins[a], Kubeconfig: env.Kubeconfig,
						Dir: filepath.Join(work, fmt.Sprintf("%s-%s-%d", a, mode, n)), SyncPeriod: syncPeriod, MinSyncPeriod: minSync},
					NetNS: netnsPrefix() + short, APIAddr: u.Host, World: world, Watch: refWatch,
					Changes: changes, Phase: phaseLen, Churn: churn, RepairRounds: repair, ChangeTimeout: changeTimeout, FirstSyncTimeout: firstTimeout,
					Logf: logf,
				})
				if r.Error != "" {
					failed = true
					logf("%s, %s, %d Services: ERROR: %s", a, mode, n, r.Error)
				}
				results = append(results, r)
				// wait for in-flight changes to be released before restoring
				time.Sleep(time.Second)
			}
		}
		if ctx.Err() != nil {
			break
		}
	}
	if _, err := world.Restore(context.Background()); err != nil {
		logf("restoring: %v", err)
	}
	if p := os.Getenv("BENCH_JSON"); p != "" {
		b, _ := json.MarshalIndent(results, "", "  ")
		if err := os.WriteFile(p, b, 0o644); err != nil {
			logf("writing %s: %v", p, err)
		}
	}
	host, _ := os.Hostname()
	fmt.Printf("\n## Service proxy benchmark: kube-proxy v1.37.2 (reference) vs nodekeeper, %s, %s, %d CPUs (%s)\n\n",
		time.Now().Format("2006-01-02 15:04"), host, runtime.NumCPU(), runtime.Version())
	fmt.Printf("N ClusterIP Services × %d endpoints; per phase %d changes (70%% endpoint moved, 15%% Service created, 15%% deleted, random Services) over %s; "+
		"churn phase adds %.0f endpoint moves/s; repair phase: %d changes aimed at each of %d periodic full syncs (kube-proxy runs full syncs only at start and hourly: its syncPeriod runs are partial, so its repair row is changes spread over the period). Latency: API write → the expected chain seen in the kernel by netlink (iptables-legacy-save for legacy). "+
		"Agents run one after the other, each alone in its node netns, sync period %s both; kube-proxy minSyncPeriod %s (upstream turns 0 into 1s). "+
		"CPU-s per change: agent utime+stime (+ reaped children) over the phase / (timed + churn changes). RSS: agent VmHWM. "+
		"First sync: agent start → its last-sync metric, with every Service's chain in the kernel.\n\n",
		bench.EndpointsPerService, changes, phaseLen, churn, bench.RepairChanges, repair, syncPeriod, minSync)
	bench.PrintTable(os.Stdout, results, phases)
	return ctx.Err()
}

// netnsPrefix starts the node namespaces' names: BENCH_NETNS_PREFIX, so that runs
// sharing a machine keep apart, or nk-bench-.
func netnsPrefix() string {
	if p := os.Getenv("BENCH_NETNS_PREFIX"); p != "" {
		return p
	}
	return "nk-bench-"
}
