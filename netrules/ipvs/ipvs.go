package ipvs

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"sort"
	"strings"
	"syscall"

	libipvs "github.com/moby/ipvs"
	corev1 "k8s.io/api/core/v1"

	"github.com/nodekeeper/nodekeeper/netrules"
)

// Handle is the part of github.com/moby/ipvs's *Handle the backend uses; Fake
// implements it in memory for kernels without IPVS.
type Handle interface {
	GetServices() ([]*libipvs.Service, error)
	NewService(*libipvs.Service) error
	UpdateService(*libipvs.Service) error
	DelService(*libipvs.Service) error
	GetDestinations(*libipvs.Service) ([]*libipvs.Destination, error)
	NewDestination(*libipvs.Service, *libipvs.Destination) error
	UpdateDestination(*libipvs.Service, *libipvs.Destination) error
	DelDestination(*libipvs.Service, *libipvs.Destination) error
}

var _ Handle = (*libipvs.Handle)(nil)

// VirtualServer is one desired IPVS service and its real servers.
type VirtualServer struct {
	Addr     netip.Addr
	Protocol corev1.Protocol
	Port     uint16
	// PersistentSeconds > 0 is ClientIP affinity.
	PersistentSeconds uint32
	Reals             []netip.AddrPort
	// For the ipset/iptables side.
	Kind string // "cluster", "external", "nodeport"
}

// Key identifies a virtual server.
func (v VirtualServer) Key() string {
	return fmt.Sprintf("%s/%s", strings.ToLower(string(v.Protocol)), netip.AddrPortFrom(v.Addr, v.Port))
}

// Desired turns a Ruleset into virtual servers: one per ClusterIP, external IP and
// load-balancer IP port, and one per node address for each NodePort. Pure; sorted by key.
func Desired(rs *netrules.Ruleset) []VirtualServer {
	var out []VirtualServer
	reals := func(eps []netrules.Endpoint) []netip.AddrPort {
		var r []netip.AddrPort
		for _, e := range eps {
			r = append(r, netip.AddrPortFrom(e.IP, uint16(e.Port)))
		}
		return r
	}
	for _, p := range rs.Ports {
		aff := uint32(0)
		if p.AffinitySeconds > 0 {
			aff = uint32(p.AffinitySeconds)
		}
		out = append(out, VirtualServer{Addr: p.ClusterIP, Protocol: p.Protocol, Port: uint16(p.Port), PersistentSeconds: aff,
			Reals: reals(p.ClusterEndpoints), Kind: "cluster"})
		ext := p.ClusterEndpoints
		if p.ExternalLocal {
			ext = p.LocalEndpoints
		}
		for _, a := range append(append([]netip.Addr(nil), p.ExternalIPs...), p.LoadBalancerIPs...) {
			out = append(out, VirtualServer{Addr: a, Protocol: p.Protocol, Port: uint16(p.Port), PersistentSeconds: aff,
				Reals: reals(ext), Kind: "external"})
		}
		if p.NodePort != 0 {
			for _, a := range rs.Node.NodeIPs {
				if a.Is4() != (rs.Family == netrules.IPv4) {
					continue
				}
				out = append(out, VirtualServer{Addr: a, Protocol: p.Protocol, Port: uint16(p.NodePort), PersistentSeconds: aff,
					Reals: reals(ext), Kind: "nodeport"})
			}
		}
	}
	sort.Slice(out, func(i, j int) bool { return out[i].Key() < out[j].Key() })
	return out
}

func protoNum(p corev1.Protocol) uint16 {
	switch p {
	case corev1.ProtocolUDP:
		return syscall.IPPROTO_UDP
	case corev1.ProtocolSCTP:
		return syscall.IPPROTO_SCTP
	}
	return syscall.IPPROTO_TCP
}

func toService(v VirtualServer) *libipvs.Service {
	s := &libipvs.Service{
		Address: net.IP(v.Addr.AsSlice()), Protocol: protoNum(v.Protocol), Port: v.Port,
		SchedName: libipvs.RoundRobin, AddressFamily: syscall.AF_INET, Netmask: 0xffffffff,
	}
	if v.Addr.Is6() {
		s.AddressFamily, s.Netmask = syscall.AF_INET6, 128
	}
	if v.PersistentSeconds > 0 {
		s.Flags |= 0x0001 // IP_VS_SVC_F_PERSISTENT
		s.Timeout = v.PersistentSeconds
	}
	return s
}

func toDest(a netip.AddrPort) *libipvs.Destination {
	d := &libipvs.Destination{Address: net.IP(a.Addr().AsSlice()), Port: a.Port(), Weight: 1,
		ConnectionFlags: libipvs.ConnFwdMasq, AddressFamily: syscall.AF_INET}
	if a.Addr().Is6() {
		d.AddressFamily = syscall.AF_INET6
	}
	return d
}

func keyOf(s *libipvs.Service) string {
	a, _ := netip.AddrFromSlice(s.Address)
	proto := "tcp"
	switch s.Protocol {
	case syscall.IPPROTO_UDP:
		proto = "udp"
	case syscall.IPPROTO_SCTP:
		proto = "sctp"
	}
	return fmt.Sprintf("%s/%s", proto, netip.AddrPortFrom(a.Unmap(), s.Port))
}

// Proxier syncs desired virtual servers into an IPVS Handle, changing only what
// differs, after the ipset/iptables companion rules when one is given.
type Proxier struct {
	h         Handle
	companion *Companion
}

// New returns a proxier over a handle (a *libipvs.Handle on a kernel with IPVS).
// companion may be nil (tests of the virtual-server side alone).
func New(h Handle, companion *Companion) *Proxier { return &Proxier{h: h, companion: companion} }

// Sync implements controllers.RulesBackend. IPVS has no transactions: every change is
// its own netlink call, so a sync reads the kernel's state first and applies the
// difference; a failed call is reported and the next sync (always a full diff) repairs.
func (p *Proxier) Sync(ctx context.Context, rs *netrules.Ruleset, full bool) (netrules.SyncStats, error) {
	st := netrules.SyncStats{Full: true}
	if p.companion != nil {
		if err := p.companion.Sync(ctx, rs); err != nil {
			return st, err
		}
	}
	want := map[string]VirtualServer{}
	for _, v := range Desired(rs) {
		want[v.Key()] = v
	}
	current, err := p.h.GetServices()
	if err != nil {
		return st, fmt.Errorf("ipvs: listing virtual servers: %w", err)
	}
	have := map[string]*libipvs.Service{}
	for _, s := range current {
		if s.FWMark != 0 {
			continue
		}
		have[keyOf(s)] = s
	}
	var errs []error
	keys := make([]string, 0, len(have))
	for k := range have {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	for _, k := range keys {
		if _, ok := want[k]; !ok {
			if err := p.h.DelService(have[k]); err != nil {
				errs = append(errs, fmt.Errorf("deleting %s: %w", k, err))
			}
			st.ChainsDeleted++
		}
	}
	keys = keys[:0]
	for k := range want {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	for _, k := range keys {
		v := want[k]
		svc := toService(v)
		if cur, ok := have[k]; !ok {
			if err := p.h.NewService(svc); err != nil {
				errs = append(errs, fmt.Errorf("adding %s: %w", k, err))
				continue
			}
			st.ChainsWritten++
		} else if cur.SchedName != svc.SchedName || cur.Flags != svc.Flags || cur.Timeout != svc.Timeout {
			if err := p.h.UpdateService(svc); err != nil {
				errs = append(errs, fmt.Errorf("updating %s: %w", k, err))
				continue
			}
			st.ChainsWritten++
		}
		dests, err := p.h.GetDestinations(svc)
		if err != nil {
			errs = append(errs, fmt.Errorf("listing real servers of %s: %w", k, err))
			continue
		}
		haveD := map[netip.AddrPort]*libipvs.Destination{}
		for _, d := range dests {
			a, _ := netip.AddrFromSlice(d.Address)
			haveD[netip.AddrPortFrom(a.Unmap(), d.Port)] = d
		}
		wantD := map[netip.AddrPort]bool{}
		for _, r := range v.Reals {
			wantD[r] = true
			st.Rules++
			if _, ok := haveD[r]; !ok {
				if err := p.h.NewDestination(svc, toDest(r)); err != nil {
					errs = append(errs, fmt.Errorf("adding real server %s to %s: %w", r, k, err))
				}
			}
		}
		for a, d := range haveD {
			if !wantD[a] {
				if err := p.h.DelDestination(svc, d); err != nil {
					errs = append(errs, fmt.Errorf("deleting real server %s of %s: %w", a, k, err))
				}
			}
		}
	}
	return st, errors.Join(errs...)
}
