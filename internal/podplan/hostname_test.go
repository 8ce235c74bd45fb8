package podplan

import (
	"strings"
	"testing"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/utils/ptr"
)

func TestPodHostnameAndDomain(t *testing.T) {
	long := strings.Repeat("a", 62) + "-b-c" // cut at 63 ends with '-'
	for _, tt := range []struct {
		name       string
		podName    string
		spec       corev1.PodSpec
		host, dom  string
		errContain string
	}{
		{name: "pod name", podName: "web", host: "web"},
		{name: "spec.hostname", podName: "web", spec: corev1.PodSpec{Hostname: "h"}, host: "h"},
		{name: "subdomain", podName: "web", spec: corev1.PodSpec{Hostname: "h", Subdomain: "s"}, host: "h", dom: "s.ns.svc.cluster.local"},
		{name: "long name cut to 63, trailing - trimmed", podName: long, host: strings.Repeat("a", 62)},
		{name: "long name cut to 63", podName: strings.Repeat("x", 70), host: strings.Repeat("x", 63)},
		{name: "long name, trailing dots and dashes trimmed", podName: strings.Repeat("x", 60) + ".-.-.-", host: strings.Repeat("x", 60)},
		{name: "hostnameOverride wins, no domain", podName: "web", spec: corev1.PodSpec{HostnameOverride: ptr.To("my.host"), Hostname: "h", Subdomain: "s"},
			host: "my.host"},
		{name: "hostnameOverride cut to 63", podName: "web", spec: corev1.PodSpec{HostnameOverride: ptr.To(strings.Repeat("a", 62) + ".bc")},
			host: strings.Repeat("a", 62)},
		{name: "invalid hostnameOverride", podName: "web", spec: corev1.PodSpec{HostnameOverride: ptr.To("Not_Valid")},
			errContain: `pod HostnameOverride "Not_Valid" is not a valid DNS subdomain`},
		{name: "invalid hostname", podName: "web", spec: corev1.PodSpec{Hostname: "a.b"}, errContain: `pod Hostname "a.b" is not a valid DNS label`},
		{name: "invalid subdomain", podName: "web", spec: corev1.PodSpec{Subdomain: "A"}, errContain: `pod Subdomain "A" is not a valid DNS label`},
	} {
		t.Run(tt.name, func(t *testing.T) {
			p := &corev1.Pod{ObjectMeta: metav1.ObjectMeta{Name: tt.podName, Namespace: "ns"}, Spec: tt.spec}
			h, d, err := PodHostnameAndDomain(p, "cluster.local")
			if tt.errContain != "" {
				if err == nil || !strings.Contains(err.Error(), tt.errContain) {
					t.Fatalf("error %v, want one containing %q", err, tt.errContain)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if h != tt.host || d != tt.dom {
				t.Errorf("got %q %q, want %q %q", h, d, tt.host, tt.dom)
			}
		})
	}
}

func TestKernelHostname(t *testing.T) {
	dom := "t.e2e-tests-1234.svc.cluster.local"
	for _, tt := range []struct {
		name, host, dom string
		fqdn            *bool
		want, err       string
	}{
		{name: "no FQDN asked", host: "h", dom: dom, want: "h"},
		{name: "FQDN false", host: "h", dom: dom, fqdn: ptr.To(false), want: "h"},
		{name: "FQDN without a domain", host: "h", fqdn: ptr.To(true), want: "h"},
		{name: "FQDN", host: "h", dom: dom, fqdn: ptr.To(true), want: "h." + dom},
		{name: "FQDN of 64 bytes fits", host: strings.Repeat("a", 64-1-len(dom)), dom: dom, fqdn: ptr.To(true),
			want: strings.Repeat("a", 64-1-len(dom)) + "." + dom},
		{name: "FQDN of 65 bytes is refused", host: strings.Repeat("a", 65-1-len(dom)), dom: dom, fqdn: ptr.To(true),
			err: "failed to construct FQDN from pod hostname and cluster domain, FQDN " + strings.Repeat("a", 65-1-len(dom)) + "." + dom +
				" is too long (64 characters is the max, 65 characters requested)"},
	} {
		t.Run(tt.name, func(t *testing.T) {
			got, err := KernelHostname(tt.host, tt.dom, tt.fqdn)
			if tt.err != "" {
				if err == nil || err.Error() != tt.err {
					t.Fatalf("error %v, want %q", err, tt.err)
				}
				return
			}
			if err != nil || got != tt.want {
				t.Errorf("got %q, %v; want %q", got, err, tt.want)
			}
		})
	}
}
