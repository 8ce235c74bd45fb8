package podconfig

import (
	"path/filepath"
	"strconv"

	corev1 "k8s.io/api/core/v1"
	runtimeapi "k8s.io/cri-api/pkg/apis/runtime/v1"

	"github.com/nodekeeper/nodekeeper/internal/podplan"
)

// SandboxInputs is what a pod's sandbox config needs besides the pod.
type SandboxInputs struct {
	// Attempt is the sandbox's attempt number (podplan.Actions.SandboxAttempt).
	Attempt uint32
	// LogDirectory is where the runtime writes the containers' logs.
	LogDirectory string
	// CgroupParent is the pod's cgroup ("": the runtime's default).
	CgroupParent string
	// ClusterDomain is the cluster's DNS domain, for the hostname of a pod with a
	// subdomain and setHostnameAsFQDN.
	ClusterDomain string
	// DNS is the pod's resolver config, asked only once the hostname is known to be
	// valid (it may record events on the pod).
	DNS func() *runtimeapi.DNSConfig
}

// Sandbox is the pod's CRI sandbox config, as upstream's generatePodSandboxConfig: the
// pod's metadata, our labels (which the pod's own labels cannot replace) and the pod's
// annotations, the log folder, the hostname (none with hostNetwork), the resolver, the
// host ports of the regular containers, and the Linux part (cgroup parent, sysctls and
// SandboxSecurityContext). Its errors (an invalid hostname, a hostname too long for the
// kernel, an unsupported supplementalGroupsPolicy) are the spec's: retrying cannot
// fix them.
func Sandbox(pod *corev1.Pod, in SandboxInputs) (*runtimeapi.PodSandboxConfig, error) {
	cfg := &runtimeapi.PodSandboxConfig{
		Metadata: &runtimeapi.PodSandboxMetadata{Name: pod.Name, Namespace: pod.Namespace, Uid: string(pod.UID), Attempt: in.Attempt},
		Labels: map[string]string{podplan.LabelManaged: "true", podplan.LabelPodName: pod.Name,
			podplan.LabelPodNamespace: pod.Namespace, podplan.LabelPodUID: string(pod.UID)},
		Annotations:  map[string]string{},
		LogDirectory: in.LogDirectory,
		Linux:        &runtimeapi.LinuxPodSandboxConfig{CgroupParent: in.CgroupParent, Sysctls: SandboxSysctls(pod)},
	}
	sc, err := SandboxSecurityContext(pod)
	if err != nil {
		return nil, err
	}
	cfg.Linux.SecurityContext = sc
	for k, v := range pod.Labels {
		if _, ours := cfg.Labels[k]; !ours {
			cfg.Labels[k] = v
		}
	}
	for k, v := range pod.Annotations {
		cfg.Annotations[k] = v
	}
	if !pod.Spec.HostNetwork {
		host, domain, err := podplan.PodHostnameAndDomain(pod, in.ClusterDomain)
		if err != nil {
			return nil, err
		}
		if cfg.Hostname, err = podplan.KernelHostname(host, domain, pod.Spec.SetHostnameAsFQDN); err != nil {
			return nil, err
		}
	}
	if in.DNS != nil {
		cfg.DnsConfig = in.DNS()
	}
	cfg.PortMappings = PortMappings(pod)
	return cfg, nil
}

// PortMappings are the host ports of the pod's regular containers, as upstream's
// makePortMappings (TCP unless UDP or SCTP).
func PortMappings(pod *corev1.Pod) []*runtimeapi.PortMapping {
	var out []*runtimeapi.PortMapping
	for _, c := range pod.Spec.Containers {
		for _, p := range c.Ports {
			if p.HostPort == 0 {
				continue
			}
			pm := &runtimeapi.PortMapping{ContainerPort: p.ContainerPort, HostPort: p.HostPort, HostIp: p.HostIP}
			switch p.Protocol {
			case corev1.ProtocolUDP:
				pm.Protocol = runtimeapi.Protocol_UDP
			case corev1.ProtocolSCTP:
				pm.Protocol = runtimeapi.Protocol_SCTP
			}
			out = append(out, pm)
		}
	}
	return out
}

// ContainerInputs is what a container's CRI config needs besides the pod and the
// container, each piece already resolved.
type ContainerInputs struct {
	// Start is the planned start (attempt, init container, ephemeral target).
	Start podplan.Start
	// ImageRef is the image the runtime resolved (ensureImage's answer).
	ImageRef string
	// Env is the container's environment (Env); command and args are expanded with it.
	Env []*runtimeapi.KeyValue
	// Mounts are the container's mounts.
	Mounts []*runtimeapi.Mount
	// GracePeriod is the pod's termination grace period in seconds, kept in an
	// annotation for a stop after an agent restart.
	GracePeriod int64
	// MemoryCapacity is the node's memory in bytes (LinuxResources).
	MemoryCapacity int64
	// Security is the container's security context (ContainerSecurityContext).
	Security *runtimeapi.LinuxContainerSecurityContext
}

// Container is the container's CRI config as upstream's generateContainerConfig: its
// metadata and image, command and args expanded with its environment, working folder,
// environment and mounts, our labels and annotations (spec hash, restart count, grace
// period, init), its log path (<name>/<attempt>.log in the sandbox's folder), stdin and
// tty, LinuxResources and the security context; an ephemeral container with a target
// joins the target's PID namespace when it would have its own.
func Container(pod *corev1.Pod, c *corev1.Container, in ContainerInputs) *runtimeapi.ContainerConfig {
	attempt := strconv.Itoa(int(in.Start.Attempt))
	cfg := &runtimeapi.ContainerConfig{
		Mounts:   in.Mounts,
		Metadata: &runtimeapi.ContainerMetadata{Name: c.Name, Attempt: in.Start.Attempt},
		Image:    &runtimeapi.ImageSpec{Image: in.ImageRef, UserSpecifiedImage: c.Image},
		Command:  ExpandAll(c.Command, in.Env), Args: ExpandAll(c.Args, in.Env), WorkingDir: c.WorkingDir, Envs: in.Env,
		Labels: map[string]string{podplan.LabelManaged: "true", podplan.LabelPodName: pod.Name, podplan.LabelPodNamespace: pod.Namespace,
			podplan.LabelPodUID: string(pod.UID), podplan.LabelContainerName: c.Name},
		Annotations: map[string]string{podplan.AnnotationHash: podplan.HashContainer(c),
			podplan.AnnotationRestarts: attempt, podplan.AnnotationGrace: strconv.FormatInt(in.GracePeriod, 10)},
		LogPath: filepath.Join(c.Name, attempt+".log"),
		Stdin:   c.Stdin, StdinOnce: c.StdinOnce, Tty: c.TTY,
		Linux: &runtimeapi.LinuxContainerConfig{Resources: LinuxResources(pod, c, in.MemoryCapacity), SecurityContext: in.Security},
	}
	if in.Start.Init {
		cfg.Annotations[podplan.AnnotationInit] = "true"
	}
	if sc := in.Security; in.Start.TargetID != "" && sc != nil && sc.NamespaceOptions != nil && sc.NamespaceOptions.Pid == runtimeapi.NamespaceMode_CONTAINER {
		// an ephemeral container with a target shares the target's PID namespace
		sc.NamespaceOptions.Pid = runtimeapi.NamespaceMode_TARGET
		sc.NamespaceOptions.TargetId = in.Start.TargetID
	}
	return cfg
}

// LinuxResources maps requests and limits to CRI resources as the kubelet's
// generateLinuxContainerResources: CPU shares from the request (the limit when no
// request is set, as the API server defaults it), a CFS quota over the default period
// from the CPU limit, the memory limit, and the OOM score adjustment of the pod's QoS
// class (podplan.OOMScoreAdj).
func LinuxResources(pod *corev1.Pod, c *corev1.Container, memoryCapacity int64) *runtimeapi.LinuxContainerResources {
	req := c.Resources.Requests.Cpu().MilliValue()
	if _, ok := c.Resources.Requests[corev1.ResourceCPU]; !ok {
		req = c.Resources.Limits.Cpu().MilliValue()
	}
	res := &runtimeapi.LinuxContainerResources{CpuShares: podplan.MilliCPUToShares(req),
		OomScoreAdj: podplan.OOMScoreAdj(pod, c, memoryCapacity)}
	if q, ok := c.Resources.Limits[corev1.ResourceCPU]; ok {
		res.CpuPeriod = podplan.DefaultPeriod
		res.CpuQuota = podplan.MilliCPUToQuota(q.MilliValue(), podplan.DefaultPeriod)
	}
	if q, ok := c.Resources.Limits[corev1.ResourceMemory]; ok {
		res.MemoryLimitInBytes = q.Value()
	}
	return res
}
