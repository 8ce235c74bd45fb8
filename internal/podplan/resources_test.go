package podplan

import (
	"testing"

	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/api/resource"
	"k8s.io/utils/ptr"
)

func res(req, lim string) corev1.ResourceRequirements {
	parse := func(s string) corev1.ResourceList {
		l := corev1.ResourceList{}
		var cpu, mem string
		for i := range s {
			if s[i] == '/' {
				cpu, mem = s[:i], s[i+1:]
			}
		}
		if cpu != "" {
			l[corev1.ResourceCPU] = resource.MustParse(cpu)
		}
		if mem != "" {
			l[corev1.ResourceMemory] = resource.MustParse(mem)
		}
		return l
	}
	return corev1.ResourceRequirements{Requests: parse(req), Limits: parse(lim)}
}

func podWith(rs ...corev1.ResourceRequirements) *corev1.Pod {
	p := pod(corev1.RestartPolicyAlways, nil)
	for i, r := range rs {
		p.Spec.Containers = append(p.Spec.Containers, corev1.Container{Name: string(rune('a' + i)), Resources: r})
	}
	return p
}

func withOverhead(p *corev1.Pod, o string) *corev1.Pod {
	p.Spec.Overhead = res(o, "").Requests
	return p
}

func TestOOMScoreAdj(t *testing.T) {
	const capacity = 8 << 30
	for _, tt := range []struct {
		name string
		pod  *corev1.Pod
		want int64
	}{
		{"besteffort", podWith(res("/", "/")), 1000},
		{"guaranteed", podWith(res("1/1Gi", "1/1Gi")), -997},
		{"burstable 2Gi of 8Gi", podWith(res("/2Gi", "/")), 750},
		{"burstable tiny request", podWith(res("100m/", "/")), 999},
		{"burstable request above capacity", podWith(res("/16Gi", "/")), 3},
	} {
		if got := OOMScoreAdj(tt.pod, &tt.pod.Spec.Containers[0], capacity); got != tt.want {
			t.Errorf("%s: %d, want %d", tt.name, got, tt.want)
		}
	}
}

func TestPodCgroup(t *testing.T) {
	i64 := func(v int64) *int64 { return &v }
	for _, tt := range []struct {
		name   string
		pod    *corev1.Pod
		parent string
		want   CgroupResources
	}{
		{"besteffort", podWith(res("/", "/")), "/kubepods/besteffort/podu1", CgroupResources{CPUShares: i64(2)}},
		{"guaranteed", podWith(res("500m/64Mi", "500m/64Mi"), res("250m/32Mi", "250m/32Mi")), "/kubepods/podu1",
			CgroupResources{CPUShares: i64(768), CPUQuota: i64(75000), CPUPeriod: i64(100000), MemoryLimit: i64(96 << 20)}},
		{"burstable, every limit declared", podWith(res("100m/10Mi", "1/100Mi"), res("100m/10Mi", "1/100Mi")), "/kubepods/burstable/podu1",
			CgroupResources{CPUShares: i64(204), CPUQuota: i64(200000), CPUPeriod: i64(100000), MemoryLimit: i64(200 << 20)}},
		{"burstable, a container without limits", podWith(res("100m/10Mi", "1/100Mi"), res("100m/", "/")), "/kubepods/burstable/podu1",
			CgroupResources{CPUShares: i64(204)}},
		// the PodOverhead spec: 100m/100Mi Guaranteed plus an overhead of 200m/140Mi
		{"guaranteed with overhead", withOverhead(podWith(res("100m/100Mi", "100m/100Mi")), "200m/140Mi"), "/kubepods/podu1",
			CgroupResources{CPUShares: i64(307), CPUQuota: i64(30000), CPUPeriod: i64(100000), MemoryLimit: i64(240 << 20)}},
		// overhead goes to the requests always, to the limits only of resources that have some
		{"burstable with overhead, no memory limit", withOverhead(podWith(res("100m/100Mi", "1/")), "200m/140Mi"), "/kubepods/burstable/podu1",
			CgroupResources{CPUShares: i64(307), CPUQuota: i64(120000), CPUPeriod: i64(100000)}},
	} {
		if got := PodCgroupParent("/", tt.pod); got != tt.parent {
			t.Errorf("%s: parent %s, want %s", tt.name, got, tt.parent)
		}
		got := PodCgroupResources(tt.pod)
		str := func(r CgroupResources) string {
			f := func(p *int64) string {
				if p == nil {
					return "-"
				}
				return resource.NewQuantity(*p, resource.DecimalSI).String()
			}
			return f(r.CPUShares) + " " + f(r.CPUQuota) + " " + f(r.CPUPeriod) + " " + f(r.MemoryLimit)
		}
		if str(got) != str(tt.want) {
			t.Errorf("%s: %s, want %s", tt.name, str(got), str(tt.want))
		}
	}
	if got := PodCgroupParent("/nk", podWith(res("/", "/"))); got != "/nk/kubepods/besteffort/podu1" {
		t.Errorf("cgroupRoot: %s", got)
	}
}

// An init container larger than the app containers sets the pod's totals; sidecars add
// to both.
func TestPodTotalsInitAndSidecars(t *testing.T) {
	p := podWith(res("/", "1/"))
	p.Spec.InitContainers = []corev1.Container{
		{Name: "side", RestartPolicy: ptr.To(corev1.ContainerRestartPolicyAlways), Resources: res("/", "500m/")},
		{Name: "init", Resources: res("/", "2/")},
	}
	if got, all := podTotals(p, corev1.ResourceCPU, true); got != 2500 || !all {
		t.Errorf("cpu limits %dm (all %v), want 2500m", got, all)
	}
	p.Spec.InitContainers[1].Resources = res("/", "100m/")
	if got, _ := podTotals(p, corev1.ResourceCPU, true); got != 1500 {
		t.Errorf("cpu limits %dm, want 1500m", got)
	}
}
