package nftables

import (
	"fmt"
	"sort"
	"strings"

	"github.com/nodekeeper/nodekeeper/netrules"
)

// TableText renders one table (its fixed layout plus the per-Service content it holds)
// as an nft script, the form `nft -f` reads: for debugging and for the golden tests
// that check the netlink encoding against nft's own.
func TableText(fam netrules.Family, table string, l Layout, d Desired) string {
	ipf := ipFamily(fam)
	at := "ipv4_addr"
	if fam == netrules.IPv6 {
		at = "ipv6_addr"
	}
	var b strings.Builder
	fmt.Fprintf(&b, "table %s %s {\n", ipf, table)
	byMap := map[uint8][]string{}
	keys := make([]ElemKey, 0, len(d.Elements))
	for k := range d.Elements {
		keys = append(keys, k)
	}
	sortElemKeys(keys)
	for _, k := range keys {
		if isPlainSet(k.Map) {
			byMap[k.Map] = append(byMap[k.Map], k.KeyText())
			continue
		}
		byMap[k.Map] = append(byMap[k.Map], k.KeyText()+" : "+d.Elements[k].String())
	}
	for _, m := range l.Maps {
		kt := "inet_proto . inet_service"
		if mapHasAddr(m) {
			kt = at + " . " + kt
		}
		if m == MapHairpin {
			fmt.Fprintf(&b, "\tset %s {\n\t\ttype %s . %s\n", mapNames[m], at, kt)
		} else if m == MapMasqKeys {
			fmt.Fprintf(&b, "\tset %s {\n\t\ttype %s\n", mapNames[m], kt)
		} else {
			fmt.Fprintf(&b, "\tmap %s {\n\t\ttype %s : verdict\n", mapNames[m], kt)
		}
		if len(byMap[m]) > 0 {
			fmt.Fprintf(&b, "\t\telements = { %s }\n", strings.Join(byMap[m], ", "))
		}
		b.WriteString("\t}\n")
	}
	for _, s := range sortedKeys(d.Sets) {
		fmt.Fprintf(&b, "\tset %s {\n\t\ttype %s\n\t\tflags dynamic,timeout\n\t\ttimeout %ds\n\t}\n", s, at, d.Sets[s])
	}
	for _, name := range sortedKeys(d.Endpoints) {
		fmt.Fprintf(&b, "\tmap %s {\n\t\ttypeof numgen random mod 1 : %s daddr . th dport\n", name, ipf)
		m := d.Endpoints[name]
		idx := make([]uint32, 0, len(m))
		for i := range m {
			idx = append(idx, i)
		}
		sort.Slice(idx, func(a, b int) bool { return idx[a] < idx[b] })
		var es []string
		for _, i := range idx {
			es = append(es, fmt.Sprintf("%d : %s . %d", i, m[i].Addr(), m[i].Port()))
		}
		if len(es) > 0 {
			fmt.Fprintf(&b, "\t\telements = { %s }\n", strings.Join(es, ", "))
		}
		b.WriteString("\t}\n")
	}
	chain := func(name, head string, rules []Rule) {
		fmt.Fprintf(&b, "\tchain %s {\n", name)
		if head != "" {
			b.WriteString("\t\t" + head + "\n")
		}
		for i := range rules {
			b.WriteString("\t\t" + rules[i].Text(ipf) + "\n")
		}
		b.WriteString("\t}\n")
	}
	// declare every chain first: rules may jump forward
	names := sortedKeys(d.Chains)
	for _, c := range l.Chains {
		fmt.Fprintf(&b, "\tchain %s {\n\t}\n", c.Name)
	}
	for _, c := range names {
		fmt.Fprintf(&b, "\tchain %s {\n\t}\n", c)
	}
	for _, c := range l.Chains {
		chain(c.Name, "", c.Rules)
	}
	for _, c := range names {
		chain(c, "", d.Chains[c])
	}
	for _, bc := range l.Base {
		chain(bc.Name, fmt.Sprintf("type %s hook %s priority %d; policy accept;", bc.Type, bc.Hook, bc.Priority), bc.Rules)
	}
	b.WriteString("}\n")
	return b.String()
}

// NormalizeListing puts `nft list table` output in a canonical order (blocks sorted by
// name, map elements sorted), so tables built in different orders compare equal.
func NormalizeListing(s string) string {
	lines := strings.Split(s, "\n")
	var blocks []string
	var cur []string
	depth := 0
	for _, l := range lines {
		t := strings.TrimSpace(l)
		if t == "" {
			continue
		}
		if depth == 1 && strings.HasSuffix(t, "{") {
			cur = []string{t}
			depth++
			continue
		}
		if depth >= 2 {
			cur = append(cur, t)
			depth += strings.Count(t, "{") - strings.Count(t, "}")
			if depth == 1 {
				blocks = append(blocks, normalizeBlock(cur))
			}
			continue
		}
		depth += strings.Count(t, "{") - strings.Count(t, "}")
	}
	sort.Strings(blocks)
	return strings.Join(blocks, "\n")
}

func normalizeBlock(lines []string) string {
	joined := strings.Join(lines, "\n")
	i := strings.Index(joined, "elements = {")
	if i < 0 {
		return joined
	}
	j := strings.Index(joined[i:], "}")
	inner := joined[i+len("elements = {") : i+j]
	var elems []string
	for _, e := range strings.Split(strings.ReplaceAll(inner, "\n", " "), ",") {
		if e = strings.Join(strings.Fields(e), " "); e != "" {
			elems = append(elems, e)
		}
	}
	sort.Strings(elems)
	return joined[:i] + "elements = { " + strings.Join(elems, ", ") + " }" + joined[i+j+1:]
}
