package cadvisor_test

import (
	"context"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"
	runtimeapi "k8s.io/cri-api/pkg/apis/runtime/v1"

	"github.com/nodekeeper/nodekeeper/internal/cadvisor"
	"github.com/nodekeeper/nodekeeper/internal/cadvisor/cgrouptest"
	"github.com/nodekeeper/nodekeeper/internal/podplan"
	"github.com/nodekeeper/nodekeeper/runtime/cri/fake"
)

// withPID is the fake runtime whose sandboxes have a process (for their network).
type withPID struct {
	*fake.Runtime
	pid int
}

func (w withPID) PodSandboxPID(context.Context, string) (int, error) { return w.pid, nil }

// Pod is one pod of the fake runtime with its cgroups written out as the agent and
// containerd lay them out (cgroupfs: <cgroupRoot>/kubepods/besteffort/pod<uid>/<id>).
type Pod struct {
	UID, SandboxID, ContainerID string
}

// Setup starts pod shop/web (container app, busybox) on a fake runtime, writes its cgroups under
// mount, its network under proc and the block device under sys; the returned source reads them.
func Setup(t *testing.T) (*cadvisor.Source, Pod, string) {
	t.Helper()
	ctx := context.Background()
	f := fake.New()
	f.LoadImage("busybox:1.37", 1<<20)
	labels := map[string]string{podplan.LabelManaged: "true"}
	sbCfg := &runtimeapi.PodSandboxConfig{Metadata: &runtimeapi.PodSandboxMetadata{Name: "web", Namespace: "shop", Uid: "u1"}, Labels: labels}
	sb, err := f.RunPodSandbox(ctx, sbCfg, "")
	if err != nil {
		t.Fatal(err)
	}
	id, err := f.CreateContainer(ctx, sb, &runtimeapi.ContainerConfig{Metadata: &runtimeapi.ContainerMetadata{Name: "app"},
		Image: &runtimeapi.ImageSpec{Image: "busybox:1.37"}, Labels: labels}, sbCfg)
	if err != nil {
		t.Fatal(err)
	}
	if err := f.StartContainer(ctx, id); err != nil {
		t.Fatal(err)
	}
	dir := t.TempDir()
	src := &cadvisor.Source{Runtime: withPID{f, 4242}, CgroupRoot: "/nk", CgroupMount: filepath.Join(dir, "cgroup"),
		ProcDir: filepath.Join(dir, "proc"), SysDir: filepath.Join(dir, "sys"),
		Now: func() time.Time { return time.Unix(1700000000, 0) }}
	must(t, cgrouptest.WriteBlockDevice(src.SysDir, "253:0", "vda"))
	return src, Pod{UID: "u1", SandboxID: sb, ContainerID: id}, dir
}

// Write writes the pod's cgroups and network with usage scaled by n (n-th reading).
func Write(t *testing.T, src *cadvisor.Source, p Pod, n uint64) {
	t.Helper()
	pod := "/nk/kubepods/besteffort/pod" + p.UID
	app := cgrouptest.Usage{CPUNanos: n * 2e9, UserTicks: n * 150, SystemTicks: n * 50, Periods: n * 100, Throttled: n * 7, ThrottledNanos: n * 1e8,
		MemUsage: 50 << 20, MemMax: 60 << 20, InactiveFile: 10 << 20, RSS: 30 << 20, Cache: 15 << 20, Mapped: 1 << 20, Device: "253:0",
		ReadBytes: n * 4096, WriteBytes: n * 8192, Reads: n, Writes: 2 * n, Shares: 2, Period: 100000, Quota: -1, Limit: 1 << 62}
	pause := cgrouptest.Usage{CPUNanos: n * 1e6, MemUsage: 1 << 20, RSS: 512 << 10, Device: "253:0", Shares: 2, Period: 100000, Quota: -1, Limit: 1 << 62}
	total := app
	total.CPUNanos += pause.CPUNanos
	must(t, cgrouptest.WriteV1(src.CgroupMount, pod, total))
	must(t, cgrouptest.WriteV1(src.CgroupMount, pod+"/"+p.ContainerID, app))
	must(t, cgrouptest.WriteV1(src.CgroupMount, pod+"/"+p.SandboxID, pause))
	must(t, cgrouptest.WriteNetDev(src.ProcDir, 4242,
		cgrouptest.NetDev{Name: "lo", RxBytes: n * 10, TxBytes: n * 10},
		cgrouptest.NetDev{Name: "eth0", RxBytes: n * 1000, RxPackets: n * 10, RxDropped: n, TxBytes: n * 2000, TxPackets: n * 20, TxDropped: n}))
}

func must(t *testing.T, err error) {
	t.Helper()
	if err != nil {
		t.Fatal(err)
	}
}

func TestSourceReadsCgroupsAsCadvisor(t *testing.T) {
	src, p, _ := Setup(t)
	Write(t, src, p, 3)
	cgs, err := src.Read(context.Background())
	must(t, err)
	byID := map[string]cadvisor.Cgroup{}
	for _, c := range cgs {
		byID[c.ID] = c
	}
	podPath := "/nk/kubepods/besteffort/podu1"
	if len(cgs) != 3 {
		t.Fatalf("want the pod cgroup, the sandbox and the container, got %+v", cgs)
	}
	pod, sb, app := byID[podPath], byID[podPath+"/"+p.SandboxID], byID[podPath+"/"+p.ContainerID]
	if pod.Container != "" || pod.Name != "" || pod.Image != "" || pod.Pod != "web" || pod.Namespace != "shop" {
		t.Errorf("pod cgroup labels: %+v", pod)
	}
	if sb.Name != p.SandboxID || sb.Container != "" || len(sb.Stats.Network) != 1 || sb.Stats.Network[0].Name != "eth0" {
		t.Errorf("sandbox: %+v (only it has the network, lo left out)", sb)
	}
	if app.Container != "app" || app.Name != p.ContainerID || app.Image != "docker.io/library/busybox:1.37" || len(app.Stats.Network) != 0 {
		t.Errorf("container labels: %+v", app)
	}
	st := app.Stats
	if st.CPU.UsageNanos != 6e9 || st.CPU.UserNanos != 450*1e7 || st.CPU.ThrottledPeriods != 21 || !st.CPU.HaveCFS {
		t.Errorf("cpu: %+v", st.CPU)
	}
	if st.Memory.WorkingSet != 40<<20 || st.Memory.RSS != 30<<20 || st.Memory.Cache != 15<<20 || st.Memory.MaxUsage != 60<<20 {
		t.Errorf("memory: %+v", st.Memory)
	}
	if len(st.Blkio) != 1 || st.Blkio[0] != (cadvisor.Device{Device: "/dev/vda", ReadBytes: 3 * 4096, WriteBytes: 3 * 8192, Reads: 3, Writes: 6}) {
		t.Errorf("blkio: %+v", st.Blkio)
	}
	if st.Spec == nil || st.Spec.CPUQuota != 0 || st.Spec.CPUPeriod != 100000 || !st.Spec.HaveMemoryLimit {
		t.Errorf("spec: %+v", st.Spec)
	}
}

func TestCollectorExposition(t *testing.T) {
	src, p, _ := Setup(t)
	Write(t, src, p, 1)
	reg := prometheus.NewRegistry()
	reg.MustRegister(&cadvisor.Collector{Source: src, Machine: func() cadvisor.Machine { return cadvisor.Machine{CPUCores: 2, MemoryBytes: 4 << 30} }})
	n, err := testutil.GatherAndCount(reg)
	must(t, err)
	if n < 40 {
		t.Errorf("only %d samples", n)
	}
	id := "/nk/kubepods/besteffort/podu1/" + p.ContainerID
	want := `# HELP container_memory_cache Number of bytes of page cache memory.
# TYPE container_memory_cache gauge
container_memory_cache{container="",id="/nk/kubepods/besteffort/podu1",image="",name="",namespace="shop",pod="web"} 1.572864e+07 1700000000000
container_memory_cache{container="",id="/nk/kubepods/besteffort/podu1/` + p.SandboxID + `",image="",name="` + p.SandboxID + `",namespace="shop",pod="web"} 0 1700000000000
container_memory_cache{container="app",id="` + id + `",image="docker.io/library/busybox:1.37",name="` + p.ContainerID + `",namespace="shop",pod="web"} 1.572864e+07 1700000000000
# HELP machine_cpu_cores Number of logical CPU cores.
# TYPE machine_cpu_cores gauge
machine_cpu_cores 2
`
	if err := testutil.GatherAndCompare(reg, strings.NewReader(want), "container_memory_cache", "machine_cpu_cores"); err != nil {
		t.Error(err)
	}
}
