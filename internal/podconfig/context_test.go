package podconfig

import (
	"errors"
	"reflect"
	"testing"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	runtimeapi "k8s.io/cri-api/pkg/apis/runtime/v1"
	"k8s.io/utils/ptr"
)

var masked = []string{"/proc/kcore", "/proc/keys"}

// ContainerSecurityContext as upstream's determineEffectiveSecurityContext
// (kuberuntime security_context.go and kuberuntime_container_linux.go); each case
// gives the whole CRI context it must produce.
func TestContainerSecurityContext(t *testing.T) {
	podNS := func() *runtimeapi.NamespaceOption {
		return &runtimeapi.NamespaceOption{Ipc: runtimeapi.NamespaceMode_POD, Network: runtimeapi.NamespaceMode_POD, Pid: runtimeapi.NamespaceMode_CONTAINER}
	}
	readonly := []string{"/proc/bus", "/proc/fs", "/proc/irq", "/proc/sys", "/proc/sysrq-trigger"}
	base := func(f func(*runtimeapi.LinuxContainerSecurityContext)) *runtimeapi.LinuxContainerSecurityContext {
		sc := &runtimeapi.LinuxContainerSecurityContext{NamespaceOptions: podNS(), MaskedPaths: masked, ReadonlyPaths: readonly}
		if f != nil {
			f(sc)
		}
		return sc
	}
	localhost := "profiles/audit.json"
	cases := []struct {
		name string
		psc  *corev1.PodSecurityContext
		csc  *corev1.SecurityContext
		ann  map[string]string
		spec func(*corev1.PodSpec)
		want *runtimeapi.LinuxContainerSecurityContext
		err  string
	}{
		{name: "nothing set", want: base(nil)},
		{name: "the pod's user, group and SELinux; fsGroup first among the groups; the policy",
			psc: &corev1.PodSecurityContext{RunAsUser: ptr.To(int64(1000)), RunAsGroup: ptr.To(int64(3000)), FSGroup: ptr.To(int64(2000)),
				SupplementalGroups: []int64{4000, 5000}, SupplementalGroupsPolicy: ptr.To(corev1.SupplementalGroupsPolicyStrict),
				SELinuxOptions: &corev1.SELinuxOptions{User: "u", Role: "r", Type: "t", Level: "s0:c1"}},
			want: base(func(sc *runtimeapi.LinuxContainerSecurityContext) {
				sc.RunAsUser, sc.RunAsGroup = &runtimeapi.Int64Value{Value: 1000}, &runtimeapi.Int64Value{Value: 3000}
				sc.SupplementalGroups = []int64{2000, 4000, 5000}
				sc.SupplementalGroupsPolicy = runtimeapi.SupplementalGroupsPolicy_Strict
				sc.SelinuxOptions = &runtimeapi.SELinuxOption{User: "u", Role: "r", Type: "t", Level: "s0:c1"}
			})},
		{name: "the container's fields win over the pod's",
			psc: &corev1.PodSecurityContext{RunAsUser: ptr.To(int64(1000)), RunAsGroup: ptr.To(int64(3000)), SELinuxOptions: &corev1.SELinuxOptions{Level: "s0:c1"}},
			csc: &corev1.SecurityContext{RunAsUser: ptr.To(int64(7)), SELinuxOptions: &corev1.SELinuxOptions{Level: "s0:c2"}},
			want: base(func(sc *runtimeapi.LinuxContainerSecurityContext) {
				sc.RunAsUser, sc.RunAsGroup = &runtimeapi.Int64Value{Value: 7}, &runtimeapi.Int64Value{Value: 3000}
				sc.SupplementalGroupsPolicy = runtimeapi.SupplementalGroupsPolicy_Merge
				sc.SelinuxOptions = &runtimeapi.SELinuxOption{Level: "s0:c2"}
			})},
		{name: "privileged, read-only root, no privilege escalation, capabilities",
			csc: &corev1.SecurityContext{Privileged: ptr.To(true), ReadOnlyRootFilesystem: ptr.To(true), AllowPrivilegeEscalation: ptr.To(false),
				Capabilities: &corev1.Capabilities{Add: []corev1.Capability{"NET_ADMIN", "SYS_TIME"}, Drop: []corev1.Capability{"ALL"}}},
			want: base(func(sc *runtimeapi.LinuxContainerSecurityContext) {
				sc.Privileged, sc.ReadonlyRootfs, sc.NoNewPrivs = true, true, true
				sc.Capabilities = &runtimeapi.Capability{AddCapabilities: []string{"NET_ADMIN", "SYS_TIME"}, DropCapabilities: []string{"ALL"}}
			})},
		{name: "allowPrivilegeEscalation true: new privileges allowed; empty capabilities are empty lists",
			csc: &corev1.SecurityContext{AllowPrivilegeEscalation: ptr.To(true), Capabilities: &corev1.Capabilities{}},
			want: base(func(sc *runtimeapi.LinuxContainerSecurityContext) {
				sc.Capabilities = &runtimeapi.Capability{AddCapabilities: []string{}, DropCapabilities: []string{}}
			})},
		{name: "procMount Unmasked: nothing masked or read-only",
			csc: &corev1.SecurityContext{ProcMount: ptr.To(corev1.UnmaskedProcMount)},
			want: base(func(sc *runtimeapi.LinuxContainerSecurityContext) {
				sc.MaskedPaths, sc.ReadonlyPaths = []string{}, []string{}
			})},
		{name: "the host's namespaces",
			spec: func(s *corev1.PodSpec) { s.HostIPC, s.HostNetwork, s.HostPID = true, true, true },
			want: base(func(sc *runtimeapi.LinuxContainerSecurityContext) {
				sc.NamespaceOptions = &runtimeapi.NamespaceOption{Ipc: runtimeapi.NamespaceMode_NODE, Network: runtimeapi.NamespaceMode_NODE, Pid: runtimeapi.NamespaceMode_NODE}
			})},
		{name: "shareProcessNamespace",
			spec: func(s *corev1.PodSpec) { s.ShareProcessNamespace = ptr.To(true) },
			want: base(func(sc *runtimeapi.LinuxContainerSecurityContext) {
				sc.NamespaceOptions.Pid = runtimeapi.NamespaceMode_POD
			})},
		{name: "the pod's seccomp profile",
			psc: &corev1.PodSecurityContext{SeccompProfile: &corev1.SeccompProfile{Type: corev1.SeccompProfileTypeRuntimeDefault}},
			want: base(func(sc *runtimeapi.LinuxContainerSecurityContext) {
				sc.SupplementalGroupsPolicy = runtimeapi.SupplementalGroupsPolicy_Merge
				sc.Seccomp = &runtimeapi.SecurityProfile{ProfileType: runtimeapi.SecurityProfile_RuntimeDefault}
			})},
		{name: "the container's seccomp profile wins: localhost",
			psc: &corev1.PodSecurityContext{SeccompProfile: &corev1.SeccompProfile{Type: corev1.SeccompProfileTypeRuntimeDefault}},
			csc: &corev1.SecurityContext{SeccompProfile: &corev1.SeccompProfile{Type: corev1.SeccompProfileTypeLocalhost, LocalhostProfile: &localhost}},
			want: base(func(sc *runtimeapi.LinuxContainerSecurityContext) {
				sc.SupplementalGroupsPolicy = runtimeapi.SupplementalGroupsPolicy_Merge
				sc.Seccomp = &runtimeapi.SecurityProfile{ProfileType: runtimeapi.SecurityProfile_Localhost, LocalhostRef: localhost}
			})},
		{name: "seccomp Unconfined",
			csc: &corev1.SecurityContext{SeccompProfile: &corev1.SeccompProfile{Type: corev1.SeccompProfileTypeUnconfined}},
			want: base(func(sc *runtimeapi.LinuxContainerSecurityContext) {
				sc.Seccomp = &runtimeapi.SecurityProfile{ProfileType: runtimeapi.SecurityProfile_Unconfined}
			})},
		{name: "AppArmor from the pod, with the deprecated string",
			psc: &corev1.PodSecurityContext{AppArmorProfile: &corev1.AppArmorProfile{Type: corev1.AppArmorProfileTypeLocalhost, LocalhostProfile: ptr.To("k8s-deny")}},
			want: base(func(sc *runtimeapi.LinuxContainerSecurityContext) {
				sc.SupplementalGroupsPolicy = runtimeapi.SupplementalGroupsPolicy_Merge
				sc.Apparmor = &runtimeapi.SecurityProfile{ProfileType: runtimeapi.SecurityProfile_Localhost, LocalhostRef: "k8s-deny"}
				sc.ApparmorProfile = "localhost/k8s-deny"
			})},
		{name: "AppArmor from the beta annotation",
			ann: map[string]string{corev1.DeprecatedAppArmorBetaContainerAnnotationKeyPrefix + "c": "runtime/default"},
			want: base(func(sc *runtimeapi.LinuxContainerSecurityContext) {
				sc.Apparmor = &runtimeapi.SecurityProfile{ProfileType: runtimeapi.SecurityProfile_RuntimeDefault}
				sc.ApparmorProfile = "runtime/default"
			})},
		{name: "AppArmor localhost without a name",
			csc: &corev1.SecurityContext{AppArmorProfile: &corev1.AppArmorProfile{Type: corev1.AppArmorProfileTypeLocalhost}},
			err: "missing localhost apparmor profile name"},
		{name: "an unknown supplementalGroupsPolicy",
			psc: &corev1.PodSecurityContext{SupplementalGroupsPolicy: ptr.To(corev1.SupplementalGroupsPolicy("Loose"))},
			err: "unsupported supplementalGroupsPolicy: Loose"},
		{name: "runAsNonRoot with a non-root runAsUser: the image is not asked",
			csc:  &corev1.SecurityContext{RunAsNonRoot: ptr.To(true), RunAsUser: ptr.To(int64(1000))},
			want: base(func(sc *runtimeapi.LinuxContainerSecurityContext) { sc.RunAsUser = &runtimeapi.Int64Value{Value: 1000} })},
		{name: "runAsNonRoot with runAsUser 0",
			psc: &corev1.PodSecurityContext{RunAsNonRoot: ptr.To(true)}, csc: &corev1.SecurityContext{RunAsUser: ptr.To(int64(0))},
			err: `container's runAsUser breaks non-root policy (pod: "p", container: c)`},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			pod := &corev1.Pod{ObjectMeta: metav1.ObjectMeta{Namespace: "ns", Name: "p", Annotations: tc.ann},
				Spec: corev1.PodSpec{SecurityContext: tc.psc, Containers: []corev1.Container{{Name: "c", SecurityContext: tc.csc}}}}
			if tc.spec != nil {
				tc.spec(&pod.Spec)
			}
			image := func() (*runtimeapi.Image, error) { t.Fatal("the image was asked"); return nil, nil }
			got, err := ContainerSecurityContext(pod, &pod.Spec.Containers[0], image, masked)
			if tc.err != "" {
				if err == nil || err.Error() != tc.err {
					t.Fatalf("got %v, want %q", err, tc.err)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if !reflect.DeepEqual(got, tc.want) {
				t.Errorf("\ngot  %v\nwant %v", got, tc.want)
			}
		})
	}
}

// runAsNonRoot without a runAsUser is checked against the user the image runs as.
// Upstream (verifyRunAsNonRoot) also refuses a non-numeric user other than root
// ("image has non-numeric user (nobody), cannot verify user is non-root"); nodekeeper
// runs such an image: that difference is kept here as it is.
func TestRunAsNonRootAgainstTheImage(t *testing.T) {
	imgErr := errors.New("runtime down")
	cases := []struct {
		name string
		img  *runtimeapi.Image
		err  error
		want string // "" to run
	}{
		{"numeric non-root user", &runtimeapi.Image{Uid: &runtimeapi.Int64Value{Value: 65532}}, nil, ""},
		{"uid 0", &runtimeapi.Image{Uid: &runtimeapi.Int64Value{Value: 0}}, nil, "root"},
		{"no user: root", &runtimeapi.Image{}, nil, "root"},
		{"user root by name", &runtimeapi.Image{Username: "root"}, nil, "root"},
		{"a named user", &runtimeapi.Image{Username: "nobody"}, nil, ""},
		{"no such image", nil, nil, "root"},
		{"the runtime fails", nil, imgErr, "err"},
	}
	for _, c := range cases {
		pod := &corev1.Pod{ObjectMeta: metav1.ObjectMeta{Name: "p"}, Spec: corev1.PodSpec{
			SecurityContext: &corev1.PodSecurityContext{RunAsNonRoot: ptr.To(true)}, Containers: []corev1.Container{{Name: "c"}}}}
		asked := 0
		_, err := ContainerSecurityContext(pod, &pod.Spec.Containers[0], func() (*runtimeapi.Image, error) { asked++; return c.img, c.err }, masked)
		var ce ConfigError
		switch c.want {
		case "":
			if err != nil {
				t.Errorf("%s: %v", c.name, err)
			}
		case "root":
			if !errors.As(err, &ce) || err.Error() != `container has runAsNonRoot and image will run as root (pod: "p", container: c)` {
				t.Errorf("%s: got %v", c.name, err)
			}
		case "err":
			if !errors.Is(err, imgErr) || errors.As(err, &ce) {
				t.Errorf("%s: got %v, want the runtime's error as it is", c.name, err)
			}
		}
		if asked != 1 {
			t.Errorf("%s: the image was asked %d times", c.name, asked)
		}
	}
}

// The sandbox's context as upstream's generatePodSandboxLinuxConfig.
func TestSandboxSecurityContext(t *testing.T) {
	podNS := &runtimeapi.NamespaceOption{Ipc: runtimeapi.NamespaceMode_POD, Network: runtimeapi.NamespaceMode_POD, Pid: runtimeapi.NamespaceMode_CONTAINER}
	rd := &runtimeapi.SecurityProfile{ProfileType: runtimeapi.SecurityProfile_RuntimeDefault}
	cases := []struct {
		name string
		spec corev1.PodSpec
		want *runtimeapi.LinuxSandboxSecurityContext
		err  string
	}{
		{"nothing set: RuntimeDefault seccomp for the infra container", corev1.PodSpec{Containers: []corev1.Container{{Name: "c"}}},
			&runtimeapi.LinuxSandboxSecurityContext{Seccomp: rd, NamespaceOptions: podNS}, ""},
		{"privileged when an init container is", corev1.PodSpec{InitContainers: []corev1.Container{{Name: "i", SecurityContext: &corev1.SecurityContext{Privileged: ptr.To(true)}}},
			Containers: []corev1.Container{{Name: "c"}}},
			&runtimeapi.LinuxSandboxSecurityContext{Privileged: true, Seccomp: rd, NamespaceOptions: podNS}, ""},
		{"the pod's user, group, groups, policy and SELinux; the pod's seccomp is not the sandbox's",
			corev1.PodSpec{SecurityContext: &corev1.PodSecurityContext{RunAsUser: ptr.To(int64(1)), RunAsGroup: ptr.To(int64(2)), FSGroup: ptr.To(int64(3)),
				SupplementalGroups: []int64{4}, SupplementalGroupsPolicy: ptr.To(corev1.SupplementalGroupsPolicyMerge),
				SELinuxOptions: &corev1.SELinuxOptions{Type: "spc_t"}, SeccompProfile: &corev1.SeccompProfile{Type: corev1.SeccompProfileTypeUnconfined}}},
			&runtimeapi.LinuxSandboxSecurityContext{Seccomp: rd, NamespaceOptions: podNS, RunAsUser: &runtimeapi.Int64Value{Value: 1},
				RunAsGroup: &runtimeapi.Int64Value{Value: 2}, SupplementalGroups: []int64{3, 4}, SelinuxOptions: &runtimeapi.SELinuxOption{Type: "spc_t"}}, ""},
		{"an unknown policy", corev1.PodSpec{SecurityContext: &corev1.PodSecurityContext{SupplementalGroupsPolicy: ptr.To(corev1.SupplementalGroupsPolicy("x"))}},
			nil, "unsupported supplementalGroupsPolicy: x"},
	}
	for _, c := range cases {
		got, err := SandboxSecurityContext(&corev1.Pod{Spec: c.spec})
		if (err == nil) != (c.err == "") || (err != nil && err.Error() != c.err) || !reflect.DeepEqual(got, c.want) {
			t.Errorf("%s:\n got  %v, %v\n want %v, %q", c.name, got, err, c.want, c.err)
		}
	}
}
