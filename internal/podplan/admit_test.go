package podplan

import (
	"reflect"
	"testing"

	corev1 "k8s.io/api/core/v1"
	"k8s.io/utils/ptr"
)

// The kubelet's admission: sysctls outside the allowlist (safe ones for the kernel plus
// allowedUnsafeSysctls) and pods for another OS are rejected with upstream's reasons.
func TestAdmit(t *testing.T) {
	adm := Admission{Sysctls: append(SafeSysctls("6.18.44-fc"), "kernel.msg*", "net.core.somaxconn")}
	withSysctls := func(names ...string) *corev1.Pod {
		p := pod(corev1.RestartPolicyAlways, nil, "a")
		p.Spec.SecurityContext = &corev1.PodSecurityContext{}
		for _, n := range names {
			p.Spec.SecurityContext.Sysctls = append(p.Spec.SecurityContext.Sysctls, corev1.Sysctl{Name: n, Value: "1"})
		}
		return p
	}
	for _, tt := range []struct {
		name   string
		pod    *corev1.Pod
		reason string
		msg    string
	}{
		{"no sysctls", pod(corev1.RestartPolicyAlways, nil, "a"), "", ""},
		{"safe", withSysctls("kernel.shm_rmid_forced", "net.ipv4.tcp_rmem"), "", ""},
		{"slashes", withSysctls("kernel/shm_rmid_forced"), "", ""},
		{"allowed pattern", withSysctls("kernel.msgmax"), "", ""},
		{"allowed unsafe", withSysctls("net.core.somaxconn"), "", ""},
		{"unsafe, not allowed", withSysctls("kernel.sem"), "SysctlForbidden", `forbidden sysctl: "kernel.sem" not allowlisted`},
		{"net with host network", func() *corev1.Pod { p := withSysctls("net.core.somaxconn"); p.Spec.HostNetwork = true; return p }(),
			"SysctlForbidden", `forbidden sysctl: "net.core.somaxconn" not allowed with host Net enabled`},
		{"windows", func() *corev1.Pod {
			p := pod(corev1.RestartPolicyAlways, nil, "a")
			p.Spec.OS = &corev1.PodOS{Name: corev1.Windows}
			return p
		}(), "PodOSNotSupported", "Failed to admit pod as the OS field doesn't match node OS"},
		{"windows label", func() *corev1.Pod {
			p := pod(corev1.RestartPolicyAlways, nil, "a")
			p.Labels = map[string]string{corev1.LabelOSStable: "windows"}
			return p
		}(), "PodOSSelectorNodeLabelDoesNotMatch", "Failed to admit pod as the `kubernetes.io/os` label doesn't match node label"},
		{"linux", func() *corev1.Pod {
			p := pod(corev1.RestartPolicyAlways, nil, "a")
			p.Spec.OS = &corev1.PodOS{Name: corev1.Linux}
			p.Spec.HostUsers = ptr.To(true)
			return p
		}(), "", ""},
	} {
		r := adm.Admit(tt.pod)
		got := Rejection{}
		if r != nil {
			got = *r
		}
		if got != (Rejection{Reason: tt.reason, Message: tt.msg}) {
			t.Errorf("%s: rejection %+v, want %q %q", tt.name, got, tt.reason, tt.msg)
		}
	}
}

func TestSafeSysctls(t *testing.T) {
	if got := SafeSysctls("4.5.0-generic"); len(got) != 9 || got[len(got)-1] != "net.ipv4.tcp_keepalive_probes" {
		t.Errorf("4.5: %v", got)
	}
	if got, want := SafeSysctls("garbage"), []string{"kernel.shm_rmid_forced", "net.ipv4.ip_local_port_range",
		"net.ipv4.tcp_syncookies", "net.ipv4.ping_group_range", "net.ipv4.ip_unprivileged_port_start"}; !reflect.DeepEqual(got, want) {
		t.Errorf("unknown kernel: %v", got)
	}
	if got := SafeSysctls("6.18.44-fc-v1045"); len(got) != 14 {
		t.Errorf("6.18: %v", got)
	}
}
