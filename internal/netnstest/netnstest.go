// Package netnstest builds throwaway network topologies for tests that need real
// kernel rules and real traffic. Everything lives in network namespaces it creates, with
// no link to the root namespace, so no packet can leave the machine:
//
//	<p>ext  10.240.0.2 ──veth── 10.240.0.1 <p>node (bridge 10.244.0.1/24)
//	                                         ├─ <p>pod1 10.244.0.11 …
//	                                         └─ <p>cli  10.244.0.20 (a client pod)
//
// Servers and clients are Go sockets opened inside the namespaces (a socket keeps the
// namespace of the thread that created it), so there are no processes to clean up.
package netnstest

import (
	"context"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"runtime"
	"strings"
	"sync"
	"time"

	"golang.org/x/sys/unix"
)

// Topology is a node namespace with pods, a client pod and an outside namespace.
type Topology struct {
	Prefix string
	Node   string // namespace names
	Ext    string
	Client string

	mu      sync.Mutex
	pods    map[string]*Pod
	closers []io.Closer
}

// Pod is a backend namespace.
type Pod struct {
	Name, NS, IP string
}

// Node addresses.
const (
	NodeIP     = "10.240.0.1"
	ExtIP      = "10.240.0.2"
	BridgeIP   = "10.244.0.1"
	ClientIP   = "10.244.0.20"
	PodCIDR    = "10.244.0.0/24"
	ClusterCID = "10.244.0.0/16"
)

func run(args ...string) error {
	out, err := exec.Command(args[0], args[1:]...).CombinedOutput()
	if err != nil {
		return fmt.Errorf("%s: %w: %s", strings.Join(args, " "), err, strings.TrimSpace(string(out)))
	}
	return nil
}

// Available tells why the tests cannot run here ("" when they can).
func Available() string {
	if os.Geteuid() != 0 {
		return "needs root (network namespaces)"
	}
	for _, b := range []string{"ip", "iptables-legacy", "iptables-nft", "conntrack"} {
		if _, err := exec.LookPath(b); err != nil {
			return b + " not installed (hack/net-deps.sh installs it)"
		}
	}
	return ""
}

// NamePrefix is the start of the names of the namespaces tests create: def, or
// $NK_TEST_NETNS_PREFIX when set (so that test runs sharing a machine keep apart).
func NamePrefix(def string) string {
	if p := os.Getenv("NK_TEST_NETNS_PREFIX"); p != "" {
		return p
	}
	return def
}

// Up creates the topology. prefix must be short (interface names are ≤ 15 bytes).
func Up(prefix string) (*Topology, error) {
	t := &Topology{Prefix: prefix, Node: prefix + "node", Ext: prefix + "ext", Client: prefix + "cli", pods: map[string]*Pod{}}
	steps := [][]string{
		{"ip", "netns", "add", t.Node}, {"ip", "netns", "add", t.Ext},
		{"ip", "-n", t.Node, "link", "set", "lo", "up"}, {"ip", "-n", t.Ext, "link", "set", "lo", "up"},
		{"ip", "netns", "exec", t.Node, "sysctl", "-qw", "net.ipv4.ip_forward=1"},
		{"ip", "-n", t.Node, "link", "add", "eth0", "type", "veth", "peer", "name", "eth0", "netns", t.Ext},
		{"ip", "-n", t.Node, "addr", "add", NodeIP + "/24", "dev", "eth0"}, {"ip", "-n", t.Node, "link", "set", "eth0", "up"},
		{"ip", "-n", t.Ext, "addr", "add", ExtIP + "/24", "dev", "eth0"}, {"ip", "-n", t.Ext, "link", "set", "eth0", "up"},
		// the node needs a default route to connect() to ClusterIPs itself; it points at
		// the private outside namespace, never off the machine
		{"ip", "-n", t.Node, "route", "add", "default", "via", ExtIP},
		{"ip", "-n", t.Node, "link", "add", "cbr0", "type", "bridge"},
		{"ip", "-n", t.Node, "addr", "add", BridgeIP + "/24", "dev", "cbr0"}, {"ip", "-n", t.Node, "link", "set", "cbr0", "up"},
	}
	for _, s := range steps {
		if err := run(s...); err != nil {
			t.Down()
			return nil, err
		}
	}
	// pod -> ClusterIP on the same bridge needs bridged traffic to see iptables
	_ = run("ip", "netns", "exec", t.Node, "sysctl", "-qw", "net.bridge.bridge-nf-call-iptables=1")
	if _, err := t.addNS("cli", t.Client, ClientIP); err != nil {
		t.Down()
		return nil, err
	}
	return t, nil
}

func (t *Topology) addNS(short, ns, ip string) (*Pod, error) {
	veth := "v" + short
	steps := [][]string{
		{"ip", "netns", "add", ns}, {"ip", "-n", ns, "link", "set", "lo", "up"},
		{"ip", "-n", t.Node, "link", "add", veth, "type", "veth", "peer", "name", "eth0", "netns", ns},
		{"ip", "-n", t.Node, "link", "set", veth, "master", "cbr0", "up"},
		{"ip", "-n", t.Node, "link", "set", veth, "type", "bridge_slave", "hairpin", "on"},
		{"ip", "-n", ns, "addr", "add", ip + "/24", "dev", "eth0"}, {"ip", "-n", ns, "link", "set", "eth0", "up"},
		{"ip", "-n", ns, "route", "add", "default", "via", BridgeIP},
	}
	for _, s := range steps {
		if err := run(s...); err != nil {
			return nil, err
		}
	}
	return &Pod{Name: short, NS: ns, IP: ip}, nil
}

// AddPod creates a pod namespace with an HTTP server on :8080 and a UDP server on
// :5353, both answering "<name> <client address>".
func (t *Topology) AddPod(name, ip string) (*Pod, error) {
	p, err := t.addNS(name, t.Prefix+name, ip)
	if err != nil {
		return nil, err
	}
	l, err := InNetns(p.NS, func() (net.Listener, error) { return net.Listen("tcp", ":8080") })
	if err != nil {
		return nil, err
	}
	srv := &http.Server{ReadHeaderTimeout: time.Second, Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		fmt.Fprintf(w, "%s %s", name, r.RemoteAddr)
	})}
	go func() { _ = srv.Serve(l) }()
	pc, err := InNetns(p.NS, func() (net.PacketConn, error) { return net.ListenPacket("udp", ":5353") })
	if err != nil {
		_ = srv.Close()
		return nil, err
	}
	go func() {
		buf := make([]byte, 1500)
		for {
			_, from, err := pc.ReadFrom(buf)
			if err != nil {
				return
			}
			_, _ = pc.WriteTo([]byte(name+" "+from.String()), from)
		}
	}()
	t.mu.Lock()
	t.pods[name] = p
	t.closers = append(t.closers, srv, pc)
	t.mu.Unlock()
	return p, nil
}

// Down removes every namespace of the topology (and with them their links and rules).
func (t *Topology) Down() {
	t.mu.Lock()
	for _, c := range t.closers {
		_ = c.Close()
	}
	pods := t.pods
	t.mu.Unlock()
	for _, p := range pods {
		_ = run("ip", "netns", "del", p.NS)
	}
	for _, ns := range []string{t.Client, t.Ext, t.Node} {
		_ = run("ip", "netns", "del", ns)
	}
}

// InNetns runs fn on a fresh OS thread moved into the named namespace; sockets fn
// creates stay in that namespace. The thread is thrown away afterwards.
func InNetns[T any](ns string, fn func() (T, error)) (T, error) {
	type res struct {
		v   T
		err error
	}
	ch := make(chan res, 1)
	go func() {
		runtime.LockOSThread() // never unlocked: the thread dies with the goroutine
		var zero T
		f, err := os.Open("/run/netns/" + ns)
		if err != nil {
			ch <- res{zero, err}
			return
		}
		defer f.Close()
		if err := unix.Setns(int(f.Fd()), unix.CLONE_NEWNET); err != nil {
			ch <- res{zero, fmt.Errorf("setns %s: %w", ns, err)}
			return
		}
		v, err := fn()
		ch <- res{v, err}
	}()
	r := <-ch
	return r.v, r.err
}

// HTTPClient returns a client whose connections start in the namespace, without
// keep-alive (each request is a new connection, so load balancing shows).
func HTTPClient(ns string) *http.Client {
	return &http.Client{Timeout: 2 * time.Second, Transport: &http.Transport{
		DisableKeepAlives: true, Proxy: nil,
		DialContext: func(ctx context.Context, network, addr string) (net.Conn, error) {
			return InNetns(ns, func() (net.Conn, error) {
				d := net.Dialer{Timeout: 2 * time.Second}
				return d.DialContext(ctx, network, addr)
			})
		},
	}}
}

// Get fetches url from the namespace and returns the body.
func Get(ns, url string) (string, error) {
	resp, err := HTTPClient(ns).Get(url)
	if err != nil {
		return "", err
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	return string(b), err
}

// Histogram fetches url n times and counts answers by the first word (the pod name);
// failures count under "ERR".
func Histogram(ns, url string, n int) map[string]int {
	h := map[string]int{}
	for i := 0; i < n; i++ {
		body, err := Get(ns, url)
		if err != nil {
			h["ERR"]++
			continue
		}
		h[strings.Fields(body + " ?")[0]]++
	}
	return h
}

// UDPClient is a UDP socket in a namespace with a fixed local port, like a resolver
// that keeps its source port.
type UDPClient struct{ conn net.PacketConn }

// NewUDPClient opens the socket.
func NewUDPClient(ns string, localPort int) (*UDPClient, error) {
	c, err := InNetns(ns, func() (net.PacketConn, error) { return net.ListenPacket("udp", fmt.Sprintf(":%d", localPort)) })
	if err != nil {
		return nil, err
	}
	return &UDPClient{conn: c}, nil
}

// Ask sends one datagram to addr and waits for the answer's first word.
func (u *UDPClient) Ask(addr string, timeout time.Duration) (string, error) {
	ua, err := net.ResolveUDPAddr("udp", addr)
	if err != nil {
		return "", err
	}
	if _, err := u.conn.WriteTo([]byte("hi"), ua); err != nil {
		return "", err
	}
	_ = u.conn.SetReadDeadline(time.Now().Add(timeout))
	buf := make([]byte, 1500)
	n, _, err := u.conn.ReadFrom(buf)
	if err != nil {
		return "", err
	}
	return strings.Fields(string(buf[:n]) + " ?")[0], nil
}

// Close closes the socket.
func (u *UDPClient) Close() error { return u.conn.Close() }

// Run runs a command inside the namespace (e.g. iptables by hand).
func Run(ns string, args ...string) error {
	return run(append([]string{"ip", "netns", "exec", ns}, args...)...)
}

// RemovePod deletes a pod namespace and stops its servers, as when a pod is gone.
func (t *Topology) RemovePod(name string) error {
	t.mu.Lock()
	p, ok := t.pods[name]
	delete(t.pods, name)
	t.mu.Unlock()
	if !ok {
		return fmt.Errorf("no pod %s", name)
	}
	return run("ip", "netns", "del", p.NS)
}
