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
// its own netlink call, so a sync reads the kernel's state (observe), computes the
// difference (Plan, pure) and applies it (apply); a failed call is reported and the next
// sync (always a full diff) repairs.
func (p *Proxier) Sync(ctx context.Context, rs *netrules.Ruleset, full bool) (netrules.SyncStats, error) {
	st := netrules.SyncStats{Full: true}
	if p.companion != nil {
		if err := p.companion.Sync(ctx, rs); err != nil {
			return st, err
		}
	}
	want := Desired(rs)
	obs, err := observe(p.h, want)
	if err != nil {
		return st, err
	}
	ops := Plan(want, obs)
	errs, failed := p.apply(ops, &st)
	for _, v := range want {
		if !failed[v.Key()] {
			st.Rules += len(v.Reals)
		}
	}
	for _, k := range sortedKeys(obs.DestErr) {
		errs = append(errs, fmt.Errorf("listing real servers of %s: %w", k, obs.DestErr[k]))
	}
	return st, errors.Join(errs...)
}

// Observed is what the kernel holds: its virtual servers (without fwmark ones) by Key and,
// for those also wanted, their real servers (or why they could not be listed).
type Observed struct {
	Services map[string]*libipvs.Service
	Dests    map[string]map[netip.AddrPort]*libipvs.Destination
	DestErr  map[string]error
}

// observe reads the virtual servers and the real servers of those in want.
func observe(h Handle, want []VirtualServer) (Observed, error) {
	obs := Observed{Services: map[string]*libipvs.Service{}, Dests: map[string]map[netip.AddrPort]*libipvs.Destination{}, DestErr: map[string]error{}}
	current, err := h.GetServices()
	if err != nil {
		return obs, fmt.Errorf("ipvs: listing virtual servers: %w", err)
	}
	for _, s := range current {
		if s.FWMark == 0 {
			obs.Services[keyOf(s)] = s
		}
	}
	for _, v := range want {
		k := v.Key()
		if _, ok := obs.Services[k]; !ok {
			continue
		}
		dests, err := h.GetDestinations(toService(v))
		if err != nil {
			obs.DestErr[k] = err
			continue
		}
		m := map[netip.AddrPort]*libipvs.Destination{}
		for _, d := range dests {
			a, _ := netip.AddrFromSlice(d.Address)
			m[netip.AddrPortFrom(a.Unmap(), d.Port)] = d
		}
		obs.Dests[k] = m
	}
	return obs, nil
}

// OpKind is one IPVS change.
type OpKind int

const (
	OpDelService OpKind = iota
	OpAddService
	OpUpdateService
	OpAddDest
	OpDelDest
)

// Op is a change Plan decided: Key names the virtual server; Real the real server of
// OpAddDest/OpDelDest. Service and Dest are what the handle is given.
type Op struct {
	Kind    OpKind
	Key     string
	Real    netip.AddrPort
	Service *libipvs.Service
	Dest    *libipvs.Destination
}

func (o Op) String() string {
	switch o.Kind {
	case OpDelService:
		return "delete " + o.Key
	case OpAddService:
		return "add " + o.Key
	case OpUpdateService:
		return "update " + o.Key
	case OpAddDest:
		return fmt.Sprintf("add %s -> %s", o.Key, o.Real)
	default:
		return fmt.Sprintf("delete %s -> %s", o.Key, o.Real)
	}
}

// Plan is the pure part of a sync: the changes that take the observed kernel to want.
// Virtual servers no longer wanted go first, then each wanted one in key order: created or
// updated (scheduler, persistence), its missing real servers added in want's order, its
// extra ones deleted in address order. A virtual server whose real servers could not be
// listed gets no real-server changes (the next sync retries).
func Plan(want []VirtualServer, obs Observed) []Op {
	byKey := map[string]VirtualServer{}
	for _, v := range want {
		byKey[v.Key()] = v
	}
	var ops []Op
	for _, k := range sortedKeys(obs.Services) {
		if _, ok := byKey[k]; !ok {
			ops = append(ops, Op{Kind: OpDelService, Key: k, Service: obs.Services[k]})
		}
	}
	for _, k := range sortedKeys(byKey) {
		v := byKey[k]
		svc := toService(v)
		cur, had := obs.Services[k]
		switch {
		case !had:
			ops = append(ops, Op{Kind: OpAddService, Key: k, Service: svc})
		case cur.SchedName != svc.SchedName || cur.Flags != svc.Flags || cur.Timeout != svc.Timeout:
			ops = append(ops, Op{Kind: OpUpdateService, Key: k, Service: svc})
		}
		if _, failed := obs.DestErr[k]; failed {
			continue
		}
		have := obs.Dests[k]
		wanted := map[netip.AddrPort]bool{}
		for _, r := range v.Reals {
			wanted[r] = true
			if _, ok := have[r]; !ok {
				ops = append(ops, Op{Kind: OpAddDest, Key: k, Real: r, Service: svc, Dest: toDest(r)})
			}
		}
		extra := make([]netip.AddrPort, 0, len(have))
		for a := range have {
			if !wanted[a] {
				extra = append(extra, a)
			}
		}
		sort.Slice(extra, func(i, j int) bool { return extra[i].Compare(extra[j]) < 0 })
		for _, a := range extra {
			ops = append(ops, Op{Kind: OpDelDest, Key: k, Real: a, Service: svc, Dest: have[a]})
		}
	}
	return ops
}

// apply carries out ops in order; a virtual server that could not be created or
// updated gets none of its real-server changes. Stats count virtual servers deleted and
// written, and the real servers of the virtual servers in place.
func (p *Proxier) apply(ops []Op, st *netrules.SyncStats) (errs []error, failed map[string]bool) {
	failed = map[string]bool{}
	for _, op := range ops {
		if failed[op.Key] {
			continue
		}
		var err error
		switch op.Kind {
		case OpDelService:
			err = p.h.DelService(op.Service)
			st.ChainsDeleted++
		case OpAddService:
			if err = p.h.NewService(op.Service); err == nil {
				st.ChainsWritten++
			}
		case OpUpdateService:
			if err = p.h.UpdateService(op.Service); err == nil {
				st.ChainsWritten++
			}
		case OpAddDest:
			err = p.h.NewDestination(op.Service, op.Dest)
		case OpDelDest:
			err = p.h.DelDestination(op.Service, op.Dest)
		}
		if err != nil {
			errs = append(errs, fmt.Errorf("%s: %w", op, err))
			if op.Kind == OpAddService || op.Kind == OpUpdateService {
				failed[op.Key] = true
			}
		}
	}
	return errs, failed
}

func sortedKeys[V any](m map[string]V) []string {
	out := make([]string, 0, len(m))
	for k := range m {
		out = append(out, k)
	}
	sort.Strings(out)
	return out
}
