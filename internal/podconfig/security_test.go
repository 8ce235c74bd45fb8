package podconfig

import (
	"reflect"
	"testing"

	corev1 "k8s.io/api/core/v1"
	runtimeapi "k8s.io/cri-api/pkg/apis/runtime/v1"
	"k8s.io/utils/ptr"
)

func TestHasPrivilegedContainer(t *testing.T) {
	priv := &corev1.SecurityContext{Privileged: ptr.To(true)}
	notPriv := &corev1.SecurityContext{Privileged: ptr.To(false)}
	for _, tt := range []struct {
		name string
		spec corev1.PodSpec
		want bool
	}{
		{"none", corev1.PodSpec{Containers: []corev1.Container{{Name: "a"}, {Name: "b", SecurityContext: notPriv}}}, false},
		{"regular", corev1.PodSpec{Containers: []corev1.Container{{Name: "a"}, {Name: "b", SecurityContext: priv}}}, true},
		{"init", corev1.PodSpec{InitContainers: []corev1.Container{{Name: "i", SecurityContext: priv}}, Containers: []corev1.Container{{Name: "a"}}}, true},
		{"ephemeral", corev1.PodSpec{Containers: []corev1.Container{{Name: "a"}},
			EphemeralContainers: []corev1.EphemeralContainer{{EphemeralContainerCommon: corev1.EphemeralContainerCommon{Name: "e", SecurityContext: priv}}}}, true},
	} {
		if got := HasPrivilegedContainer(&corev1.Pod{Spec: tt.spec}); got != tt.want {
			t.Errorf("%s: got %v, want %v", tt.name, got, tt.want)
		}
	}
}

func TestNamespacesForPod(t *testing.T) {
	const (
		pod  = runtimeapi.NamespaceMode_POD
		ctr  = runtimeapi.NamespaceMode_CONTAINER
		node = runtimeapi.NamespaceMode_NODE
	)
	for _, tt := range []struct {
		name                string
		spec                corev1.PodSpec
		ipc, network, pidNs runtimeapi.NamespaceMode
	}{
		{"default: own PID namespace per container", corev1.PodSpec{}, pod, pod, ctr},
		{"shareProcessNamespace", corev1.PodSpec{ShareProcessNamespace: ptr.To(true)}, pod, pod, pod},
		{"host namespaces", corev1.PodSpec{HostIPC: true, HostNetwork: true, HostPID: true, ShareProcessNamespace: ptr.To(true)}, node, node, node},
	} {
		got := NamespacesForPod(&corev1.Pod{Spec: tt.spec})
		if got.Ipc != tt.ipc || got.Network != tt.network || got.Pid != tt.pidNs {
			t.Errorf("%s: got ipc %v network %v pid %v", tt.name, got.Ipc, got.Network, got.Pid)
		}
	}
}

func TestSandboxSysctls(t *testing.T) {
	p := &corev1.Pod{Spec: corev1.PodSpec{SecurityContext: &corev1.PodSecurityContext{Sysctls: []corev1.Sysctl{
		{Name: "kernel.shm_rmid_forced", Value: "1"}, {Name: "net.ipv4.ip_local_port_range", Value: "1024 65535"}}}}}
	want := map[string]string{"kernel.shm_rmid_forced": "1", "net.ipv4.ip_local_port_range": "1024 65535"}
	if got := SandboxSysctls(p); !reflect.DeepEqual(got, want) {
		t.Errorf("got %v", got)
	}
	if got := SandboxSysctls(&corev1.Pod{}); len(got) != 0 {
		t.Errorf("got %v for a pod without sysctls", got)
	}
}

func TestEffectiveSecurityContext(t *testing.T) {
	pod := &corev1.Pod{Spec: corev1.PodSpec{SecurityContext: &corev1.PodSecurityContext{RunAsUser: ptr.To(int64(1000)),
		RunAsGroup: ptr.To(int64(2000)), RunAsNonRoot: ptr.To(true), SELinuxOptions: &corev1.SELinuxOptions{Level: "s0:c1"}}}}
	c := &corev1.Container{SecurityContext: &corev1.SecurityContext{RunAsUser: ptr.To(int64(0)), Privileged: ptr.To(true),
		ProcMount: ptr.To(corev1.UnmaskedProcMount), AllowPrivilegeEscalation: ptr.To(false)}}
	got := EffectiveSecurityContext(pod, c)
	if *got.RunAsUser != 0 || *got.RunAsGroup != 2000 || !*got.RunAsNonRoot || !*got.Privileged || got.SELinuxOptions.Level != "s0:c1" ||
		*got.ProcMount != corev1.UnmaskedProcMount || *got.AllowPrivilegeEscalation {
		t.Errorf("merged: %+v", got)
	}
	*got.RunAsUser = 5
	if *c.SecurityContext.RunAsUser != 0 || *pod.Spec.SecurityContext.RunAsUser != 1000 {
		t.Errorf("the result shares pointers with its inputs")
	}
	if got := EffectiveSecurityContext(&corev1.Pod{}, &corev1.Container{}); !reflect.DeepEqual(got, &corev1.SecurityContext{}) {
		t.Errorf("neither: %+v", got)
	}
	if got := EffectiveSecurityContext(pod, &corev1.Container{}); *got.RunAsUser != 1000 || got.Privileged != nil {
		t.Errorf("pod only: %+v", got)
	}
}

func TestMaskedAndReadonlyPaths(t *testing.T) {
	defaults := DefaultMaskedPaths([]int{0, 1, 2}, func(p string) bool { return p == ThermalThrottlePath(1) })
	if n := len(defaults); n != 13 || defaults[0] != "/proc/asound" || defaults[n-1] != "/sys/devices/system/cpu/cpu1/thermal_throttle" {
		t.Errorf("defaults: %v", defaults)
	}
	for _, tt := range []struct {
		name     string
		pm       *corev1.ProcMountType
		masked   int
		readonly []string
	}{
		{"unset", nil, 13, []string{"/proc/bus", "/proc/fs", "/proc/irq", "/proc/sys", "/proc/sysrq-trigger"}},
		{"Default", ptr.To(corev1.DefaultProcMount), 13, []string{"/proc/bus", "/proc/fs", "/proc/irq", "/proc/sys", "/proc/sysrq-trigger"}},
		{"Unmasked", ptr.To(corev1.UnmaskedProcMount), 0, []string{}},
	} {
		m, r := MaskedPaths(tt.pm, defaults), ReadonlyPaths(tt.pm)
		if len(m) != tt.masked || m == nil || !reflect.DeepEqual(r, tt.readonly) {
			t.Errorf("%s: masked %v readonly %v", tt.name, m, r)
		}
	}
}

func TestParseCPUList(t *testing.T) {
	for in, want := range map[string][]int{"0-3\n": {0, 1, 2, 3}, "0": {0}, "0-1,4,6-7": {0, 1, 4, 6, 7}, "": nil, "x": nil, "3-1": nil} {
		if got := ParseCPUList(in); !reflect.DeepEqual(got, want) {
			t.Errorf("%q: got %v, want %v", in, got, want)
		}
	}
}
