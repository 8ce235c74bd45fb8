package conntrack

import (
	"context"
	"fmt"
	"net"
	"net/netip"
	"os"
	"os/exec"
	"sort"
	"testing"

	"github.com/vishvananda/netlink"
	"github.com/vishvananda/netns"
	"golang.org/x/sys/unix"

	"github.com/nodekeeper/nodekeeper/internal/netnstest"
	"github.com/nodekeeper/nodekeeper/netrules"
)

func flow(proto uint8, dst string, dport uint16, replySrc string) *netlink.ConntrackFlow {
	return &netlink.ConntrackFlow{
		Forward: netlink.IPTuple{Protocol: proto, SrcIP: net.ParseIP("10.244.0.20"), SrcPort: 40000, DstIP: net.ParseIP(dst), DstPort: dport},
		Reverse: netlink.IPTuple{Protocol: proto, SrcIP: net.ParseIP(replySrc), SrcPort: 5300, DstIP: net.ParseIP("10.244.0.20"), DstPort: 40000},
	}
}

func tcpFlow(dst string, dport uint16, replySrc string, replySport uint16, state uint8) *netlink.ConntrackFlow {
	return &netlink.ConntrackFlow{
		Forward:   netlink.IPTuple{Protocol: unix.IPPROTO_TCP, SrcIP: net.ParseIP("10.244.0.20"), SrcPort: 40000, DstIP: net.ParseIP(dst), DstPort: dport},
		Reverse:   netlink.IPTuple{Protocol: unix.IPPROTO_TCP, SrcIP: net.ParseIP(replySrc), SrcPort: replySport, DstIP: net.ParseIP("10.244.0.20"), DstPort: 40000},
		ProtoInfo: &netlink.ProtoInfoTCP{State: state},
	}
}

func TestMatcherMeansWhatTheCLIFiltersMean(t *testing.T) {
	vip, ep1, ep2 := netip.MustParseAddr("10.96.0.10"), netip.MustParseAddr("10.244.0.11"), netip.MustParseAddr("10.244.0.12")
	m := NewMatcher([]netrules.ConntrackFlow{
		{Family: netrules.IPv4, OrigDst: vip, OrigPort: 53, DstNAT: ep1},                  // an endpoint gone
		{Family: netrules.IPv4, OrigPort: 30053, DstNAT: ep1},                             // its node port
		{Family: netrules.IPv4, OrigDst: netip.MustParseAddr("10.96.0.11"), OrigPort: 53}, // first endpoints
		{Family: netrules.IPv4}, // selects nothing: ignored, not "every entry"
		{Family: netrules.IPv4, OrigDst: netip.MustParseAddr("10.96.0.20"), OrigPort: 80, Unanswered: true},
		{Family: netrules.IPv4, Unanswered: true}, // selects nothing either
	})
	for _, tt := range []struct {
		f    *netlink.ConntrackFlow
		want bool
	}{
		{flow(unix.IPPROTO_UDP, "10.96.0.10", 53, "10.244.0.11"), true},
		{flow(unix.IPPROTO_UDP, "10.96.0.10", 53, "10.244.0.12"), false}, // another endpoint
		{flow(unix.IPPROTO_TCP, "10.96.0.10", 53, "10.244.0.11"), false}, // a UDP flow never selects TCP
		{flow(unix.IPPROTO_UDP, "10.96.0.10", 54, "10.244.0.11"), false}, // another port
		{flow(unix.IPPROTO_UDP, "10.240.0.1", 30053, "10.244.0.11"), true},
		{flow(unix.IPPROTO_UDP, "192.0.2.1", 30053, "10.244.0.11"), true}, // node ports: any address
		{flow(unix.IPPROTO_UDP, "10.240.0.1", 30053, ep2.String()), false},
		{flow(unix.IPPROTO_UDP, "10.96.0.11", 53, "10.96.0.11"), true}, // not NATed (no endpoints then)
		{flow(unix.IPPROTO_UDP, "10.96.0.11", 53, "10.244.0.12"), true},
		{flow(unix.IPPROTO_UDP, "10.96.0.12", 53, "10.96.0.12"), false},
		// TCP: only attempts to an Unanswered flow's address that bypassed DNAT and got no answer
		{tcpFlow("10.96.0.20", 80, "10.96.0.20", 80, 1), true},
		{tcpFlow("10.96.0.20", 80, "10.244.0.11", 8080, 1), false}, // DNATed: a real attempt, left alone
		{tcpFlow("10.96.0.20", 80, "10.96.0.20", 80, 3), false},    // answered (ESTABLISHED)
		{tcpFlow("10.96.0.20", 81, "10.96.0.20", 81, 1), false},    // another port
		{tcpFlow("10.96.0.21", 80, "10.96.0.21", 80, 1), false},    // another Service
		{flow(unix.IPPROTO_UDP, "10.96.0.20", 80, "10.96.0.20"), false},
	} {
		if got := m.MatchConntrackFlow(tt.f); got != tt.want {
			t.Errorf("%s: match %v, want %v", tt.f, got, tt.want)
		}
	}
}

type countingTable struct {
	dumps map[netlink.InetFamily]int
	flows []*netlink.ConntrackFlow
}

func (c *countingTable) ConntrackDeleteFilters(_ netlink.ConntrackTableType, fam netlink.InetFamily, fs ...netlink.CustomConntrackFilter) (uint, error) {
	c.dumps[fam]++
	n := uint(0)
	for _, f := range c.flows {
		for _, flt := range fs {
			if flt.MatchConntrackFlow(f) {
				n++
			}
		}
	}
	return n, nil
}

// A batch costs one table dump per family, however many flows it names.
func TestOneDumpPerFamilyAndBatch(t *testing.T) {
	tbl := &countingTable{dumps: map[netlink.InetFamily]int{}}
	c := &Cleaner{Table: tbl}
	var flows []netrules.ConntrackFlow
	for i := 0; i < 500; i++ {
		flows = append(flows, netrules.ConntrackFlow{Family: netrules.IPv4, OrigDst: netip.MustParseAddr(fmt.Sprintf("10.96.%d.%d", i/250, i%250+1)), OrigPort: 53})
	}
	flows = append(flows, netrules.ConntrackFlow{Family: netrules.IPv6, OrigDst: netip.MustParseAddr("fd00::10"), OrigPort: 53})
	if err := c.Delete(context.Background(), flows); err != nil {
		t.Fatal(err)
	}
	if tbl.dumps[unix.AF_INET] != 1 || tbl.dumps[unix.AF_INET6] != 1 {
		t.Errorf("dumps: %v, want one per family", tbl.dumps)
	}
}

func ipt(t *testing.T, ns string, args ...string) {
	t.Helper()
	if out, err := exec.Command("ip", append([]string{"netns", "exec", ns}, args...)...).CombinedOutput(); err != nil {
		t.Fatalf("%v: %v: %s", args, err, out)
	}
}

// Real UDP flows in a network namespace, NATed by real rules: the Cleaner deletes
// exactly the entries its flows select and leaves the rest.
func TestCleanerDeletesRealFlowsInANetns(t *testing.T) {
	if os.Geteuid() != 0 {
		t.Skip("needs root (network namespaces)")
	}
	if _, err := exec.LookPath("iptables-nft"); err != nil {
		t.Skip("iptables-nft not installed")
	}
	ns := fmt.Sprintf("%s%d", netnstest.NamePrefix("nk-ipt-ct-"), os.Getpid()%100000)
	_ = exec.Command("ip", "netns", "del", ns).Run()
	if out, err := exec.Command("ip", "netns", "add", ns).CombinedOutput(); err != nil {
		t.Fatalf("ip netns add: %v: %s", err, out)
	}
	t.Cleanup(func() { _ = exec.Command("ip", "netns", "del", ns).Run() })
	ipt(t, ns, "ip", "link", "set", "lo", "up")
	for _, a := range []string{"10.96.0.10/32", "10.244.0.11/32", "10.244.0.12/32"} {
		ipt(t, ns, "ip", "addr", "add", a, "dev", "lo")
	}
	// client source port -> endpoint, as a Service's random choice would have made it
	for _, r := range [][]string{
		{"40001", "10.96.0.10", "53", "10.244.0.11:5300"},
		{"40002", "10.96.0.10", "53", "10.244.0.12:5300"},
		{"40003", "10.96.0.10", "30053", "10.244.0.11:5300"},
		{"40004", "10.96.0.10", "54", "10.244.0.11:5300"},
	} {
		ipt(t, ns, "iptables-nft", "-w", "5", "-t", "nat", "-A", "OUTPUT", "-p", "udp", "--sport", r[0], "-d", r[1], "--dport", r[2], "-j", "DNAT", "--to-destination", r[3])
	}
	send := func(sport int, dport int) {
		_, err := netnstest.InNetns(ns, func() (struct{}, error) {
			c, err := net.DialUDP("udp", &net.UDPAddr{IP: net.ParseIP("127.0.0.1"), Port: sport}, &net.UDPAddr{IP: net.ParseIP("10.96.0.10"), Port: dport})
			if err != nil {
				return struct{}{}, err
			}
			defer c.Close()
			_, err = c.Write([]byte("q"))
			return struct{}{}, err
		})
		if err != nil {
			t.Fatal(err)
		}
	}
	send(40001, 53)
	send(40002, 53)
	send(40003, 30053)
	send(40004, 54)
	list := func() []string {
		h, err := netnstest.InNetns(ns, func() (*netlink.Handle, error) {
			cur, err := netns.Get()
			if err != nil {
				return nil, err
			}
			defer cur.Close()
			return netlink.NewHandleAt(cur, unix.NETLINK_NETFILTER)
		})
		if err != nil {
			t.Fatal(err)
		}
		defer h.Close()
		flows, err := h.ConntrackTableList(netlink.ConntrackTable, unix.AF_INET)
		if err != nil {
			t.Fatal(err)
		}
		var out []string
		for _, f := range flows {
			if f.Forward.Protocol == unix.IPPROTO_UDP && f.Forward.SrcPort >= 40001 && f.Forward.SrcPort <= 40004 {
				out = append(out, fmt.Sprintf("%d->%s", f.Forward.SrcPort, f.Reverse.SrcIP))
			}
		}
		sort.Strings(out)
		return out
	}
	before := list()
	if fmt.Sprint(before) != "[40001->10.244.0.11 40002->10.244.0.12 40003->10.244.0.11 40004->10.244.0.11]" {
		t.Fatalf("the flows were not set up: %v", before)
	}
	c := &Cleaner{NetNS: "/run/netns/" + ns}
	defer c.Close()
	err := c.Delete(context.Background(), []netrules.ConntrackFlow{
		{Family: netrules.IPv4, OrigDst: netip.MustParseAddr("10.96.0.10"), OrigPort: 53, DstNAT: netip.MustParseAddr("10.244.0.11")},
		{Family: netrules.IPv4, OrigPort: 30053, DstNAT: netip.MustParseAddr("10.244.0.11")},
	})
	if err != nil {
		t.Fatal(err)
	}
	if got := fmt.Sprint(list()); got != "[40002->10.244.0.12 40004->10.244.0.11]" {
		t.Errorf("after Delete: %s", got)
	}
}

// Real TCP connection attempts in a network namespace: the one that bypassed the DNAT
// rules (made before the Service had any) is deleted; the DNATed one and one to another
// address are left alone.
func TestCleanerDeletesUnansweredTCPAttemptsInANetns(t *testing.T) {
	if os.Geteuid() != 0 {
		t.Skip("needs root (network namespaces)")
	}
	if _, err := exec.LookPath("iptables-nft"); err != nil {
		t.Skip("iptables-nft not installed")
	}
	ns := fmt.Sprintf("%stcp-%d", netnstest.NamePrefix("nk-ipt-ct-"), os.Getpid()%100000)
	_ = exec.Command("ip", "netns", "del", ns).Run()
	if out, err := exec.Command("ip", "netns", "add", ns).CombinedOutput(); err != nil {
		t.Fatalf("ip netns add: %v: %s", err, out)
	}
	t.Cleanup(func() { _ = exec.Command("ip", "netns", "del", ns).Run() })
	ipt(t, ns, "ip", "link", "set", "lo", "up")
	// nothing answers these addresses: the SYNs loop back and are dropped, so each
	// attempt's entry stays in SYN_SENT
	ipt(t, ns, "ip", "route", "add", "10.96.0.0/24", "dev", "lo")
	ipt(t, ns, "ip", "route", "add", "10.244.9.0/24", "dev", "lo")
	ipt(t, ns, "iptables-nft", "-w", "5", "-t", "nat", "-A", "OUTPUT", "-p", "tcp", "--sport", "40012", "-d", "10.96.0.20", "--dport", "80", "-j", "DNAT", "--to-destination", "10.244.9.9:8080")
	connect := func(sport int, dst string) {
		fd, err := netnstest.InNetns(ns, func() (int, error) {
			fd, err := unix.Socket(unix.AF_INET, unix.SOCK_STREAM|unix.SOCK_NONBLOCK, 0)
			if err != nil {
				return -1, err
			}
			if err := unix.Bind(fd, &unix.SockaddrInet4{Port: sport}); err != nil {
				return -1, err
			}
			a := netip.MustParseAddr(dst).As4()
			if err := unix.Connect(fd, &unix.SockaddrInet4{Port: 80, Addr: a}); err != nil && err != unix.EINPROGRESS {
				return -1, err
			}
			return fd, nil
		})
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { unix.Close(fd) })
	}
	connect(40011, "10.96.0.20") // before the Service had rules: no DNAT
	connect(40012, "10.96.0.20") // DNATed
	connect(40013, "10.96.0.21") // another address
	list := func() []string {
		h, err := netnstest.InNetns(ns, func() (*netlink.Handle, error) {
			cur, err := netns.Get()
			if err != nil {
				return nil, err
			}
			defer cur.Close()
			return netlink.NewHandleAt(cur, unix.NETLINK_NETFILTER)
		})
		if err != nil {
			t.Fatal(err)
		}
		defer h.Close()
		flows, err := h.ConntrackTableList(netlink.ConntrackTable, unix.AF_INET)
		if err != nil {
			t.Fatal(err)
		}
		var out []string
		for _, f := range flows {
			if f.Forward.Protocol == unix.IPPROTO_TCP && f.Forward.SrcPort >= 40011 && f.Forward.SrcPort <= 40013 {
				out = append(out, fmt.Sprintf("%d->%s", f.Forward.SrcPort, f.Reverse.SrcIP))
			}
		}
		sort.Strings(out)
		return out
	}
	if got := fmt.Sprint(list()); got != "[40011->10.96.0.20 40012->10.244.9.9 40013->10.96.0.21]" {
		t.Fatalf("the attempts were not set up: %s", got)
	}
	c := &Cleaner{NetNS: "/run/netns/" + ns}
	defer c.Close()
	if err := c.Delete(context.Background(), []netrules.ConntrackFlow{
		{Family: netrules.IPv4, OrigDst: netip.MustParseAddr("10.96.0.20"), OrigPort: 80, Unanswered: true},
	}); err != nil {
		t.Fatal(err)
	}
	if got := fmt.Sprint(list()); got != "[40012->10.244.9.9 40013->10.96.0.21]" {
		t.Errorf("after Delete: %s", got)
	}
}
