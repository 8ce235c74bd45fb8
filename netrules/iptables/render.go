// Package iptables renders a netrules.Ruleset as iptables-restore input in kube-proxy's
// per-Service chain layout and applies it with iptables-restore --noflush, rewriting
// only the chains that changed since the last sync.
//
// The per-Service chains (KUBE-SVC-, KUBE-SEP-, KUBE-EXT-, KUBE-FW-, KUBE-SVL-) are
// named and filled exactly as kube-proxy's. The dispatch chains differ: where
// kube-proxy's KUBE-SERVICES holds one rule per Service IP and port (10,000 Services:
// 10,000+ rules, all rewritten when one Service comes or goes), each dispatch chain here
// jumps to bucket chains, and the per-Service dispatch rules live in the buckets:
//
//   - rules matching a destination address (ClusterIP, externalIPs, load-balancer IPs)
//     go to one of 256 buckets chosen by the address's last byte; the jump is
//     "-d 0.0.0.N/0.0.0.255 -j KUBE-SVCS-NN" (IPv6: "-d ::N/::ff");
//   - rules matching a node port (NodePorts, health check node ports) go to a bucket per
//     protocol and 128-port range: "-p tcp -m tcp --dport 30080:30207 -j KUBE-NPORTS-TCP-30080".
//
// Every rule that can match a given packet is in the same bucket, in the same order as
// in a flat chain (ports sorted by netrules key), so first-match winners for keys two
// Services share (an external IP, a load-balancer IP, a node port) are the same as with
// one flat chain. A Service change rewrites its own chains and its buckets (tens of
// rules), and the dispatch chain only when a bucket appears or empties.
package iptables

import (
	"crypto/sha256"
	"encoding/base32"
	"fmt"
	"net/netip"
	"sort"
	"strings"

	"github.com/nodekeeper/nodekeeper/netrules"
)

// Fixed chain names, as kube-proxy.
const (
	ChainServices         = "KUBE-SERVICES"
	ChainExternalServices = "KUBE-EXTERNAL-SERVICES"
	ChainNodePorts        = "KUBE-NODEPORTS"
	ChainPostrouting      = "KUBE-POSTROUTING"
	ChainMarkMasq         = "KUBE-MARK-MASQ"
	ChainForward          = "KUBE-FORWARD"
	ChainProxyFirewall    = "KUBE-PROXY-FIREWALL"
	masqMark              = "0x4000/0x4000"
)

// LargeClusterEndpoints is upstream's largeClusterEndpointsThreshold: above this many
// endpoints in a family, the per-endpoint rules (KUBE-SVC/KUBE-SVL → KUBE-SEP and the
// KUBE-SEP chains) carry no comments, as kube-proxy's "large cluster mode" (the
// comments are ~40 % of the rules' size).
const LargeClusterEndpoints = 1000

// largeCluster is the threshold in use (tests lower it to cross it with few endpoints).
var largeCluster = LargeClusterEndpoints

// bucketPrefix is the bucket chain prefix of each dispatch chain.
var bucketPrefix = map[string]string{
	ChainServices:         "KUBE-SVCS-",
	ChainNodePorts:        "KUBE-NPORTS-",
	ChainExternalServices: "KUBE-XSVCS-",
	ChainProxyFirewall:    "KUBE-PFW-",
}

// portBucketSize is how many node ports share a bucket.
const portBucketSize = 128

// ownedPrefixes are the chain prefixes nodekeeper creates and deletes on its own.
var ownedPrefixes = []string{"KUBE-SVC-", "KUBE-SVL-", "KUBE-EXT-", "KUBE-FW-", "KUBE-SEP-",
	"KUBE-SVCS-", "KUBE-NPORTS-", "KUBE-XSVCS-", "KUBE-PFW-"}

// IsServiceChain tells whether a chain is a per-Service or bucket chain of ours (one
// that syncs create and delete).
func IsServiceChain(name string) bool {
	for _, p := range ownedPrefixes {
		if strings.HasPrefix(name, p) {
			return true
		}
	}
	return false
}

// Table is the rendered content of one table: fixed chains (in order) and the other
// chains (per-Service and bucket chains) by name.
type Table struct {
	Name    string
	Fixed   []Chain
	Service map[string][]string
}

// Chain is a chain and its rules, each rule an "-A CHAIN ..." line.
type Chain struct {
	Name  string
	Rules []string
}

// Rendered is the whole desired state of one family.
type Rendered struct {
	Filter, NAT Table
}

// hash16 is kube-proxy's portProtoHash: base32(sha256(s))[:16].
func hash16(s string) string {
	h := sha256.Sum256([]byte(s))
	return base32.StdEncoding.EncodeToString(h[:])[:16]
}

func proto(p *netrules.ServicePort) string { return strings.ToLower(string(p.Protocol)) }

// SvcChain and friends name the per-Service chains as kube-proxy does.
func SvcChain(p *netrules.ServicePort) string { return "KUBE-SVC-" + hash16(p.NameString()+proto(p)) }
func SvlChain(p *netrules.ServicePort) string { return "KUBE-SVL-" + hash16(p.NameString()+proto(p)) }
func ExtChain(p *netrules.ServicePort) string { return "KUBE-EXT-" + hash16(p.NameString()+proto(p)) }
func FwChain(p *netrules.ServicePort) string  { return "KUBE-FW-" + hash16(p.NameString()+proto(p)) }
func SepChain(p *netrules.ServicePort, e netrules.Endpoint) string {
	return "KUBE-SEP-" + hash16(p.NameString()+proto(p)+e.String())
}

// bucketRef names the bucket a dispatch rule goes to.
type bucketRef struct {
	table, parent string
	name          string // the bucket chain
	match         string // the parent's jump match
	ip            bool   // keyed by address (else by node port)
}

// ipBucket is the bucket of rules matching destination address a in parent.
func ipBucket(table, parent string, a netip.Addr) bucketRef {
	b := a.As16()[15]
	match := fmt.Sprintf("-d 0.0.0.%d/0.0.0.255", b)
	if !a.Is4() {
		match = fmt.Sprintf("-d ::%x/::ff", b)
	}
	return bucketRef{table: table, parent: parent, name: fmt.Sprintf("%s%02X", bucketPrefix[parent], b), match: match, ip: true}
}

// portBucket is the bucket of rules matching node port port/protocol in parent.
func portBucket(table, parent, proto string, port int32) bucketRef {
	lo := port - port%portBucketSize
	return bucketRef{table: table, parent: parent, name: fmt.Sprintf("%s%s-%d", bucketPrefix[parent], strings.ToUpper(proto), lo),
		match: fmt.Sprintf("-m %s -p %s --dport %d:%d", proto, proto, lo, lo+portBucketSize-1)}
}

// dispatchRule is one rule of a dispatch chain, kept in its bucket.
type dispatchRule struct {
	bucket bucketRef
	rule   string // the rule after "-A <chain> "
}

// PortRules is the rendering of one service port: its own chains and its dispatch rules.
// It depends only on the port, the family, the node and the comment mode.
type PortRules struct {
	Key      string
	NAT      map[string][]string // per-Service chains -> "-A ..." lines
	Filter   map[string][]string
	dispatch []dispatchRule
}

// renderOpts are what a port's rendering depends on besides the port.
type renderOpts struct {
	fam        netrules.Family
	node       netrules.Node
	noComments bool // large cluster mode
}

func (o renderOpts) host(a netip.Addr) string {
	if o.fam == netrules.IPv6 {
		return a.String() + "/128"
	}
	return a.String() + "/32"
}

func comment(s string) string { return fmt.Sprintf("-m comment --comment %q", s) }

// epComment is a comment of a per-endpoint rule, dropped in large cluster mode.
func (o renderOpts) epComment(s string) string {
	if o.noComments {
		return ""
	}
	return comment(s) + " "
}

func match(p *netrules.ServicePort) string { return fmt.Sprintf("-m %s -p %s", proto(p), proto(p)) }

// Endpoints counts a Ruleset's endpoints as kube-proxy does for its large cluster mode.
func Endpoints(ports []*netrules.ServicePort) int {
	n := 0
	for _, p := range ports {
		n += len(p.AllEndpoints)
	}
	return n
}

// Render turns a Ruleset into iptables chains. It is pure and deterministic.
func Render(rs *netrules.Ruleset) Rendered {
	o := renderOpts{fam: rs.Family, node: rs.Node, noComments: Endpoints(rs.Ports) > largeCluster}
	ports := make([]*PortRules, len(rs.Ports))
	for i, p := range rs.Ports {
		ports[i] = o.port(p)
	}
	return assemble(o, ports)
}

// dispatchChains are the fixed chains that jump to buckets, per table, in table order.
var dispatchChains = map[string][]string{
	"filter": {ChainNodePorts, ChainServices, ChainExternalServices, ChainProxyFirewall},
	"nat":    {ChainServices, ChainNodePorts},
}

// bucket is one bucket chain: its rules per service port key.
type bucket struct {
	ref   bucketRef
	rules map[string][]string // port key -> "-A <bucket> ..." lines
}

func (b *bucket) lines() []string {
	keys := make([]string, 0, len(b.rules))
	for k := range b.rules {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	var out []string
	for _, k := range keys {
		out = append(out, b.rules[k]...)
	}
	return out
}

// buckets are the bucket chains of one family, keyed by table and chain name.
type buckets map[[2]string]*bucket

func (bs buckets) add(p *PortRules) (touched [][2]string) {
	for _, d := range p.dispatch {
		k := [2]string{d.bucket.table, d.bucket.name}
		b := bs[k]
		if b == nil {
			b = &bucket{ref: d.bucket, rules: map[string][]string{}}
			bs[k] = b
		}
		b.rules[p.Key] = append(b.rules[p.Key], "-A "+d.bucket.name+" "+d.rule)
		touched = append(touched, k)
	}
	return touched
}

func (bs buckets) remove(p *PortRules) (touched [][2]string) {
	for _, d := range p.dispatch {
		k := [2]string{d.bucket.table, d.bucket.name}
		if b := bs[k]; b != nil {
			delete(b.rules, p.Key)
			if len(b.rules) == 0 {
				delete(bs, k)
			}
		}
		touched = append(touched, k)
	}
	return touched
}

// parentRules are the rules of a dispatch chain: a jump to each of its buckets (address
// buckets first, then node port buckets, each sorted by name), then the chain's fixed
// trailing rules.
func (bs buckets) parentRules(o renderOpts, table, parent string) []string {
	var refs []bucketRef
	for k, b := range bs {
		if k[0] == table && b.ref.parent == parent {
			refs = append(refs, b.ref)
		}
	}
	sort.Slice(refs, func(i, j int) bool {
		if refs[i].ip != refs[j].ip {
			return refs[i].ip
		}
		return refs[i].name < refs[j].name
	})
	out := make([]string, 0, len(refs)+1)
	for _, r := range refs {
		out = append(out, "-A "+parent+" "+r.match+" -j "+r.name)
	}
	if table == "nat" && parent == ChainServices {
		out = append(out, nodePortJumps(o)...)
	}
	return out
}

// nodePortJumps end nat KUBE-SERVICES: local destinations go on to KUBE-NODEPORTS.
func nodePortJumps(o renderOpts) []string {
	const why = "kubernetes service nodeports; NOTE: this must be the last rule in this chain"
	if len(o.node.NodePortAddresses) == 0 {
		localDst := "-m addrtype --dst-type LOCAL"
		switch {
		case o.fam == netrules.IPv6:
			localDst += " ! -d ::1/128"
		case !o.node.LocalhostNodePorts:
			localDst += " ! -d 127.0.0.0/8"
		}
		return []string{fmt.Sprintf("-A %s %s %s -j %s", ChainServices, comment(why), localDst, ChainNodePorts)}
	}
	var out []string
	for _, pfx := range o.node.NodePortAddresses {
		if (pfx.Addr().Is4()) != (o.fam == netrules.IPv4) {
			continue
		}
		out = append(out, fmt.Sprintf("-A %s %s -d %s -j %s", ChainServices, comment(why), pfx.String(), ChainNodePorts))
	}
	return out
}

// staticChains are the fixed chains whose rules depend on nothing.
func staticChains(table string) []Chain {
	if table == "filter" {
		return []Chain{
			{ChainForward, []string{
				"-A KUBE-FORWARD -m conntrack --ctstate INVALID -j DROP",
				"-A KUBE-FORWARD " + comment("kubernetes forwarding rules") + " -m mark --mark " + masqMark + " -j ACCEPT",
				"-A KUBE-FORWARD " + comment("kubernetes forwarding conntrack rule") + " -m conntrack --ctstate RELATED,ESTABLISHED -j ACCEPT",
			}},
		}
	}
	return []Chain{
		{ChainPostrouting, []string{
			"-A KUBE-POSTROUTING -m mark ! --mark " + masqMark + " -j RETURN",
			"-A KUBE-POSTROUTING -j MARK --xor-mark 0x4000",
			"-A KUBE-POSTROUTING " + comment("kubernetes service traffic requiring SNAT") + " -j MASQUERADE --random-fully",
		}},
		{ChainMarkMasq, []string{"-A KUBE-MARK-MASQ -j MARK --or-mark 0x4000"}},
	}
}

// fixedOrder is the order of the fixed chains of each table.
var fixedOrder = map[string][]string{
	"filter": {ChainNodePorts, ChainServices, ChainExternalServices, ChainForward, ChainProxyFirewall},
	"nat":    {ChainServices, ChainNodePorts, ChainPostrouting, ChainMarkMasq},
}

// assemble builds both tables from the ports' renderings.
func assemble(o renderOpts, ports []*PortRules) Rendered {
	bs := buckets{}
	out := Rendered{
		Filter: Table{Name: "filter", Service: map[string][]string{}},
		NAT:    Table{Name: "nat", Service: map[string][]string{}},
	}
	for _, p := range ports {
		bs.add(p)
		for c, rules := range p.NAT {
			out.NAT.Service[c] = rules
		}
		for c, rules := range p.Filter {
			out.Filter.Service[c] = rules
		}
	}
	for k, b := range bs {
		t := &out.NAT
		if k[0] == "filter" {
			t = &out.Filter
		}
		t.Service[k[1]] = b.lines()
	}
	for _, t := range []*Table{&out.Filter, &out.NAT} {
		t.Fixed = fixedChains(o, bs, t.Name)
	}
	return out
}

// fixedChains are a table's fixed chains in order, dispatch chains from bs.
func fixedChains(o renderOpts, bs buckets, table string) []Chain {
	var out []Chain
	static := map[string][]string{}
	for _, c := range staticChains(table) {
		static[c.Name] = c.Rules
	}
	for _, name := range fixedOrder[table] {
		if rules, ok := static[name]; ok {
			out = append(out, Chain{name, rules})
		} else {
			out = append(out, Chain{name, bs.parentRules(o, table, name)})
		}
	}
	return out
}

// portRenderer accumulates one port's rendering.
type portRenderer struct {
	renderOpts
	out *PortRules
}

func (r *portRenderer) dispatch(b bucketRef, format string, args ...any) {
	r.out.dispatch = append(r.out.dispatch, dispatchRule{bucket: b, rule: fmt.Sprintf(format, args...)})
}

// port renders one service port.
func (o renderOpts) port(p *netrules.ServicePort) *PortRules {
	r := &portRenderer{renderOpts: o, out: &PortRules{Key: p.Key(), NAT: map[string][]string{}, Filter: map[string][]string{}}}
	r.render(p)
	return r.out
}

func (r *portRenderer) render(p *netrules.ServicePort) {
	name := p.NameString()
	m := match(p)
	pr := proto(p)
	svc := SvcChain(p)
	hasCluster := len(p.ClusterEndpoints) > 0
	extEPs := p.ClusterEndpoints
	if p.ExternalLocal {
		extEPs = p.LocalEndpoints
	}

	// ClusterIP
	if hasCluster {
		r.dispatch(ipBucket("nat", ChainServices, p.ClusterIP), "%s %s -d %s --dport %d -j %s",
			comment(name+" cluster IP"), m, r.host(p.ClusterIP), p.Port, svc)
	} else {
		target, why := "REJECT", name+" has no endpoints"
		if p.InternalLocal && len(p.AllEndpoints) > 0 {
			target, why = "DROP", name+" has no local endpoints"
		}
		r.dispatch(ipBucket("filter", ChainServices, p.ClusterIP), "%s %s -d %s --dport %d -j %s",
			comment(why), m, r.host(p.ClusterIP), p.Port, target)
	}
	if hasCluster {
		r.endpointChain(p, svc, p.ClusterEndpoints, true)
	}

	if p.HealthCheckNodePort != 0 {
		r.dispatch(portBucket("filter", ChainNodePorts, "tcp", p.HealthCheckNodePort), "%s -m tcp -p tcp --dport %d -j ACCEPT",
			comment(name+" health check node port"), p.HealthCheckNodePort)
	}
	if !p.HasExternal() {
		return
	}
	if len(extEPs) == 0 {
		// nothing can answer external traffic: REJECT when there are no endpoints at all,
		// DROP when only remote ones exist (eTP=Local), as upstream
		target, why := "REJECT", name+" has no endpoints"
		if p.ExternalLocal && len(p.AllEndpoints) > 0 {
			target, why = "DROP", name+" has no local endpoints"
		}
		for _, ip := range p.ExternalIPs {
			r.dispatch(ipBucket("filter", ChainExternalServices, ip), "%s %s -d %s --dport %d -j %s",
				comment(why), m, r.host(ip), p.Port, target)
		}
		for _, ip := range p.LoadBalancerIPs {
			r.dispatch(ipBucket("filter", ChainExternalServices, ip), "%s %s -d %s --dport %d -j %s",
				comment(why), m, r.host(ip), p.Port, target)
		}
		if p.NodePort != 0 {
			r.dispatch(portBucket("filter", ChainExternalServices, pr, p.NodePort), "%s -m addrtype --dst-type LOCAL %s --dport %d -j %s",
				comment(why), m, p.NodePort, target)
		}
		if !hasCluster || !p.ExternalLocal {
			return
		}
	}

	ext := ExtChain(p)
	for _, ip := range p.ExternalIPs {
		r.dispatch(ipBucket("nat", ChainServices, ip), "%s %s -d %s --dport %d -j %s",
			comment(name+" external IP"), m, r.host(ip), p.Port, ext)
	}
	lbTarget := ext
	if len(p.LoadBalancerSourceRanges) > 0 && len(p.LoadBalancerIPs) > 0 {
		fw := FwChain(p)
		lbTarget = fw
		var rules []string
		for _, src := range p.LoadBalancerSourceRanges {
			rules = append(rules, fmt.Sprintf("-A %s %s -s %s -j %s", fw, comment(name+" loadbalancer IP"), src.String(), ext))
		}
		// the node itself reaching the load balancer IP is allowed, as upstream
		for _, ip := range p.LoadBalancerIPs {
			rules = append(rules, fmt.Sprintf("-A %s %s -s %s -j %s", fw, comment(name+" loadbalancer IP"), r.host(ip), ext))
		}
		r.out.NAT[fw] = rules
		for _, ip := range p.LoadBalancerIPs {
			r.dispatch(ipBucket("filter", ChainProxyFirewall, ip), "%s %s -d %s --dport %d -j DROP",
				comment(name+" traffic not accepted by "+fw), m, r.host(ip), p.Port)
		}
	}
	for _, ip := range p.LoadBalancerIPs {
		r.dispatch(ipBucket("nat", ChainServices, ip), "%s %s -d %s --dport %d -j %s",
			comment(name+" loadbalancer IP"), m, r.host(ip), p.Port, lbTarget)
	}
	if p.NodePort != 0 {
		r.dispatch(portBucket("nat", ChainNodePorts, pr, p.NodePort), "%s %s --dport %d -j %s",
			comment(name), m, p.NodePort, ext)
	}

	var extRules []string
	if !p.ExternalLocal {
		extRules = []string{
			fmt.Sprintf("-A %s %s -j %s", ext, comment("masquerade traffic for "+name+" external destinations"), ChainMarkMasq),
			fmt.Sprintf("-A %s -j %s", ext, svc),
		}
	} else {
		// pods and the node itself keep using every endpoint; outside clients only the
		// local ones, with their source address kept
		for _, cidr := range r.node.ClusterCIDRs {
			if cidr.Addr().Is4() == (r.fam == netrules.IPv4) && hasCluster {
				extRules = append(extRules, fmt.Sprintf("-A %s %s -s %s -j %s", ext,
					comment("pod traffic for "+name+" external destinations"), cidr.String(), svc))
			}
		}
		extRules = append(extRules, fmt.Sprintf("-A %s %s -m addrtype --src-type LOCAL -j %s", ext,
			comment("masquerade LOCAL traffic for "+name+" external destinations"), ChainMarkMasq))
		if hasCluster {
			extRules = append(extRules, fmt.Sprintf("-A %s %s -m addrtype --src-type LOCAL -j %s", ext,
				comment("route LOCAL traffic for "+name+" external destinations"), svc))
		}
		if len(p.LocalEndpoints) > 0 {
			svl := SvlChain(p)
			extRules = append(extRules, fmt.Sprintf("-A %s -j %s", ext, svl))
			r.endpointChain(p, svl, p.LocalEndpoints, false)
		}
	}
	r.out.NAT[ext] = extRules
}

// endpointChain writes a KUBE-SVC/KUBE-SVL chain spreading over eps, and the KUBE-SEP
// chain of each endpoint.
func (r *portRenderer) endpointChain(p *netrules.ServicePort, chain string, eps []netrules.Endpoint, cluster bool) {
	name := p.NameString()
	m := match(p)
	var rules []string
	if cluster {
		switch {
		case r.node.MasqueradeAll:
			rules = append(rules, fmt.Sprintf("-A %s %s %s -d %s --dport %d -j %s",
				chain, comment(name+" cluster IP"), m, r.host(p.ClusterIP), p.Port, ChainMarkMasq))
		default:
			for _, cidr := range r.node.ClusterCIDRs {
				if cidr.Addr().Is4() == (r.fam == netrules.IPv4) {
					rules = append(rules, fmt.Sprintf("-A %s %s %s -d %s --dport %d ! -s %s -j %s",
						chain, comment(name+" cluster IP"), m, r.host(p.ClusterIP), p.Port, cidr.String(), ChainMarkMasq))
				}
			}
		}
	}
	if p.AffinitySeconds > 0 {
		for _, e := range eps {
			sep := SepChain(p, e)
			rules = append(rules, fmt.Sprintf("-A %s %s-m recent --name %s --rcheck --seconds %d --reap -j %s",
				chain, r.epComment(name+" -> "+e.String()), sep, p.AffinitySeconds, sep))
		}
	}
	for i, e := range eps {
		sep := SepChain(p, e)
		if left := len(eps) - i; left > 1 {
			rules = append(rules, fmt.Sprintf("-A %s %s-m statistic --mode random --probability %0.10f -j %s",
				chain, r.epComment(name+" -> "+e.String()), 1.0/float64(left), sep))
		} else {
			rules = append(rules, fmt.Sprintf("-A %s %s-j %s", chain, r.epComment(name+" -> "+e.String()), sep))
		}
		if _, done := r.out.NAT[sep]; done {
			continue
		}
		sepRules := []string{fmt.Sprintf("-A %s %s-s %s -j %s", sep, r.epComment(name), r.host(e.IP), ChainMarkMasq)}
		dnat := fmt.Sprintf("-A %s %s", sep, r.epComment(name))
		if p.AffinitySeconds > 0 {
			dnat += fmt.Sprintf("-m recent --name %s --set ", sep)
		}
		dnat += fmt.Sprintf("%s -j DNAT --to-destination %s", m, e.String())
		r.out.NAT[sep] = append(sepRules, dnat)
	}
	r.out.NAT[chain] = rules
}

// Input assembles iptables-restore input for one table: the fixed chains, the
// per-Service chains in write (sorted), and -X for the chains in del (sorted).
func Input(t Table, write, del []string) string {
	var b strings.Builder
	writeInput(&b, t, write, del, nil)
	return b.String()
}

// writeInput is Input with extra lines (jump insertions into built-in chains) written
// after the rules.
func writeInput(b *strings.Builder, t Table, write, del, extra []string) {
	b.WriteString("*" + t.Name + "\n")
	ws := append([]string(nil), write...)
	sort.Strings(ws)
	ds := append([]string(nil), del...)
	sort.Strings(ds)
	for _, c := range t.Fixed {
		fmt.Fprintf(b, ":%s - [0:0]\n", c.Name)
	}
	for _, c := range ws {
		fmt.Fprintf(b, ":%s - [0:0]\n", c)
	}
	for _, c := range ds {
		fmt.Fprintf(b, ":%s - [0:0]\n", c)
	}
	for _, c := range t.Fixed {
		for _, r := range c.Rules {
			b.WriteString(r + "\n")
		}
	}
	for _, c := range ws {
		for _, r := range t.Service[c] {
			b.WriteString(r + "\n")
		}
	}
	for _, l := range extra {
		b.WriteString(l + "\n")
	}
	for _, c := range ds {
		fmt.Fprintf(b, "-X %s\n", c)
	}
	b.WriteString("COMMIT\n")
}

// ServiceChains returns the sorted names of a table's per-Service and bucket chains.
func (t Table) ServiceChains() []string {
	out := make([]string, 0, len(t.Service))
	for c := range t.Service {
		out = append(out, c)
	}
	sort.Strings(out)
	return out
}
