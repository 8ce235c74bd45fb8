package nftables

import (
	"fmt"
	"net/netip"
	"strings"
)

// The rules nodekeeper writes, as data: a rule is a few matches and one action. The
// same value renders as nft text (Text, what `nft list` prints back and what diffs
// compare) and as netlink expressions (exprs, in netlink.go) matching what nft itself
// generates for that text, so the table reads sensibly with `nft list table`.

// VerdictKind is what a verdict does.
type VerdictKind uint8

const (
	VerdictNone VerdictKind = iota
	VerdictJump
	VerdictGoto
	VerdictDrop
	VerdictAccept
	VerdictReturn
)

// Verdict is a rule's or a map element's verdict.
type Verdict struct {
	Kind  VerdictKind
	Chain string
}

func (v Verdict) String() string {
	switch v.Kind {
	case VerdictJump:
		return "jump " + v.Chain
	case VerdictGoto:
		return "goto " + v.Chain
	case VerdictDrop:
		return "drop"
	case VerdictAccept:
		return "accept"
	case VerdictReturn:
		return "return"
	}
	return ""
}

func jump(c string) Verdict { return Verdict{Kind: VerdictJump, Chain: c} }
func goTo(c string) Verdict { return Verdict{Kind: VerdictGoto, Chain: c} }

// Addr is which address of the IP header a match reads.
type Addr uint8

const (
	Saddr Addr = iota
	Daddr
)

func (a Addr) String() string {
	if a == Saddr {
		return "saddr"
	}
	return "daddr"
}

// MatchKind says what a match tests.
type MatchKind uint8

const (
	// MatchPrefixes: the address is (Neg: is not) in Prefixes (one: a compare; more:
	// an anonymous interval set).
	MatchPrefixes MatchKind = iota
	// MatchProtoPort: meta l4proto is Proto and the transport destination port is Port.
	MatchProtoPort
	// MatchInSet: the address is in the named set Set.
	MatchInSet
	// MatchNumgen: a random number mod Mod is 0.
	MatchNumgen
	// MatchFibLocal: the address is local to the node.
	MatchFibLocal
	// MatchL4Proto: meta l4proto is Proto.
	MatchL4Proto
	// MatchCtState: the conntrack state has the bit CtState.
	MatchCtState
	// MatchMarkBit: the packet mark has (Neg: has not) masqBit.
	MatchMarkBit
	// MatchCtStatusDNAT: the connection was destination-NATed.
	MatchCtStatusDNAT
	// MatchHairpin: (saddr . daddr . l4proto . dport) is in the hairpin set.
	MatchHairpin
	// MatchMasqKeys: (daddr . l4proto . dport) is in the set of ClusterIP keys whose
	// off-cluster clients are masqueraded.
	MatchMasqKeys
)

// Match is one test of a rule.
type Match struct {
	Kind     MatchKind
	Addr     Addr
	Neg      bool
	Prefixes []netip.Prefix
	Proto    uint8
	Port     uint16
	Set      string
	Mod      uint32
	CtState  uint32
}

// ActionKind says what a rule does when it matches.
type ActionKind uint8

const (
	ActVerdict ActionKind = iota
	// ActDNAT: dnat to Addr:Port (after a MatchL4Proto).
	ActDNAT
	// ActUpdateSet: add/refresh the source address in Set, then Verdict if any.
	ActUpdateSet
	ActMarkOr
	ActMarkXor
	ActMasquerade
	// ActUnmarkMasquerade: clear masqBit, then masquerade.
	ActUnmarkMasquerade
	ActReject
	// ActVmap: look the packet's (daddr . l4proto . dport) or, NoAddr, (l4proto .
	// dport) up in the verdict map Map.
	ActVmap
	// ActDNATMap: dnat to the address . port element (numgen random mod Mod offset
	// Offset) of the shared endpoint map Map, Offset being the base of the port's
	// Range there (after a MatchL4Proto).
	ActDNATMap
	// ActDNATRandom: dnat to Endpoints[numgen random mod len(Endpoints)] through an
	// anonymous map in the rule (after a MatchL4Proto), as upstream's flat layout:
	// one rule per Service port whatever its endpoint count.
	ActDNATRandom
)

// Action is what a rule does.
type Action struct {
	Kind    ActionKind
	Verdict Verdict
	IP      netip.Addr
	Port    uint16
	Set     string
	Map     string
	NoAddr  bool
	Mod     uint32
	// Range of ActDNATMap: the name of the port's range in the endpoint map, whose
	// base the Planner allocates and writes into Offset.
	Range  string
	Offset uint32
	// Endpoints of ActDNATRandom, in map index order.
	Endpoints []netip.AddrPort
}

// Rule is one rule.
type Rule struct {
	Matches []Match
	Action  Action
}

const (
	ctStateInvalid = 1
	ctStateNew     = 8
	ctStatusDNAT   = 0x20 // IPS_DST_NAT
	masqBitValue   = 0x4000
)

var protoNames = map[uint8]string{6: "tcp", 17: "udp", 132: "sctp"}

func protoName(p uint8) string {
	if n, ok := protoNames[p]; ok {
		return n
	}
	return fmt.Sprint(p)
}

func protoNum(s string) uint8 {
	for n, name := range protoNames {
		if name == s {
			return n
		}
	}
	return 0
}

func prefixText(p netip.Prefix) string {
	if p.Bits() == p.Addr().BitLen() {
		return p.Addr().String()
	}
	return p.String()
}

// Text renders the rule in nft syntax for a table of the family ("ip" or "ip6").
func (r *Rule) Text(ipf string) string {
	var b strings.Builder
	sp := func() {
		if b.Len() > 0 {
			b.WriteByte(' ')
		}
	}
	for _, m := range r.Matches {
		sp()
		switch m.Kind {
		case MatchPrefixes:
			fmt.Fprintf(&b, "%s %s ", ipf, m.Addr)
			if m.Neg {
				b.WriteString("!= ")
			}
			if len(m.Prefixes) == 1 {
				b.WriteString(prefixText(m.Prefixes[0]))
			} else {
				parts := make([]string, len(m.Prefixes))
				for i, p := range m.Prefixes {
					parts[i] = prefixText(p)
				}
				b.WriteString("{ " + strings.Join(parts, ", ") + " }")
			}
		case MatchProtoPort:
			fmt.Fprintf(&b, "%s dport %d", protoName(m.Proto), m.Port)
		case MatchInSet:
			fmt.Fprintf(&b, "%s %s @%s", ipf, m.Addr, m.Set)
		case MatchNumgen:
			fmt.Fprintf(&b, "numgen random mod %d 0", m.Mod)
		case MatchFibLocal:
			fmt.Fprintf(&b, "fib %s type local", m.Addr)
		case MatchL4Proto:
			fmt.Fprintf(&b, "meta l4proto %s", protoName(m.Proto))
		case MatchCtState:
			if m.CtState == ctStateNew {
				b.WriteString("ct state new")
			} else {
				b.WriteString("ct state invalid")
			}
		case MatchMarkBit:
			op := "!="
			if m.Neg {
				op = "=="
			}
			fmt.Fprintf(&b, "mark and %s %s 0", masqBit, op)
		case MatchCtStatusDNAT:
			b.WriteString("ct status dnat")
		case MatchHairpin:
			fmt.Fprintf(&b, "%s saddr . %s daddr . meta l4proto . th dport @%s", ipf, ipf, setHairpin)
		case MatchMasqKeys:
			fmt.Fprintf(&b, "%s daddr . meta l4proto . th dport @%s", ipf, setMasqKeys)
		}
	}
	sp()
	a := r.Action
	switch a.Kind {
	case ActVerdict:
		b.WriteString(a.Verdict.String())
	case ActDNAT:
		dst := a.IP.String()
		if a.IP.Is6() {
			dst = "[" + dst + "]"
		}
		fmt.Fprintf(&b, "dnat to %s:%d", dst, a.Port)
	case ActDNATMap:
		fmt.Fprintf(&b, "dnat %s addr . port to numgen random mod %d", ipf, a.Mod)
		if a.Offset != 0 {
			fmt.Fprintf(&b, " offset %d", a.Offset)
		}
		fmt.Fprintf(&b, " map @%s", a.Map)
	case ActDNATRandom:
		fmt.Fprintf(&b, "dnat %s addr . port to numgen random mod %d map { ", ipf, len(a.Endpoints))
		for i, e := range a.Endpoints {
			if i > 0 {
				b.WriteString(", ")
			}
			fmt.Fprintf(&b, "%d : %s . %d", i, e.Addr(), e.Port())
		}
		b.WriteString(" }")
	case ActUpdateSet:
		fmt.Fprintf(&b, "update @%s { %s saddr }", a.Set, ipf)
	case ActMarkOr:
		b.WriteString("mark set mark or " + masqBit)
	case ActMarkXor:
		b.WriteString("mark set mark xor " + masqBit)
	case ActMasquerade:
		b.WriteString("masquerade fully-random")
	case ActUnmarkMasquerade:
		b.WriteString("mark set mark xor " + masqBit + " masquerade fully-random")
	case ActReject:
		b.WriteString("reject")
	case ActVmap:
		if a.NoAddr {
			fmt.Fprintf(&b, "meta l4proto . th dport vmap @%s", a.Map)
		} else {
			fmt.Fprintf(&b, "%s daddr . meta l4proto . th dport vmap @%s", ipf, a.Map)
		}
	}
	if a.Kind == ActUpdateSet && a.Verdict.Kind != VerdictNone {
		b.WriteString(" " + a.Verdict.String())
	}
	return b.String()
}

// rule builders

func verdictRule(v Verdict, ms ...Match) Rule {
	return Rule{Matches: ms, Action: Action{Kind: ActVerdict, Verdict: v}}
}

func addrIs(a Addr, neg bool, ps ...netip.Prefix) Match {
	return Match{Kind: MatchPrefixes, Addr: a, Neg: neg, Prefixes: ps}
}

func hostPrefix(a netip.Addr) netip.Prefix { return netip.PrefixFrom(a, a.BitLen()) }

func markMasq(ms ...Match) Rule { return Rule{Matches: ms, Action: Action{Kind: ActMarkOr}} }
