package main

import (
	"bytes"
	"encoding/json"
	"errors"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"runtime"
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
	for _, want := range []string{"commit:", "build date:", "go:         " + runtime.Version() + " " + runtime.GOOS + "/" + runtime.GOARCH} {
		if !strings.Contains(out, want) {
			t.Errorf("--version does not say %q:\n%s", want, out)
		}
	}
}

// --help (and -h) print the usage with every flag's description on stdout and exit 0.
func TestHelpExitsZero(t *testing.T) {
	for _, arg := range []string{"--help", "-h"} {
		code, out := runMain(t, arg)
		if code != 0 {
			t.Errorf("%s: exit %d, output:\n%s", arg, code, out)
		}
		for _, want := range []string{"Usage:", "-config string", "AgentConfiguration", "-reconcilers string",
			"-v value", "-vmodule value", "-logging-format string", `Permitted formats: "json"`, `"text"`} {
			if !strings.Contains(out, want) {
				t.Errorf("%s: the usage lacks %q:\n%s", arg, want, out)
			}
		}
		if strings.Contains(out, "help requested") {
			t.Errorf("%s: an error for a help request:\n%s", arg, out)
		}
	}
}

// The logging flags are component-base's: -v raises the verbosity, --logging-format picks
// text or JSON, and client-go's own klog output (its feature gate report at V(1)) comes out
// through the same logger.
func TestLoggingFlags(t *testing.T) {
	kc := filepath.Join(t.TempDir(), "kubeconfig")
	if err := os.WriteFile(kc, []byte(`apiVersion: v1
kind: Config
clusters: [{name: c, cluster: {server: "https://127.0.0.1:1"}}]
users: [{name: u, user: {token: x}}]
contexts: [{name: c, context: {cluster: c, user: u}}]
current-context: c
`), 0o600); err != nil {
		t.Fatal(err)
	}
	// the manager cannot reach the API server and exits at once, after client-go logged
	base := []string{"--node-name", "n1", "--kubeconfig", kc, "--reconcilers", "nodestatus",
		"--container-runtime-endpoint", "unix:///nonexistent.sock", "--metrics-bind-address", "0", "--healthz-bind-address", "0"}
	const clientGo = "Feature gate default state"

	_, out := runMain(t, base...)
	if strings.Contains(out, clientGo) {
		t.Errorf("a V(1) message at the default verbosity 0:\n%s", out)
	}

	_, out = runMain(t, append(base, "-v=2")...)
	if !strings.Contains(out, clientGo) || !strings.Contains(out, "envvar.go") {
		t.Errorf("-v=2 did not show client-go's V(1) messages:\n%s", out)
	}
	for _, l := range strings.Split(strings.TrimSpace(out), "\n") {
		if strings.HasPrefix(l, "nodekeeper: ") {
			continue // the exit error
		}
		if !klogHeader.MatchString(l) {
			t.Errorf("text format: not a klog line: %q", l)
		}
	}

	code, out := runMain(t, append(base, "--v", "2", "--logging-format", "json")...)
	if code == 0 {
		t.Fatalf("exit 0 without an API server:\n%s", out)
	}
	seen := false
	for _, l := range strings.Split(strings.TrimSpace(out), "\n") {
		if strings.HasPrefix(l, "nodekeeper: ") {
			continue
		}
		var m map[string]any
		if err := json.Unmarshal([]byte(l), &m); err != nil {
			t.Errorf("json format: not a JSON line: %q", l)
			continue
		}
		if m["msg"] == clientGo && m["v"] == float64(1) {
			seen = true
		}
	}
	if !seen {
		t.Errorf("json format: no client-go message with \"v\":1:\n%s", out)
	}

	if code, out := runMain(t, append(base, "--logging-format", "xml")...); code == 0 || !strings.Contains(out, `Unsupported log format`) {
		t.Errorf("--logging-format=xml: exit %d:\n%s", code, out)
	}
}

// klogHeader is the start of a klog text line: Lmmdd hh:mm:ss.uuuuuu threadid file:line]
var klogHeader = regexp.MustCompile(`^[IWEF]\d{4} \d\d:\d\d:\d\d\.\d{6} +\d+ [^ ]+:\d+\] `)

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
