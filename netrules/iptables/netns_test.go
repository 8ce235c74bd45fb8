package iptables

import (
	"context"
	"fmt"
	"math/rand"
	"os"
	"os/exec"
	"sort"
	"strings"
	"testing"

	"github.com/nodekeeper/nodekeeper/netrules"
)

// testNetns creates an empty network namespace for the test (root only) and returns a
// Runner programming it.
func testNetns(t testing.TB, name string) Exec {
	t.Helper()
	if os.Geteuid() != 0 {
		t.Skip("needs root (network namespaces)")
	}
	for _, b := range []string{"ip", "iptables-legacy", "iptables-nft", "nsenter"} {
		if _, err := exec.LookPath(b); err != nil {
			t.Skip(b + " not installed")
		}
	}
	pfx := "nk-ipt-"
	if p := os.Getenv("NK_TEST_NETNS_PREFIX"); p != "" {
		pfx = p
	}
	ns := fmt.Sprintf("%s%s-%d", pfx, name, os.Getpid()%100000)
	_ = exec.Command("ip", "netns", "del", ns).Run()
	if out, err := exec.Command("ip", "netns", "add", ns).CombinedOutput(); err != nil {
		t.Fatalf("ip netns add %s: %v: %s", ns, err, out)
	}
	t.Cleanup(func() { _ = exec.Command("ip", "netns", "del", ns).Run() })
	return Exec{Prefix: []string{"nsenter", "--net=/run/netns/" + ns}}
}

// kernelTables is iptables-save output normalized for comparison: comments and
// counters dropped, user chains sorted by name (the binaries list them in creation
// order), rule order within each chain kept.
func kernelTables(t testing.TB, r Exec, bin string) string {
	t.Helper()
	out, err := r.Run(context.Background(), nil, bin)
	if err != nil {
		t.Fatal(err)
	}
	type table struct {
		chains []string
		rules  map[string][]string
	}
	var names []string
	tabs := map[string]*table{}
	var cur *table
	for _, l := range strings.Split(string(out), "\n") {
		switch {
		case l == "" || strings.HasPrefix(l, "#") || l == "COMMIT":
		case strings.HasPrefix(l, "*"):
			cur = &table{rules: map[string][]string{}}
			tabs[l[1:]] = cur
			names = append(names, l[1:])
		case strings.HasPrefix(l, ":"):
			f := strings.Fields(l[1:])
			cur.chains = append(cur.chains, f[0]+" "+f[1])
		case strings.HasPrefix(l, "-A "):
			c := strings.Fields(l)[1]
			cur.rules[c] = append(cur.rules[c], l)
		}
	}
	sort.Strings(names)
	var b strings.Builder
	for _, n := range names {
		tb := tabs[n]
		sort.Strings(tb.chains)
		fmt.Fprintf(&b, "*%s\n", n)
		for _, c := range tb.chains {
			b.WriteString(":" + c + "\n")
		}
		for _, c := range tb.chains {
			for _, r := range tb.rules[strings.Fields(c)[0]] {
				b.WriteString(r + "\n")
			}
		}
	}
	return b.String()
}

// The property of TestIncrementalEqualsFullSync against the real binaries, both
// variants and both families, in a network namespace: random changes synced
// incrementally end with the kernel holding what one full sync of the final objects
// into an empty namespace gives.
func TestNetnsIncrementalEqualsFullSync(t *testing.T) {
	defer func(v int) { largeCluster = v }(largeCluster)
	ctx := context.Background()
	for _, variant := range []Variant{"nft", "legacy"} {
		t.Run(string(variant), func(t *testing.T) {
			inc := testNetns(t, string(variant)+"-i")
			fresh := testNetns(t, string(variant)+"-f")
			for seed := int64(0); seed < 4; seed++ {
				r := rand.New(rand.NewSource(seed))
				largeCluster = LargeClusterEndpoints
				if seed%2 == 1 {
					largeCluster = 4
				}
				d := newWorldDriver(testNode)
				proxiers := map[netrules.Family]*Proxier{}
				for _, fam := range []netrules.Family{netrules.IPv4, netrules.IPv6} {
					proxiers[fam] = New(Options{Family: fam, Variant: variant, Runner: inc, ChunkChains: 1 + r.Intn(4)})
				}
				partial := 0
				for step := 0; step < 40; step++ {
					d.step(r)
					if r.Intn(2) != 0 {
						continue
					}
					for fam, p := range proxiers {
						st, err := p.SyncState(ctx, d.states[fam], d.take(fam), r.Intn(10) == 0)
						if err != nil {
							t.Fatalf("seed %d step %d IPv%d: %v", seed, step, fam, err)
						}
						if !st.Full {
							partial++
						}
					}
				}
				for fam, p := range proxiers {
					if _, err := p.SyncState(ctx, d.states[fam], d.take(fam), false); err != nil {
						t.Fatal(err)
					}
				}
				for fam, rs := range d.final() {
					q := New(Options{Family: fam, Variant: variant, Runner: fresh})
					if _, err := q.Sync(ctx, rs, true); err != nil {
						t.Fatal(err)
					}
					bin := map[netrules.Family]string{netrules.IPv4: "iptables", netrules.IPv6: "ip6tables"}[fam] + "-" + string(variant) + "-save"
					if got, want := kernelTables(t, inc, bin), kernelTables(t, fresh, bin); got != want {
						t.Fatalf("seed %d IPv%d: incremental differs from a full sync\n%s", seed, fam, lineDiff(got, want))
					}
					if err := q.Cleanup(ctx); err != nil {
						t.Fatal(err)
					}
					if err := proxiers[fam].Cleanup(ctx); err != nil {
						t.Fatal(err)
					}
				}
				if partial == 0 {
					t.Fatalf("seed %d: no partial sync", seed)
				}
			}
		})
	}
}
