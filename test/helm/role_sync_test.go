package helm

import (
	"bytes"
	"context"
	"os"
	"os/exec"
	"path/filepath"
	"testing"
	"time"

	"sigs.k8s.io/yaml"

	"github.com/nodekeeper/nodekeeper/internal/options"
)

// The chart carries a verbatim copy of config/rbac/role.yaml (templates cannot read files
// outside the chart); `make manifests` refreshes both.
func TestChartRoleIsTheGeneratedRole(t *testing.T) {
	gen, err := os.ReadFile(filepath.Join(repoRoot, "config", "rbac", "role.yaml"))
	if err != nil {
		t.Fatal(err)
	}
	chart, err := os.ReadFile(filepath.Join(repoRoot, chartRel, "files", "role.yaml"))
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(gen, chart) {
		t.Fatalf("charts/nodekeeper/files/role.yaml differs from config/rbac/role.yaml: run `make manifests` " +
			"(it regenerates the role from the +kubebuilder:rbac markers and copies it into the chart)")
	}

	// every generated resource has an entry in the reconciler table, and the table
	// names only real reconcilers and verbs the generated rule grants
	var table map[string]map[string][]string
	data, err := os.ReadFile(filepath.Join(repoRoot, chartRel, "files", "reconcilers.yaml"))
	if err != nil {
		t.Fatal(err)
	}
	if err := yaml.UnmarshalStrict(data, &table); err != nil {
		t.Fatalf("files/reconcilers.yaml: %v", err)
	}
	seen := map[string]bool{}
	for _, rule := range roleFile(t).Rules {
		granted := map[string]bool{"*": true}
		for _, v := range rule.Verbs {
			granted[v] = true
		}
		for _, res := range rule.Resources {
			seen[res] = true
			entry, ok := table[res]
			if !ok {
				t.Errorf("config/rbac/role.yaml grants %q (%v) but charts/nodekeeper/files/reconcilers.yaml does not say which "+
					"reconciler needs it: add it there (until then the chart grants it whatever runs)", res, rule.Verbs)
				continue
			}
			for rec, verbs := range entry {
				if !options.Available[rec] {
					t.Errorf("files/reconcilers.yaml: %s: unknown reconciler %q", res, rec)
				}
				for _, v := range verbs {
					if !granted[v] {
						t.Errorf("files/reconcilers.yaml: %s: %s needs %q, which the generated rule does not grant %v", res, rec, v, rule.Verbs)
					}
				}
			}
		}
	}
	for res := range table {
		if !seen[res] {
			t.Errorf("files/reconcilers.yaml lists %q, which config/rbac/role.yaml no longer grants: remove it", res)
		}
	}
}

// config/rbac/role.yaml is what controller-gen makes of the markers today (else the
// chart would ship a stale role).
func TestGeneratedRoleMatchesMarkers(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 15*time.Minute)
	defer cancel()
	mk := exec.CommandContext(ctx, "make", "-s", "--no-print-directory", "controller-gen")
	mk.Dir = repoRoot
	if out, err := mk.CombinedOutput(); err != nil {
		t.Skipf("SKIP: controller-gen could not be built (`make controller-gen`), so the markers cannot be checked: %v\n%s", err, out)
	}
	cache := os.Getenv("NK_CACHE")
	if cache == "" {
		home, err := os.UserHomeDir()
		if err != nil {
			t.Fatal(err)
		}
		cache = filepath.Join(home, ".cache", "nodekeeper")
	}
	dir := t.TempDir()
	// the same generator arguments as `make manifests`
	gen := exec.CommandContext(ctx, filepath.Join(cache, "tools", "controller-gen"),
		"rbac:roleName=nodekeeper", "paths=./controllers/...", "output:rbac:artifacts:config="+dir)
	gen.Dir = repoRoot
	if out, err := gen.CombinedOutput(); err != nil {
		t.Fatalf("controller-gen: %v\n%s", err, out)
	}
	want, err := os.ReadFile(filepath.Join(dir, "role.yaml"))
	if err != nil {
		t.Fatal(err)
	}
	got, err := os.ReadFile(filepath.Join(repoRoot, "config", "rbac", "role.yaml"))
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(got, want) {
		t.Fatalf("config/rbac/role.yaml is stale against the +kubebuilder:rbac markers in controllers/: run `make manifests`\n"+
			"--- generated now:\n%s", want)
	}
}
