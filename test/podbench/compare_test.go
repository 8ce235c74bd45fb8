// Package podbench measures pod start-up, the upstream kubelet against nodekeeper, on a
// real cluster and containerd (make bench-pods). It prints figures; it is not a
// pass/fail timing test.
package podbench

// TestPodStartupCompare is one column of `make bench-pods`: hack/bench-pods.sh brings up
// one cluster (hack/run.sh), then runs the upstream kubelet and nodekeeper one after the
// other as its node, on the same API server and containerd, and calls this test once per
// agent (NK_BENCH_AGENT) right after starting it; a last call (NK_BENCH_REPORT) prints the
// two columns side by side.
//
// Every time is read from outside the agent, the same way for both: the client's clock
// at the API write and when its watch sees the pod Ready (or gone), and containerd's own
// nanosecond timestamps of the pod's sandbox and container (CRI PodSandboxStatus /
// ContainerStatus), so each pod's start splits into phases:
//
//	API → sandbox     create call → sandbox created_at: watch delivery, admission, the
//	                  agent's planning, the start of RunPodSandbox
//	sandbox → created sandbox → container created_at: RunPodSandbox (network), image
//	                  check, CreateContainer
//	created → started container created_at → started_at: StartContainer
//	started → Ready   started_at → the watch sees Ready=True: the agent noticing the
//	                  start, the status patch, the watch back
//
// For nodekeeper the agent's own timeline of each pod (internal/podstart, logged at -v=2
// as "Pod start timeline"; NK_BENCH_AGENT_LOG) splits it further: watch seen → queued →
// plan → volumes → sandbox → image → create → start → status → Ready patch accepted.

import (
	"context"
	"encoding/json"
	"fmt"
	"os"
	"regexp"
	"sort"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"
	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/watch"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/tools/clientcmd"
	runtimeapi "k8s.io/cri-api/pkg/apis/runtime/v1"

	"github.com/nodekeeper/nodekeeper/internal/podstart"
)

// agentResult is one agent's figures (JSON between the calls).
type agentResult struct {
	Agent      string
	StartReady float64 // s, agent start → node Ready
	Burst      []podTimes
	Single     []podTimes
	DeleteGone []float64 // s, delete call → watch DELETED (final status written before)
	RSSKiB     int64     // VmHWM
	Load       string
}

type podTimes struct {
	Name                                     string
	Create, Sandbox, Created, Started, Ready time.Time
	// Agent is the agent's own timeline of the start, phase → seconds (nodekeeper only)
	Agent map[string]float64 `json:",omitempty"`
}

func (p podTimes) total() float64 { return p.Ready.Sub(p.Create).Seconds() }

func TestPodStartupCompare(t *testing.T) {
	if f := os.Getenv("NK_BENCH_REPORT"); f != "" {
		report(t, strings.Split(f, ","))
		return
	}
	if ep := os.Getenv("NK_BENCH_CLEAN_CRI"); ep != "" {
		removeSandboxes(t, ep)
		return
	}
	kc := os.Getenv("NK_BENCH_KUBECONFIG")
	if kc == "" {
		t.Skip("benchmark: run with `make bench-pods` (hack/bench-pods.sh)")
	}
	agent, node, out := os.Getenv("NK_BENCH_AGENT"), os.Getenv("NK_BENCH_NODE"), os.Getenv("NK_BENCH_OUT")
	t0ns, _ := strconv.ParseInt(os.Getenv("NK_BENCH_T0"), 10, 64)
	burst, singles := 30, 10
	if v, err := strconv.Atoi(os.Getenv("NK_BENCH_PODS")); err == nil && v > 0 {
		burst = v
	}
	cfg, err := clientcmd.BuildConfigFromFlags("", kc)
	if err != nil {
		t.Fatal(err)
	}
	cfg.QPS, cfg.Burst = 200, 400
	cs := kubernetes.NewForConfigOrDie(cfg)
	conn, err := grpc.NewClient("unix://"+strings.TrimPrefix(os.Getenv("NK_BENCH_CRI"), "unix://"),
		grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	rt := runtimeapi.NewRuntimeServiceClient(conn)
	ctx, cancel := context.WithTimeout(context.Background(), 15*time.Minute)
	defer cancel()
	res := agentResult{Agent: agent}

	// agent start → node Ready
	for {
		n, err := cs.CoreV1().Nodes().Get(ctx, node, metav1.GetOptions{})
		if err == nil && nodeReady(n) {
			res.StartReady = time.Since(time.Unix(0, t0ns)).Seconds()
			break
		}
		if ctx.Err() != nil {
			t.Fatalf("node %s never Ready", node)
		}
		time.Sleep(20 * time.Millisecond)
	}
	ns := "bench-" + agent
	_ = cs.CoreV1().Namespaces().Delete(ctx, ns, metav1.DeleteOptions{})
	for {
		if _, err := cs.CoreV1().Namespaces().Get(ctx, ns, metav1.GetOptions{}); apierrors.IsNotFound(err) {
			break
		}
		time.Sleep(200 * time.Millisecond)
	}
	if _, err := cs.CoreV1().Namespaces().Create(ctx, &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: ns}}, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	// the default ServiceAccount is needed by admission; wait for it
	for {
		if _, err := cs.CoreV1().ServiceAccounts(ns).Get(ctx, "default", metav1.GetOptions{}); err == nil {
			break
		}
		time.Sleep(100 * time.Millisecond)
	}
	w := newPodWatch(ctx, t, cs, ns)
	grace := int64(1)
	pod := func(name string) *corev1.Pod {
		return &corev1.Pod{ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: name},
			Spec: corev1.PodSpec{NodeName: node, TerminationGracePeriodSeconds: &grace,
				Containers: []corev1.Container{{Name: "c", Image: "docker.io/library/busybox:local",
					ImagePullPolicy: corev1.PullIfNotPresent, Command: []string{"sleep", "3600"}}}}}
	}
	create := func(name string) time.Time {
		at := time.Now()
		if _, err := cs.CoreV1().Pods(ns).Create(ctx, pod(name), metav1.CreateOptions{}); err != nil {
			t.Fatal(err)
		}
		return at
	}
	// one pod at a time
	for i := 0; i < singles; i++ {
		name := fmt.Sprintf("single-%02d", i)
		at := create(name)
		res.Single = append(res.Single, podTimes{Name: name, Create: at, Ready: w.waitReady(name)})
	}
	// a burst
	var mu sync.Mutex
	created := map[string]time.Time{}
	var wg sync.WaitGroup
	for i := 0; i < burst; i++ {
		wg.Add(1)
		go func(name string) {
			defer wg.Done()
			at := create(name)
			mu.Lock()
			created[name] = at
			mu.Unlock()
		}(fmt.Sprintf("burst-%02d", i))
	}
	wg.Wait()
	for name, at := range created {
		res.Burst = append(res.Burst, podTimes{Name: name, Create: at, Ready: w.waitReady(name)})
	}
	// containerd's timestamps for each pod
	fill := func(ps []podTimes) {
		for i := range ps {
			p := &ps[i]
			sbs, err := rt.ListPodSandbox(ctx, &runtimeapi.ListPodSandboxRequest{Filter: &runtimeapi.PodSandboxFilter{
				LabelSelector: map[string]string{"io.kubernetes.pod.namespace": ns, "io.kubernetes.pod.name": p.Name}}})
			if err != nil || len(sbs.Items) == 0 {
				t.Fatalf("pod %s: no sandbox in containerd: %v", p.Name, err)
			}
			sb := sbs.Items[0]
			for _, s := range sbs.Items { // the first one, should there be more
				if s.CreatedAt < sb.CreatedAt {
					sb = s
				}
			}
			p.Sandbox = time.Unix(0, sb.CreatedAt)
			cl, err := rt.ListContainers(ctx, &runtimeapi.ListContainersRequest{Filter: &runtimeapi.ContainerFilter{PodSandboxId: sb.Id}})
			if err != nil || len(cl.Containers) == 0 {
				t.Fatalf("pod %s: no container in containerd: %v", p.Name, err)
			}
			c := cl.Containers[0]
			st, err := rt.ContainerStatus(ctx, &runtimeapi.ContainerStatusRequest{ContainerId: c.Id})
			if err != nil {
				t.Fatal(err)
			}
			p.Created, p.Started = time.Unix(0, st.Status.CreatedAt), time.Unix(0, st.Status.StartedAt)
		}
	}
	fill(res.Single)
	fill(res.Burst)
	if f := os.Getenv("NK_BENCH_AGENT_LOG"); f != "" && agent == "nodekeeper" {
		timelines(t, f, ns, res.Single, res.Burst)
	}
	// delete → gone
	var names []string
	for _, p := range append(append([]podTimes{}, res.Single...), res.Burst...) {
		names = append(names, p.Name)
	}
	deleted := map[string]time.Time{}
	for _, name := range names {
		deleted[name] = time.Now()
		if err := cs.CoreV1().Pods(ns).Delete(ctx, name, metav1.DeleteOptions{}); err != nil {
			t.Fatal(err)
		}
	}
	for _, name := range names {
		res.DeleteGone = append(res.DeleteGone, w.waitGone(name).Sub(deleted[name]).Seconds())
	}
	// peak RSS
	if pid := os.Getenv("NK_BENCH_PID"); pid != "" {
		if b, err := os.ReadFile("/proc/" + pid + "/status"); err == nil {
			for _, l := range strings.Split(string(b), "\n") {
				if f := strings.Fields(l); len(f) >= 2 && f[0] == "VmHWM:" {
					res.RSSKiB, _ = strconv.ParseInt(f[1], 10, 64)
				}
			}
		}
	}
	if b, err := os.ReadFile("/proc/loadavg"); err == nil {
		res.Load = strings.Join(strings.Fields(string(b))[:3], " ")
	}
	b, _ := json.MarshalIndent(res, "", " ")
	if err := os.WriteFile(out, b, 0o644); err != nil {
		t.Fatal(err)
	}
	fmt.Printf("%s: start → Ready %.2fs, single p50 %.3fs, burst p50 %.3fs, RSS %d MiB\n", agent, res.StartReady,
		pct(totals(res.Single), 0.5), pct(totals(res.Burst), 0.5), res.RSSKiB/1024)
}

func nodeReady(n *corev1.Node) bool {
	for _, c := range n.Status.Conditions {
		if c.Type == corev1.NodeReady {
			return c.Status == corev1.ConditionTrue
		}
	}
	return false
}

// podWatch records when the watch first sees each pod Ready and when it sees it deleted.
type podWatch struct {
	mu    sync.Mutex
	cond  *sync.Cond
	ready map[string]time.Time
	gone  map[string]time.Time
}

func newPodWatch(ctx context.Context, t *testing.T, cs kubernetes.Interface, ns string) *podWatch {
	w := &podWatch{ready: map[string]time.Time{}, gone: map[string]time.Time{}}
	w.cond = sync.NewCond(&w.mu)
	wi, err := cs.CoreV1().Pods(ns).Watch(ctx, metav1.ListOptions{})
	if err != nil {
		t.Fatal(err)
	}
	go func() {
		for ev := range wi.ResultChan() {
			now := time.Now()
			p, ok := ev.Object.(*corev1.Pod)
			if !ok {
				continue
			}
			w.mu.Lock()
			if ev.Type == watch.Deleted {
				w.gone[p.Name] = now
			} else if _, seen := w.ready[p.Name]; !seen {
				for _, c := range p.Status.Conditions {
					if c.Type == corev1.PodReady && c.Status == corev1.ConditionTrue {
						w.ready[p.Name] = now
					}
				}
			}
			w.cond.Broadcast()
			w.mu.Unlock()
		}
	}()
	go func() { <-ctx.Done(); w.mu.Lock(); w.cond.Broadcast(); w.mu.Unlock() }()
	return w
}

func (w *podWatch) wait(m map[string]time.Time, name string) time.Time {
	w.mu.Lock()
	defer w.mu.Unlock()
	deadline := time.Now().Add(5 * time.Minute)
	for {
		if at, ok := m[name]; ok {
			return at
		}
		if time.Now().After(deadline) {
			panic("pod " + name + ": timed out")
		}
		w.cond.Wait()
	}
}

func (w *podWatch) waitReady(name string) time.Time { return w.wait(w.ready, name) }
func (w *podWatch) waitGone(name string) time.Time  { return w.wait(w.gone, name) }

func totals(ps []podTimes) []float64 {
	var out []float64
	for _, p := range ps {
		out = append(out, p.total())
	}
	return out
}

func pct(xs []float64, q float64) float64 {
	if len(xs) == 0 {
		return 0
	}
	s := append([]float64{}, xs...)
	sort.Float64s(s)
	return s[int(float64(len(s)-1)*q+0.5)]
}

// phases are the four parts of a pod's start (see the file comment).
var phases = []struct {
	name string
	d    func(p podTimes) time.Duration
}{
	{"API → sandbox", func(p podTimes) time.Duration { return p.Sandbox.Sub(p.Create) }},
	{"sandbox → container created", func(p podTimes) time.Duration { return p.Created.Sub(p.Sandbox) }},
	{"created → started", func(p podTimes) time.Duration { return p.Started.Sub(p.Created) }},
	{"started → Ready seen", func(p podTimes) time.Duration { return p.Ready.Sub(p.Started) }},
}

func report(t *testing.T, files []string) {
	var rs []agentResult
	for _, f := range files {
		b, err := os.ReadFile(f)
		if err != nil {
			t.Fatal(err)
		}
		var r agentResult
		if err := json.Unmarshal(b, &r); err != nil {
			t.Fatal(err)
		}
		rs = append(rs, r)
	}
	if len(rs) != 2 {
		t.Fatalf("want two result files (the kubelet's, then nodekeeper's), got %d", len(rs))
	}
	kl, nk := rs[0], rs[1]
	ms := func(s float64) string { return fmt.Sprintf("%.3f s", s) }
	ratio := func(a, b float64) string {
		if b == 0 {
			return "–"
		}
		return fmt.Sprintf("%.2f×", a/b)
	}
	row := func(what string, k, n float64) {
		fmt.Printf("| %s | %s | %s | %s |\n", what, ms(k), ms(n), ratio(n, k))
	}
	fmt.Printf("\n## Pod start-up: upstream kubelet v1.37.2 vs nodekeeper, one after the other on the same API server and containerd (%s)\n\n", time.Now().Format("2006-01-02 15:04"))
	fmt.Printf("load average: kubelet run %s, nodekeeper run %s. Times from the client's clock (API write, watch) and containerd's (sandbox/container created and started).\n\n", kl.Load, nk.Load)
	fmt.Println("| figure | upstream kubelet | nodekeeper | nk / kubelet |")
	fmt.Println("|---|---:|---:|---:|")
	row("agent start → node Ready", kl.StartReady, nk.StartReady)
	for _, q := range []float64{0.5, 0.9, 0.99} {
		row(fmt.Sprintf("%d pods at once, create → Ready p%d", len(kl.Burst), int(q*100)), pct(totals(kl.Burst), q), pct(totals(nk.Burst), q))
	}
	for _, q := range []float64{0.5, 0.9} {
		row(fmt.Sprintf("one pod at a time (×%d), create → Ready p%d", len(kl.Single), int(q*100)), pct(totals(kl.Single), q), pct(totals(nk.Single), q))
	}
	for _, q := range []float64{0.5, 0.9} {
		row(fmt.Sprintf("delete → gone p%d (grace 1 s)", int(q*100)), pct(kl.DeleteGone, q), pct(nk.DeleteGone, q))
	}
	fmt.Printf("| peak RSS | %d MiB | %d MiB | %s |\n", kl.RSSKiB/1024, nk.RSSKiB/1024, ratio(float64(nk.RSSKiB), float64(kl.RSSKiB)))
	fmt.Println("\nPer phase, p50 / p90 (s):")
	fmt.Println("\n| phase | kubelet single | nodekeeper single | kubelet burst | nodekeeper burst |")
	fmt.Println("|---|---:|---:|---:|---:|")
	for _, ph := range phases {
		col := func(ps []podTimes) string {
			var xs []float64
			for _, p := range ps {
				xs = append(xs, ph.d(p).Seconds())
			}
			return fmt.Sprintf("%.3f / %.3f", pct(xs, 0.5), pct(xs, 0.9))
		}
		fmt.Printf("| %s | %s | %s | %s | %s |\n", ph.name, col(kl.Single), col(nk.Single), col(kl.Burst), col(nk.Burst))
	}
	agentPhases(nk)
	fmt.Println()
}

// timelineLine is the agent's "Pod start timeline" log line (klog text format).
var timelineLine = regexp.MustCompile(`"Pod start timeline".* pod="([^"]+)".* timeline="([^"]+)"`)

// timelines fills each pod's Agent phases from the agent's log (the last line for a pod
// wins: a pod name is used once per run).
func timelines(t *testing.T, file, ns string, pss ...[]podTimes) {
	b, err := os.ReadFile(file)
	if err != nil {
		t.Fatalf("agent log: %v", err)
	}
	byName := map[string]map[string]float64{}
	for _, l := range strings.Split(string(b), "\n") {
		m := timelineLine.FindStringSubmatch(l)
		if m == nil || !strings.HasPrefix(m[1], ns+"/") {
			continue
		}
		ph, err := podstart.Parse(m[2])
		if err != nil {
			t.Fatalf("agent log line %q: %v", l, err)
		}
		secs := map[string]float64{}
		for k, d := range ph {
			secs[k] = d.Seconds()
		}
		byName[strings.TrimPrefix(m[1], ns+"/")] = secs
	}
	missing := 0
	for _, ps := range pss {
		for i := range ps {
			if ps[i].Agent = byName[ps[i].Name]; ps[i].Agent == nil {
				missing++
			}
		}
	}
	if missing > 0 {
		fmt.Printf("agent log %s: no start timeline for %d pods (the agent runs below -v=2?)\n", file, missing)
	}
}

// agentPhases prints the agent's own timeline, per phase p50 / p90 (ms).
func agentPhases(r agentResult) {
	var rows []string
	for s := podstart.Synced; s <= podstart.Ready; s++ {
		rows = append(rows, s.String())
	}
	rows = append(rows, "total")
	col := func(ps []podTimes, phase string) string {
		var xs []float64
		for _, p := range ps {
			if p.Agent != nil {
				xs = append(xs, p.Agent[phase]*1000)
			}
		}
		if len(xs) == 0 {
			return "–"
		}
		return fmt.Sprintf("%.1f / %.1f", pct(xs, 0.5), pct(xs, 0.9))
	}
	if col(r.Single, "total") == "–" && col(r.Burst, "total") == "–" {
		return
	}
	fmt.Printf("\n%s's own timeline of each start (agent log, watch seen → Ready patch accepted), p50 / p90 (ms):\n\n", r.Agent)
	fmt.Println("| phase (ends with) | single | burst |")
	fmt.Println("|---|---:|---:|")
	for _, ph := range rows {
		fmt.Printf("| %s | %s | %s |\n", ph, col(r.Single, ph), col(r.Burst, ph))
	}
}

// removeSandboxes stops and removes every pod sandbox of the benchmark's containerd
// (what the previous agent left: a kubelet leaves them to its garbage collector).
func removeSandboxes(t *testing.T, ep string) {
	conn, err := grpc.NewClient("unix://"+strings.TrimPrefix(ep, "unix://"), grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	rt := runtimeapi.NewRuntimeServiceClient(conn)
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
	defer cancel()
	l, err := rt.ListPodSandbox(ctx, &runtimeapi.ListPodSandboxRequest{})
	if err != nil {
		t.Fatal(err)
	}
	for _, sb := range l.Items {
		if _, err := rt.StopPodSandbox(ctx, &runtimeapi.StopPodSandboxRequest{PodSandboxId: sb.Id}); err != nil {
			t.Errorf("stop sandbox %s: %v", sb.Id, err)
		}
		if _, err := rt.RemovePodSandbox(ctx, &runtimeapi.RemovePodSandboxRequest{PodSandboxId: sb.Id}); err != nil {
			t.Errorf("remove sandbox %s: %v", sb.Id, err)
		}
	}
	fmt.Printf("removed %d sandboxes\n", len(l.Items))
}

// The agent's log line as klog's text format writes it (controller-runtime's keys first).
func TestTimelineLineMatchesTheAgentLog(t *testing.T) {
	l := `I1202 15:01:02.345678    4242 pod_controller.go:301] "Pod start timeline" controller="pods" controllerGroup="" controllerKind="Pod" Pod="bench-nodekeeper/single-01" namespace="bench-nodekeeper" name="single-01" reconcileID="x" pod="bench-nodekeeper/single-01" timeline="queued=1.2ms plan=100µs sandbox=120ms total=130ms"`
	m := timelineLine.FindStringSubmatch(l)
	if m == nil || m[1] != "bench-nodekeeper/single-01" {
		t.Fatalf("no match: %q", m)
	}
	ph, err := podstart.Parse(m[2])
	if err != nil || ph["sandbox"] != 120*time.Millisecond || ph["total"] != 130*time.Millisecond {
		t.Errorf("parsed %v, %v", ph, err)
	}
}
