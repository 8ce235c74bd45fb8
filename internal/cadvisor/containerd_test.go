package cadvisor_test

// The cgroup reader against a real containerd and the kernel's cgroup files: run with
//
//	ep=$(NK_CACHE=... NK_NETNS=... hack/cri-up.sh)
//	NK_CRI_ENDPOINT=$ep go test ./internal/cadvisor -run Containerd -v
//
// Skipped without NK_CRI_ENDPOINT.

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"testing"
	"time"

	runtimeapi "k8s.io/cri-api/pkg/apis/runtime/v1"

	"github.com/nodekeeper/nodekeeper/host"
	"github.com/nodekeeper/nodekeeper/internal/cadvisor"
	"github.com/nodekeeper/nodekeeper/internal/podplan"
	"github.com/nodekeeper/nodekeeper/runtime/cri"
)

func TestSourceOnContainerd(t *testing.T) {
	ep := os.Getenv("NK_CRI_ENDPOINT")
	if ep == "" {
		t.Skip("NK_CRI_ENDPOINT not set: start a containerd with hack/cri-up.sh")
	}
	ctx := context.Background()
	rt, err := cri.Dial(cri.RemoteOptions{Endpoint: ep, Timeout: time.Minute})
	must(t, err)
	defer rt.Close()
	uid := fmt.Sprintf("cadv-%d-%d", os.Getpid(), time.Now().UnixNano()%1e6)
	cgroupRoot := "/nk-cadvisor-" + uid
	labels := map[string]string{podplan.LabelManaged: "true", podplan.LabelPodUID: uid}
	root := t.TempDir()
	sbCfg := &runtimeapi.PodSandboxConfig{Metadata: &runtimeapi.PodSandboxMetadata{Name: "hog", Namespace: "nk-cadvisor", Uid: uid},
		Hostname: "hog", LogDirectory: filepath.Join(root, "logs"), Labels: labels,
		Linux: &runtimeapi.LinuxPodSandboxConfig{CgroupParent: cgroupRoot + "/kubepods/besteffort/pod" + uid}}
	defer func() { _ = host.Cgroups{}.Remove(cgroupRoot) }()
	sb, err := rt.RunPodSandbox(ctx, sbCfg, "")
	must(t, err)
	defer func() { _ = rt.RemovePodSandbox(context.Background(), sb) }()
	start := func(name string, cmd ...string) string {
		t.Helper()
		cl := map[string]string{podplan.LabelContainerName: name}
		for k, v := range labels {
			cl[k] = v
		}
		id, err := rt.CreateContainer(ctx, sb, &runtimeapi.ContainerConfig{Metadata: &runtimeapi.ContainerMetadata{Name: name},
			Image: &runtimeapi.ImageSpec{Image: "busybox:local"}, Command: cmd, Labels: cl, LogPath: name + ".log",
			Linux: &runtimeapi.LinuxContainerConfig{}}, sbCfg)
		must(t, err)
		must(t, rt.StartContainer(ctx, id))
		return id
	}
	cpu := start("cpu", "sh", "-c", "while :; do :; done")
	files := start("files", "sh", "-c", "dd if=/dev/zero of=/data bs=1M count=20 conv=fsync 2>/dev/null; echo done; sleep 3600")
	src := &cadvisor.Source{Runtime: rt, CgroupRoot: cgroupRoot}
	var byName map[string]cadvisor.Cgroup
	deadline := time.Now().Add(30 * time.Second)
	for {
		cgs, err := src.Read(ctx)
		must(t, err)
		byName = map[string]cadvisor.Cgroup{}
		for _, c := range cgs {
			if c.Namespace == "nk-cadvisor" && c.Pod == "hog" {
				byName[c.Container+"/"+c.Name] = c
			}
		}
		f := byName["files/"+files]
		if (f.Stats.Memory != nil && f.Stats.Memory.Cache >= 10<<20) || time.Now().After(deadline) {
			break
		}
		time.Sleep(300 * time.Millisecond)
	}
	time.Sleep(time.Second)
	cgs, err := src.Read(ctx)
	must(t, err)
	byName = map[string]cadvisor.Cgroup{}
	for _, c := range cgs {
		if c.Namespace == "nk-cadvisor" && c.Pod == "hog" {
			byName[c.Container+"/"+c.Name] = c
		}
	}
	podPath := cgroupRoot + "/kubepods/besteffort/pod" + uid
	pod, sandbox, busy, writer := byName["/"], byName["/"+sb], byName["cpu/"+cpu], byName["files/"+files]
	t.Logf("pod %s cpu %+v mem %+v", pod.ID, pod.Stats.CPU, pod.Stats.Memory)
	t.Logf("busy %s cpu %+v", busy.ID, busy.Stats.CPU)
	t.Logf("writer mem %+v blkio %+v", writer.Stats.Memory, writer.Stats.Blkio)
	t.Logf("sandbox net %+v", sandbox.Stats.Network)
	if pod.ID != podPath || busy.ID != podPath+"/"+cpu || sandbox.ID != podPath+"/"+sb {
		t.Fatalf("cgroup ids: pod %q sandbox %q container %q (want under %s)", pod.ID, sandbox.ID, busy.ID, podPath)
	}
	if busy.Stats.CPU == nil || busy.Stats.CPU.UsageNanos < 2e8 || !busy.Stats.CPU.HaveCFS {
		t.Errorf("a busy loop's cgroup cpu: %+v", busy.Stats.CPU)
	}
	if pod.Stats.CPU == nil || pod.Stats.CPU.UsageNanos < busy.Stats.CPU.UsageNanos {
		t.Errorf("pod cpu below its container's: %+v", pod.Stats.CPU)
	}
	if writer.Stats.Memory == nil || writer.Stats.Memory.Cache < 10<<20 || writer.Stats.Memory.WorkingSet == 0 {
		t.Errorf("a container that wrote 20 MiB: memory %+v", writer.Stats.Memory)
	}
	if writer.Image != "docker.io/library/busybox:local" {
		t.Errorf("image label %q", writer.Image)
	}
	if len(sandbox.Stats.Network) == 0 || sandbox.Stats.Network[0].Name != "eth0" {
		t.Errorf("sandbox network: %+v", sandbox.Stats.Network)
	}
	if len(busy.Stats.Network) != 0 {
		t.Errorf("network only on the sandbox, as cAdvisor: %+v", busy.Stats.Network)
	}
}
