package nftables

import (
	"fmt"
	"net/netip"
	"regexp"
	"strconv"
	"strings"
)

// A rule that DNATs through its range of the shared endpoint map, as Rule.Text and as
// `nft list` show it.
var epLookup = regexp.MustCompile(`dnat (ip6?) (addr \. port )?to numgen random mod (\d+)(?: offset (\d+))? map @(` + mapEndpoints + `-\d+)`)

// resolveEndpoints rewrites rules that go through the shared endpoint map into the
// canonical form (the anonymous map they stand for), with the indexes they use; a rule
// whose range is not fully in ep is left as it is (and so differs from the canonical).
func resolveEndpoints(rule string, ep map[string]map[uint32]netip.AddrPort, used map[string]bool) string {
	return epLookup.ReplaceAllStringFunc(rule, func(m string) string {
		g := epLookup.FindStringSubmatch(m)
		n, _ := strconv.Atoi(g[3])
		off, _ := strconv.Atoi(g[4])
		var es []string
		for i := 0; i < n; i++ {
			e, ok := ep[g[5]][uint32(off+i)]
			if !ok {
				return m
			}
			used[fmt.Sprintf("%s:%d", g[5], off+i)] = true
			es = append(es, fmt.Sprintf("%d : %s . %d", i, e.Addr(), e.Port()))
		}
		return fmt.Sprintf("dnat %s %sto numgen random mod %d map { %s }", g[1], g[2], n, strings.Join(es, ", "))
	})
}

// canonicalFake is k with its rules resolved and the endpoint map left out; unused
// lists the endpoint map's elements no rule uses (leaks).
func canonicalFake(k *fakeTable) (c *fakeTable, unused []string) {
	c = k.clone()
	ep := c.epmaps
	used := map[string]bool{}
	for name, rules := range c.chains {
		out := make([]string, len(rules))
		for i, r := range rules {
			out[i] = resolveEndpoints(r, ep, used)
		}
		c.chains[name] = out
	}
	for name, m := range ep {
		for i := range m {
			if k := fmt.Sprintf("%s:%d", name, i); !used[k] {
				unused = append(unused, k)
			}
		}
		delete(c.sets, name)
	}
	c.epmaps = map[string]map[uint32]netip.AddrPort{}
	return c, unused
}

var epElem = regexp.MustCompile(`(\d+) : (\S+) \. (\d+)`)

// canonicalListing does the same to `nft list table` output: rules resolved through
// the endpoint map's elements, the map's block dropped; unused as canonicalFake's.
func canonicalListing(s string) (string, []string) {
	lines := strings.Split(s, "\n")
	ep := map[string]map[uint32]netip.AddrPort{}
	var keep []string
	in := ""
	for _, l := range lines {
		t := strings.TrimSpace(l)
		if name, ok := strings.CutSuffix(strings.TrimPrefix(t, "map "), " {"); ok && strings.HasPrefix(t, "map ") {
			if _, isEP := parseShardName(name); isEP {
				in = name
				ep[name] = map[uint32]netip.AddrPort{}
				continue
			}
		}
		if in != "" {
			for _, m := range epElem.FindAllStringSubmatch(t, -1) {
				i, _ := strconv.Atoi(m[1])
				a, err := netip.ParseAddr(m[2])
				p, _ := strconv.Atoi(m[3])
				if err == nil {
					ep[in][uint32(i)] = netip.AddrPortFrom(a, uint16(p))
				}
			}
			if t == "}" {
				in = ""
			}
			continue
		}
		keep = append(keep, l)
	}
	used := map[string]bool{}
	for i, l := range keep {
		keep[i] = resolveEndpoints(l, ep, used)
	}
	var unused []string
	for name, m := range ep {
		for i := range m {
			if k := fmt.Sprintf("%s:%d", name, i); !used[k] {
				unused = append(unused, k)
			}
		}
	}
	return strings.Join(keep, "\n"), unused
}
