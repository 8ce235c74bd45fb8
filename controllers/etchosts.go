package controllers

import (
	"bytes"
	"os"
	"path/filepath"

	corev1 "k8s.io/api/core/v1"
	runtimeapi "k8s.io/cri-api/pkg/apis/runtime/v1"

	"github.com/nodekeeper/nodekeeper/internal/podconfig"
	"github.com/nodekeeper/nodekeeper/internal/podplan"
)

// The pod's managed /etc/hosts on disk; what it holds is podconfig.HostsFile.

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
	content := podconfig.HostsFile(pod, ips, host, domain, nodeHosts)
	if old, err := os.ReadFile(p); err == nil && bytes.Equal(old, content) {
		return nil
	}
	tmp := p + ".tmp"
	if err := os.WriteFile(tmp, content, 0o644); err != nil {
		_ = os.Remove(tmp) // a full disk: what was written is freed, the old file kept
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
	if podconfig.MountsOwnHosts(c) {
		return nil
	}
	p := r.hostsFilePath(pod)
	if _, err := os.Stat(p); err != nil {
		return nil
	}
	return &runtimeapi.Mount{ContainerPath: "/etc/hosts", HostPath: p}
}
