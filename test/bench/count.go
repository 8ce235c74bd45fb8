package bench

import (
	"encoding/json"
	"fmt"
	"strings"
)

// Counts is what a sync left in the kernel.
type Counts struct {
	Rules    int `json:"rules"`
	Chains   int `json:"chains"`   // user chains (built-in chains not counted)
	Elements int `json:"elements"` // nftables map and set elements (0 for iptables)
	Sets     int `json:"sets"`     // nftables sets and maps
	// Inline: elements of anonymous sets and maps written inside rules (kube-proxy's
	// `numgen … map { 0 : ip . port, … }`): kernel objects too
	Inline int `json:"inline_elements"`
}

// CountIPTablesSave counts the user chains (":NAME - [0:0]") and rules ("-A …") in
// iptables-save output.
func CountIPTablesSave(out string) Counts {
	var c Counts
	for _, line := range strings.Split(out, "\n") {
		switch {
		case strings.HasPrefix(line, "-A "):
			c.Rules++
		case strings.HasPrefix(line, ":"):
			if f := strings.Fields(line); len(f) >= 2 && f[1] == "-" {
				c.Chains++
			}
		}
	}
	return c
}

// CountNFTJSON counts the chains (base chains included), rules, sets/maps and their
// elements in `nft -j list ruleset` (or `list table`) output.
func CountNFTJSON(b []byte) (Counts, error) {
	var doc struct {
		Nftables []map[string]json.RawMessage `json:"nftables"`
	}
	if err := json.Unmarshal(b, &doc); err != nil {
		return Counts{}, fmt.Errorf("parsing nft -j output: %w", err)
	}
	var c Counts
	for _, obj := range doc.Nftables {
		for kind, raw := range obj {
			switch kind {
			case "chain":
				c.Chains++
			case "rule":
				c.Rules++
				var r any
				if err := json.Unmarshal(raw, &r); err == nil {
					c.Inline += inlineElems(r)
				}
			case "set", "map":
				var m struct {
					Elem []json.RawMessage `json:"elem"`
				}
				if err := json.Unmarshal(raw, &m); err != nil {
					return Counts{}, fmt.Errorf("parsing nft %s: %w", kind, err)
				}
				c.Sets++
				c.Elements += len(m.Elem)
			}
		}
	}
	return c, nil
}

// inlineElems counts the elements of the anonymous sets and maps in a rule's JSON: each
// {"set": [...]} literal (a map's data or a set match).
func inlineElems(v any) int {
	n := 0
	switch x := v.(type) {
	case map[string]any:
		for k, e := range x {
			if l, ok := e.([]any); ok && k == "set" {
				n += len(l)
				continue
			}
			n += inlineElems(e)
		}
	case []any:
		for _, e := range x {
			n += inlineElems(e)
		}
	}
	return n
}
