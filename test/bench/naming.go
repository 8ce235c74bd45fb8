package bench

import (
	"crypto/sha256"
	"encoding/base32"
	"fmt"
	"net/netip"
	"strings"
)

// PortRef is one Service port as kube-proxy names it (its ServicePortName plus the
// lower-case protocol).
type PortRef struct {
	Namespace, Name, Port string
	Protocol              string // "tcp", "udp", "sctp"
}

// String is kube-proxy's ServicePortName.String(): "ns/name:port" ("ns/name" without a
// port name).
func (p PortRef) String() string {
	if p.Port == "" {
		return p.Namespace + "/" + p.Name
	}
	return p.Namespace + "/" + p.Name + ":" + p.Port
}

// The chain names below follow k8s.io/kubernetes@v1.37.2 pkg/proxy/nftables
// (servicePortChainNameBase, servicePortEndpointChainNameBase, hashAndTruncate) and
// pkg/proxy/iptables (portProtoHash, servicePortEndpointChainName). The probes compute
// them independently of any agent's code.

const nftChainNameBaseLengthMax = 240 // upstream chainNameBaseLengthMax

// nftHashAndTruncate is upstream's hashAndTruncate; lower selects a lower-case hash
// (a variant the probe also accepts, found by trying both at the first sync).
func nftHashAndTruncate(name string, lower bool) string {
	h := sha256.Sum256([]byte(name))
	enc := base32.StdEncoding.EncodeToString(h[:])[:8]
	if lower {
		enc = strings.ToLower(enc)
	}
	name = enc + "-" + name
	if len(name) > nftChainNameBaseLengthMax {
		name = name[:nftChainNameBaseLengthMax-3] + "..."
	}
	return name
}

func nftPortBase(p PortRef) string {
	return fmt.Sprintf("%s/%s/%s/%s", p.Namespace, p.Name, p.Protocol, p.Port)
}

// NFTServiceChain is the nftables "service-<hash>-ns/name/proto/port" chain.
func NFTServiceChain(p PortRef, lowerHash bool) string {
	return "service-" + nftHashAndTruncate(nftPortBase(p), lowerHash)
}

// NFTEndpointChain is the nftables "endpoint-<hash>-ns/name/proto/port__ip/port" chain
// (IPv6 colons become dots, as upstream does).
func NFTEndpointChain(p PortRef, ep netip.AddrPort, lowerHash bool) string {
	ip := strings.ReplaceAll(ep.Addr().String(), ":", ".")
	return "endpoint-" + nftHashAndTruncate(fmt.Sprintf("%s__%s/%d", nftPortBase(p), ip, ep.Port()), lowerHash)
}

func hash16(s string) string {
	h := sha256.Sum256([]byte(s))
	return base32.StdEncoding.EncodeToString(h[:])[:16]
}

// IPTSvcChain is the iptables KUBE-SVC-<hash16> chain.
func IPTSvcChain(p PortRef) string { return "KUBE-SVC-" + hash16(p.String()+p.Protocol) }

// IPTSepChain is the iptables KUBE-SEP-<hash16> chain of one endpoint.
func IPTSepChain(p PortRef, ep netip.AddrPort) string {
	return "KUBE-SEP-" + hash16(p.String()+p.Protocol+ep.String())
}

// Layout says where a probe finds one agent's rules in one mode, and how chains are named.
type Layout struct {
	Desc   string
	Legacy bool   // iptables-legacy: read with iptables-legacy-save, not netlink
	Table  string // nftables table (family ip) holding the chains
	// Dispatch is the chain that jumps to Service chains, when a deleted Service's
	// chain may linger unreferenced (iptables: KUBE-SERVICES).
	Dispatch string
	// ServiceChain and EndpointChain name the chains a Service port and one of its
	// endpoints get.
	ServiceChain  func(PortRef) string
	EndpointChain func(PortRef, netip.AddrPort) string
}

// Modes are the proxy modes the benchmark knows, in report order.
var Modes = []string{"nftables", "iptables-nft", "iptables-legacy"}

// Layouts are the candidate layouts of an agent ("kube-proxy" or "nodekeeper") in a
// mode, most likely first; the harness keeps the first one whose chains it finds after
// the first sync.
func Layouts(mode, agent string) ([]Layout, error) {
	switch mode {
	case "nftables":
		table := "kube-proxy"
		if agent == AgentNodekeeper {
			table = "nodekeeper"
		}
		var out []Layout
		for _, lower := range []bool{agent == AgentNodekeeper, agent != AgentNodekeeper} {
			out = append(out, Layout{
				Desc:          fmt.Sprintf("nft table ip %s, service-/endpoint-<hash8> chain names (lower-case hash: %v)", table, lower),
				Table:         table,
				ServiceChain:  func(p PortRef) string { return NFTServiceChain(p, lower) },
				EndpointChain: func(p PortRef, ep netip.AddrPort) string { return NFTEndpointChain(p, ep, lower) },
			})
		}
		return out, nil
	case "iptables-nft", "iptables-legacy":
		l := Layout{Desc: "table nat, KUBE-SVC/KUBE-SEP-<hash16> chains", Table: "nat", Legacy: mode == "iptables-legacy", Dispatch: "KUBE-SERVICES",
			ServiceChain: IPTSvcChain, EndpointChain: IPTSepChain}
		if l.Legacy {
			l.Desc = "iptables-legacy " + l.Desc
		} else {
			l.Desc = "iptables-nft " + l.Desc
		}
		return []Layout{l}, nil
	}
	return nil, fmt.Errorf("unknown mode %q (want %s)", mode, strings.Join(Modes, ", "))
}
