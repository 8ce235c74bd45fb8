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

	"github.com/nodekeeper/nodekeeper/internal/cadvisor"
	"github.com/nodekeeper/nodekeeper/runtime/cri/critest"
)

func TestSourceOnContainerd(t *testing.T) {
	rt := critest.Dial(t)
	ctx := context.Background()
	uid := fmt.Sprintf("cadv-%d-%d", os.Getpid(), time.Now().UnixNano()%1e6)
	cgroupRoot := "/nk-cadvisor-" + uid
	tp := critest.RunSandbox(t, rt, critest.SandboxOptions{Name: "hog", Namespace: "nk-cadvisor", UID: uid,
		CgroupRoot: cgroupRoot, LogDirectory: filepath.Join(t.TempDir(), "logs")})
	sb := tp.ID
	start := func(name string, cmd ...string) string { return tp.Start(name, name+".log", cmd...) }
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
