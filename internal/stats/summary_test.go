package stats

import (
	"bytes"
	"encoding/json"
	"errors"
	"strings"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/common/expfmt"
	runtimeapi "k8s.io/cri-api/pkg/apis/runtime/v1"
	statsapi "k8s.io/kubelet/pkg/apis/stats/v1alpha1"
)

var t0 = time.Date(2026, 11, 23, 10, 0, 0, 0, time.UTC)

func u(v uint64) *uint64 { return &v }

func TestNanoCores(t *testing.T) {
	for _, tc := range []struct {
		name      string
		prev, cur CPUSample
		want      *uint64
	}{
		{"first sample", CPUSample{}, CPUSample{Time: t0, UsageNanoSecs: 5e9}, nil},
		{"half a core", CPUSample{Time: t0, UsageNanoSecs: 1e9}, CPUSample{Time: t0.Add(2 * time.Second), UsageNanoSecs: 2e9}, u(5e8)},
		{"two cores", CPUSample{Time: t0, UsageNanoSecs: 0}, CPUSample{Time: t0.Add(time.Second), UsageNanoSecs: 2e9}, u(2e9)},
		{"idle", CPUSample{Time: t0, UsageNanoSecs: 7}, CPUSample{Time: t0.Add(time.Second), UsageNanoSecs: 7}, u(0)},
		{"long interval does not overflow", CPUSample{Time: t0, UsageNanoSecs: 0}, CPUSample{Time: t0.Add(10 * time.Hour), UsageNanoSecs: 36000e9}, u(1e9)},
		{"counter went back (restart)", CPUSample{Time: t0, UsageNanoSecs: 9e9}, CPUSample{Time: t0.Add(time.Second), UsageNanoSecs: 1e9}, nil},
		{"time went back", CPUSample{Time: t0, UsageNanoSecs: 1e9}, CPUSample{Time: t0.Add(-time.Second), UsageNanoSecs: 2e9}, nil},
		{"same sample again keeps the rate", CPUSample{Time: t0, UsageNanoSecs: 1e9, UsageNanoCores: u(42)}, CPUSample{Time: t0, UsageNanoSecs: 1e9}, u(42)},
		{"same time, other usage", CPUSample{Time: t0, UsageNanoSecs: 1e9, UsageNanoCores: u(42)}, CPUSample{Time: t0, UsageNanoSecs: 2e9}, nil},
	} {
		got := NanoCores(tc.prev, tc.cur)
		if (got == nil) != (tc.want == nil) || got != nil && *got != *tc.want {
			t.Errorf("%s: got %v, want %v", tc.name, deref(got), deref(tc.want))
		}
	}
}

func deref(p *uint64) any {
	if p == nil {
		return nil
	}
	return *p
}

func cstats(id string, at time.Time, cpuNs, ws uint64) *runtimeapi.ContainerStats {
	return &runtimeapi.ContainerStats{
		Attributes: &runtimeapi.ContainerAttributes{Id: id},
		Cpu:        &runtimeapi.CpuUsage{Timestamp: at.UnixNano(), UsageCoreNanoSeconds: &runtimeapi.UInt64Value{Value: cpuNs}},
		Memory: &runtimeapi.MemoryUsage{Timestamp: at.UnixNano(), WorkingSetBytes: &runtimeapi.UInt64Value{Value: ws},
			UsageBytes: &runtimeapi.UInt64Value{Value: ws + 100}, RssBytes: &runtimeapi.UInt64Value{Value: ws / 2}},
		WritableLayer: &runtimeapi.FilesystemUsage{Timestamp: at.UnixNano(), UsedBytes: &runtimeapi.UInt64Value{Value: 4096},
			InodesUsed: &runtimeapi.UInt64Value{Value: 3}},
	}
}

func input(at time.Time, nodeCPU, appCPU, sideCPU uint64) Input {
	rootfs := &Fs{CapacityBytes: 100e9, AvailableBytes: 60e9, UsedBytes: 40e9, Inodes: 1000, InodesFree: 700}
	return Input{
		NodeName: "n1",
		Host: Host{Time: at, BootTime: t0.Add(-time.Hour), CPUNanoSeconds: nodeCPU,
			Memory: Meminfo{TotalBytes: 8 << 30, FreeBytes: 5 << 30, InactiveFileBytes: 1 << 30, AnonBytes: 512 << 20},
			RootFs: rootfs, ImageFs: &Fs{CapacityBytes: 50e9, AvailableBytes: 10e9, UsedBytes: 40e9, Inodes: 500, InodesFree: 100},
			Interfaces: []Interface{{Name: "lo", RxBytes: 1}, {Name: "veth123", RxBytes: 2}, {Name: "ens3", RxBytes: 30}, {Name: "eth0", RxBytes: 10, TxBytes: 20}}},
		ImageFsUsage: &runtimeapi.FilesystemUsage{UsedBytes: &runtimeapi.UInt64Value{Value: 7e6}, InodesUsed: &runtimeapi.UInt64Value{Value: 77}},
		Pods: []Pod{
			{Ref: statsapi.PodReference{Name: "web", Namespace: "b", UID: "uid-web"}, StartTime: t0,
				Containers: []Container{
					{Name: "side", CreatedAt: t0.Add(time.Second), Stats: cstats("c-side", at, sideCPU, 10<<20), LogsUsedBytes: 8192, LogsInodesUsed: 2},
					{Name: "app", CreatedAt: t0, Stats: cstats("c-app", at, appCPU, 30<<20), LogsUsedBytes: 4096, LogsInodesUsed: 1},
				},
				Network: []Interface{{Name: "lo", RxBytes: 5}, {Name: "eth0", RxBytes: 111, TxBytes: 222}}, NetworkTime: at,
				Volumes: []Volume{{Name: "data", UsedBytes: 1 << 20, InodesUsed: 4, Fs: rootfs}}},
			{Ref: statsapi.PodReference{Name: "db", Namespace: "a", UID: "uid-db"}, StartTime: t0,
				Containers: []Container{{Name: "starting", CreatedAt: t0, Stats: nil}}}, // no sample yet
		},
	}
}

func TestBuildNodeAndPods(t *testing.T) {
	s, samples := Build(input(t0, 100e9, 1e9, 5e8), nil)
	n := s.Node
	check := func(what string, got *uint64, want uint64) {
		t.Helper()
		if got == nil || *got != want {
			t.Errorf("%s = %v, want %d", what, deref(got), want)
		}
	}
	if n.NodeName != "n1" || !n.StartTime.Time.Equal(t0.Add(-time.Hour)) {
		t.Errorf("node %q start %v", n.NodeName, n.StartTime)
	}
	check("node cpu usageCoreNanoSeconds", n.CPU.UsageCoreNanoSeconds, 100e9)
	if n.CPU.UsageNanoCores != nil {
		t.Errorf("a first sample has a rate: %d", *n.CPU.UsageNanoCores)
	}
	check("node memory usage", n.Memory.UsageBytes, 3<<30)
	check("node working set", n.Memory.WorkingSetBytes, 2<<30)
	check("node available", n.Memory.AvailableBytes, 6<<30)
	check("node rss", n.Memory.RSSBytes, 512<<20)
	check("nodefs capacity", n.Fs.CapacityBytes, 100e9)
	check("nodefs used (statfs)", n.Fs.UsedBytes, 40e9)
	check("nodefs inodes used", n.Fs.InodesUsed, 300)
	check("imagefs used (runtime)", n.Runtime.ImageFs.UsedBytes, 7e6)
	check("imagefs inodes used (runtime)", n.Runtime.ImageFs.InodesUsed, 77)
	check("imagefs available (statfs)", n.Runtime.ImageFs.AvailableBytes, 10e9)
	if n.Network == nil || n.Network.Name != "eth0" || len(n.Network.Interfaces) != 2 || n.Network.Interfaces[0].Name != "ens3" {
		t.Errorf("node network (lo and veths left out, eth0 the default): %+v", n.Network)
	}

	if len(s.Pods) != 2 || s.Pods[0].PodRef.Name != "db" || s.Pods[1].PodRef.Name != "web" {
		t.Fatalf("pods not sorted by namespace/name: %+v", s.Pods)
	}
	db := s.Pods[0]
	if len(db.Containers) != 1 || db.Containers[0].CPU != nil || db.Containers[0].Memory != nil || db.CPU != nil || db.Memory != nil || db.Network != nil {
		t.Errorf("a container without a sample: %+v", db)
	}
	web := s.Pods[1]
	if web.PodRef.UID != "uid-web" || !web.StartTime.Time.Equal(t0) {
		t.Errorf("podRef %+v startTime %v", web.PodRef, web.StartTime)
	}
	if len(web.Containers) != 2 || web.Containers[0].Name != "app" || !web.Containers[1].StartTime.Time.Equal(t0.Add(time.Second)) {
		t.Fatalf("containers not sorted or start times wrong: %+v", web.Containers)
	}
	app := web.Containers[0]
	check("container cpu", app.CPU.UsageCoreNanoSeconds, 1e9)
	check("container working set", app.Memory.WorkingSetBytes, 30<<20)
	check("container usage", app.Memory.UsageBytes, 30<<20+100)
	check("container rootfs used (writable layer)", app.Rootfs.UsedBytes, 4096)
	check("container rootfs capacity (imagefs)", app.Rootfs.CapacityBytes, 50e9)
	check("container logs used", app.Logs.UsedBytes, 4096)
	check("container logs available (nodefs)", app.Logs.AvailableBytes, 60e9)
	check("pod cpu (sum)", web.CPU.UsageCoreNanoSeconds, 15e8)
	check("pod working set (sum)", web.Memory.WorkingSetBytes, 40<<20)
	check("pod rss (sum)", web.Memory.RSSBytes, 20<<20)
	if web.Network == nil || web.Network.Name != "eth0" || *web.Network.RxBytes != 111 || len(web.Network.Interfaces) != 1 {
		t.Errorf("pod network: %+v", web.Network)
	}
	if len(web.VolumeStats) != 1 || web.VolumeStats[0].Name != "data" || *web.VolumeStats[0].UsedBytes != 1<<20 || *web.VolumeStats[0].CapacityBytes != 100e9 {
		t.Errorf("volumes: %+v", web.VolumeStats)
	}
	// writable layers 2×4096, logs 4096+8192, volume 1 MiB
	check("pod ephemeral storage", web.EphemeralStorage.UsedBytes, 2*4096+4096+8192+1<<20)
	check("pod ephemeral inodes", web.EphemeralStorage.InodesUsed, 2*3+1+2+4)
	if len(samples) != 4 { // node, 2 containers, pod web (db has no sample)
		t.Errorf("samples kept: %v", samples)
	}

	// a second call 10 s later: rates appear
	s2, _ := Build(input(t0.Add(10*time.Second), 100e9+15e9, 1e9+5e9, 5e8+1e9), samples)
	check("node usageNanoCores", s2.Node.CPU.UsageNanoCores, 15e8)
	check("container usageNanoCores", s2.Pods[1].Containers[0].CPU.UsageNanoCores, 5e8)
	check("sidecar usageNanoCores", s2.Pods[1].Containers[1].CPU.UsageNanoCores, 1e8)
	check("pod usageNanoCores", s2.Pods[1].CPU.UsageNanoCores, 6e8)
}

func TestBuildRuntimeRateWins(t *testing.T) {
	in := input(t0, 1, 1, 1)
	in.Pods[0].Containers[0].Stats.Cpu.UsageNanoCores = &runtimeapi.UInt64Value{Value: 1234}
	s, _ := Build(in, nil)
	if got := s.Pods[1].Containers[1].CPU.UsageNanoCores; got == nil || *got != 1234 {
		t.Errorf("the runtime's own rate is not used: %v", deref(got))
	}
}

func TestBuildOnlyCPUAndMemory(t *testing.T) {
	in := input(t0, 1, 1, 1)
	in.OnlyCPUAndMemory = true
	s, _ := Build(in, nil)
	b, err := json.Marshal(s)
	if err != nil {
		t.Fatal(err)
	}
	for _, absent := range []string{`"fs"`, `"runtime"`, `"network"`, `"rootfs"`, `"logs"`, `"volume"`, `"ephemeral-storage"`} {
		if strings.Contains(string(b), absent) {
			t.Errorf("only_cpu_and_memory summary has %s: %s", absent, b)
		}
	}
	for _, present := range []string{`"usageCoreNanoSeconds"`, `"workingSetBytes"`, `"podRef"`, `"name":"app"`} {
		if !strings.Contains(string(b), present) {
			t.Errorf("only_cpu_and_memory summary lacks %s: %s", present, b)
		}
	}
}

func TestSummaryJSONShape(t *testing.T) {
	s, _ := Build(input(t0, 1, 1, 1), nil)
	b, err := json.Marshal(s)
	if err != nil {
		t.Fatal(err)
	}
	// upstream field names, the default interface's figures inlined in "network"
	for _, want := range []string{`{"node":{"nodeName":"n1"`, `"network":{"time":"2026-11-23T10:00:00Z","name":"eth0","rxBytes":10`,
		`"runtime":{"imageFs":{`, `"pods":[{"podRef":{"name":"db","namespace":"a","uid":"uid-db"}`, `"volume":[{"time"`,
		`"ephemeral-storage":{`, `"availableBytes":6442450944`} {
		if !strings.Contains(string(b), want) {
			t.Errorf("summary JSON lacks %s:\n%s", want, b)
		}
	}
}

func TestResourceMetrics(t *testing.T) {
	at := t0.Add(10 * time.Second)
	s, _ := Build(input(at, 100e9, 1e9, 5e8), nil)
	got := render(t, ResourceMetrics(s))
	want := `# HELP container_cpu_usage_seconds_total [STABLE] Cumulative cpu time consumed by the container in core-seconds
# TYPE container_cpu_usage_seconds_total counter
container_cpu_usage_seconds_total{container="app",namespace="b",pod="web"} 1 1795428010000
container_cpu_usage_seconds_total{container="side",namespace="b",pod="web"} 0.5 1795428010000
# HELP container_memory_working_set_bytes [STABLE] Current working set of the container in bytes
# TYPE container_memory_working_set_bytes gauge
container_memory_working_set_bytes{container="app",namespace="b",pod="web"} 3.145728e+07 1795428010000
container_memory_working_set_bytes{container="side",namespace="b",pod="web"} 1.048576e+07 1795428010000
# HELP container_start_time_seconds [STABLE] Start time of the container since unix epoch in seconds
# TYPE container_start_time_seconds gauge
container_start_time_seconds{container="app",namespace="b",pod="web"} 1.795428e+09
container_start_time_seconds{container="side",namespace="b",pod="web"} 1.795428001e+09
container_start_time_seconds{container="starting",namespace="a",pod="db"} 1.795428e+09
# HELP node_cpu_usage_seconds_total [STABLE] Cumulative cpu time consumed by the node in core-seconds
# TYPE node_cpu_usage_seconds_total counter
node_cpu_usage_seconds_total 100 1795428010000
# HELP node_memory_working_set_bytes [STABLE] Current working set of the node in bytes
# TYPE node_memory_working_set_bytes gauge
node_memory_working_set_bytes 2.147483648e+09 1795428010000
# HELP pod_cpu_usage_seconds_total [STABLE] Cumulative cpu time consumed by the pod in core-seconds
# TYPE pod_cpu_usage_seconds_total counter
pod_cpu_usage_seconds_total{namespace="b",pod="web"} 1.5 1795428010000
# HELP pod_memory_working_set_bytes [STABLE] Current working set of the pod in bytes
# TYPE pod_memory_working_set_bytes gauge
pod_memory_working_set_bytes{namespace="b",pod="web"} 4.194304e+07 1795428010000
# HELP resource_scrape_error [STABLE] 1 if there was an error while getting container metrics, 0 otherwise
# TYPE resource_scrape_error gauge
resource_scrape_error 0
# HELP scrape_error [ALPHA] 1 if there was an error while getting container metrics, 0 otherwise
# TYPE scrape_error gauge
scrape_error 0
`
	if got != want {
		t.Errorf("resource metrics:\n%s\nwant:\n%s", got, want)
	}
	failed := gather(t, ResourceCollector{Summary: func() (*statsapi.Summary, error) { return nil, errors.New("runtime down") }})
	if !strings.Contains(failed, "\nscrape_error 1\n") || !strings.Contains(failed, "\nresource_scrape_error 1\n") || strings.Contains(failed, "node_cpu") {
		t.Errorf("failed scrape:\n%s", failed)
	}
}

// render gathers metrics through a registry, as the HTTP handler does.
func render(t *testing.T, ms []prometheus.Metric) string {
	t.Helper()
	return gather(t, constCollector(ms))
}

func gather(t *testing.T, c prometheus.Collector) string {
	t.Helper()
	reg := prometheus.NewPedanticRegistry()
	reg.MustRegister(c)
	mfs, err := reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	var b bytes.Buffer
	enc := expfmt.NewEncoder(&b, expfmt.NewFormat(expfmt.TypeTextPlain))
	for _, mf := range mfs {
		if err := enc.Encode(mf); err != nil {
			t.Fatal(err)
		}
	}
	return b.String()
}

type constCollector []prometheus.Metric

func (c constCollector) Describe(ch chan<- *prometheus.Desc) { prometheus.DescribeByCollect(c, ch) }
func (c constCollector) Collect(ch chan<- prometheus.Metric) {
	for _, m := range c {
		ch <- m
	}
}
