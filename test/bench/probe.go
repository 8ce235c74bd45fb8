package bench

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"strings"
	"time"

	"github.com/google/nftables"
	"github.com/google/nftables/binaryutil"
	"github.com/google/nftables/expr"
	"golang.org/x/sys/unix"
)

// Probe reads the kernel of a node network namespace directly, never through the agent.
type Probe interface {
	// Check reports, for each expectation, whether the kernel shows it now.
	Check(es []Expect) ([]bool, error)
	// Missing counts the chains among names that do not exist.
	Missing(names []string) (int, error)
	Close() error
}

// NewProbe returns the probe for a layout in a namespace (under /run/netns).
func NewProbe(netns string, l Layout) (Probe, error) {
	if l.Legacy {
		return &legacyProbe{netns: netns}, nil
	}
	return newNFTProbe(netns, l.Table)
}

// ---- netlink (nftables and iptables-nft) ----

// nftProbe reads chains over netlink. The agent's table may come with shards (base
// "nodekeeper": chains in "nodekeeper" and "nodekeeper-<k>"): a chain is looked for in
// each and remembered where found.
type nftProbe struct {
	ns       *os.File
	conn     *nftables.Conn
	base     string
	tables   []*nftables.Table
	where    map[string]*nftables.Table
	dispatch map[string][]*nftables.Rule
}

func newNFTProbe(netns, table string) (*nftProbe, error) {
	f, err := os.Open("/run/netns/" + netns)
	if err != nil {
		return nil, err
	}
	// the socket is created inside the node namespace (mdlayher/netlink enters it on a
	// locked thread) and keeps that namespace
	conn, err := nftables.New(nftables.WithNetNSFd(int(f.Fd())), nftables.AsLasting())
	if err != nil {
		f.Close()
		return nil, fmt.Errorf("netlink in %s: %w", netns, err)
	}
	return &nftProbe{ns: f, conn: conn, base: table, where: map[string]*nftables.Table{}}, nil
}

// refresh lists the tables of the layout (the base one and its shards).
func (p *nftProbe) refresh() error {
	ts, err := p.conn.ListTablesOfFamily(nftables.TableFamilyIPv4)
	if err != nil {
		return fmt.Errorf("listing tables: %w", err)
	}
	p.tables = p.tables[:0]
	for _, t := range ts {
		if t.Name == p.base || strings.HasPrefix(t.Name, p.base+"-") {
			p.tables = append(p.tables, t)
		}
	}
	return nil
}

// tableOf is the table holding chain (nil: none).
func (p *nftProbe) tableOf(chain string) (*nftables.Table, error) {
	if t := p.where[chain]; t != nil {
		if _, err := p.conn.ListChain(t, chain); err == nil {
			return t, nil
		} else if !notFound(err) {
			return nil, fmt.Errorf("reading chain %s: %w", chain, err)
		}
		delete(p.where, chain)
	}
	for attempt := 0; attempt < 2; attempt++ {
		for _, t := range p.tables {
			if _, err := p.conn.ListChain(t, chain); err == nil {
				p.where[chain] = t
				return t, nil
			} else if !notFound(err) {
				return nil, fmt.Errorf("reading chain %s: %w", chain, err)
			}
		}
		if attempt == 0 {
			if err := p.refresh(); err != nil {
				return nil, err
			}
		}
	}
	return nil, nil
}

func notFound(err error) bool {
	return errors.Is(err, unix.ENOENT) || strings.Contains(err.Error(), "no such file or directory")
}

// rules says whether a chain exists and how many rules it holds.
func (p *nftProbe) rules(chain string) (bool, int, error) {
	table, err := p.tableOf(chain)
	if err != nil || table == nil {
		return false, 0, err
	}
	rs, err := p.conn.GetRules(table, &nftables.Chain{Name: chain, Table: table})
	if err != nil {
		if notFound(err) {
			return false, 0, nil
		}
		return false, 0, fmt.Errorf("reading rules of %s: %w", chain, err)
	}
	return true, len(rs), nil
}

func (p *nftProbe) Check(es []Expect) ([]bool, error) {
	p.dispatch = map[string][]*nftables.Rule{} // one read of a dispatch chain per round
	out := make([]bool, len(es))
	for i, e := range es {
		ok := true
		for _, c := range e.Present {
			exists, n, err := p.rules(c)
			if err != nil {
				return nil, err
			}
			if !exists || n == 0 {
				ok = false
				break
			}
		}
		for _, c := range e.Absent {
			if !ok {
				break
			}
			exists, n, err := p.rules(c)
			if err != nil {
				return nil, err
			}
			if exists && n > 0 {
				ok = false
			}
		}
		for _, r := range e.Reach {
			if !ok {
				break
			}
			reached, err := p.reach(r)
			if err != nil {
				return nil, err
			}
			ok = reached
		}
		for _, u := range e.Unref {
			if !ok {
				break
			}
			unused, err := p.unref(u)
			if err != nil {
				return nil, err
			}
			ok = unused
		}
		out[i] = ok
	}
	return out, nil
}

// reach: the endpoint chain holds rules, or a rule of the Service chain DNATs to the
// endpoint's address (an immediate, or an element of the anonymous map it looks up).
func (p *nftProbe) reach(r Reach) (bool, error) {
	if exists, n, err := p.rules(r.EndpointChain); err != nil || (exists && n > 0) {
		return err == nil, err
	}
	table, err := p.tableOf(r.ServiceChain)
	if err != nil || table == nil {
		return false, err
	}
	rs, err := p.conn.GetRules(table, &nftables.Chain{Name: r.ServiceChain, Table: table})
	if err != nil {
		if notFound(err) {
			return false, nil
		}
		return false, fmt.Errorf("reading rules of %s: %w", r.ServiceChain, err)
	}
	ip := r.Endpoint.Addr().AsSlice()
	for _, rule := range rs {
		// the index range the rule's numgen gives (a map shared by several rules, as
		// nodekeeper's endpoint maps, holds other Services' endpoints too)
		var lo, hi uint64 = 0, 1 << 32
		bigEndian := false
		for _, e := range rule.Exprs {
			switch x := e.(type) {
			case *expr.Numgen:
				lo, hi = uint64(x.Offset), uint64(x.Offset)+uint64(x.Modulus)
			case *expr.Byteorder:
				bigEndian = true
			}
		}
		inRange := func(key []byte) bool {
			if len(key) != 4 {
				return true
			}
			k := uint64(binaryutil.NativeEndian.Uint32(key))
			if bigEndian {
				k = uint64(binaryutil.BigEndian.Uint32(key))
			}
			return k >= lo && k < hi
		}
		for _, e := range rule.Exprs {
			switch x := e.(type) {
			case *expr.Immediate:
				if bytes.Equal(x.Data, ip) {
					return true, nil
				}
			case *expr.Lookup:
				if !x.IsDestRegSet {
					continue
				}
				els, err := p.conn.GetSetElements(&nftables.Set{Table: table, Name: x.SetName, ID: x.SetID})
				if err != nil {
					if notFound(err) {
						continue // replaced meanwhile
					}
					return false, fmt.Errorf("reading map %s of %s: %w", x.SetName, r.ServiceChain, err)
				}
				for _, el := range els {
					if len(el.Val) >= len(ip) && bytes.Equal(el.Val[:len(ip)], ip) && inRange(el.Key) {
						return true, nil
					}
				}
			}
		}
	}
	return false, nil
}

// unref: the chain is gone or empty, or no rule of the dispatch chain jumps to it.
func (p *nftProbe) unref(u Unref) (bool, error) {
	exists, n, err := p.rules(u.Chain)
	if err != nil || !exists || n == 0 {
		return err == nil, err
	}
	rs, ok := p.dispatch[u.From]
	if !ok {
		table, err := p.tableOf(u.From)
		if err != nil {
			return false, err
		}
		if table == nil {
			return true, nil
		}
		rs, err = p.conn.GetRules(table, &nftables.Chain{Name: u.From, Table: table})
		if err != nil {
			if notFound(err) {
				return true, nil
			}
			return false, fmt.Errorf("reading rules of %s: %w", u.From, err)
		}
		if p.dispatch != nil {
			p.dispatch[u.From] = rs
		}
	}
	for _, rule := range rs {
		for _, e := range rule.Exprs {
			if v, ok := e.(*expr.Verdict); ok && v.Chain == u.Chain {
				return false, nil
			}
		}
	}
	return true, nil
}

func (p *nftProbe) Missing(names []string) (int, error) {
	if err := p.refresh(); err != nil {
		return 0, err
	}
	ours := map[string]*nftables.Table{}
	for _, t := range p.tables {
		ours[t.Name] = t
	}
	have := map[string]*nftables.Table{}
	if len(ours) > 0 {
		cs, err := p.conn.ListChainsOfTableFamily(nftables.TableFamilyIPv4)
		if err != nil {
			return 0, fmt.Errorf("listing chains: %w", err)
		}
		for _, c := range cs {
			if c.Table != nil && ours[c.Table.Name] != nil {
				have[c.Name] = ours[c.Table.Name]
			}
		}
	}
	n := 0
	for _, c := range names {
		if t, ok := have[c]; ok {
			p.where[c] = t
		} else {
			n++
		}
	}
	return n, nil
}

func (p *nftProbe) Close() error {
	err := p.conn.CloseLasting()
	p.ns.Close()
	return err
}

// ---- iptables-legacy: iptables-legacy-save of the nat table ----

type legacyProbe struct{ netns string }

// ChainRules parses iptables-save output into chain → rule count (user chains listed
// even when empty).
func ChainRules(save string) map[string]int {
	out, _ := parseSave(save)
	return out
}

// parseSave parses iptables-save output into chain → rule count and the set of
// "from → to" jumps ("-A from … -j to" or "-g to").
func parseSave(save string) (map[string]int, map[[2]string]bool) {
	rules, jumps := map[string]int{}, map[[2]string]bool{}
	for _, line := range strings.Split(save, "\n") {
		switch {
		case strings.HasPrefix(line, ":"):
			if f := strings.Fields(line[1:]); len(f) >= 2 && f[1] == "-" {
				rules[f[0]] += 0
			}
		case strings.HasPrefix(line, "-A "):
			f := strings.Fields(line)
			if len(f) < 2 {
				continue
			}
			rules[f[1]]++
			for i := 2; i+1 < len(f); i++ {
				if f[i] == "-j" || f[i] == "-g" {
					jumps[[2]string{f[1], f[i+1]}] = true
				}
			}
		}
	}
	return rules, jumps
}

func (p *legacyProbe) save() (map[string]int, map[[2]string]bool, error) {
	cmd := exec.Command("nsenter", "--net=/run/netns/"+p.netns, "iptables-legacy-save", "-t", "nat")
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	out, err := cmd.Output()
	if err != nil {
		return nil, nil, fmt.Errorf("iptables-legacy-save in %s: %w: %s", p.netns, err, strings.TrimSpace(stderr.String()))
	}
	rules, jumps := parseSave(string(out))
	return rules, jumps, nil
}

func (p *legacyProbe) Check(es []Expect) ([]bool, error) {
	m, jumps, err := p.save()
	if err != nil {
		return nil, err
	}
	out := make([]bool, len(es))
	for i, e := range es {
		ok := true
		for _, c := range e.Present {
			if m[c] == 0 {
				ok = false
			}
		}
		for _, c := range e.Absent {
			if m[c] > 0 {
				ok = false
			}
		}
		for _, r := range e.Reach {
			if m[r.EndpointChain] == 0 { // iptables always has KUBE-SEP chains
				ok = false
			}
		}
		for _, u := range e.Unref {
			if m[u.Chain] > 0 && jumps[[2]string{u.From, u.Chain}] {
				ok = false
			}
		}
		out[i] = ok
	}
	return out, nil
}

func (p *legacyProbe) Missing(names []string) (int, error) {
	m, _, err := p.save()
	if err != nil {
		return 0, err
	}
	n := 0
	for _, c := range names {
		if _, ok := m[c]; !ok {
			n++
		}
	}
	return n, nil
}

func (p *legacyProbe) Close() error { return nil }

// CountKernel counts what an agent left in the namespace: `nft -j list ruleset` for
// nftables and iptables-nft (every table, so whatever the agent made), iptables-legacy-save
// for legacy.
func CountKernel(netns, mode string) (Counts, error) {
	// bounded: listing a huge table with the nft CLI can take minutes
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
	defer cancel()
	if mode == "iptables-legacy" {
		out, err := exec.CommandContext(ctx, "nsenter", "--net=/run/netns/"+netns, "iptables-legacy-save").Output()
		if err != nil {
			return Counts{}, fmt.Errorf("iptables-legacy-save: %w", err)
		}
		return CountIPTablesSave(string(out)), nil
	}
	out, err := exec.CommandContext(ctx, "nsenter", "--net=/run/netns/"+netns, "nft", "-j", "list", "ruleset").Output()
	if err != nil {
		return Counts{}, fmt.Errorf("nft -j list ruleset: %w", err)
	}
	return CountNFTJSON(out)
}
