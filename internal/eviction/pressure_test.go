package eviction

import (
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/api/resource"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/utils/ptr"

	"github.com/nodekeeper/nodekeeper/internal/nodestatus"
	"github.com/nodekeeper/nodekeeper/internal/podplan"
)

func sig(avail, capacity string) nodestatus.Signal {
	return nodestatus.Signal{Available: resource.MustParse(avail), Capacity: resource.MustParse(capacity)}
}

func defaults(t *testing.T) nodestatus.Thresholds {
	h, err := nodestatus.ParseThresholds(map[string]string{"memory.available": "100Mi", "nodefs.available": "10%",
		"imagefs.available": "15%", "nodefs.inodesFree": "5%"})
	if err != nil {
		t.Fatal(err)
	}
	return h
}

func TestThresholdsMet(t *testing.T) {
	for _, tc := range []struct {
		name string
		obs  map[string]nodestatus.Signal
		want []string // signal threshold available
	}{
		{"none", map[string]nodestatus.Signal{"memory.available": sig("1Gi", "8Gi"), "nodefs.available": sig("50Gi", "100Gi")}, nil},
		{"nodefs below 10%", map[string]nodestatus.Signal{"memory.available": sig("1Gi", "8Gi"), "nodefs.available": sig("9Mi", "100Mi")},
			[]string{"nodefs.available 10Mi 9Mi"}},
		{"exactly at the threshold is not below it", map[string]nodestatus.Signal{"nodefs.available": sig("10Mi", "100Mi")}, nil},
		{"memory first", map[string]nodestatus.Signal{"memory.available": sig("50Mi", "8Gi"), "nodefs.available": sig("1Mi", "100Mi"),
			"imagefs.available": sig("1Mi", "100Mi")},
			[]string{"memory.available 100Mi 50Mi", "nodefs.available 10Mi 1Mi", "imagefs.available 15Mi 1Mi"}},
		{"not observed", map[string]nodestatus.Signal{}, nil},
	} {
		t.Run(tc.name, func(t *testing.T) {
			var got []string
			for _, m := range ThresholdsMet(tc.obs, defaults(t)) {
				got = append(got, m.Signal+" "+m.Threshold.String()+" "+m.Available.String())
			}
			if len(got) != len(tc.want) {
				t.Fatalf("got %q, want %q", got, tc.want)
			}
			for i := range got {
				if got[i] != tc.want[i] {
					t.Fatalf("got %q, want %q", got, tc.want)
				}
			}
		})
	}
}

func TestConditionsTransitionPeriod(t *testing.T) {
	t0 := time.Unix(1000, 0)
	last := map[corev1.NodeConditionType]time.Time{}
	disk := []Met{{Signal: "nodefs.available"}}
	if got := Conditions(last, disk, t0, 5*time.Minute); len(got) != 1 || got[0] != corev1.NodeDiskPressure {
		t.Fatalf("at t0: %v", got)
	}
	if got := Conditions(last, nil, t0.Add(4*time.Minute), 5*time.Minute); len(got) != 1 {
		t.Fatalf("within the transition period the condition stays: %v", got)
	}
	if got := Conditions(last, []Met{{Signal: "memory.available"}}, t0.Add(6*time.Minute), 5*time.Minute); len(got) != 1 || got[0] != corev1.NodeMemoryPressure {
		t.Fatalf("after it: %v", got)
	}
}

func pod(name string, mutate func(*corev1.Pod)) *corev1.Pod {
	p := &corev1.Pod{ObjectMeta: metav1.ObjectMeta{Name: name, UID: types.UID("uid-" + name)},
		Spec: corev1.PodSpec{Containers: []corev1.Container{{Name: "app"}}}}
	if mutate != nil {
		mutate(p)
	}
	return p
}

func burstable(p *corev1.Pod) {
	p.Spec.Containers[0].Resources.Requests = corev1.ResourceList{corev1.ResourceMemory: resource.MustParse("100Mi")}
}

func TestAdmit(t *testing.T) {
	mem, disk := corev1.NodeMemoryPressure, corev1.NodeDiskPressure
	tolerates := func(p *corev1.Pod) {
		p.Spec.Tolerations = []corev1.Toleration{{Key: corev1.TaintNodeMemoryPressure, Operator: corev1.TolerationOpExists, Effect: corev1.TaintEffectNoSchedule}}
	}
	critical := func(p *corev1.Pod) { p.Spec.Priority = ptr.To(int32(SystemCriticalPriority)) }
	for _, tc := range []struct {
		name  string
		pod   *corev1.Pod
		conds []corev1.NodeConditionType
		want  string // "" admitted, else the message
	}{
		{"no pressure", pod("a", nil), nil, ""},
		{"memory pressure, BestEffort", pod("a", nil), []corev1.NodeConditionType{mem}, "The node had condition: [MemoryPressure]. "},
		{"memory pressure, Burstable", pod("a", burstable), []corev1.NodeConditionType{mem}, ""},
		{"memory pressure, BestEffort tolerating the taint", pod("a", tolerates), []corev1.NodeConditionType{mem}, ""},
		{"disk pressure refuses a Burstable pod", pod("a", burstable), []corev1.NodeConditionType{disk}, "The node had condition: [DiskPressure]. "},
		{"both refuse the tolerating pod", pod("a", tolerates), []corev1.NodeConditionType{disk, mem}, "The node had condition: [DiskPressure MemoryPressure]. "},
		{"a critical pod is admitted", pod("a", critical), []corev1.NodeConditionType{disk}, ""},
	} {
		t.Run(tc.name, func(t *testing.T) {
			rej := Admit(tc.pod, tc.conds)
			switch {
			case tc.want == "" && rej != nil:
				t.Fatalf("refused: %+v", rej)
			case tc.want != "" && (rej == nil || *rej != (podplan.Rejection{Reason: "Evicted", Message: tc.want})):
				t.Fatalf("got %+v, want Evicted %q", rej, tc.want)
			}
		})
	}
}

func TestRankAndPick(t *testing.T) {
	mib := int64(1 << 20)
	low := func(p *corev1.Pod) { p.Spec.Priority = ptr.To(int32(-10)) }
	high := func(p *corev1.Pod) { p.Spec.Priority = ptr.To(int32(1000)) }
	usage := map[string]Usage{
		"big-besteffort":   {Memory: 300 * mib, Disk: 50 * mib, Containers: map[string]ContainerUsage{"app": {Memory: 300 * mib, Disk: 50 * mib}}},
		"small-besteffort": {Memory: 10 * mib, Disk: 90 * mib, Containers: map[string]ContainerUsage{"app": {Memory: 10 * mib, Disk: 90 * mib}}},
		"within-request":   {Memory: 50 * mib, Disk: 1 * mib}, // requests 100Mi memory
		"low-prio":         {Memory: 20 * mib, Disk: 1 * mib},
		"high-prio":        {Memory: 900 * mib, Disk: 900 * mib},
		"critical":         {Memory: 2000 * mib, Disk: 2000 * mib},
	}
	pods := []*corev1.Pod{pod("within-request", burstable), pod("high-prio", high), pod("small-besteffort", nil),
		pod("big-besteffort", nil), pod("low-prio", low), pod("no-stats", nil),
		pod("critical", func(p *corev1.Pod) { p.Spec.Priority = ptr.To(int32(SystemCriticalPriority)) })}
	get := func(p *corev1.Pod) (Usage, bool) { u, ok := usage[p.Name]; return u, ok }
	names := func(ps []*corev1.Pod) []string {
		var out []string
		for _, p := range ps {
			out = append(out, p.Name)
		}
		return out
	}
	for _, tc := range []struct {
		signal string
		want   []string
	}{
		// no stats first; then pods above their request by priority, then by use above it
		{"memory.available", []string{"no-stats", "low-prio", "big-besteffort", "small-besteffort", "high-prio", "critical", "within-request"}},
		{"nodefs.available", []string{"no-stats", "low-prio", "small-besteffort", "big-besteffort", "within-request", "high-prio", "critical"}},
	} {
		ps := append([]*corev1.Pod(nil), pods...)
		Rank(tc.signal, ps, get)
		if got := names(ps); !equal(got, tc.want) {
			t.Errorf("%s: ranked %v, want %v", tc.signal, got, tc.want)
		}
	}
	// Pick: the first non-critical of the ranking, for the first threshold met
	met := []Met{{Signal: "nodefs.available", Threshold: resource.MustParse("10Mi"), Available: *resource.NewQuantity(9*mib, resource.BinarySI)}}
	withStats := []*corev1.Pod{pods[2], pods[3], pods[6]} // small, big, critical
	p, msg := Pick(met, withStats, get)
	if p == nil || p.Name != "small-besteffort" {
		t.Fatalf("picked %v", p)
	}
	want := "The node was low on resource: ephemeral-storage. Threshold quantity: 10Mi, available: 9Mi. Container app was using 90Mi, request is 0, has larger consumption of ephemeral-storage. "
	if msg != want {
		t.Fatalf("message %q, want %q", msg, want)
	}
	if p, _ := Pick(met, []*corev1.Pod{pods[6]}, get); p != nil {
		t.Fatalf("a critical pod is never picked: %v", p.Name)
	}
	if p, _ := Pick(nil, pods, get); p != nil {
		t.Fatalf("no threshold met, picked %v", p.Name)
	}
}

func equal(a, b []string) bool {
	if len(a) != len(b) {
		return false
	}
	for i := range a {
		if a[i] != b[i] {
			return false
		}
	}
	return true
}
