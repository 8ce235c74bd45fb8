package main

import (
	"bytes"
	"errors"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"

	"github.com/nodekeeper/nodekeeper/api/v1alpha1"
)

// TestMain lets a test run the real main() in a child process of the test binary.
func TestMain(m *testing.M) {
	if os.Getenv("NODEKEEPER_RUN_MAIN") == "1" {
		os.Args = append([]string{"nodekeeper"}, strings.Fields(os.Getenv("NODEKEEPER_ARGS"))...)
		main()
		os.Exit(0)
	}
	os.Exit(m.Run())
}

func runMain(t *testing.T, args ...string) (int, string) {
	t.Helper()
	cmd := exec.Command(os.Args[0], "-test.run=^$")
	cmd.Env = append(os.Environ(), "NODEKEEPER_RUN_MAIN=1", "NODEKEEPER_ARGS="+strings.Join(args, " "))
	var out bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &out
	err := cmd.Run()
	var exit *exec.ExitError
	if errors.As(err, &exit) {
		return exit.ExitCode(), out.String()
	}
	if err != nil {
		t.Fatal(err)
	}
	return 0, out.String()
}

func TestBadConfigExitsNonZeroNamingTheField(t *testing.T) {
	dir := t.TempDir()
	cases := map[string]struct{ body, want string }{
		"unknown field":     {"nodeName: n\nnodeLables: {a: b}\n", `unknown field "nodeLables"`},
		"bad quantity":      {"nodeName: n\nsystemReserved: {memory: 1GB-ish}\n", "systemReserved[memory]"},
		"negative duration": {"nodeName: n\nnodeStatusUpdateFrequency: -10s\n", "nodeStatusUpdateFrequency"},
	}
	for name, c := range cases {
		t.Run(name, func(t *testing.T) {
			p := filepath.Join(dir, strings.ReplaceAll(name, " ", "-")+".yaml")
			body := "apiVersion: nodekeeper.io/v1alpha1\nkind: AgentConfiguration\n" + c.body
			if err := os.WriteFile(p, []byte(body), 0o600); err != nil {
				t.Fatal(err)
			}
			code, out := runMain(t, "--config", p, "--kubeconfig", "/nonexistent")
			if code == 0 {
				t.Fatalf("exit code 0 for a bad config; output:\n%s", out)
			}
			if !strings.Contains(out, c.want) {
				t.Errorf("output does not name %q:\n%s", c.want, out)
			}
		})
	}
}

func TestVersion(t *testing.T) {
	code, out := runMain(t, "--version")
	if code != 0 || !strings.HasPrefix(out, "nodekeeper v") {
		t.Errorf("--version: exit %d, output %q", code, out)
	}
}

func TestIPVSModeRefusedWithoutKernelSupport(t *testing.T) {
	if _, err := os.Stat("/proc/net/ip_vs"); err == nil {
		t.Skip("this kernel has IPVS")
	}
	dir := t.TempDir()
	kc := filepath.Join(dir, "kubeconfig")
	if err := os.WriteFile(kc, []byte(`apiVersion: v1
kind: Config
clusters: [{name: c, cluster: {server: "https://127.0.0.1:1"}}]
users: [{name: u, user: {token: x}}]
contexts: [{name: c, context: {cluster: c, user: u}}]
current-context: c
`), 0o600); err != nil {
		t.Fatal(err)
	}
	code, out := runMain(t, "--node-name", "n1", "--kubeconfig", kc, "--proxy-mode", "ipvs",
		"--reconcilers", "services", "--metrics-bind-address", "0", "--healthz-bind-address", "0")
	if code == 0 || !strings.Contains(out, "proxyMode ipvs: the kernel has no IPVS support") {
		t.Errorf("exit %d, output:\n%s", code, out)
	}
}

// kube-proxy's nodePortAddresses keywords: primary (the node's IPs), localhost, all.
func TestProxyNodePortAddressKeywords(t *testing.T) {
	node, _, err := proxyNode(&v1alpha1.AgentConfiguration{NodeName: "n", NodeIP: "192.0.2.10",
		NodePortAddresses: []string{"primary", "localhost", "all", "10.0.0.0/8"}})
	if err != nil {
		t.Fatal(err)
	}
	var got []string
	for _, p := range node.NodePortAddresses {
		got = append(got, p.String())
	}
	want := "192.0.2.10/32 127.0.0.0/8 ::1/128 0.0.0.0/0 ::/0 10.0.0.0/8"
	if strings.Join(got, " ") != want {
		t.Errorf("nodePortAddresses %v, want %s", got, want)
	}
	loop, _, _ := proxyNode(&v1alpha1.AgentConfiguration{NodeName: "n", NodeIP: "127.0.0.1", NodePortAddresses: []string{"primary"}})
	if len(loop.NodePortAddresses) != 0 {
		t.Errorf("a loopback node IP is not pinned to: %v", loop.NodePortAddresses)
	}
}
