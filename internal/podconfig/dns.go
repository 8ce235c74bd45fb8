package podconfig

import (
	"bufio"
	"bytes"
	"fmt"
	"net"
	"sort"
	"strings"

	corev1 "k8s.io/api/core/v1"
	runtimeapi "k8s.io/cri-api/pkg/apis/runtime/v1"
)

// Upstream's resolver limits (k8s.io/kubernetes/pkg/apis/core/validation).
const (
	maxDNSNameservers     = 3
	maxDNSSearchPaths     = 32
	maxDNSSearchListChars = 2048
)

// DNSInputs is what decides a pod's resolver besides the pod.
type DNSInputs struct {
	ClusterDNS    []string
	ClusterDomain string
	// ResolvConf is the resolver file's path ("" : none, use loopback); HostResolv its
	// content (nil when it could not be read).
	ResolvConf string
	HostResolv []byte
	NodeIPs    []string
}

// DNSEvent is an event the kubelet records about a pod's DNS.
type DNSEvent struct{ Reason, Message string }

// PodDNS is the pod's resolver configuration as upstream's dns.Configurer computes it:
// the node's resolver is the base; None starts empty; ClusterFirst (and
// ClusterFirstWithHostNet; host-network ClusterFirst falls back to Default) uses only
// the cluster nameservers, the cluster search domains before the node's and ndots:5;
// without cluster DNS it falls back to Default with a MissingClusterDNS event. The pod's
// dnsConfig is appended (duplicates dropped, options merged by name), then the limits
// are applied (3 nameservers, 32 searches, 2048 characters) with DNSConfigForming events.
func PodDNS(pod *corev1.Pod, in DNSInputs) (*runtimeapi.DNSConfig, []DNSEvent) {
	var events []DNSEvent
	cfg := parseResolvConf(in.HostResolv)
	policy := pod.Spec.DNSPolicy
	if policy == "" {
		policy = corev1.DNSClusterFirst
	}
	host := policy == corev1.DNSDefault || (policy == corev1.DNSClusterFirst && pod.Spec.HostNetwork)
	switch {
	case policy == corev1.DNSNone:
		cfg = &runtimeapi.DNSConfig{}
	case !host && len(in.ClusterDNS) > 0:
		cfg.Servers = append([]string(nil), in.ClusterDNS...)
		if d := in.ClusterDomain; d != "" {
			cfg.Searches = omitDuplicates(append([]string{pod.Namespace + ".svc." + d, "svc." + d, d}, cfg.Searches...))
		}
		cfg.Options = []string{"ndots:5"}
	default:
		if !host {
			msg := fmt.Sprintf("kubelet does not have ClusterDNS IP configured and cannot create Pod using %q policy. Falling back to %q policy.", corev1.DNSClusterFirst, corev1.DNSDefault)
			events = append(events, DNSEvent{"MissingClusterDNS", fmt.Sprintf("pod: %q. %s", pod.Name+"_"+pod.Namespace+"("+string(pod.UID)+")", msg)})
		}
		if in.ResolvConf == "" {
			cfg.Servers = nil
			for _, ip := range in.NodeIPs {
				if p := net.ParseIP(ip); p != nil && p.To4() == nil {
					cfg.Servers = append(cfg.Servers, "::1")
				} else {
					cfg.Servers = append(cfg.Servers, "127.0.0.1")
				}
			}
			if len(cfg.Servers) == 0 {
				cfg.Servers = []string{"127.0.0.1"}
			}
			cfg.Searches = []string{"."}
		}
	}
	if dc := pod.Spec.DNSConfig; dc != nil {
		cfg.Servers = omitDuplicates(append(cfg.Servers, dc.Nameservers...))
		cfg.Searches = omitDuplicates(append(cfg.Searches, dc.Searches...))
		cfg.Options = mergeDNSOptions(cfg.Options, dc.Options)
	}
	if len(cfg.Servers) > maxDNSNameservers {
		cfg.Servers = cfg.Servers[:maxDNSNameservers]
		events = append(events, DNSEvent{"DNSConfigForming", "Nameserver limits were exceeded, some nameservers have been omitted, the applied nameserver line is: " + strings.Join(cfg.Servers, " ")})
	}
	if n := fitSearches(cfg.Searches); n < len(cfg.Searches) {
		cfg.Searches = cfg.Searches[:n]
		events = append(events, DNSEvent{"DNSConfigForming", "Search Line limits were exceeded, some search paths have been omitted, the applied search line is: " + strings.Join(cfg.Searches, " ")})
	}
	return cfg, events
}

// fitSearches is how many search paths fit the limits.
func fitSearches(s []string) int {
	n := len(s)
	if n > maxDNSSearchPaths {
		n = maxDNSSearchPaths
	}
	for n > 0 && len(strings.Join(s[:n], " ")) > maxDNSSearchListChars {
		n--
	}
	return n
}

// parseResolvConf reads nameserver, search (the last line wins; "." dropped, trailing
// dots trimmed) and options lines, as upstream.
func parseResolvConf(b []byte) *runtimeapi.DNSConfig {
	cfg := &runtimeapi.DNSConfig{}
	sc := bufio.NewScanner(bytes.NewReader(b))
	for sc.Scan() {
		line := sc.Text()
		if i := strings.IndexAny(line, "#;"); i >= 0 {
			line = line[:i]
		}
		f := strings.Fields(line)
		if len(f) == 0 {
			continue
		}
		switch f[0] {
		case "nameserver":
			if len(f) > 1 {
				cfg.Servers = append(cfg.Servers, f[1])
			}
		case "search":
			cfg.Searches = []string{}
			for _, s := range f[1:] {
				if s != "." {
					cfg.Searches = append(cfg.Searches, strings.TrimSuffix(s, "."))
				}
			}
		case "options":
			cfg.Options = mergeDNSOptions(cfg.Options, optionsOf(f[1:]))
		}
	}
	return cfg
}

func optionsOf(fields []string) []corev1.PodDNSConfigOption {
	var out []corev1.PodDNSConfigOption
	for _, f := range fields {
		o := corev1.PodDNSConfigOption{Name: f}
		if i := strings.Index(f, ":"); i >= 0 {
			v := f[i+1:]
			o.Name, o.Value = f[:i], &v
		}
		out = append(out, o)
	}
	return out
}

// mergeDNSOptions overrides options of the same name (sorted: upstream's order is a
// map's).
func mergeDNSOptions(existing []string, add []corev1.PodDNSConfigOption) []string {
	m := map[string]string{}
	for _, o := range existing {
		if i := strings.Index(o, ":"); i >= 0 {
			m[o[:i]] = o[i+1:]
		} else {
			m[o] = ""
		}
	}
	for _, o := range add {
		m[o.Name] = ""
		if o.Value != nil {
			m[o.Name] = *o.Value
		}
	}
	out := []string{}
	for k, v := range m {
		if v != "" {
			k += ":" + v
		}
		out = append(out, k)
	}
	sort.Strings(out)
	return out
}

func omitDuplicates(s []string) []string {
	seen := map[string]bool{}
	out := []string{}
	for _, x := range s {
		if !seen[x] {
			seen[x] = true
			out = append(out, x)
		}
	}
	return out
}
