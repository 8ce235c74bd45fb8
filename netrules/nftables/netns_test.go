package nftables

import (
	"context"
	"fmt"
	"math/rand"
	"net/netip"
	"os"
	"os/exec"
	"sort"
	"strings"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	discoveryv1 "k8s.io/api/discovery/v1"

	"github.com/nodekeeper/nodekeeper/netrules"
)

// In a real kernel: random Service / EndpointSlice changes applied incrementally (with
// small batch bounds, full syncs and a table flushed behind our back) leave `nft list
// table` equal to a fresh full sync of the final objects into a fresh namespace.
func TestNetnsIncrementalEqualsFresh(t *testing.T) {
	needRoot(t)
	node := netrules.Node{Name: "me", ClusterCIDRs: []netip.Prefix{netip.MustParsePrefix("10.244.0.0/16"), netip.MustParsePrefix("fd01::/48")}}
	fams := []netrules.Family{netrules.IPv4, netrules.IPv6}
	for seed := int64(0); seed < 8; seed++ {
		r := rand.New(rand.NewSource(seed))
		epMaps := seed%2 == 1 // odd seeds DNAT through endpoint maps
		ns := netns(t)
		w := netrules.NewWorld("me")
		states := map[netrules.Family]*netrules.State{}
		proxiers := map[netrules.Family]*Proxier{}
		for _, fam := range fams {
			states[fam] = netrules.NewState(fam, node)
			proxiers[fam] = nsProxierShards(t, ns, fam, 5+r.Intn(100), epMaps, 1+r.Intn(3))
		}
		pending := map[netrules.Family][]string{}
		first := true
		for step := 0; step < 80; step++ {
			ev := w.Step(r)
			for fam, ch := range rebuild(w, states, touchedBy(ev), node) {
				pending[fam] = mergeSorted(pending[fam], ch)
			}
			if r.Intn(3) > 0 {
				continue
			}
			full := first || r.Intn(6) == 0
			if r.Intn(25) == 0 {
				_ = exec.Command("ip", "netns", "exec", ns, "nft", "flush", "chain", "ip", ShardTableName(1), "nat-prerouting").Run() // (no shard yet: nothing to flush)
			}
			for _, fam := range fams {
				ch := pending[fam]
				if full {
					ch = nil
				}
				stats, err := proxiers[fam].SyncState(context.Background(), states[fam], ch, full)
				for err == nil && stats.Pending > 0 && r.Intn(2) == 0 {
					stats, err = proxiers[fam].SyncState(context.Background(), states[fam], nil, false)
				}
				if err != nil {
					t.Fatalf("seed %d step %d: %v", seed, step, err)
				}
				pending[fam] = nil
			}
			first = false
		}
		svcs, slices := w.Objects()
		fresh := netns(t)
		for _, fam := range fams {
			syncAll(t, proxiers[fam], states[fam], pending[fam], true)
			// stale chains go StaleDelay after their flush
			time.Sleep(StaleDelay)
			syncAll(t, proxiers[fam], states[fam], nil, false)
			rs := netrules.Build(svcs, slices, node)[fam]
			syncAll(t, nsProxier(t, fresh, fam, 0, epMaps), stateOf(rs), nil, true)
			got, unused := canonicalListing(listTable(t, ns, fam))
			want, _ := canonicalListing(listTable(t, fresh, fam))
			got, want = mergedListing(got), mergedListing(want)
			if len(unused) > 0 {
				t.Errorf("seed %d IPv%d: endpoint map elements no rule uses: %v", seed, fam, unused)
			}
			if got != want {
				if dir := os.Getenv("NK_NFT_DUMP"); dir != "" {
					_ = os.WriteFile(dir+"/got", []byte(got), 0o644)
					raw, _ := canonicalListing(listTable(t, ns, fam))
					_ = os.WriteFile(dir+"/raw", []byte(raw), 0o644)
					_ = os.WriteFile(dir+"/want", []byte(want), 0o644)
				}
				t.Fatalf("seed %d IPv%d: incremental table differs from a fresh full sync:\n%s", seed, fam, lineDiff(got, want))
			}
		}
	}
}

// bigState is n Services × eps endpoints, one TCP port each.
func bigState(n, eps int) (*netrules.State, []*corev1.Service, map[string]*discoveryv1.EndpointSlice) {
	node := netrules.Node{Name: "me", ClusterCIDRs: []netip.Prefix{netip.MustParsePrefix("10.0.0.0/8")}}
	st := netrules.NewState(netrules.IPv4, node)
	var svcs []*corev1.Service
	slices := map[string]*discoveryv1.EndpointSlice{}
	for i := 0; i < n; i++ {
		svc := netrules.MakeService("ns", fmt.Sprintf("svc-%d", i), fmt.Sprintf("172.%d.%d.%d", 16+i>>16, (i>>8)&255, i&255), 80)
		var es []netrules.SliceEndpoint
		for e := 0; e < eps; e++ {
			es = append(es, netrules.SliceEndpoint{IP: fmt.Sprintf("10.%d.%d.%d", 1+(i*eps+e)>>16, ((i*eps+e)>>8)&255, (i*eps+e)&255)})
		}
		sl := netrules.MakeSlice(svc, svc.Name, 8080, es...)
		svcs = append(svcs, svc)
		slices[svc.Name] = sl
		st.Set("ns/"+svc.Name, netrules.BuildService(svc, []*discoveryv1.EndpointSlice{sl}, node)[netrules.IPv4])
	}
	return st, svcs, slices
}

// moveOne moves one endpoint of Service i and updates the State.
func moveOne(st *netrules.State, svcs []*corev1.Service, slices map[string]*discoveryv1.EndpointSlice, i, round int) string {
	svc := svcs[i]
	old := slices[svc.Name]
	sl := old.DeepCopy()
	sl.Endpoints[0].Addresses = []string{fmt.Sprintf("10.200.%d.%d", (round>>8)&255, round&255)}
	slices[svc.Name] = sl
	key := "ns/" + svc.Name
	st.Set(key, netrules.BuildService(svc, []*discoveryv1.EndpointSlice{sl}, st.Node)[netrules.IPv4])
	return key
}

// Prints (never asserts) what one endpoint change costs at scale in a namespace: the
// first full sync, and per change the netlink batch and the whole SyncState call
// (plan + batch). NK_NFT_SCALE=10000,50000 picks the sizes (default 10000);
// NK_NFT_EPMAPS=0 the anonymous maps (NK_NFT_CASCADE=1 too: the cascade).
func TestNetnsScaleFigures(t *testing.T) {
	needRoot(t)
	sizes := []int{10000}
	if s := os.Getenv("NK_NFT_SCALE"); s != "" {
		sizes = nil
		for _, f := range splitComma(s) {
			var n int
			fmt.Sscan(f, &n)
			sizes = append(sizes, n)
		}
	}
	if testing.Short() {
		t.Skip("scale figures take a while")
	}
	for _, n := range sizes {
		ns := netns(t)
		st, svcs, slices := bigState(n, 5)
		maxOps := 0
		fmt.Sscan(os.Getenv("NK_NFT_MAXOPS"), &maxOps)
		p := nsProxier(t, ns, netrules.IPv4, maxOps, os.Getenv("NK_NFT_EPMAPS") != "0")
		start := time.Now()
		calls := 0
		syncCalls := func(changed []string, full bool) {
			for {
				stats, err := p.SyncState(context.Background(), st, changed, full)
				if err != nil {
					t.Fatal(err)
				}
				calls++
				if stats.Pending == 0 {
					return
				}
				changed, full = nil, false
			}
		}
		syncCalls(nil, true)
		first := time.Since(start)
		chains, rules, sets, elems := countTable(t, ns)
		fmt.Fprintf(os.Stderr, "table at N=%d: %d chains, %d rules, %d named sets and maps, %d elements\n", n, chains, rules, sets, elems)
		var rusage0 = rss()
		var sends, totals, dels []time.Duration
		k := p.k.(*nlKernel)
		for round := 0; round < 200; round++ {
			key := moveOne(st, svcs, slices, (round*7919)%n, round)
			t0 := time.Now()
			if _, err := p.SyncState(context.Background(), st, []string{key}, false); err != nil {
				t.Fatal(err)
			}
			totals = append(totals, time.Since(t0))
			sends = append(sends, p.lastMainSend)
			if p.lastExpiredSend > 0 {
				dels = append(dels, p.lastExpiredSend)
			}
		}
		// Services deleted and created again. A creation adds a goto element to the
		// dispatch map, and the kernel then validates the table's whole chain graph at
		// commit (nft_table_validate): its cost grows with the table, unlike a deletion's
		// or an endpoint move's.
		var kind [2][]time.Duration // deleted, created
		for round := 0; round < 100; round++ {
			key := fmt.Sprintf("ns/svc-%d", (round*6151)%n)
			ports := st.Ports(key)
			for i, set := range [][]*netrules.ServicePort{nil, ports} {
				st.Set(key, set)
				if _, err := p.SyncState(context.Background(), st, []string{key}, false); err != nil {
					t.Fatal(err)
				}
				kind[i] = append(kind[i], p.lastMainSend)
			}
			time.Sleep(20 * time.Millisecond)
			// what the agent does when a call leaves work (stale chains due): call again
			if _, err := p.SyncState(context.Background(), st, nil, false); err != nil {
				t.Fatal(err)
			}
		}
		fmt.Fprintf(os.Stderr, "nftables netns N=%d: Service deleted: netlink batch p50 %v p90 %v max %v; Service created: p50 %v p90 %v max %v\n",
			n, pct(kind[0], 50), pct(kind[0], 90), pct(kind[0], 100), pct(kind[1], 50), pct(kind[1], 90), pct(kind[1], 100))
		gens := timeN(t, 50, func() error { _, err := k.generation(); return err })
		if len(dels) > 0 {
			fmt.Fprintf(os.Stderr, "stale chain deletion batches: %d, p50 %v max %v\n", len(dels), pct(dels, 50), pct(dels, 100))
		}
		fmt.Fprintf(os.Stderr, "generation read p50 %v max %v\n", pct(gens, 50), pct(gens, 100))
		// a periodic full sync with nothing tampered: the generation check only
		t4 := time.Now()
		syncCalls(nil, true)
		idleFull := time.Since(t4)
		// the repair case: a foreign commit makes the next full sync a rewrite, and a
		// change that arrives during it waits for the call in progress and then goes in
		// the next one (the agent calls again at once while Pending)
		if out, err := exec.Command("ip", "netns", "exec", ns, "nft", "add table ip nkt-tamper; delete table ip nkt-tamper").CombinedOutput(); err != nil {
			t.Fatalf("tamper: %v: %s", err, out)
		}
		dumps := timeN(t, 5, func() error { _, err := k.dump(); return err })
		fmt.Fprintf(os.Stderr, "nftables netns N=%d: reading the tables back (dump) p50 %v max %v\n", n, pct(dumps, 50), pct(dumps, 100))
		var chunks []time.Duration
		var parts []string
		t5 := time.Now()
		stats, err := p.SyncState(context.Background(), st, nil, true)
		if err != nil {
			t.Fatal(err)
		}
		firstRepair := time.Since(t5)
		reading := 0
		for stats.Pending > 0 && !p.resyncing { // the read-back runs beside changes
			key := moveOne(st, svcs, slices, (reading*7919)%n, 5000+reading)
			t0 := time.Now()
			if stats, err = p.SyncState(context.Background(), st, []string{key}, false); err != nil {
				t.Fatal(err)
			}
			chunks = append(chunks, time.Since(t0))
			parts = append(parts, "reading")
			reading++
			time.Sleep(5 * time.Millisecond)
		}
		readBack := time.Since(t5)
		fmt.Fprintf(os.Stderr, "nftables netns N=%d: Reset from the read-back took %v\n", n, p.lastReset)
		for round := 1000; stats.Pending > 0; round++ {
			key := moveOne(st, svcs, slices, (round*7919)%n, round)
			t0 := time.Now()
			if stats, err = p.SyncState(context.Background(), st, []string{key}, false); err != nil {
				t.Fatal(err)
			}
			chunks = append(chunks, time.Since(t0))
			parts = append(parts, fmt.Sprintf("main batch %v, deletions %v, pending %d", p.lastMainSend, p.lastExpiredSend, stats.Pending))
		}
		rewrite := time.Since(t5)
		slowest := 0
		for i, c := range chunks {
			if c > chunks[slowest] {
				slowest = i
			}
		}
		if len(chunks) > 0 {
			fmt.Fprintf(os.Stderr, "nftables netns N=%d: slowest call during the rewrite: #%d of %d (%v: %s), p99 %v\n", n, slowest, len(chunks), chunks[slowest], parts[slowest], pct(chunks, 99))
		}
		if len(chunks) > 0 {
			fmt.Fprintf(os.Stderr, "nftables netns N=%d: rewrite after a foreign commit %v: first call %v, read-back beside %d changes for %v, then %d calls p50 %v max %v, each with one change (a change waits for one call, then goes in the next)\n",
				n, rewrite.Round(time.Millisecond), firstRepair.Round(time.Millisecond), reading, readBack.Round(time.Millisecond), len(chunks), pct(chunks, 50), pct(chunks, 100))
		}
		t.Logf("N=%d x 5 endpoints: first full sync %v in %d batches; one endpoint change: netlink batch p50 %v p99 %v, SyncState p50 %v p99 %v; idle periodic full sync %v; RSS %d MiB",
			n, first.Round(time.Millisecond), calls, pct(sends, 50), pct(sends, 99), pct(totals, 50), pct(totals, 99), idleFull.Round(time.Microsecond), rusage0>>20)
		fmt.Fprintf(os.Stderr, "nftables netns N=%d: first full sync %v (%d batches); endpoint change: netlink batch p50 %v p99 %v max %v; SyncState p50 %v p99 %v max %v; idle full sync %v; RSS %d MiB\n",
			n, first.Round(time.Millisecond), calls, pct(sends, 50), pct(sends, 99), pct(sends, 100), pct(totals, 50), pct(totals, 99), pct(totals, 100), idleFull.Round(time.Microsecond), rusage0>>20)
	}
}

// timeN times n calls of f.
func timeN(t *testing.T, n int, f func() error) []time.Duration {
	t.Helper()
	var out []time.Duration
	for i := 0; i < n; i++ {
		t0 := time.Now()
		if err := f(); err != nil {
			t.Fatal(err)
		}
		out = append(out, time.Since(t0))
	}
	return out
}

func pct(ds []time.Duration, q int) time.Duration {
	s := append([]time.Duration(nil), ds...)
	sort.Slice(s, func(i, j int) bool { return s[i] < s[j] })
	i := (len(s) - 1) * q / 100
	return s[i].Round(time.Microsecond)
}

func splitComma(s string) []string { return strings.Split(s, ",") }

// rss is this process's resident set size in bytes (Linux).
func rss() int64 {
	b, err := os.ReadFile("/proc/self/statm")
	if err != nil {
		return 0
	}
	var size, res int64
	fmt.Sscan(string(b), &size, &res)
	return res * int64(os.Getpagesize())
}

// countTable counts the objects of the table as `nft list table` shows them.
func countTable(t *testing.T, ns string) (chains, rules, sets, elems int) {
	cur := ""
	inElems := false
	for _, l := range strings.Split(listTable(t, ns, netrules.IPv4), "\n") {
		f := strings.TrimSpace(l)
		switch {
		case strings.HasPrefix(f, "chain "):
			chains++
			cur = "chain"
		case strings.HasPrefix(f, "map ") || strings.HasPrefix(f, "set "):
			sets++
			cur = "set"
		case f == "}":
			if !inElems {
				cur = ""
			}
			inElems = false
		case cur == "chain" && f != "" && !strings.HasPrefix(f, "type "):
			rules++
		case cur == "set" && (inElems || strings.HasPrefix(f, "elements = {")):
			inElems = !strings.HasSuffix(f, "}")
			f = strings.TrimSuffix(strings.TrimPrefix(f, "elements = {"), "}")
			for _, e := range strings.Split(f, ",") {
				if strings.TrimSpace(e) != "" {
					elems++
				}
			}
		}
	}
	return
}
