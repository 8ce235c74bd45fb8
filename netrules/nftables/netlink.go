package nftables

import (
	"encoding/binary"
	"fmt"
	"net/netip"
	"sort"
	"sync/atomic"
	"time"

	"github.com/google/nftables"
	"github.com/google/nftables/binaryutil"
	"github.com/google/nftables/expr"
	"golang.org/x/sys/unix"

	"github.com/nodekeeper/nodekeeper/netrules"
)

// Netlink encoding of the rule IR: the same expressions nft generates for Rule.Text
// (checked by the golden tests against `nft -f`).

func addrOffset(fam netrules.Family, a Addr) uint32 {
	switch {
	case fam == netrules.IPv4 && a == Saddr:
		return 12
	case fam == netrules.IPv4:
		return 16
	case a == Saddr:
		return 8
	default:
		return 24
	}
}

func addrLen(fam netrules.Family) uint32 {
	if fam == netrules.IPv6 {
		return 16
	}
	return 4
}

func loadAddr(fam netrules.Family, a Addr, n uint32, reg uint32) *expr.Payload {
	return &expr.Payload{DestRegister: reg, Base: expr.PayloadBaseNetworkHeader, Offset: addrOffset(fam, a), Len: n}
}

func native32(v uint32) []byte { return binaryutil.NativeEndian.PutUint32(v) }

func cmpOp(neg bool) expr.CmpOp {
	if neg {
		return expr.CmpOpNeq
	}
	return expr.CmpOpEq
}

func verdictExpr(v Verdict) *expr.Verdict {
	switch v.Kind {
	case VerdictJump:
		return &expr.Verdict{Kind: expr.VerdictJump, Chain: v.Chain}
	case VerdictGoto:
		return &expr.Verdict{Kind: expr.VerdictGoto, Chain: v.Chain}
	case VerdictDrop:
		return &expr.Verdict{Kind: expr.VerdictDrop}
	case VerdictAccept:
		return &expr.Verdict{Kind: expr.VerdictAccept}
	default:
		return &expr.Verdict{Kind: expr.VerdictReturn}
	}
}

// anonSet is an anonymous interval set a rule needs, created in the same batch.
var anonID = func() *atomic.Uint32 { var a atomic.Uint32; a.Store(1 << 30); return &a }()

type anonSet struct {
	set   *nftables.Set
	elems []nftables.SetElement
}

// intervalElems turns prefixes into nft's interval encoding: ranges merged when they
// overlap or touch, each as its start and (flagged) the address after its end, led by
// an end marker at 0 when the first range does not start there.
func intervalElems(ps []netip.Prefix) []nftables.SetElement {
	type rng struct{ lo, hi netip.Addr }
	var rs []rng
	for _, p := range ps {
		p = p.Masked()
		lo := p.Addr()
		hi := lastAddr(p)
		rs = append(rs, rng{lo, hi})
	}
	sort.Slice(rs, func(i, j int) bool { return rs[i].lo.Less(rs[j].lo) })
	var merged []rng
	for _, r := range rs {
		if n := len(merged); n > 0 {
			last := &merged[n-1]
			if next := last.hi.Next(); !next.IsValid() || !next.Less(r.lo) {
				if last.hi.Less(r.hi) {
					last.hi = r.hi
				}
				continue
			}
		}
		merged = append(merged, r)
	}
	var out []nftables.SetElement
	if len(merged) > 0 {
		if zero := zeroAddr(merged[0].lo); merged[0].lo != zero {
			out = append(out, nftables.SetElement{Key: zero.AsSlice(), IntervalEnd: true})
		}
	}
	for _, r := range merged {
		out = append(out, nftables.SetElement{Key: r.lo.AsSlice()})
		if next := r.hi.Next(); next.IsValid() {
			out = append(out, nftables.SetElement{Key: next.AsSlice(), IntervalEnd: true})
		}
	}
	return out
}

func zeroAddr(a netip.Addr) netip.Addr {
	if a.Is4() {
		return netip.IPv4Unspecified()
	}
	return netip.IPv6Unspecified()
}

func lastAddr(p netip.Prefix) netip.Addr {
	b := p.Addr().AsSlice()
	for i := range b {
		bit := i * 8
		switch {
		case bit >= p.Bits():
			b[i] = 0xff
		case bit+8 > p.Bits():
			b[i] |= 0xff >> (p.Bits() - bit)
		}
	}
	a, _ := netip.AddrFromSlice(b)
	return a
}

// exprs encodes a rule; anonymous sets it needs come back to be added first.
func exprs(fam netrules.Family, table *nftables.Table, r *Rule) ([]expr.Any, []anonSet) {
	var out []expr.Any
	var sets []anonSet
	alen := addrLen(fam)
	for _, m := range r.Matches {
		switch m.Kind {
		case MatchPrefixes:
			if len(m.Prefixes) == 1 {
				p := m.Prefixes[0].Masked()
				bits := uint32(p.Bits())
				addr := p.Addr().AsSlice()
				if bits%8 == 0 && bits > 0 {
					out = append(out, loadAddr(fam, m.Addr, bits/8, 1),
						&expr.Cmp{Op: cmpOp(m.Neg), Register: 1, Data: addr[:bits/8]})
				} else {
					mb := make([]byte, alen)
					for i := range mb {
						switch bit := uint32(i * 8); {
						case bit+8 <= bits:
							mb[i] = 0xff
						case bit < bits:
							mb[i] = byte(0xff << (8 - (bits - bit)))
						}
					}
					out = append(out, loadAddr(fam, m.Addr, alen, 1),
						&expr.Bitwise{SourceRegister: 1, DestRegister: 1, Len: alen, Mask: mb, Xor: make([]byte, alen)},
						&expr.Cmp{Op: cmpOp(m.Neg), Register: 1, Data: addr})
				}
				continue
			}
			kt := nftables.TypeIPAddr
			if fam == netrules.IPv6 {
				kt = nftables.TypeIP6Addr
			}
			s := &nftables.Set{Table: table, Anonymous: true, Constant: true, Interval: true, KeyType: kt}
			sets = append(sets, anonSet{set: s, elems: intervalElems(m.Prefixes)})
			out = append(out, loadAddr(fam, m.Addr, alen, 1), &expr.Lookup{SourceRegister: 1, SetName: "", Invert: m.Neg})
			// the set's name and id are known once it is added (applyOps patches them)
		case MatchProtoPort:
			out = append(out,
				&expr.Meta{Key: expr.MetaKeyL4PROTO, Register: 1},
				&expr.Cmp{Op: expr.CmpOpEq, Register: 1, Data: []byte{m.Proto}},
				&expr.Payload{DestRegister: 1, Base: expr.PayloadBaseTransportHeader, Offset: 2, Len: 2},
				&expr.Cmp{Op: expr.CmpOpEq, Register: 1, Data: binaryutil.BigEndian.PutUint16(m.Port)})
		case MatchInSet:
			out = append(out, loadAddr(fam, m.Addr, alen, 1), &expr.Lookup{SourceRegister: 1, SetName: m.Set})
		case MatchNumgen:
			out = append(out, &expr.Numgen{Register: 1, Modulus: m.Mod, Type: unix.NFT_NG_RANDOM},
				&expr.Cmp{Op: expr.CmpOpEq, Register: 1, Data: native32(0)})
		case MatchFibLocal:
			out = append(out, &expr.Fib{Register: 1, ResultADDRTYPE: true, FlagSADDR: m.Addr == Saddr, FlagDADDR: m.Addr == Daddr},
				&expr.Cmp{Op: expr.CmpOpEq, Register: 1, Data: native32(unix.RTN_LOCAL)})
		case MatchL4Proto:
			out = append(out, &expr.Meta{Key: expr.MetaKeyL4PROTO, Register: 1},
				&expr.Cmp{Op: expr.CmpOpEq, Register: 1, Data: []byte{m.Proto}})
		case MatchCtState:
			out = append(out, &expr.Ct{Register: 1, Key: expr.CtKeySTATE},
				&expr.Bitwise{SourceRegister: 1, DestRegister: 1, Len: 4, Mask: native32(m.CtState), Xor: native32(0)},
				&expr.Cmp{Op: expr.CmpOpNeq, Register: 1, Data: native32(0)})
		case MatchMarkBit:
			out = append(out, &expr.Meta{Key: expr.MetaKeyMARK, Register: 1},
				&expr.Bitwise{SourceRegister: 1, DestRegister: 1, Len: 4, Mask: native32(masqBitValue), Xor: native32(0)},
				&expr.Cmp{Op: cmpOp(!m.Neg), Register: 1, Data: native32(0)})
		case MatchCtStatusDNAT:
			out = append(out, &expr.Ct{Register: 1, Key: expr.CtKeySTATUS},
				&expr.Bitwise{SourceRegister: 1, DestRegister: 1, Len: 4, Mask: native32(ctStatusDNAT), Xor: native32(0)},
				&expr.Cmp{Op: expr.CmpOpNeq, Register: 1, Data: native32(0)})
		case MatchHairpin:
			// registers as nft allocates them: 32-bit slots, 128-bit numbers when aligned
			daddrReg, protoReg, portReg := uint32(9), uint32(10), uint32(11)
			if fam == netrules.IPv6 {
				daddrReg, protoReg, portReg = 2, 3, 17
			}
			out = append(out, loadAddr(fam, Saddr, alen, 1), loadAddr(fam, Daddr, alen, daddrReg),
				&expr.Meta{Key: expr.MetaKeyL4PROTO, Register: protoReg},
				&expr.Payload{DestRegister: portReg, Base: expr.PayloadBaseTransportHeader, Offset: 2, Len: 2},
				&expr.Lookup{SourceRegister: 1, SetName: setHairpin})
		case MatchMasqKeys:
			protoReg, portReg := uint32(9), uint32(10)
			if fam == netrules.IPv6 {
				protoReg, portReg = 2, 13
			}
			out = append(out, loadAddr(fam, Daddr, alen, 1),
				&expr.Meta{Key: expr.MetaKeyL4PROTO, Register: protoReg},
				&expr.Payload{DestRegister: portReg, Base: expr.PayloadBaseTransportHeader, Offset: 2, Len: 2},
				&expr.Lookup{SourceRegister: 1, SetName: setMasqKeys})
		}
	}
	a := r.Action
	switch a.Kind {
	case ActVerdict:
		out = append(out, verdictExpr(a.Verdict))
	case ActDNAT:
		nfam := uint32(unix.NFPROTO_IPV4)
		if fam == netrules.IPv6 {
			nfam = unix.NFPROTO_IPV6
		}
		out = append(out,
			&expr.Immediate{Register: 1, Data: a.IP.AsSlice()},
			&expr.Immediate{Register: 2, Data: binaryutil.BigEndian.PutUint16(a.Port)},
			&expr.NAT{Type: expr.NATTypeDestNAT, Family: nfam, RegAddrMin: 1, RegProtoMin: 2, Specified: true})
	case ActDNATMap:
		// as nft: numgen into reg 1, lookup the map into reg 1 (address) and the next
		// slot (port: 32-bit reg 9 after an IPv4 address, 128-bit reg 2 after IPv6)
		nfam, portReg := uint32(unix.NFPROTO_IPV4), uint32(9)
		if fam == netrules.IPv6 {
			nfam, portReg = unix.NFPROTO_IPV6, 2
		}
		out = append(out,
			&expr.Numgen{Register: 1, Modulus: a.Mod, Type: unix.NFT_NG_RANDOM, Offset: a.Offset},
			&expr.Lookup{SourceRegister: 1, SetName: a.Map, IsDestRegSet: true, DestRegister: 1},
			&expr.NAT{Type: expr.NATTypeDestNAT, Family: nfam, RegAddrMin: 1, RegAddrMax: 1,
				RegProtoMin: portReg, RegProtoMax: portReg, Specified: true})
	case ActDNATRandom:
		// as ActDNATMap, the map anonymous and constant, created with the rule
		nfam, portReg := uint32(unix.NFPROTO_IPV4), uint32(9)
		if fam == netrules.IPv6 {
			nfam, portReg = unix.NFPROTO_IPV6, 2
		}
		m := endpointMapSet(fam, table, "")
		m.Anonymous, m.Constant = true, true
		// named by us, not "__map%d": the kernel then need not scan every set's
		// name to number it (measured: 18 → 13 s for a first sync of 10,000)
		m.ID = anonID.Add(1)
		m.Name = fmt.Sprintf("__m%x", m.ID)
		elems := make([]nftables.SetElement, len(a.Endpoints))
		for i, e := range a.Endpoints {
			elems[i] = endpointElem(uint32(i), e)
			elems[i].Key = binaryutil.BigEndian.PutUint32(uint32(i))
		}
		sets = append(sets, anonSet{set: m, elems: elems})
		out = append(out,
			&expr.Numgen{Register: 1, Modulus: uint32(len(a.Endpoints)), Type: unix.NFT_NG_RANDOM},
			&expr.Byteorder{SourceRegister: 1, DestRegister: 1, Op: expr.ByteorderHton, Len: 4, Size: 4},
			&expr.Lookup{SourceRegister: 1, SetName: "", IsDestRegSet: true, DestRegister: 1},
			&expr.NAT{Type: expr.NATTypeDestNAT, Family: nfam, RegAddrMin: 1, RegAddrMax: 1,
				RegProtoMin: portReg, RegProtoMax: portReg, Specified: true})
	case ActUpdateSet:
		out = append(out, loadAddr(fam, Saddr, alen, 1),
			&expr.Dynset{SrcRegKey: 1, SetName: a.Set, Operation: unix.NFT_DYNSET_OP_UPDATE})
		if a.Verdict.Kind != VerdictNone {
			out = append(out, verdictExpr(a.Verdict))
		}
	case ActMarkOr, ActMarkXor:
		mask, xor := ^uint32(masqBitValue), uint32(masqBitValue)
		if a.Kind == ActMarkXor {
			mask = 0xffffffff
		}
		out = append(out, &expr.Meta{Key: expr.MetaKeyMARK, Register: 1},
			&expr.Bitwise{SourceRegister: 1, DestRegister: 1, Len: 4, Mask: native32(mask), Xor: native32(xor)},
			&expr.Meta{Key: expr.MetaKeyMARK, SourceRegister: true, Register: 1})
	case ActMasquerade:
		out = append(out, &expr.Masq{FullyRandom: true})
	case ActUnmarkMasquerade:
		out = append(out, &expr.Meta{Key: expr.MetaKeyMARK, Register: 1},
			&expr.Bitwise{SourceRegister: 1, DestRegister: 1, Len: 4, Mask: native32(0xffffffff), Xor: native32(masqBitValue)},
			&expr.Meta{Key: expr.MetaKeyMARK, SourceRegister: true, Register: 1},
			&expr.Masq{FullyRandom: true})
	case ActReject:
		code := uint8(3) // ICMP port unreachable
		if fam == netrules.IPv6 {
			code = 4 // ICMPv6 port unreachable
		}
		out = append(out, &expr.Reject{Type: unix.NFT_REJECT_ICMP_UNREACH, Code: code})
	case ActVmap:
		if a.NoAddr {
			out = append(out,
				&expr.Meta{Key: expr.MetaKeyL4PROTO, Register: 1},
				&expr.Payload{DestRegister: 9, Base: expr.PayloadBaseTransportHeader, Offset: 2, Len: 2})
		} else {
			// registers as nft allocates them: 32-bit slots after the address
			protoReg, portReg := uint32(9), uint32(10)
			if fam == netrules.IPv6 {
				protoReg, portReg = 2, 13
			}
			out = append(out, loadAddr(fam, Daddr, alen, 1),
				&expr.Meta{Key: expr.MetaKeyL4PROTO, Register: protoReg},
				&expr.Payload{DestRegister: portReg, Base: expr.PayloadBaseTransportHeader, Offset: 2, Len: 2})
		}
		out = append(out, &expr.Lookup{SourceRegister: 1, SetName: a.Map, IsDestRegSet: true, DestRegister: 0})
	}
	return out, sets
}

// mapSet is the definition of one verdict map.
func mapSet(fam netrules.Family, table *nftables.Table, m uint8) *nftables.Set {
	at := nftables.TypeIPAddr
	if fam == netrules.IPv6 {
		at = nftables.TypeIP6Addr
	}
	if m == MapHairpin {
		return &nftables.Set{Table: table, Name: setHairpin, Concatenation: true,
			KeyType: nftables.MustConcatSetType(at, at, nftables.TypeInetProto, nftables.TypeInetService)}
	}
	if m == MapMasqKeys {
		return &nftables.Set{Table: table, Name: setMasqKeys, Concatenation: true,
			KeyType: nftables.MustConcatSetType(at, nftables.TypeInetProto, nftables.TypeInetService)}
	}
	kt := nftables.MustConcatSetType(nftables.TypeInetProto, nftables.TypeInetService)
	if mapHasAddr(m) {
		kt = nftables.MustConcatSetType(at, nftables.TypeInetProto, nftables.TypeInetService)
	}
	return &nftables.Set{Table: table, Name: mapNames[m], IsMap: true, KeyType: kt, DataType: nftables.TypeVerdict}
}

// endpointMapSet is the definition of an endpoint map: integer : address . service.
func endpointMapSet(fam netrules.Family, table *nftables.Table, name string) *nftables.Set {
	at := nftables.TypeIPAddr
	if fam == netrules.IPv6 {
		at = nftables.TypeIP6Addr
	}
	return &nftables.Set{Table: table, Name: name, IsMap: true, KeyType: nftables.TypeInteger,
		KeyByteOrder: binaryutil.NativeEndian, DataType: nftables.MustConcatSetType(at, nftables.TypeInetService)}
}

// endpointElem is one endpoint map element as the kernel stores it: the index in host
// order (numgen's output), the address and the port padded to 4 bytes.
func endpointElem(i uint32, e netip.AddrPort) nftables.SetElement {
	v := binary.BigEndian.AppendUint16(e.Addr().AsSlice(), e.Port())
	return nftables.SetElement{Key: native32(i), Val: append(v, 0, 0)}
}

// parseEndpointElem reads an endpoint map element (endpointElem's encoding).
func parseEndpointElem(e nftables.SetElement) (uint32, netip.AddrPort, bool) {
	if len(e.Key) != 4 || (len(e.Val) != 8 && len(e.Val) != 20) {
		return 0, netip.AddrPort{}, false
	}
	a, ok := netip.AddrFromSlice(e.Val[:len(e.Val)-4])
	if !ok {
		return 0, netip.AddrPort{}, false
	}
	port := binary.BigEndian.Uint16(e.Val[len(e.Val)-4:])
	return binaryutil.NativeEndian.Uint32(e.Key), netip.AddrPortFrom(a, port), true
}

// elemKeyBytes is a map key as the kernel stores it: each field padded to 4 bytes.
func elemKeyBytes(k ElemKey) []byte {
	var b []byte
	if k.Map == MapHairpin {
		b = append(b, k.Addr.AsSlice()...)
	}
	if mapHasAddr(k.Map) {
		b = append(b, k.Addr.AsSlice()...)
	}
	b = append(b, k.Proto, 0, 0, 0)
	b = binary.BigEndian.AppendUint16(b, k.Port)
	return append(b, 0, 0)
}

// parseElemKey is elemKeyBytes backwards.
func parseElemKey(m uint8, b []byte) (ElemKey, bool) {
	k := ElemKey{Map: m}
	if m == MapHairpin {
		n := len(b) - 8
		if n != 8 && n != 32 {
			return k, false
		}
		if string(b[:n/2]) != string(b[n/2:n]) {
			return k, false // not one we write: removed by the resync
		}
		b = b[n/2:]
	}
	if mapHasAddr(m) {
		switch len(b) {
		case 12:
			k.Addr, _ = netip.AddrFromSlice(b[:4])
			b = b[4:]
		case 24:
			k.Addr, _ = netip.AddrFromSlice(b[:16])
			b = b[16:]
		default:
			return k, false
		}
	}
	if len(b) != 8 {
		return k, false
	}
	k.Proto, k.Port = b[0], binary.BigEndian.Uint16(b[4:6])
	return k, true
}

func parseVerdict(v *expr.Verdict) (Verdict, bool) {
	if v == nil {
		return Verdict{}, false
	}
	switch v.Kind {
	case expr.VerdictJump:
		return jump(v.Chain), true
	case expr.VerdictGoto:
		return goTo(v.Chain), true
	case expr.VerdictDrop:
		return Verdict{Kind: VerdictDrop}, true
	case expr.VerdictAccept:
		return Verdict{Kind: VerdictAccept}, true
	case expr.VerdictReturn:
		return Verdict{Kind: VerdictReturn}, true
	}
	return Verdict{}, false
}

var hooks = map[string]*nftables.ChainHook{
	"prerouting": nftables.ChainHookPrerouting, "input": nftables.ChainHookInput, "forward": nftables.ChainHookForward,
	"output": nftables.ChainHookOutput, "postrouting": nftables.ChainHookPostrouting,
}

// queueOps buffers ops on conn (nothing is sent before conn.Flush); table gives the
// netlink value of each table index.
func queueOps(conn *nftables.Conn, fam netrules.Family, table func(int) *nftables.Table, ops []Op) error {
	chain := func(t int, n string) *nftables.Chain { return &nftables.Chain{Name: n, Table: table(t)} }
	// consecutive element ops on one map of one table go in one message
	type mref struct {
		table int
		m     int
		ep    string
		add   bool
	}
	var pending []nftables.SetElement
	cur := mref{m: -1}
	flushElems := func() error {
		if len(pending) == 0 {
			return nil
		}
		var s *nftables.Set
		if cur.ep != "" {
			s = endpointMapSet(fam, table(cur.table), cur.ep)
		} else {
			s = mapSet(fam, table(cur.table), uint8(cur.m))
		}
		var err error
		if cur.add {
			err = conn.SetAddElements(s, pending)
		} else {
			err = conn.SetDeleteElements(s, pending)
		}
		pending, cur = nil, mref{m: -1}
		if err != nil {
			return fmt.Errorf("map %s of %s: %w", s.Name, s.Table.Name, err)
		}
		return nil
	}
	for i := range ops {
		op := &ops[i]
		if op.Kind == OpAddElem || op.Kind == OpDelElem {
			add := op.Kind == OpAddElem
			if r := (mref{table: op.Table, m: int(op.Key.Map), add: add}); r != cur {
				if err := flushElems(); err != nil {
					return err
				}
				cur = r
			}
			e := nftables.SetElement{Key: elemKeyBytes(op.Key)}
			if add && !isPlainSet(op.Key.Map) {
				e.VerdictData = verdictExpr(op.Verdict)
			}
			pending = append(pending, e)
			continue
		}
		if op.Kind == OpAddEPElem || op.Kind == OpDelEPElem {
			add := op.Kind == OpAddEPElem
			if r := (mref{table: op.Table, m: -1, ep: op.Name, add: add}); r != cur {
				if err := flushElems(); err != nil {
					return err
				}
				cur = r
			}
			e := nftables.SetElement{Key: native32(op.Index)}
			if add {
				e = endpointElem(op.Index, op.Endpoint)
			}
			pending = append(pending, e)
			continue
		}
		if err := flushElems(); err != nil {
			return err
		}
		tab := table(op.Table)
		switch op.Kind {
		case OpAddTable:
			conn.AddTable(tab)
		case OpAddMap:
			if err := conn.AddSet(mapSet(fam, tab, op.Map), nil); err != nil {
				return fmt.Errorf("map %s of %s: %w", mapNames[op.Map], tab.Name, err)
			}
		case OpAddBaseChain:
			b := op.Base
			typ := nftables.ChainTypeFilter
			if b.Type == "nat" {
				typ = nftables.ChainTypeNAT
			}
			conn.AddChain(&nftables.Chain{Name: b.Name, Table: tab, Type: typ, Hooknum: hooks[b.Hook], Priority: nftables.ChainPriorityRef(nftables.ChainPriority(b.Priority))})
		case OpAddChain:
			conn.AddChain(chain(op.Table, op.Name))
		case OpFlushChain:
			conn.FlushChain(chain(op.Table, op.Name))
		case OpDelChain:
			conn.DelChain(chain(op.Table, op.Name))
		case OpAddRule:
			ex, sets := exprs(fam, tab, op.Rule)
			si := 0
			for _, s := range sets {
				if err := conn.AddSet(s.set, s.elems); err != nil {
					return fmt.Errorf("anonymous set: %w", err)
				}
			}
			for _, e := range ex {
				if l, ok := e.(*expr.Lookup); ok && l.SetName == "" && si < len(sets) {
					l.SetName, l.SetID = sets[si].set.Name, sets[si].set.ID
					si++
				}
			}
			conn.AddRule(&nftables.Rule{Table: tab, Chain: chain(op.Table, op.Name), Exprs: ex})
		case OpAddSet:
			kt := nftables.TypeIPAddr
			if fam == netrules.IPv6 {
				kt = nftables.TypeIP6Addr
			}
			s := &nftables.Set{Table: tab, Name: op.Name, KeyType: kt, Dynamic: true, HasTimeout: true,
				Timeout: secondsDuration(op.Timeout)}
			if err := conn.AddSet(s, nil); err != nil {
				return fmt.Errorf("set %s: %w", op.Name, err)
			}
		case OpDelSet:
			conn.DelSet(&nftables.Set{Table: tab, Name: op.Name})
		case OpAddEPMap:
			if err := conn.AddSet(endpointMapSet(fam, tab, op.Name), nil); err != nil {
				return fmt.Errorf("map %s: %w", op.Name, err)
			}
		}
	}
	return flushElems()
}

func secondsDuration(s int32) time.Duration { return time.Duration(s) * time.Second }
