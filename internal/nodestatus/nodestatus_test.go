package nodestatus

import (
	"errors"
	"strings"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/api/resource"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
)

func q(s string) resource.Quantity { return resource.MustParse(s) }

func mustThresholds(t *testing.T, m map[string]string) Thresholds {
	t.Helper()
	th, err := ParseThresholds(m)
	if err != nil {
		t.Fatal(err)
	}
	return th
}

func TestAllocatable(t *testing.T) {
	capacity := corev1.ResourceList{
		corev1.ResourceCPU:              q("4"),
		corev1.ResourceMemory:           q("8Gi"),
		corev1.ResourceEphemeralStorage: q("100Gi"),
		corev1.ResourcePods:             q("110"),
	}
	tests := []struct {
		name         string
		capacity     corev1.ResourceList
		system, kube corev1.ResourceList
		hard         map[string]string
		want         map[corev1.ResourceName]string
	}{
		{
			name:     "nothing reserved",
			capacity: capacity,
			want:     map[corev1.ResourceName]string{"cpu": "4", "memory": "8Gi", "ephemeral-storage": "100Gi", "pods": "110"},
		},
		{
			name:     "system, kube and eviction all subtracted",
			capacity: capacity,
			system:   corev1.ResourceList{"cpu": q("500m"), "memory": q("1Gi"), "ephemeral-storage": q("1Gi")},
			kube:     corev1.ResourceList{"cpu": q("250m"), "memory": q("512Mi")},
			hard:     map[string]string{"memory.available": "100Mi", "nodefs.available": "10%"},
			// memory: 8192Mi-1024Mi-512Mi-100Mi = 6556Mi; storage: 100Gi - 1Gi - 10Gi = 89Gi
			want: map[corev1.ResourceName]string{"cpu": "3250m", "memory": "6556Mi", "ephemeral-storage": "89Gi", "pods": "110"},
		},
		{
			name:     "never negative",
			capacity: capacity,
			system:   corev1.ResourceList{"cpu": q("5"), "memory": q("9Gi")},
			hard:     map[string]string{"nodefs.available": "100%"},
			want:     map[corev1.ResourceName]string{"cpu": "0", "memory": "0", "ephemeral-storage": "0", "pods": "110"},
		},
		{
			name: "hugepages are not allocatable memory",
			capacity: corev1.ResourceList{
				corev1.ResourceMemory: q("8Gi"), "hugepages-2Mi": q("1Gi"), corev1.ResourceCPU: q("1"),
			},
			hard: map[string]string{"memory.available": "1Gi"},
			want: map[corev1.ResourceName]string{"memory": "6Gi", "hugepages-2Mi": "1Gi", "cpu": "1"},
		},
		{
			name:     "inode and pid signals do not touch allocatable",
			capacity: capacity,
			hard:     map[string]string{"nodefs.inodesFree": "5%", "pid.available": "1000"},
			want:     map[corev1.ResourceName]string{"cpu": "4", "memory": "8Gi", "ephemeral-storage": "100Gi", "pods": "110"},
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got := Allocatable(tt.capacity, tt.system, tt.kube, mustThresholds(t, tt.hard))
			if len(got) != len(tt.want) {
				t.Fatalf("got %d resources %v, want %d", len(got), got, len(tt.want))
			}
			for name, w := range tt.want {
				g, ok := got[name]
				if !ok {
					t.Fatalf("missing %s", name)
				}
				if g.Cmp(q(w)) != 0 {
					t.Errorf("%s = %s, want %s", name, g.String(), w)
				}
			}
		})
	}
}

func TestComputePressure(t *testing.T) {
	hard := mustThresholds(t, map[string]string{
		"memory.available": "100Mi", "nodefs.available": "10%", "pid.available": "10%",
	})
	obs := func(memAvail, fsAvail, pidAvail string) map[string]Signal {
		return map[string]Signal{
			"memory.available": {Available: q(memAvail), Capacity: q("8Gi")},
			"nodefs.available": {Available: q(fsAvail), Capacity: q("100Gi")},
			"pid.available":    {Available: q(pidAvail), Capacity: q("1000")},
		}
	}
	tests := []struct {
		name string
		obs  map[string]Signal
		want Pressure
	}{
		{"healthy", obs("4Gi", "50Gi", "900"), Pressure{}},
		{"memory below threshold", obs("99Mi", "50Gi", "900"), Pressure{Memory: true}},
		{"memory exactly at threshold is not pressure", obs("100Mi", "50Gi", "900"), Pressure{}},
		{"disk below 10%", obs("4Gi", "9Gi", "900"), Pressure{Disk: true}},
		{"pids below 10%", obs("4Gi", "50Gi", "99"), Pressure{PID: true}},
		{"unobserved signals give no pressure", map[string]Signal{}, Pressure{}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if got := ComputePressure(tt.obs, hard); got != tt.want {
				t.Errorf("got %+v, want %+v", got, tt.want)
			}
		})
	}
}

func cond(cs []corev1.NodeCondition, t corev1.NodeConditionType) corev1.NodeCondition {
	for _, c := range cs {
		if c.Type == t {
			return c
		}
	}
	return corev1.NodeCondition{}
}

var fullCapacity = corev1.ResourceList{"cpu": q("1"), "memory": q("1Gi"), "pods": q("110")}

func TestConditionsReady(t *testing.T) {
	ok := RuntimeHealth{Conditions: []RuntimeCondition{{Type: "RuntimeReady", Status: true}, {Type: "NetworkReady", Status: true}}}
	tests := []struct {
		name       string
		rt         RuntimeHealth
		capacity   corev1.ResourceList
		wantStatus corev1.ConditionStatus
		wantReason string
		wantMsg    string
	}{
		{"healthy", ok, fullCapacity, corev1.ConditionTrue, ReasonReady, MessageReady},
		{"runtime unreachable", RuntimeHealth{Err: errors.New("dial unix /run/x.sock: connect: no such file")}, fullCapacity,
			corev1.ConditionFalse, ReasonNotReady, "container runtime is down: dial unix /run/x.sock"},
		{"network not ready", RuntimeHealth{Conditions: []RuntimeCondition{{Type: "RuntimeReady", Status: true},
			{Type: "NetworkReady", Reason: "NetworkPluginNotReady", Message: "cni plugin not initialized"}}}, fullCapacity,
			corev1.ConditionFalse, ReasonNotReady, "container runtime network not ready: NetworkReady=false reason:NetworkPluginNotReady message:cni plugin not initialized"},
		{"runtime not ready", RuntimeHealth{Conditions: []RuntimeCondition{{Type: "RuntimeReady", Reason: "Broken"}, {Type: "NetworkReady", Status: true}}},
			fullCapacity, corev1.ConditionFalse, ReasonNotReady, "container runtime not ready: RuntimeReady=false reason:Broken"},
		{"missing capacity", ok, corev1.ResourceList{"cpu": q("1")}, corev1.ConditionFalse, ReasonNotReady, "missing node capacity for resources: memory, pods"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			cs := Conditions(nil, tt.rt, tt.capacity, Pressure{}, metav1.Now())
			r := cond(cs, corev1.NodeReady)
			if r.Status != tt.wantStatus || r.Reason != tt.wantReason || !strings.Contains(r.Message, tt.wantMsg) {
				t.Errorf("Ready = %s/%s %q, want %s/%s containing %q", r.Status, r.Reason, r.Message, tt.wantStatus, tt.wantReason, tt.wantMsg)
			}
			if len(cs) != 4 {
				t.Errorf("want 4 conditions, got %d", len(cs))
			}
		})
	}
}

func TestConditionsTransitionTimes(t *testing.T) {
	ok := RuntimeHealth{Conditions: []RuntimeCondition{{Type: "RuntimeReady", Status: true}, {Type: "NetworkReady", Status: true}}}
	t0 := metav1.NewTime(time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC))
	t1 := metav1.NewTime(t0.Add(time.Minute))
	t2 := metav1.NewTime(t0.Add(2 * time.Minute))
	foreign := corev1.NodeCondition{Type: "NetworkUnavailable", Status: corev1.ConditionFalse, Reason: "RouteCreated"}

	first := Conditions([]corev1.NodeCondition{foreign}, ok, fullCapacity, Pressure{}, t0)
	if got := cond(first, corev1.NodeReady).LastTransitionTime; !got.Equal(&t0) {
		t.Fatalf("first transition = %v, want %v", got, t0)
	}
	if cond(first, "NetworkUnavailable").Reason != "RouteCreated" {
		t.Fatalf("a condition owned by someone else was dropped: %v", first)
	}
	same := Conditions(first, ok, fullCapacity, Pressure{}, t1)
	for _, c := range same {
		if c.Type == "NetworkUnavailable" {
			continue
		}
		if !c.LastTransitionTime.Equal(&t0) {
			t.Errorf("%s transition moved to %v without a status change", c.Type, c.LastTransitionTime)
		}
		if !c.LastHeartbeatTime.Equal(&t1) {
			t.Errorf("%s heartbeat = %v, want %v", c.Type, c.LastHeartbeatTime, t1)
		}
	}
	flipped := Conditions(same, ok, fullCapacity, Pressure{Memory: true}, t2)
	mp := cond(flipped, corev1.NodeMemoryPressure)
	if mp.Status != corev1.ConditionTrue || mp.Reason != ReasonInsufficientMemory || !mp.LastTransitionTime.Equal(&t2) {
		t.Errorf("memory pressure after flip = %+v", mp)
	}
	if r := cond(flipped, corev1.NodeReady); !r.LastTransitionTime.Equal(&t0) {
		t.Errorf("Ready transition moved although Ready did not change")
	}
}

func TestChangedIgnoresHeartbeats(t *testing.T) {
	ok := RuntimeHealth{Conditions: []RuntimeCondition{{Type: "RuntimeReady", Status: true}, {Type: "NetworkReady", Status: true}}}
	t0 := metav1.NewTime(time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC))
	obs := Observed{Capacity: fullCapacity, Runtime: ok, RuntimeVersion: "containerd://1.6.20",
		Addresses: []corev1.NodeAddress{{Type: corev1.NodeInternalIP, Address: "10.0.0.1"}}}
	a := Status(corev1.NodeStatus{}, obs, t0)
	b := Status(a, obs, metav1.NewTime(t0.Add(time.Hour)))
	if Changed(a, b) {
		t.Errorf("only heartbeats moved, but Changed = true")
	}
	obs.Runtime = RuntimeHealth{Err: errors.New("down")}
	c := Status(b, obs, metav1.NewTime(t0.Add(2*time.Hour)))
	if !Changed(b, c) {
		t.Errorf("Ready flipped, but Changed = false")
	}
	if c.NodeInfo.ContainerRuntimeVersion != "containerd://1.6.20" {
		t.Errorf("runtime version lost: %q", c.NodeInfo.ContainerRuntimeVersion)
	}
	obs.Runtime = ok
	obs.Addresses = []corev1.NodeAddress{{Type: corev1.NodeInternalIP, Address: "10.0.0.2"}}
	if d := Status(b, obs, b.Conditions[0].LastHeartbeatTime); !Changed(b, d) {
		t.Errorf("address changed, but Changed = false")
	}
}

func TestRegistrationLabels(t *testing.T) {
	got := RegistrationLabels("n1", "linux", "amd64", map[string]string{"zone": "a", corev1.LabelHostname: "evil"})
	want := map[string]string{"zone": "a", corev1.LabelHostname: "n1", corev1.LabelOSStable: "linux", corev1.LabelArchStable: "amd64"}
	if len(got) != len(want) {
		t.Fatalf("got %v", got)
	}
	for k, v := range want {
		if got[k] != v {
			t.Errorf("%s = %q, want %q", k, got[k], v)
		}
	}
}

func TestLease(t *testing.T) {
	node := &corev1.Node{ObjectMeta: metav1.ObjectMeta{Name: "n1", UID: "u1"}}
	now := metav1.NewMicroTime(time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC))
	l := Lease(nil, node, 40, now)
	if l.Namespace != "kube-node-lease" || l.Name != "n1" || *l.Spec.HolderIdentity != "n1" || *l.Spec.LeaseDurationSeconds != 40 || !l.Spec.RenewTime.Equal(&now) {
		t.Errorf("lease = %+v", l)
	}
	if len(l.OwnerReferences) != 1 || l.OwnerReferences[0].Kind != "Node" || l.OwnerReferences[0].UID != "u1" {
		t.Errorf("owners = %+v", l.OwnerReferences)
	}
	l.OwnerReferences = append(l.OwnerReferences, l.OwnerReferences[0])
	if again := Lease(l, node, 40, now); len(again.OwnerReferences) != 1 {
		t.Errorf("renewal kept %d owner references", len(again.OwnerReferences))
	}
}

// The device plugins' resources join capacity and allocatable (their healthy devices),
// next to the host's.
func TestStatusDeviceResources(t *testing.T) {
	o := Observed{
		Capacity:          corev1.ResourceList{corev1.ResourceCPU: q("4"), corev1.ResourceMemory: q("8Gi")},
		KubeReserved:      corev1.ResourceList{corev1.ResourceCPU: q("1")},
		DeviceCapacity:    corev1.ResourceList{"example.com/gpu": q("4"), "example.com/gone": q("0")},
		DeviceAllocatable: corev1.ResourceList{"example.com/gpu": q("3"), "example.com/gone": q("0")},
	}
	st := Status(corev1.NodeStatus{}, o, metav1.Now())
	for name, want := range map[corev1.ResourceName][2]string{
		corev1.ResourceCPU: {"4", "3"}, "example.com/gpu": {"4", "3"}, "example.com/gone": {"0", "0"},
	} {
		c, a := st.Capacity[name], st.Allocatable[name]
		if c.Cmp(q(want[0])) != 0 || a.Cmp(q(want[1])) != 0 {
			t.Errorf("%s: capacity %s allocatable %s, want %s and %s", name, c.String(), a.String(), want[0], want[1])
		}
	}
	if o.Capacity["example.com/gpu"] != (resource.Quantity{}) {
		t.Error("the host's capacity list was modified")
	}
}
