package iptables

import (
	"context"
	"fmt"
	"math/rand"
	"os"
	"sort"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	discoveryv1 "k8s.io/api/discovery/v1"

	"github.com/nodekeeper/nodekeeper/netrules"
)

// recorder counts the processes a sync starts and the bytes it feeds iptables-restore.
type recorder struct {
	Runner
	mu           sync.Mutex
	spawns, in   int
	restoreTimes time.Duration
}

func (r *recorder) Run(ctx context.Context, stdin []byte, name string, args ...string) ([]byte, error) {
	start := time.Now()
	out, err := r.Runner.Run(ctx, stdin, name, args...)
	r.mu.Lock()
	defer r.mu.Unlock()
	r.spawns++
	r.in += len(stdin)
	if strings.HasSuffix(name, "-restore") {
		r.restoreTimes += time.Since(start)
	}
	return out, err
}

func (r *recorder) take() (spawns, in int, restore time.Duration) {
	r.mu.Lock()
	defer r.mu.Unlock()
	spawns, in, restore = r.spawns, r.in, r.restoreTimes
	r.spawns, r.in, r.restoreTimes = 0, 0, 0
	return
}

type samples struct {
	wall, restore, cpu []time.Duration
	in, spawns         []int
}

func (s *samples) add(wall, restore, cpu time.Duration, in, spawns int) {
	s.wall, s.restore, s.cpu, s.in, s.spawns = append(s.wall, wall), append(s.restore, restore), append(s.cpu, cpu), append(s.in, in), append(s.spawns, spawns)
}

// cpuTime is the CPU time used by this process and its finished children.
func cpuTime() time.Duration {
	var self, kids syscall.Rusage
	_ = syscall.Getrusage(syscall.RUSAGE_SELF, &self)
	_ = syscall.Getrusage(syscall.RUSAGE_CHILDREN, &kids)
	tv := func(t syscall.Timeval) time.Duration { return time.Duration(t.Nano()) }
	return tv(self.Utime) + tv(self.Stime) + tv(kids.Utime) + tv(kids.Stime)
}

func pct[T int | time.Duration](v []T, p float64) T {
	c := append([]T(nil), v...)
	sort.Slice(c, func(i, j int) bool { return c[i] < c[j] })
	return c[min(len(c)-1, int(p*float64(len(c))))]
}

func (s *samples) String() string {
	ms := func(d time.Duration) string { return fmt.Sprintf("%.1f", float64(d.Microseconds())/1000) }
	return fmt.Sprintf("n=%d sync ms p50/p90/p99/max %s/%s/%s/%s; restore ms p50/p99 %s/%s; CPU ms (agent+children) p50/p99 %s/%s; input bytes p50/max %d/%d; processes p50/max %d/%d",
		len(s.wall), ms(pct(s.wall, .5)), ms(pct(s.wall, .9)), ms(pct(s.wall, .99)), ms(pct(s.wall, 1)),
		ms(pct(s.restore, .5)), ms(pct(s.restore, .99)), ms(pct(s.cpu, .5)), ms(pct(s.cpu, .99)), pct(s.in, .5), pct(s.in, 1), pct(s.spawns, .5), pct(s.spawns, 1))
}

type stateSyncer interface {
	SyncState(ctx context.Context, st *netrules.State, changed []string, full bool) (netrules.SyncStats, error)
}

// TestMeasureNetns prints what syncs cost in a network namespace at
// NK_IPT_MEASURE Services × 5 endpoints (unset: skipped): the first sync, a periodic
// sync, a full resync, one endpoint changed, one Service added, one removed. NK_IPT_MEASURE_WHOLE=1
// drives the proxier through netrules.Whole (the whole Ruleset every sync, as before
// SyncState). NK_IPT_MEASURE_VARIANTS picks the variants (default "nft legacy"). It
// prints figures and asserts nothing about time.
func TestMeasureNetns(t *testing.T) {
	n, _ := strconv.Atoi(os.Getenv("NK_IPT_MEASURE"))
	if n == 0 {
		t.Skip("set NK_IPT_MEASURE=<services> to measure")
	}
	changes := 100
	if c, _ := strconv.Atoi(os.Getenv("NK_IPT_MEASURE_CHANGES")); c > 0 {
		changes = c
	}
	variants := strings.Fields(os.Getenv("NK_IPT_MEASURE_VARIANTS"))
	if len(variants) == 0 {
		variants = []string{"nft", "legacy"}
	}
	ctx := context.Background()
	for _, v := range variants {
		t.Run(v, func(t *testing.T) {
			rec := &recorder{Runner: testNetns(t, "m"+v)}
			p := New(Options{Family: netrules.IPv4, Variant: Variant(v), Runner: rec})
			var be stateSyncer = p
			mode := "SyncState"
			if os.Getenv("NK_IPT_MEASURE_WHOLE") == "1" {
				be, mode = netrules.Whole{RulesetSyncer: p}, "Whole"
			}
			svcs, slices := bigCluster(n)
			st := netrules.NewState(netrules.IPv4, testNode)
			for i, s := range svcs {
				st.Set(s.Namespace+"/"+s.Name, netrules.BuildService(s, slices[i:i+1], testNode)[netrules.IPv4])
			}
			sync := func(changed []string, full bool, into *samples) {
				cpu0, start := cpuTime(), time.Now()
				if _, err := be.SyncState(ctx, st, changed, full); err != nil {
					t.Fatal(err)
				}
				wall, cpu := time.Since(start), cpuTime()-cpu0
				spawns, in, restore := rec.take()
				into.add(wall, restore, cpu, in, spawns)
			}
			var first, periodic, repair, ep, add, del samples
			sync(nil, true, &first)
			sync(nil, true, &periodic) // partial: fixed chains and the jump check
			p.opts.FullResyncPeriod = -1
			sync(nil, true, &repair) // a forced full rewrite (hourly; after tampering)
			p.opts.FullResyncPeriod = DefaultFullResyncPeriod
			r := rand.New(rand.NewSource(1))
			for i := 0; i < changes; i++ {
				j := r.Intn(n)
				s := svcs[j]
				var eps []netrules.SliceEndpoint
				for k := 0; k < 5; k++ {
					eps = append(eps, netrules.SliceEndpoint{IP: fmt.Sprintf("10.%d.%d.%d", 100+k, j/250, j%250+1)})
				}
				eps[r.Intn(5)].IP = fmt.Sprintf("10.99.%d.%d", i/250, i%250+1) // one endpoint moved
				slices[j] = netrules.MakeSlice(s, s.Name+"-1", 8080, eps...)
				key := s.Namespace + "/" + s.Name
				st.Set(key, netrules.BuildService(s, slices[j:j+1], testNode)[netrules.IPv4])
				sync([]string{key}, false, &ep)
			}
			var added []string
			for i := 0; i < changes; i++ {
				s := netrules.MakeService("add", fmt.Sprintf("a%04d", i), fmt.Sprintf("10.97.%d.%d", i/250, i%250+1), 80)
				var eps []netrules.SliceEndpoint
				for k := 0; k < 5; k++ {
					eps = append(eps, netrules.SliceEndpoint{IP: fmt.Sprintf("10.%d.%d.%d", 110+k, i/250, i%250+1)})
				}
				key := s.Namespace + "/" + s.Name
				st.Set(key, netrules.BuildService(s, []*discoveryv1.EndpointSlice{netrules.MakeSlice(s, s.Name+"-1", 8080, eps...)}, testNode)[netrules.IPv4])
				added = append(added, key)
				sync([]string{key}, false, &add)
			}
			for _, key := range added {
				st.Set(key, nil)
				sync([]string{key}, false, &del)
			}
			t.Logf("%s %s at %d Services × 5 endpoints", v, mode, n)
			t.Logf("  first full sync: %s", &first)
			t.Logf("  periodic sync (partial): %s", &periodic)
			t.Logf("  full resync (hourly, or a jump missing): %s", &repair)
			t.Logf("  one endpoint changed: %s", &ep)
			t.Logf("  one Service added: %s", &add)
			t.Logf("  one Service removed: %s", &del)
			if err := p.Cleanup(ctx); err != nil {
				t.Error(err)
			}
		})
	}
}

// TestLoadNetns loads NK_IPT_LOAD Services × 5 endpoints with iptables-NK_IPT_LOAD_VARIANT
// (default nft) into the existing network namespace NK_IPT_LOAD_NS and leaves them there,
// for experiments by hand (unset: skipped).
func TestLoadNetns(t *testing.T) {
	n, _ := strconv.Atoi(os.Getenv("NK_IPT_LOAD"))
	ns := os.Getenv("NK_IPT_LOAD_NS")
	if n == 0 || ns == "" {
		t.Skip("set NK_IPT_LOAD=<services> and NK_IPT_LOAD_NS=<netns>")
	}
	v := os.Getenv("NK_IPT_LOAD_VARIANT")
	if v == "" {
		v = "nft"
	}
	svcs, slices := bigCluster(n)
	p := New(Options{Family: netrules.IPv4, Variant: Variant(v), Runner: Exec{Prefix: []string{"nsenter", "--net=/run/netns/" + ns}}})
	start := time.Now()
	if _, err := p.Sync(context.Background(), netrules.Build(svcs, slices, testNode)[netrules.IPv4], true); err != nil {
		t.Fatal(err)
	}
	t.Logf("loaded %d Services into %s in %s", n, ns, time.Since(start))
}
