package podconfig

import (
	"bytes"
	"fmt"
	"path/filepath"
	"strings"

	corev1 "k8s.io/api/core/v1"
)

// The kubelet manages each pod's /etc/hosts: a file in the pod's folder, mounted into
// every container (unless the container mounts its own /etc/hosts).
const (
	managedHostsHeader            = "# Kubernetes-managed hosts file.\n"
	managedHostsHeaderHostNetwork = "# Kubernetes-managed hosts file (host network).\n"
)

// HostsFile is the pod's /etc/hosts as upstream writes it: localhost entries,
// the pod's own hostname (hostname.domain and hostname when it has a domain) on each pod
// IP, then the pod's hostAliases. A host-network pod gets the node's hosts file
// (nodeHosts) with the hostAliases appended.
func HostsFile(pod *corev1.Pod, podIPs []string, host, domain string, nodeHosts []byte) []byte {
	var b bytes.Buffer
	if pod.Spec.HostNetwork {
		b.WriteString(managedHostsHeaderHostNetwork)
		b.Write(nodeHosts) // as it is, as upstream's nodeHostsFileContent
	} else {
		b.WriteString(managedHostsHeader)
		b.WriteString("127.0.0.1\tlocalhost\n")
		b.WriteString("::1\tlocalhost ip6-localhost ip6-loopback\n")
		b.WriteString("fe00::0\tip6-localnet\n")
		b.WriteString("fe00::0\tip6-mcastprefix\n")
		b.WriteString("fe00::1\tip6-allnodes\n")
		b.WriteString("fe00::2\tip6-allrouters\n")
		for _, ip := range podIPs {
			if domain != "" {
				fmt.Fprintf(&b, "%s\t%s.%s\t%s\n", ip, host, domain, host)
			} else {
				fmt.Fprintf(&b, "%s\t%s\n", ip, host)
			}
		}
	}
	if len(pod.Spec.HostAliases) > 0 {
		// upstream's hostsEntriesFromHostAliases: one line per IP, its names tab-separated
		b.WriteString("\n# Entries added by HostAliases.\n")
		for _, a := range pod.Spec.HostAliases {
			fmt.Fprintf(&b, "%s\t%s\n", a.IP, strings.Join(a.Hostnames, "\t"))
		}
	}
	return b.Bytes()
}

// MountsOwnHosts tells whether the container mounts something at /etc/hosts itself: it
// then does not get the managed file.
func MountsOwnHosts(c *corev1.Container) bool {
	for _, m := range c.VolumeMounts {
		if filepath.Clean(m.MountPath) == "/etc/hosts" {
			return true
		}
	}
	return false
}
