package iptables

import (
	"bufio"
	"context"
	"fmt"
	"sort"
	"strings"
	"sync"
)

// Fake is a stateful in-memory iptables for tests. It answers the commands the
// Proxier runs (-N, -C, -I, -D, -S, -save, -restore --noflush with :, -A, -I, -X lines,
// --version, nft list chains) like the real
// binaries, and enforces their rules: a restore is atomic per table, -A needs a declared
// or existing chain, a jump needs an existing target chain, and -X refuses a chain that
// is still referenced or does not exist.
type Fake struct {
	mu     sync.Mutex
	tables map[string]*fakeTable
	// Restores counts successful restore calls; Inputs keeps their input.
	Restores int
	Inputs   []string
	// FailNext makes the next restore fail (as if the kernel refused it).
	FailNext bool
}

type fakeTable struct {
	order  []string
	chains map[string][]string
}

var builtinChains = map[string][]string{
	"filter": {"INPUT", "FORWARD", "OUTPUT"},
	"nat":    {"PREROUTING", "INPUT", "OUTPUT", "POSTROUTING"},
}

var builtinTargets = map[string]bool{
	"ACCEPT": true, "DROP": true, "REJECT": true, "RETURN": true, "MARK": true,
	"MASQUERADE": true, "DNAT": true, "SNAT": true, "LOG": true, "CONNMARK": true,
}

// NewFake returns an empty iptables with the built-in chains.
func NewFake() *Fake {
	f := &Fake{tables: map[string]*fakeTable{}}
	for t, cs := range builtinChains {
		ft := &fakeTable{chains: map[string][]string{}}
		for _, c := range cs {
			ft.order = append(ft.order, c)
			ft.chains[c] = nil
		}
		f.tables[t] = ft
	}
	return f
}

func (t *fakeTable) clone() *fakeTable {
	n := &fakeTable{order: append([]string(nil), t.order...), chains: map[string][]string{}}
	for k, v := range t.chains {
		n.chains[k] = append([]string(nil), v...)
	}
	return n
}

func isBuiltin(table, chain string) bool {
	for _, c := range builtinChains[table] {
		if c == chain {
			return true
		}
	}
	return false
}

func target(rule string) string {
	w := splitRule(rule)
	for i := 0; i+1 < len(w); i++ {
		if w[i] == "-j" || w[i] == "-g" {
			return w[i+1]
		}
	}
	return ""
}

// validate checks every jump of the table points at a chain that exists.
func (t *fakeTable) validate() error {
	for _, c := range t.order {
		for _, r := range t.chains[c] {
			tg := target(r)
			if tg == "" || builtinTargets[tg] {
				continue
			}
			if _, ok := t.chains[tg]; !ok {
				return fmt.Errorf("iptables-restore: line: Couldn't load target `%s':No such file or directory", tg)
			}
		}
	}
	return nil
}

func joinArgs(args []string) string {
	out := make([]string, len(args))
	for i, a := range args {
		if strings.ContainsAny(a, " \t") || a == "" {
			out[i] = fmt.Sprintf("%q", a)
		} else {
			out[i] = a
		}
	}
	return strings.Join(out, " ")
}

// Run implements Runner.
func (f *Fake) Run(_ context.Context, stdin []byte, name string, args ...string) ([]byte, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	if len(args) == 1 && args[0] == "--version" {
		return []byte(name + " v1.8.9 (fake)"), nil
	}
	switch {
	case name == "nft" && len(args) == 3 && args[0] == "list" && args[1] == "chains":
		// the chain names of every table, as nft prints them
		names := make([]string, 0, len(f.tables))
		for t := range f.tables {
			names = append(names, t)
		}
		sort.Strings(names)
		var b strings.Builder
		for _, t := range names {
			fmt.Fprintf(&b, "table %s %s {\n", args[2], t)
			for _, c := range f.tables[t].order {
				fmt.Fprintf(&b, "\tchain %s {\n\t}\n", c)
			}
			b.WriteString("}\n")
		}
		return []byte(b.String()), nil
	case strings.HasSuffix(name, "-restore"):
		return nil, f.restore(string(stdin))
	case strings.HasSuffix(name, "-save"):
		for i := 0; i+1 < len(args); i++ {
			if args[i] == "-t" {
				return []byte(f.dumpTable(args[i+1])), nil
			}
		}
		// no -t: every table, as iptables-save
		names := make([]string, 0, len(f.tables))
		for t := range f.tables {
			names = append(names, t)
		}
		sort.Strings(names)
		var all strings.Builder
		for _, t := range names {
			all.WriteString(f.dumpTable(t))
		}
		return []byte(all.String()), nil
	}
	table, op, chain := "filter", "", ""
	var rest []string
	for i := 0; i < len(args); i++ {
		switch args[i] {
		case "-w":
			i++
		case "-t":
			table = args[i+1]
			i++
		case "-N", "-C", "-I", "-D", "-A", "-X", "-F", "-S":
			op, chain = args[i], args[i+1]
			rest = args[i+2:]
			i = len(args)
		}
	}
	t, ok := f.tables[table]
	if !ok {
		return nil, fmt.Errorf("fake iptables: no table %s", table)
	}
	rule := joinArgs(rest)
	switch op {
	case "-N":
		if _, ok := t.chains[chain]; ok {
			return nil, fmt.Errorf("iptables: Chain already exists")
		}
		t.order = append(t.order, chain)
		t.chains[chain] = nil
		return nil, nil
	}
	rules, ok := t.chains[chain]
	if !ok {
		return nil, fmt.Errorf("iptables: No chain/target/match by that name")
	}
	switch op {
	case "-S":
		var b strings.Builder
		if isBuiltin(table, chain) {
			fmt.Fprintf(&b, "-P %s ACCEPT\n", chain)
		} else {
			fmt.Fprintf(&b, "-N %s\n", chain)
		}
		for _, r := range rules {
			fmt.Fprintf(&b, "-A %s %s\n", chain, r)
		}
		return []byte(b.String()), nil
	case "-C":
		for _, r := range rules {
			if r == rule {
				return nil, nil
			}
		}
		return nil, fmt.Errorf("iptables: Bad rule (does a matching rule exist in that chain?)")
	case "-I", "-A":
		if tg := target(rule); tg != "" && !builtinTargets[tg] {
			if _, ok := t.chains[tg]; !ok {
				return nil, fmt.Errorf("iptables: Couldn't load target `%s'", tg)
			}
		}
		if op == "-I" {
			t.chains[chain] = append([]string{rule}, rules...)
		} else {
			t.chains[chain] = append(rules, rule)
		}
		return nil, nil
	case "-D":
		for i, r := range rules {
			if r == rule {
				t.chains[chain] = append(rules[:i:i], rules[i+1:]...)
				return nil, nil
			}
		}
		return nil, fmt.Errorf("iptables: Bad rule (does a matching rule exist in that chain?)")
	case "-F":
		t.chains[chain] = nil
		return nil, nil
	}
	return nil, fmt.Errorf("fake iptables: unsupported %v", args)
}

// restore applies --noflush input: each table between *name and COMMIT is applied
// atomically; an error leaves that table unchanged.
func (f *Fake) restore(input string) error {
	if f.FailNext {
		f.FailNext = false
		return fmt.Errorf("iptables-restore: (fake) failure injected")
	}
	var cur *fakeTable
	var name string
	staged := map[string]*fakeTable{}
	sc := bufio.NewScanner(strings.NewReader(input))
	sc.Buffer(make([]byte, 1<<20), 1<<26)
	n := 0
	for sc.Scan() {
		n++
		line := strings.TrimSpace(sc.Text())
		switch {
		case line == "" || strings.HasPrefix(line, "#"):
		case strings.HasPrefix(line, "*"):
			name = line[1:]
			t, ok := f.tables[name]
			if !ok {
				return fmt.Errorf("line %d: no table %s", n, name)
			}
			cur = t.clone()
		case line == "COMMIT":
			if cur == nil {
				return fmt.Errorf("line %d: COMMIT outside a table", n)
			}
			if err := cur.validate(); err != nil {
				return fmt.Errorf("line %d: %w", n, err)
			}
			staged[name] = cur
			cur = nil
		case cur == nil:
			return fmt.Errorf("line %d: rule outside a table", n)
		case strings.HasPrefix(line, ":"):
			c := strings.Fields(line[1:])[0]
			if _, ok := cur.chains[c]; !ok {
				cur.order = append(cur.order, c)
			}
			if !isBuiltin(name, c) {
				cur.chains[c] = nil // declared chains are flushed
			}
		case strings.HasPrefix(line, "-A "):
			w := strings.SplitN(line, " ", 3)
			if _, ok := cur.chains[w[1]]; !ok {
				return fmt.Errorf("line %d: chain %s does not exist", n, w[1])
			}
			rule := ""
			if len(w) == 3 {
				rule = w[2]
			}
			cur.chains[w[1]] = append(cur.chains[w[1]], rule)
		case strings.HasPrefix(line, "-I "):
			w := strings.SplitN(line, " ", 3)
			rules, ok := cur.chains[w[1]]
			if !ok || len(w) < 3 {
				return fmt.Errorf("line %d: chain %s does not exist", n, w[1])
			}
			cur.chains[w[1]] = append([]string{w[2]}, rules...)
		case strings.HasPrefix(line, "-X "):
			c := strings.TrimSpace(line[3:])
			if _, ok := cur.chains[c]; !ok || isBuiltin(name, c) {
				return fmt.Errorf("line %d: cannot delete chain %s: no such chain", n, c)
			}
			for _, other := range cur.order {
				for _, r := range cur.chains[other] {
					if target(r) == c {
						return fmt.Errorf("line %d: cannot delete chain %s: still referenced by %s", n, c, other)
					}
				}
			}
			if len(cur.chains[c]) > 0 {
				return fmt.Errorf("line %d: cannot delete chain %s: not empty", n, c)
			}
			delete(cur.chains, c)
			for i, o := range cur.order {
				if o == c {
					cur.order = append(cur.order[:i:i], cur.order[i+1:]...)
					break
				}
			}
		default:
			return fmt.Errorf("line %d: unsupported %q", n, line)
		}
	}
	if cur != nil {
		return fmt.Errorf("missing COMMIT")
	}
	for k, v := range staged {
		f.tables[k] = v
	}
	f.Restores++
	f.Inputs = append(f.Inputs, input)
	return nil
}

func (f *Fake) dumpTable(table string) string {
	t := f.tables[table]
	if t == nil {
		return ""
	}
	var b strings.Builder
	b.WriteString("*" + table + "\n")
	builtins, others := []string{}, []string{}
	for _, c := range t.order {
		if isBuiltin(table, c) {
			builtins = append(builtins, c)
		} else {
			others = append(others, c)
		}
	}
	sort.Strings(others)
	for _, c := range builtins {
		fmt.Fprintf(&b, ":%s ACCEPT [0:0]\n", c)
	}
	for _, c := range others {
		fmt.Fprintf(&b, ":%s - [0:0]\n", c)
	}
	for _, c := range append(builtins, others...) {
		for _, r := range t.chains[c] {
			fmt.Fprintf(&b, "-A %s %s\n", c, r)
		}
	}
	b.WriteString("COMMIT\n")
	return b.String()
}

// Dump returns iptables-save output for a table.
func (f *Fake) Dump(table string) string {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.dumpTable(table)
}

// Rules returns the rules of one chain.
func (f *Fake) Rules(table, chain string) []string {
	f.mu.Lock()
	defer f.mu.Unlock()
	if t := f.tables[table]; t != nil {
		return append([]string(nil), t.chains[chain]...)
	}
	return nil
}

// Chains lists a table's chain names, sorted.
func (f *Fake) Chains(table string) []string {
	f.mu.Lock()
	defer f.mu.Unlock()
	var out []string
	for c := range f.tables[table].chains {
		out = append(out, c)
	}
	sort.Strings(out)
	return out
}

// DeleteChain removes a chain and every jump to it, as an operator might by hand.
func (f *Fake) DeleteChain(table, chain string) {
	f.mu.Lock()
	defer f.mu.Unlock()
	t := f.tables[table]
	delete(t.chains, chain)
	for i, c := range t.order {
		if c == chain {
			t.order = append(t.order[:i:i], t.order[i+1:]...)
			break
		}
	}
	for c, rules := range t.chains {
		var keep []string
		for _, r := range rules {
			if target(r) != chain {
				keep = append(keep, r)
			}
		}
		t.chains[c] = keep
	}
}
