// Package fault is the reliability suite (issue 16): a whole local cluster started by
// hack/run.sh as `make run` does (etcd, kube-apiserver, controller-manager, scheduler,
// containerd and nodekeeper in a network namespace of its own), into which faults are
// injected — the agent killed and restarted, containerd and the API server stopped, the
// agent's kernel rules tampered with — while a client counts failed requests through a
// Service. Every case prints its figure (and appends it to $NK_CACHE/flt/figures.txt).
//
// NK_FAULT_ALT=1 runs it on a second set of names and addresses (see clusterEnv).
//
// It needs root. `make test` runs the short cases (a few minutes); `make fault` adds the
// long ones (60 s outages, churn) with NK_FAULT_LONG=1. NK_FAULT_REUSE=1 keeps the
// cluster between runs (for working on the suite).
package fault

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	. "github.com/onsi/ginkgo/v2"
	. "github.com/onsi/gomega"
	runtimeapi "k8s.io/cri-api/pkg/apis/runtime/v1"

	"github.com/nodekeeper/nodekeeper/internal/netnstest"
	"github.com/nodekeeper/nodekeeper/runtime/cri"
)

// The cluster's own names and addresses: none collide with `make run`'s or the other suites'.
// NK_FAULT_ALT=1 selects a second set (netns nk-flt2, 198.18.96.0/30, pod range
// 10.250.0.0/24, state under $NK_CACHE/flt2), so that the suite can run beside a run of it
// with the default set (CI's, a developer's) on the same machine.
var clusterEnv = map[string]string{
	"NK_NETNS": "nk-flt", "NK_HOST_IF": "nkf-host0", "NK_NODE_IF": "nkf-node0",
	"NK_HOST_IP": "198.18.93.1", "NK_NODE_IP": "198.18.93.2", "NK_NODE_NAME": "nk-flt",
	"NK_APISERVER_PORT": "6493", "NK_ETCD_PORT": "23893", "NK_KCM_PORT": "10295", "NK_SCHED_PORT": "10296",
	"NK_CNI_BRIDGE": "nkflt0", "NK_CLUSTER_CIDR": "10.249.0.0/16", "NK_POD_CIDR": "10.249.0.0/24",
	// a short periodic sync, so that "repaired within one sync period" is quick to see
	"NK_AGENT_CONFIG": "proxySyncPeriod: " + syncPeriod.String(),
}

var altClusterEnv = map[string]string{
	"NK_NETNS": "nk-flt2", "NK_HOST_IF": "nkf2-host0", "NK_NODE_IF": "nkf2-node0",
	"NK_HOST_IP": "198.18.96.1", "NK_NODE_IP": "198.18.96.2", "NK_NODE_NAME": "nk-flt2",
	"NK_APISERVER_PORT": "6496", "NK_ETCD_PORT": "23896", "NK_KCM_PORT": "10299", "NK_SCHED_PORT": "10300",
	"NK_CNI_BRIDGE": "nkflt2", "NK_CLUSTER_CIDR": "10.250.0.0/16", "NK_POD_CIDR": "10.250.0.0/24",
	"NK_AGENT_CONFIG": "proxySyncPeriod: " + syncPeriod.String(),
}

const syncPeriod = 10 * time.Second

var (
	netns, node, nodeIP = "nk-flt", "nk-flt", "198.18.93.2"
	// stateName is the folder under $NK_CACHE of the cluster's state and figures
	stateName = "flt"
)

func init() {
	if os.Getenv("NK_FAULT_ALT") == "1" {
		clusterEnv = altClusterEnv
		netns, node, nodeIP = clusterEnv["NK_NETNS"], clusterEnv["NK_NODE_NAME"], clusterEnv["NK_NODE_IP"]
		stateName = "flt2"
	}
	nodePortURL = "http://" + nodeIP + ":30093/"
}

var (
	root, runDir, criCache, kubeconfig, kubectlBin string
	long                                           = os.Getenv("NK_FAULT_LONG") == "1"
)

func TestFault(t *testing.T) {
	RegisterFailHandler(Fail)
	RunSpecs(t, "Fault Suite")
}

func cacheDir() string {
	if c := os.Getenv("NK_CACHE"); c != "" {
		return c
	}
	home, _ := os.UserHomeDir()
	return filepath.Join(home, ".cache", "nodekeeper")
}

func scriptEnv() []string {
	env := os.Environ()
	for k, v := range clusterEnv {
		env = append(env, k+"="+v)
	}
	return append(env, "NK_RUN_DIR="+runDir, "NK_CRI_CACHE="+criCache)
}

func runScript(args ...string) {
	ExpectWithOffset(1, tryScript(args...)).To(Succeed(), "hack/run.sh %v", args)
}

func tryScript(args ...string) error {
	cmd := exec.Command(filepath.Join(root, "hack", "run.sh"), args...)
	cmd.Env = scriptEnv()
	cmd.Stdout, cmd.Stderr = GinkgoWriter, GinkgoWriter
	return cmd.Run()
}

func sh(args ...string) string {
	out, err := exec.Command(args[0], args[1:]...).CombinedOutput()
	Expect(err).NotTo(HaveOccurred(), "%v: %s", args, out)
	return string(out)
}

// inNode runs a command in the node's network namespace.
func inNode(args ...string) string {
	return sh(append([]string{"ip", "netns", "exec", netns}, args...)...)
}

func kubectl(args ...string) (string, error) {
	cmd := exec.Command(kubectlBin, append([]string{"--kubeconfig", kubeconfig, "--request-timeout=20s"}, args...)...)
	var out, errb bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &errb
	if err := cmd.Run(); err != nil {
		return out.String(), fmt.Errorf("kubectl %v: %w: %s", args, err, errb.String())
	}
	return out.String(), nil
}

func mustKubectl(args ...string) string {
	out, err := kubectl(args...)
	ExpectWithOffset(1, err).NotTo(HaveOccurred())
	return out
}

// figure records a case's measured figure: in the report, on the output and in
// $NK_CACHE/flt/figures.txt (what the README's Reliability table quotes).
func figure(name, format string, args ...any) {
	line := fmt.Sprintf("%s: %s", name, fmt.Sprintf(format, args...))
	AddReportEntry(name, line)
	fmt.Fprintf(GinkgoWriter, "FIGURE %s\n", line)
	fmt.Printf("FIGURE %s\n", line)
	if f, err := os.OpenFile(filepath.Join(cacheDir(), stateName, "figures.txt"), os.O_APPEND|os.O_CREATE|os.O_WRONLY, 0o644); err == nil {
		fmt.Fprintf(f, "%s %s\n", time.Now().UTC().Format(time.RFC3339), line)
		f.Close()
	}
}

var _ = BeforeSuite(func() {
	if os.Geteuid() != 0 {
		Skip("the fault suite needs root (network namespaces, containerd)")
	}
	wd, err := os.Getwd()
	Expect(err).NotTo(HaveOccurred())
	root = filepath.Join(wd, "..", "..")
	criCache = filepath.Join(cacheDir(), stateName)
	runDir = filepath.Join(criCache, "run")
	kubeconfig = filepath.Join(runDir, "admin.kubeconfig")
	Expect(os.MkdirAll(criCache, 0o755)).To(Succeed())
	if os.Getenv("NK_FAULT_REUSE") != "1" {
		runScript("down")                          // leftovers of an interrupted run
		Expect(os.RemoveAll(runDir)).To(Succeed()) // a fresh cluster each time
		DeferCleanup(func() { runScript("down") })
	}
	if err := tryScript("up"); err != nil {
		// on a loaded machine a daemon can miss run.sh's start-up wait (or find the port
		// of a predecessor not yet released): up again starts only what is not running
		fmt.Fprintf(GinkgoWriter, "hack/run.sh up failed (%v): once more\n", err)
		runScript("up")
	}
	bins, err := exec.Command(filepath.Join(root, "hack", "k8s-bins.sh")).Output()
	Expect(err).NotTo(HaveOccurred())
	kubectlBin = filepath.Join(strings.TrimSpace(string(bins)), "kubectl")
	Eventually(func() (string, error) {
		return kubectl("get", "node", node, "-o", `jsonpath={.status.conditions[?(@.type=="Ready")].status}`)
	}, 2*time.Minute, time.Second).Should(Equal("True"))
	Eventually(func() error { _, err := kubectl("get", "serviceaccount", "default", "-n", "default"); return err },
		time.Minute, time.Second).Should(Succeed())
})

// ---------------------------------------------------------------- processes

func pidFile(name string) string { return filepath.Join(runDir, "pids", name+".pid") }

func readPID(file string) int {
	b, err := os.ReadFile(file)
	Expect(err).NotTo(HaveOccurred())
	pid, err := strconv.Atoi(strings.TrimSpace(string(b)))
	Expect(err).NotTo(HaveOccurred())
	return pid
}

// alive: the process exists and is not a zombie.
func alive(pid int) bool {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		return false
	}
	s := string(b)
	i := strings.LastIndexByte(s, ')')
	return i > 0 && len(s) > i+2 && s[i+2] != 'Z'
}

// cpuTicks is a process's user+system CPU time in clock ticks.
func cpuTicks(pid int) int64 {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	Expect(err).NotTo(HaveOccurred())
	s := string(b)
	f := strings.Fields(s[strings.LastIndexByte(s, ')')+2:])
	u, _ := strconv.ParseInt(f[11], 10, 64)
	st, _ := strconv.ParseInt(f[12], 10, 64)
	return u + st
}

// stopDaemon stops a daemon as hack/run.sh does: SIGTERM, and SIGKILL after 10 s
// (kube-apiserver's graceful shutdown can take longer).
func stopDaemon(pid int) {
	_ = syscall.Kill(pid, syscall.SIGTERM)
	for end := time.Now().Add(10 * time.Second); alive(pid) && time.Now().Before(end); {
		time.Sleep(50 * time.Millisecond)
	}
	if alive(pid) {
		signalAndWait(pid, syscall.SIGKILL, 10*time.Second)
	}
}

// signalAndWait sends sig to pid and waits until it has exited.
func signalAndWait(pid int, sig syscall.Signal, within time.Duration) time.Duration {
	t0 := time.Now()
	Expect(syscall.Kill(pid, sig)).To(Succeed())
	Eventually(func() bool { return alive(pid) }, within, 20*time.Millisecond).Should(BeFalse(), "pid %d did not exit after %v", pid, sig)
	return time.Since(t0)
}

var agentMu sync.Mutex

// startAgent starts nodekeeper as hack/run.sh does (in the node namespace, its own
// session, the same configuration and log) and records its PID where `run.sh down`
// finds it.
func startAgent() int { return startAgentWith(filepath.Join(runDir, "agent.yaml")) }

// startAgentWith starts the agent with another configuration file.
func startAgentWith(config string) int {
	agentMu.Lock()
	defer agentMu.Unlock()
	logf, err := os.OpenFile(filepath.Join(runDir, "logs", "nodekeeper.log"), os.O_APPEND|os.O_CREATE|os.O_WRONLY, 0o644)
	Expect(err).NotTo(HaveOccurred())
	defer logf.Close()
	cmd := exec.Command("nsenter", "--net=/run/netns/"+netns, filepath.Join(root, "bin", "nodekeeper"),
		"--config", config, "--kubeconfig", filepath.Join(runDir, "node.kubeconfig"))
	cmd.Stdout, cmd.Stderr = logf, logf
	cmd.SysProcAttr = &syscall.SysProcAttr{Setsid: true}
	Expect(cmd.Start()).To(Succeed())
	go func() { _ = cmd.Wait() }() // reaped here, so that it never lingers as a zombie
	Expect(os.WriteFile(pidFile("nodekeeper"), []byte(strconv.Itoa(cmd.Process.Pid)+"\n"), 0o644)).To(Succeed())
	return cmd.Process.Pid
}

// agentHealthy: the restarted agent answers /healthz (in the node namespace).
func agentHealthy() bool {
	body, err := netnstest.Get(netns, "http://127.0.0.1:10248/healthz")
	return err == nil && body == "ok"
}

// ---------------------------------------------------------------- runtime

func runtimeClient() *cri.Remote {
	rt, err := cri.Dial(cri.RemoteOptions{Endpoint: "unix://" + filepath.Join(criCache, "cri", "run", "containerd.sock")})
	Expect(err).NotTo(HaveOccurred())
	return rt
}

// runtimeState is what the runtime runs for the pods of a label: sandbox and container
// IDs per pod UID, and container processes' PIDs are not visible through CRI, so IDs
// stand for them (a restarted container has a new ID).
type runtimeState struct {
	Sandboxes  map[string][]string // pod UID -> ready sandbox IDs
	Containers map[string][]string // pod UID -> running container IDs
}

func observeRuntime(uids []string) runtimeState {
	rt := runtimeClient()
	defer rt.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	st := runtimeState{Sandboxes: map[string][]string{}, Containers: map[string][]string{}}
	for _, uid := range uids {
		sel := map[string]string{"io.kubernetes.pod.uid": uid}
		sbs, err := rt.ListPodSandbox(ctx, &runtimeapi.PodSandboxFilter{LabelSelector: sel})
		Expect(err).NotTo(HaveOccurred())
		for _, s := range sbs {
			if s.State == runtimeapi.PodSandboxState_SANDBOX_READY {
				st.Sandboxes[uid] = append(st.Sandboxes[uid], s.Id)
			}
		}
		cs, err := rt.ListContainers(ctx, &runtimeapi.ContainerFilter{LabelSelector: sel})
		Expect(err).NotTo(HaveOccurred())
		for _, c := range cs {
			if c.State == runtimeapi.ContainerState_CONTAINER_RUNNING {
				st.Containers[uid] = append(st.Containers[uid], c.Id)
			}
		}
	}
	return st
}

// ---------------------------------------------------------------- API objects

type podInfo struct {
	Name, UID string
	Restarts  int32
	Ready     bool
	Phase     string
}

func podsOf(selector string) []podInfo {
	var pl struct {
		Items []struct {
			Metadata struct{ Name, UID string }
			Status   struct {
				Phase             string
				Conditions        []struct{ Type, Status string }
				ContainerStatuses []struct{ RestartCount int32 }
			}
		}
	}
	Expect(json.Unmarshal([]byte(mustKubectl("get", "pods", "-l", selector, "-o", "json")), &pl)).To(Succeed())
	var out []podInfo
	for _, p := range pl.Items {
		pi := podInfo{Name: p.Metadata.Name, UID: p.Metadata.UID, Phase: p.Status.Phase}
		for _, c := range p.Status.ContainerStatuses {
			pi.Restarts += c.RestartCount
		}
		for _, c := range p.Status.Conditions {
			if c.Type == "Ready" {
				pi.Ready = c.Status == "True"
			}
		}
		out = append(out, pi)
	}
	return out
}

func uidsOf(ps []podInfo) []string {
	var u []string
	for _, p := range ps {
		u = append(u, p.UID)
	}
	return u
}

func restartsOf(ps []podInfo) map[string]int32 {
	m := map[string]int32{}
	for _, p := range ps {
		m[p.Name] = p.Restarts
	}
	return m
}

// applyManifest applies YAML with kubectl; the objects are deleted when the spec (or
// the container, for BeforeAll) ends.
func applyManifest(manifest string) {
	f := filepath.Join(GinkgoT().TempDir(), "manifest.yaml")
	Expect(os.WriteFile(f, []byte(manifest), 0o644)).To(Succeed())
	mustKubectl("apply", "-f", f)
	DeferCleanup(func() { _, _ = kubectl("delete", "-f", f, "--wait=true", "--timeout=120s") })
}

func nodeReady() (status, message string) {
	out, err := kubectl("get", "node", node, "-o", `jsonpath={.status.conditions[?(@.type=="Ready")].status}|{.status.conditions[?(@.type=="Ready")].message}`)
	if err != nil {
		return "", err.Error()
	}
	s, m, _ := strings.Cut(out, "|")
	return s, m
}

func leaseRenewTime() time.Time {
	out := mustKubectl("get", "lease", "-n", "kube-node-lease", node, "-o", "jsonpath={.spec.renewTime}")
	t, err := time.Parse(time.RFC3339Nano, out)
	Expect(err).NotTo(HaveOccurred(), "renewTime %q", out)
	return t
}
