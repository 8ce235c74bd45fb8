package controllers

import (
	"bytes"
	"fmt"
	"os"
	"path/filepath"
	"strings"

	corev1 "k8s.io/api/core/v1"
	runtimeapi "k8s.io/cri-api/pkg/apis/runtime/v1"

	"github.com/nodekeeper/nodekeeper/internal/podplan"
)

// The kubelet manages each pod's /etc/hosts: a file in the pod's folder, mounted into
// every container (unless the container mounts its own /etc/hosts).
const (
	managedHostsHeader            = "# Kubernetes-managed hosts file.\n"
	managedHostsHeaderHostNetwork = "# Kubernetes-managed hosts file (host network).\n"
)

// hostsFileContent is the pod's /etc/hosts as upstream writes it: localhost entries,
// the pod's own hostname (hostname.domain and hostname when it has a domain) on each pod
// IP, then the pod's hostAliases. A host-network pod gets the node's hosts file
// (nodeHosts) with the hostAliases appended.
func hostsFileContent(pod *corev1.Pod, podIPs []string, host, domain string, nodeHosts []byte) []byte {
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

func (r *PodReconciler) hostsFilePath(pod *corev1.Pod) string {
	return filepath.Join(r.podDir(pod), "etc-hosts")
}

// writeHostsFile (re)writes the pod's managed hosts file for the sandbox's IP.
func (r *PodReconciler) writeHostsFile(pod *corev1.Pod, podIP string) error {
	var nodeHosts []byte
	if pod.Spec.HostNetwork {
		var err error
		if nodeHosts, err = os.ReadFile(r.nodeHostsFile()); err != nil && !os.IsNotExist(err) {
			return err
		}
	}
	var ips []string
	if podIP != "" {
		ips = []string{podIP}
	}
	p := r.hostsFilePath(pod)
	if err := os.MkdirAll(filepath.Dir(p), 0o755); err != nil {
		return err
	}
	host, domain, err := podplan.PodHostnameAndDomain(pod, r.Config.ClusterDomain)
	if err != nil {
		return err
	}
	content := hostsFileContent(pod, ips, host, domain, nodeHosts)
	if old, err := os.ReadFile(p); err == nil && bytes.Equal(old, content) {
		return nil
	}
	tmp := p + ".tmp"
	if err := os.WriteFile(tmp, content, 0o644); err != nil {
		return err
	}
	return os.Rename(tmp, p)
}

func (r *PodReconciler) nodeHostsFile() string {
	if r.NodeHostsFile != "" {
		return r.NodeHostsFile
	}
	return "/etc/hosts"
}

// hostsMount mounts the managed hosts file at /etc/hosts unless the container mounts
// something there itself.
func (r *PodReconciler) hostsMount(pod *corev1.Pod, c *corev1.Container) *runtimeapi.Mount {
	for _, m := range c.VolumeMounts {
		if filepath.Clean(m.MountPath) == "/etc/hosts" {
			return nil
		}
	}
	p := r.hostsFilePath(pod)
	if _, err := os.Stat(p); err != nil {
		return nil
	}
	return &runtimeapi.Mount{ContainerPath: "/etc/hosts", HostPath: p}
}
