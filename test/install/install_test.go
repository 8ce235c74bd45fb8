// Package install tests the node-mode install (hack/install-node.sh with the systemd unit
// config/systemd/nodekeeper.service) into a scratch root: no systemd or root needed.
package install

import (
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"testing"

	"github.com/nodekeeper/nodekeeper/api/v1alpha1"
)

func TestInstallNode(t *testing.T) {
	repo, err := filepath.Abs(filepath.Join("..", ".."))
	if err != nil {
		t.Fatal(err)
	}
	bin := filepath.Join(t.TempDir(), "nodekeeper")
	if out, err := exec.Command("go", "build", "-o", bin, repo).CombinedOutput(); err != nil {
		t.Fatalf("go build: %v\n%s", err, out)
	}
	root := t.TempDir()
	kc := filepath.Join(t.TempDir(), "kubeconfig")
	if err := os.WriteFile(kc, []byte("apiVersion: v1\nkind: Config\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	install := func() string {
		cmd := exec.Command(filepath.Join(repo, "hack", "install-node.sh"), "--binary", bin, "--kubeconfig", kc, "--root", root, "--no-start")
		out, err := cmd.CombinedOutput()
		if err != nil {
			t.Fatalf("install-node.sh: %v\n%s", err, out)
		}
		return string(out)
	}
	install()

	unit, err := os.ReadFile(filepath.Join(root, "etc/systemd/system/nodekeeper.service"))
	if err != nil {
		t.Fatal(err)
	}
	exe := regexp.MustCompile(`(?m)^ExecStart=(\S+) (.*)$`).FindStringSubmatch(string(unit))
	if exe == nil {
		t.Fatalf("no ExecStart in the unit:\n%s", unit)
	}
	// every file the unit names is installed
	for _, p := range []string{exe[1], "/etc/nodekeeper/config.yaml", "/etc/nodekeeper/kubeconfig"} {
		if !strings.Contains(string(unit), p) {
			t.Errorf("the unit does not name %s", p)
		}
		if _, err := os.Stat(filepath.Join(root, p)); err != nil {
			t.Errorf("%s not installed: %v", p, err)
		}
	}
	for _, want := range []string{"Restart=always", "Conflicts=kubelet.service", "WantedBy=multi-user.target", "EnvironmentFile=-/etc/default/nodekeeper"} {
		if !strings.Contains(string(unit), want) {
			t.Errorf("the unit lacks %s", want)
		}
	}
	if st, err := os.Stat(filepath.Join(root, "etc/nodekeeper/kubeconfig")); err != nil || st.Mode().Perm() != 0o600 {
		t.Errorf("kubeconfig must be 0600: %v %v", st.Mode(), err)
	}
	out, err := exec.Command(filepath.Join(root, exe[1]), "--version").CombinedOutput()
	if err != nil || !strings.HasPrefix(string(out), "nodekeeper v") {
		t.Errorf("installed binary --version: %v %s", err, out)
	}
	// the starting configuration is one the agent accepts
	cfgPath := filepath.Join(root, "etc/nodekeeper/config.yaml")
	cfg, err := v1alpha1.Load(cfgPath)
	if err != nil {
		t.Fatalf("the installed config.yaml: %v", err)
	}
	cfg.NodeName = "node-1"
	v1alpha1.SetDefaults(cfg)
	if err := v1alpha1.Validate(cfg); err != nil {
		t.Errorf("the installed config.yaml is not valid: %v", err)
	}
	// an operator's edits survive a reinstall
	if err := os.WriteFile(cfgPath, []byte("# mine\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	if msg := install(); !strings.Contains(msg, "keeping the existing") {
		t.Errorf("reinstall did not say it kept the config: %s", msg)
	}
	if b, _ := os.ReadFile(cfgPath); string(b) != "# mine\n" {
		t.Errorf("reinstall overwrote config.yaml: %q", b)
	}
	if sa, err := exec.LookPath("systemd-analyze"); err == nil {
		if out, err := exec.Command(sa, "verify", "--root="+root, filepath.Join(root, "etc/systemd/system/nodekeeper.service")).CombinedOutput(); err != nil {
			t.Logf("systemd-analyze verify (informational): %v\n%s", err, out)
		}
	}
}
