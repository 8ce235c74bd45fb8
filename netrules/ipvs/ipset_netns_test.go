package ipvs

import (
	"context"
	"os"
	"os/exec"
	"strings"
	"testing"

	"k8s.io/apimachinery/pkg/util/rand"

	"github.com/nodekeeper/nodekeeper/netrules"
	"github.com/nodekeeper/nodekeeper/netrules/iptables"
)

// TestCompanionInNetns loads the IPVS mode's ipsets and nat rules into a real kernel,
// in a throwaway network namespace (IPVS itself is absent from this kernel; ipset is not).
func TestCompanionInNetns(t *testing.T) {
	if os.Geteuid() != 0 {
		t.Skip("needs root")
	}
	for _, b := range []string{"ipset", "iptables-legacy"} {
		if _, err := exec.LookPath(b); err != nil {
			t.Skip(b + " not installed (hack/net-deps.sh)")
		}
	}
	ns := "nkipvs-" + rand.String(5)
	if out, err := exec.Command("ip", "netns", "add", ns).CombinedOutput(); err != nil {
		t.Fatalf("%v: %s", err, out)
	}
	defer exec.Command("ip", "netns", "del", ns).Run()
	runner := iptables.Exec{Prefix: []string{"nsenter", "--net=/run/netns/" + ns}}
	c := Companion{Runner: runner, Family: netrules.IPv4, Variant: "legacy"}
	ctx := context.Background()
	if err := c.Sync(ctx, build("10.244.0.11", "10.244.0.12")); err != nil {
		t.Fatal(err)
	}
	// a second sync with fewer members swaps the set atomically
	if err := c.Sync(ctx, build("10.244.0.11")); err != nil {
		t.Fatal(err)
	}
	out, err := runner.Run(ctx, nil, "ipset", "list", SetLoopBack)
	if err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(string(out), "10.244.0.11,tcp:8080,10.244.0.11") || strings.Contains(string(out), "10.244.0.12") {
		t.Errorf("loopback set:\n%s", out)
	}
	out, err = runner.Run(ctx, nil, "iptables-legacy-save", "-t", "nat")
	if err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(string(out), "--match-set KUBE-NODE-PORT-TCP dst -j KUBE-MARK-MASQ") ||
		!strings.Contains(string(out), "-A PREROUTING -m comment --comment \"kubernetes service portals\" -j KUBE-SERVICES") {
		t.Errorf("nat table:\n%s", out)
	}
	if out, err := runner.Run(ctx, nil, "ipset", "list", "-n"); err != nil || strings.Contains(string(out), "-TMP") {
		t.Errorf("temporary sets left behind: %s %v", out, err)
	}
}
