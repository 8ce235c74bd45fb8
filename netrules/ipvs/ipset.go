package ipvs

import (
	"context"
	"fmt"
	"net/netip"
	"sort"
	"strings"

	corev1 "k8s.io/api/core/v1"

	"github.com/nodekeeper/nodekeeper/netrules"
	"github.com/nodekeeper/nodekeeper/netrules/iptables"
)

// The ipsets kube-proxy's IPVS mode matches on, with the same names and types.
const (
	SetClusterIP    = "KUBE-CLUSTER-IP"     // hash:ip,port  ClusterIP,proto:port
	SetExternalIP   = "KUBE-EXTERNAL-IP"    // hash:ip,port  external and LB IP,proto:port
	SetLoopBack     = "KUBE-LOOP-BACK"      // hash:ip,port,ip  endpoint,proto:port,endpoint (hairpin)
	SetNodePortTCP  = "KUBE-NODE-PORT-TCP"  // bitmap:port
	SetNodePortUDP  = "KUBE-NODE-PORT-UDP"  // bitmap:port
	SetNodePortSCTP = "KUBE-NODE-PORT-SCTP" // hash:ip,port would be upstream; bitmap here
)

var setTypes = map[string]string{
	SetClusterIP: "hash:ip,port", SetExternalIP: "hash:ip,port", SetLoopBack: "hash:ip,port,ip",
	SetNodePortTCP: "bitmap:port range 0-65535", SetNodePortUDP: "bitmap:port range 0-65535",
	SetNodePortSCTP: "bitmap:port range 0-65535",
}

// IPSets computes the members of each set. Pure; members sorted.
func IPSets(rs *netrules.Ruleset) map[string][]string {
	sets := map[string]map[string]bool{}
	for n := range setTypes {
		sets[n] = map[string]bool{}
	}
	for _, p := range rs.Ports {
		pr := strings.ToLower(string(p.Protocol))
		sets[SetClusterIP][fmt.Sprintf("%s,%s:%d", p.ClusterIP, pr, p.Port)] = true
		for _, a := range append(append([]netip.Addr(nil), p.ExternalIPs...), p.LoadBalancerIPs...) {
			sets[SetExternalIP][fmt.Sprintf("%s,%s:%d", a, pr, p.Port)] = true
		}
		for _, e := range append(append([]netrules.Endpoint(nil), p.ClusterEndpoints...), p.LocalEndpoints...) {
			sets[SetLoopBack][fmt.Sprintf("%s,%s:%d,%s", e.IP, pr, e.Port, e.IP)] = true
		}
		if p.NodePort != 0 {
			set := SetNodePortTCP
			switch p.Protocol {
			case corev1.ProtocolUDP:
				set = SetNodePortUDP
			case corev1.ProtocolSCTP:
				set = SetNodePortSCTP
			}
			sets[set][fmt.Sprint(p.NodePort)] = true
		}
	}
	out := map[string][]string{}
	for n, m := range sets {
		out[n] = []string{} // every set exists, even empty: the iptables rules name them all
		for k := range m {
			out[n] = append(out[n], k)
		}
		sort.Strings(out[n])
	}
	return out
}

// IPSetRestore renders `ipset restore` input that makes each set hold exactly its
// members: created if missing, refilled through a temporary set and swapped in, so a
// reader never sees a half-filled set.
func IPSetRestore(sets map[string][]string, family netrules.Family) string {
	fam := "inet"
	if family == netrules.IPv6 {
		fam = "inet6"
	}
	names := make([]string, 0, len(sets))
	for n := range sets {
		names = append(names, n)
	}
	sort.Strings(names)
	var b strings.Builder
	for _, n := range names {
		typ := setTypes[n]
		opts := ""
		if strings.HasPrefix(typ, "hash:") {
			opts = " family " + fam
		}
		tmp := n + "-TMP"
		fmt.Fprintf(&b, "create %s %s%s -exist\n", n, typ, opts)
		fmt.Fprintf(&b, "create %s %s%s -exist\n", tmp, typ, opts)
		fmt.Fprintf(&b, "flush %s\n", tmp)
		for _, m := range sets[n] {
			fmt.Fprintf(&b, "add %s %s\n", tmp, m)
		}
		fmt.Fprintf(&b, "swap %s %s\n", tmp, n)
		fmt.Fprintf(&b, "destroy %s\n", tmp)
	}
	return b.String()
}

// NATRules renders the nat-table rules IPVS needs beside the virtual servers: masquerade
// for off-cluster sources and NodePorts, and hairpin (a pod reaching itself through its
// Service). IPVS does the DNAT; these rules only mark.
func NATRules(rs *netrules.Ruleset) iptables.Table {
	var svc []string
	for _, c := range rs.Node.ClusterCIDRs {
		if c.Addr().Is4() == (rs.Family == netrules.IPv4) {
			svc = append(svc, fmt.Sprintf(`-A KUBE-SERVICES -m comment --comment "Kubernetes service cluster ip + port for masquerade purpose" -m set --match-set %s dst,dst ! -s %s -j KUBE-MARK-MASQ`, SetClusterIP, c))
		}
	}
	if rs.Node.MasqueradeAll {
		svc = append(svc, fmt.Sprintf(`-A KUBE-SERVICES -m comment --comment "Kubernetes service cluster ip + port for masquerade purpose" -m set --match-set %s dst,dst -j KUBE-MARK-MASQ`, SetClusterIP))
	}
	svc = append(svc,
		fmt.Sprintf(`-A KUBE-SERVICES -m comment --comment "Kubernetes service external ip + port for masquerade" -m set --match-set %s dst,dst -j KUBE-MARK-MASQ`, SetExternalIP),
		`-A KUBE-SERVICES -m addrtype --dst-type LOCAL -j KUBE-NODE-PORT`)
	np := []string{
		fmt.Sprintf(`-A KUBE-NODE-PORT -p tcp -m comment --comment "Kubernetes nodeport TCP port for masquerade purpose" -m set --match-set %s dst -j KUBE-MARK-MASQ`, SetNodePortTCP),
		fmt.Sprintf(`-A KUBE-NODE-PORT -p udp -m comment --comment "Kubernetes nodeport UDP port for masquerade purpose" -m set --match-set %s dst -j KUBE-MARK-MASQ`, SetNodePortUDP),
	}
	return iptables.Table{Name: "nat", Fixed: []iptables.Chain{
		{Name: iptables.ChainServices, Rules: svc},
		{Name: "KUBE-NODE-PORT", Rules: np},
		{Name: iptables.ChainPostrouting, Rules: []string{
			fmt.Sprintf(`-A KUBE-POSTROUTING -m comment --comment "Kubernetes endpoints dst ip:port, source ip for solving hairpin purpose" -m set --match-set %s dst,dst,src -j MASQUERADE`, SetLoopBack),
			"-A KUBE-POSTROUTING -m mark ! --mark 0x4000/0x4000 -j RETURN",
			"-A KUBE-POSTROUTING -j MARK --xor-mark 0x4000",
			`-A KUBE-POSTROUTING -m comment --comment "kubernetes service traffic requiring SNAT" -j MASQUERADE --random-fully`,
		}},
		{Name: iptables.ChainMarkMasq, Rules: []string{"-A KUBE-MARK-MASQ -j MARK --or-mark 0x4000"}},
	}}
}

// Companion applies the ipset and iptables side of IPVS mode through a Runner.
type Companion struct {
	Runner  iptables.Runner
	Family  netrules.Family
	Variant iptables.Variant
}

// Sync writes the ipsets, then the nat rules that match on them, and the jumps from
// the built-in chains.
func (c Companion) Sync(ctx context.Context, rs *netrules.Ruleset) error {
	if _, err := c.Runner.Run(ctx, []byte(IPSetRestore(IPSets(rs), c.Family)), "ipset", "restore"); err != nil {
		return fmt.Errorf("ipset restore: %w", err)
	}
	bin := "iptables"
	if c.Family == netrules.IPv6 {
		bin = "ip6tables"
	}
	if c.Variant != "" {
		bin += "-" + string(c.Variant)
	}
	for _, j := range [][]string{
		{"PREROUTING", "-m", "comment", "--comment", "kubernetes service portals", "-j", "KUBE-SERVICES"},
		{"OUTPUT", "-m", "comment", "--comment", "kubernetes service portals", "-j", "KUBE-SERVICES"},
		{"POSTROUTING", "-m", "comment", "--comment", "kubernetes postrouting rules", "-j", "KUBE-POSTROUTING"},
	} {
		target := j[len(j)-1]
		_, _ = c.Runner.Run(ctx, nil, bin, "-w", "5", "-t", "nat", "-N", target)
		if _, err := c.Runner.Run(ctx, nil, bin, append([]string{"-w", "5", "-t", "nat", "-C"}, j...)...); err == nil {
			continue
		}
		if _, err := c.Runner.Run(ctx, nil, bin, append([]string{"-w", "5", "-t", "nat", "-I"}, j...)...); err != nil {
			return err
		}
	}
	if _, err := c.Runner.Run(ctx, []byte(iptables.Input(NATRules(rs), nil, nil)), bin+"-restore", "-w", "5", "--noflush"); err != nil {
		return fmt.Errorf("iptables-restore: %w", err)
	}
	return nil
}
