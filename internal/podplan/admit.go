package podplan

import (
	"fmt"
	"runtime"
	"strconv"
	"strings"
	"time"

	corev1 "k8s.io/api/core/v1"
	"k8s.io/utils/ptr"
)

// Admission is the kubelet's pod admission (its PodAdmitHandlers, in their order), for
// the checks nodekeeper has: the sysctl allowlist, then the OS label and field of the
// predicate handler. A rejected pod never runs: it is Failed with the reason and
// "Pod was rejected: <message>" (rejectPod).
type Admission struct {
	// Sysctls are the allowed sysctls and patterns ("prefix*"): the safe ones for the
	// kernel (SafeSysctls) and the node's allowedUnsafeSysctls.
	Sysctls []string
}

// Rejection is why a pod is not admitted.
type Rejection struct{ Reason, Message string }

// Admit tells why the pod may not run on this node, or nil.
func (a Admission) Admit(pod *corev1.Pod) *Rejection {
	if sc := pod.Spec.SecurityContext; sc != nil && len(sc.Sysctls) > 0 {
		hostUsers := pod.Spec.HostUsers == nil || *pod.Spec.HostUsers
		for _, s := range sc.Sysctls {
			if err := validateSysctl(a.Sysctls, s.Name, pod.Spec.HostNetwork, pod.Spec.HostIPC, hostUsers); err != nil {
				return &Rejection{Reason: "SysctlForbidden", Message: fmt.Sprintf("forbidden sysctl: %v", err)}
			}
		}
	}
	// the node's kubernetes.io/os label is taken to be runtime.GOOS, as upstream
	if os, ok := pod.Labels[corev1.LabelOSStable]; ok && os != runtime.GOOS {
		return &Rejection{Reason: "PodOSSelectorNodeLabelDoesNotMatch",
			Message: "Failed to admit pod as the `kubernetes.io/os` label doesn't match node label"}
	}
	if pod.Spec.OS != nil && string(pod.Spec.OS.Name) != runtime.GOOS {
		return &Rejection{Reason: "PodOSNotSupported", Message: "Failed to admit pod as the OS field doesn't match node OS"}
	}
	return nil
}

// Rejected is the status of a pod that was not admitted, as the kubelet's rejectPod
// writes it: Failed with the reason and "Pod was rejected: <message>", its QoS class and
// a start time; the conditions the kubelet does not own are kept.
func Rejected(pod *corev1.Pod, r Rejection, now time.Time) corev1.PodStatus {
	st := corev1.PodStatus{Phase: corev1.PodFailed, Reason: r.Reason, Message: "Pod was rejected: " + r.Message,
		QOSClass: QOSClass(pod), StartTime: pod.Status.StartTime}
	if st.StartTime == nil {
		st.StartTime = ptr.To(t(now))
	}
	for _, c := range pod.Status.Conditions {
		if !kubeletCondition(c.Type) {
			st.Conditions = append(st.Conditions, c)
		}
	}
	return st
}

// safeSysctls is upstream's safe sysctl list, each with the kernel from which it is
// namespaced ("" always).
var safeSysctls = []struct{ name, kernel string }{
	{"kernel.shm_rmid_forced", ""},
	{"net.ipv4.ip_local_port_range", ""},
	{"net.ipv4.tcp_syncookies", ""},
	{"net.ipv4.ping_group_range", ""},
	{"net.ipv4.ip_unprivileged_port_start", ""},
	{"net.ipv4.ip_local_reserved_ports", "3.16"},
	{"net.ipv4.tcp_keepalive_time", "4.5"},
	{"net.ipv4.tcp_fin_timeout", "4.6"},
	{"net.ipv4.tcp_keepalive_intvl", "4.5"},
	{"net.ipv4.tcp_keepalive_probes", "4.5"},
	{"net.ipv4.tcp_rmem", "4.15"},
	{"net.ipv4.tcp_wmem", "4.15"},
	{"net.ipv4.tcp_slow_start_after_idle", "4.15"},
	{"net.ipv4.tcp_notsent_lowat", "4.6"},
}

// SafeSysctls is upstream's SafeSysctlAllowlist for a kernel release ("6.1.0-18-amd64";
// one that cannot be read keeps only the sysctls that need no particular kernel).
func SafeSysctls(kernelRelease string) []string {
	have := parseKernel(kernelRelease)
	var out []string
	for _, s := range safeSysctls {
		if s.kernel == "" || (have != nil && !versionLess(have, parseKernel(s.kernel))) {
			out = append(out, s.name)
		}
	}
	return out
}

func parseKernel(v string) []int {
	var out []int
	for _, part := range strings.SplitN(v, ".", 3) {
		n := 0
		digits := 0
		for digits < len(part) && part[digits] >= '0' && part[digits] <= '9' {
			digits++
		}
		if digits == 0 {
			return nil
		}
		n, _ = strconv.Atoi(part[:digits])
		out = append(out, n)
		if digits < len(part) {
			break // "18-amd64": the rest is not part of the version
		}
	}
	if len(out) < 2 {
		return nil
	}
	return out
}

func versionLess(a, b []int) bool {
	for i := 0; i < len(a) || i < len(b); i++ {
		x, y := 0, 0
		if i < len(a) {
			x = a[i]
		}
		if i < len(b) {
			y = b[i]
		}
		if x != y {
			return x < y
		}
	}
	return false
}

// SysctlNamespace is the kernel namespace a sysctl (or a pattern's prefix) belongs to:
// "IPC", "Net", "UTS", "User", or "" when it is not known to be namespaced (upstream's
// component-helpers sysctl.GetNamespace).
func SysctlNamespace(s string) string {
	s = NormalizeSysctl(strings.TrimSuffix(s, "*"))
	switch s {
	case "kernel.domainname":
		return "UTS"
	case "kernel.sem", "kernel.shmall", "kernel.shmmax", "kernel.shmmni", "kernel.shm_rmid_forced",
		"kernel.msgmax", "kernel.msgmnb", "kernel.msgmni",
		"kernel.shm", "kernel.msg": // the prefixes of kernel.shm* and kernel.msg*
		return "IPC"
	}
	switch {
	case strings.HasPrefix(s, "net."):
		return "Net"
	case strings.HasPrefix(s, "fs.mqueue."):
		return "IPC"
	case strings.HasPrefix(s, "user."):
		return "User"
	}
	return ""
}

// NormalizeSysctl turns a sysctl written with '/' separators into the '.' form
// ("net/ipv4/conf/eno2.100/rp_filter" is "net.ipv4.conf.eno2/100.rp_filter").
func NormalizeSysctl(s string) string {
	i := strings.IndexAny(s, "./")
	if i == -1 || s[i] == '.' {
		return s
	}
	return strings.Map(func(r rune) rune {
		switch r {
		case '.':
			return '/'
		case '/':
			return '.'
		}
		return r
	}, s)
}

// validateSysctl is upstream's patternAllowlist.validateSysctl.
func validateSysctl(allowed []string, sysctl string, hostNet, hostIPC, hostUsers bool) error {
	sysctl = NormalizeSysctl(sysctl)
	check := func(ns string) error {
		if (ns == "IPC" && hostIPC) || (ns == "Net" && hostNet) || (ns == "User" && hostUsers) {
			return fmt.Errorf("%q not allowed with host %s enabled", sysctl, ns)
		}
		return nil
	}
	for _, a := range allowed {
		if p := NormalizeSysctl(a); !strings.HasSuffix(p, "*") && p == sysctl {
			return check(SysctlNamespace(p))
		}
	}
	for _, a := range allowed {
		if p := NormalizeSysctl(a); strings.HasSuffix(p, "*") && strings.HasPrefix(sysctl, strings.TrimSuffix(p, "*")) {
			return check(SysctlNamespace(p))
		}
	}
	return fmt.Errorf("%q not allowlisted", sysctl)
}
