package podconfig

import (
	"reflect"
	"strings"
	"testing"

	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/api/resource"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	runtimeapi "k8s.io/cri-api/pkg/apis/runtime/v1"
	"k8s.io/utils/ptr"

	"github.com/nodekeeper/nodekeeper/internal/podplan"
)

// Sandbox as upstream's generatePodSandboxConfig.
func TestSandbox(t *testing.T) {
	dns := &runtimeapi.DNSConfig{Servers: []string{"10.96.0.10"}}
	pod := &corev1.Pod{ObjectMeta: metav1.ObjectMeta{Namespace: "ns", Name: "web-0", UID: "u-1",
		Labels:      map[string]string{"app": "web", podplan.LabelPodName: "spoofed"},
		Annotations: map[string]string{"note": "n"}},
		Spec: corev1.PodSpec{Hostname: "web-0", Subdomain: "web", SetHostnameAsFQDN: ptr.To(true),
			SecurityContext: &corev1.PodSecurityContext{Sysctls: []corev1.Sysctl{{Name: "net.ipv4.ip_unprivileged_port_start", Value: "0"}}},
			InitContainers:  []corev1.Container{{Name: "i", Ports: []corev1.ContainerPort{{ContainerPort: 1, HostPort: 1}}}}, // not mapped
			Containers: []corev1.Container{
				{Name: "a", Ports: []corev1.ContainerPort{{ContainerPort: 80, HostPort: 8080, HostIP: "127.0.0.1"}, {ContainerPort: 81}}},
				{Name: "b", Ports: []corev1.ContainerPort{{ContainerPort: 53, HostPort: 5353, Protocol: corev1.ProtocolUDP},
					{ContainerPort: 9, HostPort: 9, Protocol: corev1.ProtocolSCTP}}}}}}
	asked := 0
	in := SandboxInputs{Attempt: 2, LogDirectory: "/var/log/pods/ns_web-0_u-1", CgroupParent: "/kubepods/besteffort/podu-1",
		ClusterDomain: "cluster.local", DNS: func() *runtimeapi.DNSConfig { asked++; return dns }}
	got, err := Sandbox(pod, in)
	if err != nil {
		t.Fatal(err)
	}
	want := &runtimeapi.PodSandboxConfig{
		Metadata: &runtimeapi.PodSandboxMetadata{Name: "web-0", Namespace: "ns", Uid: "u-1", Attempt: 2},
		Hostname: "web-0.web.ns.svc.cluster.local", LogDirectory: in.LogDirectory, DnsConfig: dns,
		PortMappings: []*runtimeapi.PortMapping{{ContainerPort: 80, HostPort: 8080, HostIp: "127.0.0.1"},
			{Protocol: runtimeapi.Protocol_UDP, ContainerPort: 53, HostPort: 5353}, {Protocol: runtimeapi.Protocol_SCTP, ContainerPort: 9, HostPort: 9}},
		Labels: map[string]string{podplan.LabelManaged: "true", podplan.LabelPodName: "web-0", podplan.LabelPodNamespace: "ns",
			podplan.LabelPodUID: "u-1", "app": "web"},
		Annotations: map[string]string{"note": "n"},
		Linux: &runtimeapi.LinuxPodSandboxConfig{CgroupParent: in.CgroupParent, Sysctls: map[string]string{"net.ipv4.ip_unprivileged_port_start": "0"},
			SecurityContext: &runtimeapi.LinuxSandboxSecurityContext{
				Seccomp:          &runtimeapi.SecurityProfile{ProfileType: runtimeapi.SecurityProfile_RuntimeDefault},
				NamespaceOptions: &runtimeapi.NamespaceOption{Ipc: runtimeapi.NamespaceMode_POD, Network: runtimeapi.NamespaceMode_POD, Pid: runtimeapi.NamespaceMode_CONTAINER}}},
	}
	if !reflect.DeepEqual(got, want) || asked != 1 {
		t.Errorf("\ngot  %v\nwant %v (DNS asked %d times)", got, want, asked)
	}

	// host network: no hostname of its own
	hn := pod.DeepCopy()
	hn.Spec.HostNetwork = true
	if got, err := Sandbox(hn, in); err != nil || got.Hostname != "" || got.Linux.SecurityContext.NamespaceOptions.Network != runtimeapi.NamespaceMode_NODE {
		t.Errorf("host network: %v, %v", got, err)
	}
	// a plain pod's hostname is its name
	plain := &corev1.Pod{ObjectMeta: metav1.ObjectMeta{Namespace: "ns", Name: "p"}}
	if got, err := Sandbox(plain, SandboxInputs{}); err != nil || got.Hostname != "p" || got.PortMappings != nil || got.DnsConfig != nil {
		t.Errorf("plain: %v, %v", got, err)
	}

	// errors of the spec; the resolver is not asked for a pod whose sandbox cannot be made
	long := pod.DeepCopy()
	long.Spec.Subdomain = strings.Repeat("s", 63)
	bad := pod.DeepCopy()
	bad.Spec.Hostname = "Not_A_Label"
	policy := pod.DeepCopy()
	policy.Spec.SecurityContext.SupplementalGroupsPolicy = ptr.To(corev1.SupplementalGroupsPolicy("x"))
	for name, p := range map[string]*corev1.Pod{"FQDN too long": long, "invalid hostname": bad, "unknown policy": policy} {
		asked = 0
		if got, err := Sandbox(p, in); err == nil || got != nil || asked != 0 {
			t.Errorf("%s: got %v, %v; DNS asked %d times", name, got, err, asked)
		}
	}
}

// Container assembles the container's CRI config from the resolved pieces.
func TestContainer(t *testing.T) {
	pod := &corev1.Pod{ObjectMeta: metav1.ObjectMeta{Namespace: "ns", Name: "p", UID: "u-1"},
		Spec: corev1.PodSpec{Containers: []corev1.Container{{Name: "app", Image: "busybox:local",
			Command: []string{"sh", "-c", "echo $(GREETING)"}, Args: []string{"$(UNSET)", "$$(GREETING)"}, WorkingDir: "/w",
			Stdin: true, StdinOnce: true, TTY: true,
			Resources: corev1.ResourceRequirements{Limits: corev1.ResourceList{"cpu": resource.MustParse("500m"), "memory": resource.MustParse("64Mi")}}}}}}
	c := &pod.Spec.Containers[0]
	env := kv("GREETING", "hi")
	mounts := []*runtimeapi.Mount{{ContainerPath: "/data", HostPath: "/var/lib/x"}}
	sc := &runtimeapi.LinuxContainerSecurityContext{NamespaceOptions: &runtimeapi.NamespaceOption{Pid: runtimeapi.NamespaceMode_CONTAINER}}
	in := ContainerInputs{Start: podplan.Start{Name: "app", Attempt: 3}, ImageRef: "sha256:abc", Env: env, Mounts: mounts,
		GracePeriod: 30, MemoryCapacity: 1 << 30, Security: sc}
	got := Container(pod, c, in)
	want := &runtimeapi.ContainerConfig{
		Metadata: &runtimeapi.ContainerMetadata{Name: "app", Attempt: 3},
		Image:    &runtimeapi.ImageSpec{Image: "sha256:abc", UserSpecifiedImage: "busybox:local"},
		Command:  []string{"sh", "-c", "echo hi"}, Args: []string{"$(UNSET)", "$(GREETING)"}, WorkingDir: "/w",
		Envs: env, Mounts: mounts,
		Labels: map[string]string{podplan.LabelManaged: "true", podplan.LabelPodName: "p", podplan.LabelPodNamespace: "ns",
			podplan.LabelPodUID: "u-1", podplan.LabelContainerName: "app"},
		Annotations: map[string]string{podplan.AnnotationHash: podplan.HashContainer(c), podplan.AnnotationRestarts: "3", podplan.AnnotationGrace: "30"},
		LogPath:     "app/3.log", Stdin: true, StdinOnce: true, Tty: true,
		Linux: &runtimeapi.LinuxContainerConfig{Resources: LinuxResources(pod, c, 1<<30), SecurityContext: sc},
	}
	if !reflect.DeepEqual(got, want) {
		t.Errorf("\ngot  %v\nwant %v", got, want)
	}
	if got.Linux.Resources.CpuQuota != 50000 || got.Linux.Resources.MemoryLimitInBytes != 64<<20 {
		t.Errorf("resources: %v", got.Linux.Resources)
	}

	// an init container is marked; an ephemeral one with a target joins its PID namespace
	in.Start = podplan.Start{Name: "app", Init: true}
	if got := Container(pod, c, in); got.Annotations[podplan.AnnotationInit] != "true" || got.LogPath != "app/0.log" ||
		got.Annotations[podplan.AnnotationRestarts] != "0" {
		t.Errorf("init: %v, %s", got.Annotations, got.LogPath)
	}
	in.Start = podplan.Start{Name: "app", TargetID: "target-1"}
	if got := Container(pod, c, in); got.Linux.SecurityContext.NamespaceOptions.Pid != runtimeapi.NamespaceMode_TARGET ||
		got.Linux.SecurityContext.NamespaceOptions.TargetId != "target-1" {
		t.Errorf("targeted: %v", got.Linux.SecurityContext.NamespaceOptions)
	}
	// ... but not when the pod shares one PID namespace
	in.Security = &runtimeapi.LinuxContainerSecurityContext{NamespaceOptions: &runtimeapi.NamespaceOption{Pid: runtimeapi.NamespaceMode_POD}}
	if got := Container(pod, c, in); got.Linux.SecurityContext.NamespaceOptions.Pid != runtimeapi.NamespaceMode_POD ||
		got.Linux.SecurityContext.NamespaceOptions.TargetId != "" {
		t.Errorf("shared: %v", got.Linux.SecurityContext.NamespaceOptions)
	}
	// no command: the image's entrypoint
	c.Command, c.Args = nil, nil
	if got := Container(pod, c, in); got.Command != nil || got.Args != nil {
		t.Errorf("entrypoint: %q %q", got.Command, got.Args)
	}
}

// LinuxResources as upstream's generateLinuxContainerResources.
func TestLinuxResources(t *testing.T) {
	const gi = int64(1 << 30)
	rl := func(kv ...string) corev1.ResourceList {
		out := corev1.ResourceList{}
		for i := 0; i < len(kv); i += 2 {
			out[corev1.ResourceName(kv[i])] = resource.MustParse(kv[i+1])
		}
		return out
	}
	cases := []struct {
		name     string
		req, lim corev1.ResourceList
		want     *runtimeapi.LinuxContainerResources
	}{
		{"best effort: minimal shares", nil, nil, &runtimeapi.LinuxContainerResources{CpuShares: 2, OomScoreAdj: 1000}},
		{"guaranteed: shares and quota from the limit", rl("cpu", "250m", "memory", "128Mi"), rl("cpu", "250m", "memory", "128Mi"),
			&runtimeapi.LinuxContainerResources{CpuShares: 256, CpuPeriod: 100000, CpuQuota: 25000, MemoryLimitInBytes: 128 << 20, OomScoreAdj: -997}},
		{"a limit without a request: the request defaults to it", nil, rl("cpu", "2", "memory", "1Gi"),
			&runtimeapi.LinuxContainerResources{CpuShares: 2048, CpuPeriod: 100000, CpuQuota: 200000, MemoryLimitInBytes: gi, OomScoreAdj: -997}},
		{"burstable: the OOM score from the memory request", rl("cpu", "100m", "memory", "512Mi"), rl("memory", "1Gi"),
			&runtimeapi.LinuxContainerResources{CpuShares: 102, MemoryLimitInBytes: gi, OomScoreAdj: 1000 - 1000*512/(4*1024)}},
		{"a tiny CPU limit: the quota's floor", rl("cpu", "1m"), rl("cpu", "1m"),
			&runtimeapi.LinuxContainerResources{CpuShares: 2, CpuPeriod: 100000, CpuQuota: 1000, OomScoreAdj: 1000 - 1}},
	}
	for _, c := range cases {
		pod := &corev1.Pod{Spec: corev1.PodSpec{Containers: []corev1.Container{{Name: "c", Resources: corev1.ResourceRequirements{Requests: c.req, Limits: c.lim}}}}}
		if got := LinuxResources(pod, &pod.Spec.Containers[0], 4*gi); !reflect.DeepEqual(got, c.want) {
			t.Errorf("%s:\n got  %v\n want %v", c.name, got, c.want)
		}
	}
}
