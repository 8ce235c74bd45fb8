// Package conntrack deletes stale conntrack entries through netlink: one dump of the
// conntrack table per family and batch, and one delete message per matching entry, in
// the agent's process (no conntrack(8) process per flow).
package conntrack

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"sync"

	"github.com/vishvananda/netlink"
	"github.com/vishvananda/netns"
	"golang.org/x/sys/unix"

	"github.com/nodekeeper/nodekeeper/netrules"
)

// Table is the part of a netlink handle the Cleaner uses (*netlink.Handle implements it).
type Table interface {
	ConntrackDeleteFilters(table netlink.ConntrackTableType, family netlink.InetFamily, filters ...netlink.CustomConntrackFilter) (uint, error)
}

// Cleaner deletes the conntrack entries netrules.StaleConntrack selects (UDP entries;
// TCP connection attempts that bypassed a Service's DNAT and got no answer). It
// implements controllers.ConntrackCleaner. It is safe for concurrent use.
type Cleaner struct {
	// NetNS is the path of the network namespace to clean ("" = the agent's own), e.g.
	// /run/netns/node in tests.
	NetNS string
	// Table, when set, is used instead of a netlink handle opened in NetNS.
	Table Table

	mu sync.Mutex
	h  *netlink.Handle
}

// table returns the handle, opening it on first use.
func (c *Cleaner) table() (Table, error) {
	if c.Table != nil {
		return c.Table, nil
	}
	if c.h != nil {
		return c.h, nil
	}
	var h *netlink.Handle
	var err error
	if c.NetNS == "" {
		h, err = netlink.NewHandle(unix.NETLINK_NETFILTER)
	} else {
		var ns netns.NsHandle
		ns, err = netns.GetFromPath(c.NetNS)
		if err != nil {
			return nil, fmt.Errorf("opening network namespace %s: %w", c.NetNS, err)
		}
		defer ns.Close()
		h, err = netlink.NewHandleAt(ns, unix.NETLINK_NETFILTER)
	}
	if err != nil {
		return nil, fmt.Errorf("opening a netfilter netlink socket: %w", err)
	}
	c.h = h
	return h, nil
}

// Delete removes every conntrack entry that one of flows selects: per family, one
// dump of the table and one delete per matching entry. Entries already gone are not
// an error.
func (c *Cleaner) Delete(_ context.Context, flows []netrules.ConntrackFlow) error {
	if len(flows) == 0 {
		return nil
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	t, err := c.table()
	if err != nil {
		return err
	}
	byFam := map[netrules.Family]*Matcher{}
	for _, f := range flows {
		m := byFam[f.Family]
		if m == nil {
			m = NewMatcher(nil)
			byFam[f.Family] = m
		}
		m.Add(f)
	}
	var errs []error
	for _, fam := range []netrules.Family{netrules.IPv4, netrules.IPv6} {
		m := byFam[fam]
		if m == nil {
			continue
		}
		af := netlink.InetFamily(unix.AF_INET)
		if fam == netrules.IPv6 {
			af = unix.AF_INET6
		}
		if _, err := t.ConntrackDeleteFilters(netlink.ConntrackTable, af, m); err != nil {
			errs = append(errs, fmt.Errorf("deleting IPv%d conntrack entries: %w", fam, err))
		}
	}
	return errors.Join(errs...)
}

// Close releases the netlink socket.
func (c *Cleaner) Close() {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.h != nil {
		c.h.Close()
		c.h = nil
	}
}

// Matcher is one netlink filter matching any of a set of ConntrackFlows, in time
// independent of how many there are: UDP entries whose original destination (address
// and port, or only port for node ports) and, when the flow names one, NAT destination
// (the reply's source) match a flow; and, for Unanswered flows, TCP entries in state
// SYN_SENT to that address and port that were not DNATed. It means what conntrack -D -p
// udp [--orig-dst A] [--orig-port-dst P] [--dst-nat E] means for each UDP flow, and
// conntrack -D -p tcp --state SYN_SENT --orig-dst A --orig-port-dst P --reply-src A
// --reply-port-src P for each Unanswered one.
type Matcher struct {
	exact      map[key]bool // orig dst + port (+ NAT destination)
	unanswered map[netip.AddrPort]bool
}

type key struct {
	dst  netip.Addr // invalid: any destination (node ports)
	port uint16     // 0: any port
	nat  netip.Addr // invalid: any NAT destination
}

// NewMatcher returns a Matcher for flows.
func NewMatcher(flows []netrules.ConntrackFlow) *Matcher {
	m := &Matcher{exact: map[key]bool{}, unanswered: map[netip.AddrPort]bool{}}
	for _, f := range flows {
		m.Add(f)
	}
	return m
}

// Add adds one flow. A flow that selects nothing (no destination, port or NAT
// destination; an Unanswered one without destination and port) is ignored: it would
// select every entry.
func (m *Matcher) Add(f netrules.ConntrackFlow) {
	if f.Unanswered {
		if f.OrigDst.IsValid() && f.OrigPort != 0 {
			m.unanswered[netip.AddrPortFrom(f.OrigDst.Unmap(), uint16(f.OrigPort))] = true
		}
		return
	}
	if !f.OrigDst.IsValid() && f.OrigPort == 0 && !f.DstNAT.IsValid() {
		return
	}
	k := key{port: uint16(f.OrigPort)}
	if f.OrigDst.IsValid() {
		k.dst = f.OrigDst.Unmap()
	}
	if f.DstNAT.IsValid() {
		k.nat = f.DstNAT.Unmap()
	}
	m.exact[k] = true
}

func addr(ip net.IP) netip.Addr {
	a, ok := netip.AddrFromSlice(ip)
	if !ok {
		return netip.Addr{}
	}
	return a.Unmap()
}

// tcpSynSent is the kernel's TCP_CONNTRACK_SYN_SENT: only the client's SYN was seen.
const tcpSynSent = 1

// MatchConntrackFlow implements netlink.CustomConntrackFilter.
func (m *Matcher) MatchConntrackFlow(f *netlink.ConntrackFlow) bool {
	dst, nat := addr(f.Forward.DstIP), addr(f.Reverse.SrcIP)
	switch f.Forward.Protocol {
	case unix.IPPROTO_TCP:
		tcp, ok := f.ProtoInfo.(*netlink.ProtoInfoTCP)
		return ok && tcp.State == tcpSynSent && nat == dst && f.Reverse.SrcPort == f.Forward.DstPort &&
			m.unanswered[netip.AddrPortFrom(dst, f.Forward.DstPort)]
	case unix.IPPROTO_UDP:
	default:
		return false
	}
	for _, d := range []netip.Addr{dst, {}} {
		for _, p := range []uint16{f.Forward.DstPort, 0} {
			for _, n := range []netip.Addr{nat, {}} {
				if m.exact[key{dst: d, port: p, nat: n}] {
					return true
				}
			}
		}
	}
	return false
}
