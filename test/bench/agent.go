package bench

import (
	"fmt"
	"io"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"time"

	"github.com/nodekeeper/nodekeeper/internal/netnstest"
)

// The agents compared.
const (
	AgentKubeProxy  = "kube-proxy"
	AgentNodekeeper = "nodekeeper"
)

// Agents in report order (the reference first).
var Agents = []string{AgentKubeProxy, AgentNodekeeper}

// MetricsAddr is where both agents serve metrics inside their node namespace.
const MetricsAddr = "127.0.0.1:10249"

// AgentOptions configure one agent process.
type AgentOptions struct {
	Agent, Mode string
	Binary      string
	Kubeconfig  string
	Dir         string // work folder: config, logs, iptables symlinks
	SyncPeriod  time.Duration
	// MinSyncPeriod is kube-proxy's nftables/iptables.minSyncPeriod (upstream turns 0
	// into 1 s); nodekeeper has no such setting.
	MinSyncPeriod time.Duration
}

// KubeProxyConfig is the KubeProxyConfiguration the benchmark runs upstream with.
func KubeProxyConfig(o AgentOptions) string {
	mode := "nftables"
	if strings.HasPrefix(o.Mode, "iptables") {
		mode = "iptables"
	}
	return fmt.Sprintf(`apiVersion: kubeproxy.config.k8s.io/v1alpha1
kind: KubeProxyConfiguration
mode: %s
clusterCIDR: %s
hostnameOverride: %s
metricsBindAddress: %s
healthzBindAddress: 127.0.0.1:10256
bindAddressHardFail: false
detectLocalMode: ClusterCIDR
oomScoreAdj: 0
clientConnection:
  kubeconfig: %s
iptables:
  syncPeriod: %s
  minSyncPeriod: %s
nftables:
  syncPeriod: %s
  minSyncPeriod: %s
conntrack:
  maxPerCore: 0
  min: 0
  tcpEstablishedTimeout: 0s
  tcpCloseWaitTimeout: 0s
`, mode, ClusterCIDR, NodeName, MetricsAddr, o.Kubeconfig, o.SyncPeriod, o.MinSyncPeriod, o.SyncPeriod, o.MinSyncPeriod)
}

// NodekeeperConfig is the AgentConfiguration the benchmark runs nodekeeper with (services
// reconciler only; the CRI endpoint is never dialled by it).
func NodekeeperConfig(o AgentOptions) string {
	mode, variant := "nftables", ""
	if strings.HasPrefix(o.Mode, "iptables") {
		mode, variant = "iptables", strings.TrimPrefix(o.Mode, "iptables-")
	}
	return fmt.Sprintf(`apiVersion: nodekeeper.io/v1alpha1
kind: AgentConfiguration
nodeName: %s
nodeIP: %s
containerRuntimeEndpoint: unix://%s
rootDir: %s
proxyMode: %s
iptablesVariant: %q
clusterCIDR: %s
serviceCIDR: %s
proxySyncPeriod: %s
metricsBindAddress: %s
healthzBindAddress: 127.0.0.1:10258
proxyHealthzBindAddress: 127.0.0.1:10256
`, NodeName, NodeIP, filepath.Join(o.Dir, "no-cri.sock"), filepath.Join(o.Dir, "root"), mode, variant,
		ClusterCIDR, ServiceCIDR, o.SyncPeriod, MetricsAddr) + nodekeeperExtra()
}

// nodekeeperExtra is BENCH_NK_CONFIG: more configuration lines for nodekeeper (e.g.
// "enableProfiling: true", to read /debug/pprof/heap on the metrics address).
func nodekeeperExtra() string {
	if v := os.Getenv("BENCH_NK_CONFIG"); v != "" {
		return strings.TrimRight(v, "\n") + "\n"
	}
	return ""
}

// iptablesPath makes a folder whose iptables* commands are the variant's, for
// kube-proxy (which runs plain `iptables`, and on Debian that is iptables-nft).
func iptablesPath(dir, mode string) (string, error) {
	multi := "/usr/sbin/xtables-nft-multi"
	if mode == "iptables-legacy" {
		multi = "/usr/sbin/xtables-legacy-multi"
	}
	if _, err := os.Stat(multi); err != nil {
		return "", fmt.Errorf("%s: %w", multi, err)
	}
	bin := filepath.Join(dir, "iptables-bin")
	if err := os.MkdirAll(bin, 0o755); err != nil {
		return "", err
	}
	for _, n := range []string{"iptables", "iptables-save", "iptables-restore", "ip6tables", "ip6tables-save", "ip6tables-restore"} {
		p := filepath.Join(bin, n)
		_ = os.Remove(p)
		if err := os.Symlink(multi, p); err != nil {
			return "", err
		}
	}
	return bin, nil
}

// Agent is a running agent process.
type Agent struct {
	Cmd   *exec.Cmd
	Start time.Time
	Log   string
	done  chan struct{}
	err   error
	log   *os.File
}

// StartAgent writes the agent's config and starts it in the node namespace with
// `nsenter --net` (which execs it: the PID is the agent's).
func StartAgent(o AgentOptions, netns string) (*Agent, error) {
	if err := os.MkdirAll(o.Dir, 0o755); err != nil {
		return nil, err
	}
	cfg := filepath.Join(o.Dir, "config.yaml")
	env := append(os.Environ(), "XTABLES_LOCKFILE="+filepath.Join(o.Dir, "xtables.lock"))
	var args []string
	switch o.Agent {
	case AgentKubeProxy:
		if err := os.WriteFile(cfg, []byte(KubeProxyConfig(o)), 0o644); err != nil {
			return nil, err
		}
		args = []string{"--config=" + cfg, "--v=1"}
		if strings.HasPrefix(o.Mode, "iptables") {
			bin, err := iptablesPath(o.Dir, o.Mode)
			if err != nil {
				return nil, err
			}
			env = append(env, "PATH="+bin+":"+os.Getenv("PATH"))
		}
	case AgentNodekeeper:
		if err := os.WriteFile(cfg, []byte(NodekeeperConfig(o)), 0o644); err != nil {
			return nil, err
		}
		args = []string{"--config=" + cfg, "--kubeconfig=" + o.Kubeconfig, "--reconcilers=services"}
		// BENCH_NK_ARGS: extra flags for nodekeeper (e.g. -v=2 logs every sync's timings)
		args = append(args, strings.Fields(os.Getenv("BENCH_NK_ARGS"))...)
	default:
		return nil, fmt.Errorf("unknown agent %q", o.Agent)
	}
	logPath := filepath.Join(o.Dir, "agent.log")
	lf, err := os.Create(logPath)
	if err != nil {
		return nil, err
	}
	cmd := exec.Command("nsenter", append([]string{"--net=/run/netns/" + netns, "--", o.Binary}, args...)...)
	cmd.Env = env
	cmd.Stdout, cmd.Stderr = lf, lf
	a := &Agent{Cmd: cmd, Log: logPath, done: make(chan struct{}), log: lf}
	a.Start = time.Now()
	if err := cmd.Start(); err != nil {
		lf.Close()
		return nil, fmt.Errorf("starting %s: %w", o.Agent, err)
	}
	go func() { a.err = cmd.Wait(); lf.Close(); close(a.done) }()
	return a, nil
}

// PID is the agent's process id.
func (a *Agent) PID() int { return a.Cmd.Process.Pid }

// Exited returns an error once the process has ended (nil while it runs).
func (a *Agent) Exited() error {
	select {
	case <-a.done:
		return fmt.Errorf("agent exited: %v (log %s: %s)", a.err, a.Log, tail(a.Log, 600))
	default:
		return nil
	}
}

// Stop ends the agent: SIGTERM, then SIGKILL after 15 s, by its PID only.
func (a *Agent) Stop() {
	select {
	case <-a.done:
		return
	default:
	}
	_ = a.Cmd.Process.Signal(os.Interrupt)
	select {
	case <-a.done:
	case <-time.After(15 * time.Second):
		_ = a.Cmd.Process.Kill()
		<-a.done
	}
}

func tail(path string, n int) string {
	b, _ := os.ReadFile(path)
	if len(b) > n {
		b = b[len(b)-n:]
	}
	return strings.TrimSpace(string(b))
}

// ---- the node namespace ----

// NodeNS creates a node network namespace: loopback and a veth pair that stays inside it
// (eth0 holds NodeIP), no route anywhere. An old one of the same name is removed first.
func NodeNS(name string) error {
	_ = exec.Command("ip", "netns", "del", name).Run()
	steps := [][]string{
		{"ip", "netns", "add", name},
		{"ip", "-n", name, "link", "set", "lo", "up"},
		{"ip", "-n", name, "link", "add", "eth0", "type", "veth", "peer", "name", "eth1"},
		{"ip", "-n", name, "addr", "add", NodeIP + "/24", "dev", "eth0"},
		{"ip", "-n", name, "link", "set", "eth0", "up"},
		{"ip", "-n", name, "link", "set", "eth1", "up"},
		{"ip", "netns", "exec", name, "sysctl", "-qw", "net.ipv4.ip_forward=1"},
	}
	for _, s := range steps {
		if out, err := exec.Command(s[0], s[1:]...).CombinedOutput(); err != nil {
			_ = exec.Command("ip", "netns", "del", name).Run()
			return fmt.Errorf("%s: %w: %s", strings.Join(s, " "), err, strings.TrimSpace(string(out)))
		}
	}
	return nil
}

// DeleteNS removes a namespace made by NodeNS (and with it every rule in it).
func DeleteNS(name string) { _ = exec.Command("ip", "netns", "del", name).Run() }

// Forwarder accepts TCP connections on an address inside a namespace and forwards each
// to target in the harness's own namespace: the agents reach the envtest apiserver
// (bound to the root namespace's loopback) at the same address from inside their node
// namespace, with nothing attached to the root namespace.
type Forwarder struct {
	l  net.Listener
	wg sync.WaitGroup
}

// Forward starts a Forwarder.
func Forward(netns, addr, target string) (*Forwarder, error) {
	l, err := netnstest.InNetns(netns, func() (net.Listener, error) { return net.Listen("tcp", addr) })
	if err != nil {
		return nil, fmt.Errorf("listening on %s in %s: %w", addr, netns, err)
	}
	f := &Forwarder{l: l}
	f.wg.Add(1)
	go func() {
		defer f.wg.Done()
		for {
			c, err := l.Accept()
			if err != nil {
				return
			}
			go func() {
				defer c.Close()
				u, err := net.Dial("tcp", target)
				if err != nil {
					return
				}
				defer u.Close()
				done := make(chan struct{}, 2)
				go func() { _, _ = io.Copy(u, c); done <- struct{}{} }()
				go func() { _, _ = io.Copy(c, u); done <- struct{}{} }()
				<-done
			}()
		}
	}()
	return f, nil
}

// Close stops accepting (open connections end with the namespace or the agent).
func (f *Forwarder) Close() { _ = f.l.Close(); f.wg.Wait() }
