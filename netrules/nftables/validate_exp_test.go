package nftables

import (
	"fmt"
	"os"
	"sort"
	"testing"
	"time"

	gnft "github.com/google/nftables"
	"github.com/google/nftables/binaryutil"
	"github.com/google/nftables/expr"
	"golang.org/x/sys/unix"
)

// TestNetnsValidateCost measures what one netlink batch costs the kernel in a table
// shaped like the backend's (a nat base chain jumping to a dispatch chain whose verdict
// map sends ip . proto . port to N service chains, each with one DNAT rule), by kind of
// change: which changes make the commit walk the whole chain graph
// (nf_tables_validate → nft_table_validate, when the batch set NFT_VALIDATE_NEED) and
// which do not. Figures only (never pass/fail); NK_NFT_VALIDATE_EXP=10000,50000 runs it.
func TestNetnsValidateCost(t *testing.T) {
	needRoot(t)
	env := os.Getenv("NK_NFT_VALIDATE_EXP")
	if env == "" || testing.Short() {
		t.Skip("NK_NFT_VALIDATE_EXP=10000[,50000] runs the validation cost experiment")
	}
	for _, s := range splitComma(env) {
		var n int
		fmt.Sscan(s, &n)
		validateExperiment(t, n)
	}
}

func validateExperiment(t *testing.T, n int) {
	ns := netns(t)
	f, err := os.Open("/run/netns/" + ns)
	if err != nil {
		t.Fatal(err)
	}
	fd, err := unix.Dup(int(f.Fd()))
	f.Close()
	if err != nil {
		t.Fatal(err)
	}
	defer unix.Close(fd)
	c, err := gnft.New(gnft.WithNetNSFd(fd), gnft.AsLasting(), gnft.WithSockOptions(bigBuffers))
	if err != nil {
		t.Fatal(err)
	}
	defer c.CloseLasting()
	flush := func() time.Duration {
		t0 := time.Now()
		if err := c.Flush(); err != nil {
			t.Fatal(err)
		}
		return time.Since(t0)
	}
	key := expKey
	mk := func(name string, nsvc int) *expTable {
		x := &expTable{t: c.AddTable(&gnft.Table{Name: name, Family: gnft.TableFamilyIPv4})}
		keyT := gnft.MustConcatSetType(gnft.TypeIPAddr, gnft.TypeInetProto, gnft.TypeInetService)
		x.vmap = &gnft.Set{Table: x.t, Name: "service-ips", IsMap: true, KeyType: keyT, DataType: gnft.TypeVerdict}
		x.dmap = &gnft.Set{Table: x.t, Name: "service-index", IsMap: true, KeyType: keyT, DataType: gnft.TypeInteger}
		if err := c.AddSet(x.vmap, nil); err != nil {
			t.Fatal(err)
		}
		if err := c.AddSet(x.dmap, nil); err != nil {
			t.Fatal(err)
		}
		x.disp = c.AddChain(&gnft.Chain{Name: "services", Table: x.t})
		load := []expr.Any{
			&expr.Payload{DestRegister: 1, Base: expr.PayloadBaseNetworkHeader, Offset: 16, Len: 4},
			&expr.Meta{Key: expr.MetaKeyL4PROTO, Register: 9},
			&expr.Payload{DestRegister: 10, Base: expr.PayloadBaseTransportHeader, Offset: 2, Len: 2},
		}
		c.AddRule(&gnft.Rule{Table: x.t, Chain: x.disp, Exprs: append(load, &expr.Lookup{SourceRegister: 1, DestRegister: 0, IsDestRegSet: true, SetName: x.vmap.Name, SetID: x.vmap.ID})})
		pol := gnft.ChainPolicyAccept
		base := c.AddChain(&gnft.Chain{Name: "nat-prerouting", Table: x.t, Type: gnft.ChainTypeNAT, Hooknum: gnft.ChainHookPrerouting, Priority: gnft.ChainPriorityNATDest, Policy: &pol})
		c.AddRule(&gnft.Rule{Table: x.t, Chain: base, Exprs: []expr.Any{&expr.Verdict{Kind: expr.VerdictJump, Chain: "services"}}})
		flush()
		for i := 0; i < nsvc; i++ {
			x.addService(c, i, key, true)
			if i%2000 == 1999 {
				flush()
			}
		}
		flush()
		return x
	}
	_ = mk
	big := mk("big", n)
	small := mk("shard", 1000)
	const rounds = 30
	type row struct {
		what string
		d    []time.Duration
	}
	var rows []row
	run := func(what string, f func(r int)) {
		var ds []time.Duration
		for r := 0; r < rounds; r++ {
			f(r)
			ds = append(ds, flush())
		}
		rows = append(rows, row{what, ds})
	}
	next := n + 100
	// 1. today's creation: chain with a DNAT rule + goto element
	run("create: chain + DNAT rule + goto element (today)", func(r int) { big.addService(c, next+r, key, true) })
	next += rounds
	// 2. chain + DNAT rule only, not referenced
	run("new unreferenced chain + DNAT rule (nat expr)", func(r int) { big.addService(c, next+r, key, false) })
	// 3. goto element to that existing chain only
	run("goto element to an existing unreferenced chain", func(r int) {
		c.SetAddElements(big.vmap, []gnft.SetElement{{Key: key(next + r), VerdictData: &expr.Verdict{Kind: expr.VerdictGoto, Chain: svcName(next + r)}}})
	})
	next += rounds
	// 4. new chain with a counter only (expression without validate), unreferenced
	run("new unreferenced chain + counter rule", func(r int) {
		ch := c.AddChain(&gnft.Chain{Name: fmt.Sprintf("plain-%d", r), Table: big.t})
		c.AddRule(&gnft.Rule{Table: big.t, Chain: ch, Exprs: []expr.Any{&expr.Counter{}}})
	})
	// 5. data map element (ip . proto . port : index): no verdict
	run("data map element (key : index)", func(r int) {
		c.SetAddElements(big.dmap, []gnft.SetElement{{Key: key(next + r), Val: binaryutil.NativeEndian.PutUint32(uint32(r))}})
	})
	// 6. delete a goto element (and its chain)
	run("delete: goto element + chain", func(r int) {
		c.SetDeleteElements(big.vmap, []gnft.SetElement{{Key: key(r)}})
		c.FlushChain(&gnft.Chain{Name: svcName(r), Table: big.t})
		c.DelChain(&gnft.Chain{Name: svcName(r), Table: big.t})
	})
	// 7. replace the DNAT rule of an existing referenced chain (endpoint move, old path)
	run("flush + new DNAT rule in a referenced chain", func(r int) {
		ch := &gnft.Chain{Name: svcName(1000 + r), Table: big.t}
		c.FlushChain(ch)
		c.AddRule(&gnft.Rule{Table: big.t, Chain: ch, Exprs: dnatExprs(r)})
	})
	// 8. a creation in a small table (1,000 Services) beside the big one
	run("create in a 1,000-Service table beside the big one", func(r int) { small.addService(c, 5000+r, key, true) })
	fmt.Fprintf(os.Stderr, "validation experiment at N=%d (kernel %s), %d batches each, ms p50 / p90 / max:\n", n, kernelRelease(), rounds)
	for _, r := range rows {
		sort.Slice(r.d, func(i, j int) bool { return r.d[i] < r.d[j] })
		ms := func(d time.Duration) float64 { return float64(d.Microseconds()) / 1000 }
		fmt.Fprintf(os.Stderr, "  %-55s %7.2f %7.2f %7.2f\n", r.what, ms(r.d[len(r.d)/2]), ms(r.d[len(r.d)*9/10]), ms(r.d[len(r.d)-1]))
	}
}

func svcName(i int) string { return fmt.Sprintf("service-%d", i) }

func dnatExprs(i int) []expr.Any {
	return []expr.Any{
		&expr.Immediate{Register: 1, Data: []byte{10, 200, byte(i >> 8), byte(i)}},
		&expr.Immediate{Register: 2, Data: binaryutil.BigEndian.PutUint16(8080)},
		&expr.NAT{Type: expr.NATTypeDestNAT, Family: unix.NFPROTO_IPV4, RegAddrMin: 1, RegProtoMin: 2, Specified: true},
	}
}

type expTable struct {
	t    *gnft.Table
	vmap *gnft.Set // ip . proto . port : verdict
	dmap *gnft.Set // ip . proto . port : index (data, no verdict)
	disp *gnft.Chain
}

func expKey(i int) []byte {
	b := []byte{10, byte(i >> 16), byte(i >> 8), byte(i)}
	b = append(b, 6, 0, 0, 0) // tcp, padded to 4 bytes
	return append(append(b, binaryutil.BigEndian.PutUint16(80)...), 0, 0)
}

// addService queues one service chain with a DNAT rule and, with link, its goto element.
func (x *expTable) addService(c *gnft.Conn, i int, key func(int) []byte, link bool) {
	ch := c.AddChain(&gnft.Chain{Name: svcName(i), Table: x.t})
	c.AddRule(&gnft.Rule{Table: x.t, Chain: ch, Exprs: dnatExprs(i)})
	if link {
		if err := c.SetAddElements(x.vmap, []gnft.SetElement{{Key: key(i), VerdictData: &expr.Verdict{Kind: expr.VerdictGoto, Chain: svcName(i)}}}); err != nil {
			panic(err)
		}
	}
}

func kernelRelease() string {
	var u unix.Utsname
	if unix.Uname(&u) != nil {
		return "?"
	}
	return unix.ByteSliceToString(u.Release[:])
}
