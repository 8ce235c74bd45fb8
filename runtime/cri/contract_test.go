package cri_test

// One table of scenarios, run against the fake (TestFakeContract, always) and against
// a real containerd (TestRealContainerd, as root): the proof that the fake tells the
// truth. Run the real half alone with
//
//	go test ./runtime/cri -run TestRealContainerd -v
//
// It uses $NK_CRI_ENDPOINT if set; otherwise it starts containerd with hack/cri-up.sh
// (and stops it with hack/cri-down.sh afterwards if it was not already running; set
// NK_CRI_KEEP=1 to keep it).

import (
	"context"
	"errors"
	"fmt"
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	runtimeapi "k8s.io/cri-api/pkg/apis/runtime/v1"

	"github.com/nodekeeper/nodekeeper/runtime/cri"
	"github.com/nodekeeper/nodekeeper/runtime/cri/fake"
)

const (
	busybox     = "docker.io/library/busybox:local"
	testLabel   = "nodekeeper.io/contract-test"
	podCIDR     = "10.244.0.0/24"
	missingPull = "127.0.0.1:1/nodekeeper/does-not-exist:v1" // no registry there: fails at once, locally
)

// backend is one implementation under test plus what the scenarios cannot do through
// the interface.
type backend struct {
	rt cri.Runtime
	// unreachable is the same kind of runtime with nothing listening.
	unreachable cri.Runtime
	// exited waits until a started container whose command ends with code has ended
	// (real), or makes it end so (fake), and returns its status.
	exited func(t *testing.T, id string, code int32) *runtimeapi.ContainerStatus
	// use makes a started container use what its command uses on a real runtime (fake:
	// SetUsage; real: nothing, the command does it).
	use func(t *testing.T, id string, u fake.Usage)
}

type scenario struct {
	name string
	run  func(t *testing.T, b *backend)
}

var scenarios = []scenario{
	{"kernel and sandbox rules: hostname length, privileged containers, runtime handlers", func(t *testing.T, b *backend) {
		ctx := context.Background()
		// a 65-byte hostname is refused (sethostname); 64 bytes are fine
		cfg := sandboxConfig("longhost", t.TempDir())
		cfg.Hostname = strings.Repeat("h", 65)
		if id, err := b.rt.RunPodSandbox(ctx, cfg, ""); err == nil {
			_ = b.rt.RemovePodSandbox(ctx, id)
			t.Errorf("a 65-byte hostname was accepted")
		} else {
			expect(t, strings.Contains(err.Error(), "sethostname: invalid argument"), "long hostname: %v", err)
		}
		runSandbox(t, b, "host64", func(c *runtimeapi.PodSandboxConfig) { c.Hostname = strings.Repeat("h", 64) })

		// a privileged container needs a privileged sandbox
		privileged := func(c *runtimeapi.ContainerConfig) *runtimeapi.ContainerConfig {
			c.Linux.SecurityContext = &runtimeapi.LinuxContainerSecurityContext{Privileged: true}
			return c
		}
		id, sb := runSandbox(t, b, "unpriv")
		_, err := b.rt.CreateContainer(ctx, id, privileged(containerConfig("priv", "sleep", "60")), sb)
		expect(t, err != nil && strings.Contains(err.Error(), "no privileged container allowed in sandbox"), "privileged in an unprivileged sandbox: %v", err)
		id, sb = runSandbox(t, b, "priv", func(c *runtimeapi.PodSandboxConfig) {
			c.Linux.SecurityContext = &runtimeapi.LinuxSandboxSecurityContext{Privileged: true}
		})
		cid, err := b.rt.CreateContainer(ctx, id, privileged(containerConfig("priv", "sleep", "60")), sb)
		must(t, err)
		must(t, b.rt.RemoveContainer(ctx, cid))

		// containerd 1.6 reports no runtime handlers (so no recursive read-only mounts)
		hs, err := b.rt.RuntimeHandlers(ctx)
		must(t, err)
		expect(t, len(hs) == 0, "runtime handlers %v", hs)
	}},
	{"sandbox run, status, stop, remove", func(t *testing.T, b *backend) {
		ctx := context.Background()
		id, cfg := runSandbox(t, b, "lifecycle")
		st := sandboxStatus(t, b, id)
		expect(t, st.GetState() == runtimeapi.PodSandboxState_SANDBOX_READY, "state %v, want READY", st.GetState())
		expect(t, st.GetId() == id && len(id) == 64, "id %q", st.GetId())
		expect(t, st.GetMetadata().GetName() == cfg.Metadata.Name && st.GetMetadata().GetUid() == cfg.Metadata.Uid, "metadata %v", st.GetMetadata())
		expect(t, st.GetLabels()["app"] == "lifecycle" && st.GetAnnotations()["note"] == "kept", "labels %v annotations %v", st.GetLabels(), st.GetAnnotations())
		expect(t, st.GetCreatedAt() > 0, "createdAt %d", st.GetCreatedAt())
		ip, err := netip.ParseAddr(st.GetNetwork().GetIp())
		expect(t, err == nil && netip.MustParsePrefix(podCIDR).Contains(ip), "pod IP %q not in %s", st.GetNetwork().GetIp(), podCIDR)
		expect(t, ip != netip.MustParseAddr("10.244.0.1"), "pod got the gateway address")

		list, err := b.rt.ListPodSandbox(ctx, &runtimeapi.PodSandboxFilter{LabelSelector: map[string]string{"app": "lifecycle", testLabel: "true"}})
		must(t, err)
		expect(t, len(list) == 1 && list[0].GetId() == id && list[0].GetState() == runtimeapi.PodSandboxState_SANDBOX_READY, "list by label: %v", list)

		must(t, b.rt.StopPodSandbox(ctx, id))
		st = sandboxStatus(t, b, id)
		expect(t, st.GetState() == runtimeapi.PodSandboxState_SANDBOX_NOTREADY, "state after stop %v", st.GetState())
		expect(t, st.GetNetwork().GetIp() == "", "IP after stop %q", st.GetNetwork().GetIp())
		must(t, b.rt.StopPodSandbox(ctx, id)) // stopping a stopped sandbox is fine
		list, err = b.rt.ListPodSandbox(ctx, &runtimeapi.PodSandboxFilter{Id: id[:12],
			State: &runtimeapi.PodSandboxStateValue{State: runtimeapi.PodSandboxState_SANDBOX_NOTREADY}})
		must(t, err)
		expect(t, len(list) == 1, "list by id prefix and state NOTREADY: %v", list)

		must(t, b.rt.RemovePodSandbox(ctx, id))
		_, err = b.rt.PodSandboxStatus(ctx, id)
		expect(t, errors.Is(err, cri.ErrNotFound), "status after remove: %v, want ErrNotFound", err)
		list, err = b.rt.ListPodSandbox(ctx, &runtimeapi.PodSandboxFilter{Id: id})
		must(t, err)
		expect(t, len(list) == 0, "removed sandbox still listed")
		must(t, b.rt.RemovePodSandbox(ctx, id))
	}},
	{"sandbox on the node network has no pod IP, and no hostname of its own", func(t *testing.T, b *backend) {
		hostNet := func(c *runtimeapi.PodSandboxConfig) {
			c.Linux = &runtimeapi.LinuxPodSandboxConfig{SecurityContext: &runtimeapi.LinuxSandboxSecurityContext{
				NamespaceOptions: &runtimeapi.NamespaceOption{Network: runtimeapi.NamespaceMode_NODE}}}
		}
		// containerd 1.6 puts a node-network sandbox in the node's UTS namespace too, and
		// runc refuses to set a hostname there: leave Hostname empty for such pods.
		cfg := sandboxConfig("hostnet", t.TempDir())
		hostNet(cfg)
		_, err := b.rt.RunPodSandbox(context.Background(), cfg, "")
		expect(t, err != nil && strings.Contains(err.Error(), "unable to set hostname without a private UTS namespace"), "node network with a hostname: %v", err)

		id, _ := runSandbox(t, b, "hostnet", hostNet, func(c *runtimeapi.PodSandboxConfig) {
			c.Metadata = cfg.Metadata // the failed run reserved nothing
			c.Hostname = ""
		})
		st := sandboxStatus(t, b, id)
		expect(t, st.GetState() == runtimeapi.PodSandboxState_SANDBOX_READY, "state %v", st.GetState())
		expect(t, st.GetNetwork().GetIp() == "", "host-network sandbox got IP %q", st.GetNetwork().GetIp())
		expect(t, st.GetLinux().GetNamespaces().GetOptions().GetNetwork() == runtimeapi.NamespaceMode_NODE, "namespace options %v", st.GetLinux())
	}},
	{"sandbox name is reserved until removed", func(t *testing.T, b *backend) {
		ctx := context.Background()
		id, cfg := runSandbox(t, b, "reserved")
		_, err := b.rt.RunPodSandbox(ctx, cfg, "")
		expect(t, err != nil && strings.Contains(err.Error(), "failed to reserve sandbox name"), "second run with the same metadata: %v", err)
		must(t, b.rt.StopPodSandbox(ctx, id))
		_, err = b.rt.RunPodSandbox(ctx, cfg, "")
		expect(t, err != nil && strings.Contains(err.Error(), "failed to reserve sandbox name"), "run over a stopped sandbox: %v", err)
		must(t, b.rt.RemovePodSandbox(ctx, id))
		id2, err := b.rt.RunPodSandbox(ctx, cfg, "")
		must(t, err)
		t.Cleanup(func() { must(t, b.rt.RemovePodSandbox(context.Background(), id2)) })
		expect(t, id2 != id, "new sandbox reused the old ID")
	}},
	{"container create, start, status, stop, remove", func(t *testing.T, b *backend) {
		ctx := context.Background()
		sb, cfg := runSandbox(t, b, "ctr")
		id := createContainer(t, b, sb, cfg, "sleeper", "sleep", "3600")
		st := containerStatus(t, b, id)
		expect(t, st.GetState() == runtimeapi.ContainerState_CONTAINER_CREATED, "state %v, want CREATED", st.GetState())
		expect(t, st.GetCreatedAt() > 0 && st.GetStartedAt() == 0 && st.GetFinishedAt() == 0, "times %d %d %d", st.GetCreatedAt(), st.GetStartedAt(), st.GetFinishedAt())
		expect(t, st.GetImage().GetImage() == busybox && strings.HasPrefix(st.GetImageRef(), "sha256:"), "image %v ref %q", st.GetImage(), st.GetImageRef())
		expect(t, st.GetLogPath() == filepath.Join(cfg.LogDirectory, "sleeper.log"), "log path %q", st.GetLogPath())
		expect(t, st.GetLabels()["c"] == "sleeper" && st.GetAnnotations()["note"] == "sleeper", "labels %v annotations %v", st.GetLabels(), st.GetAnnotations())
		expect(t, st.GetMetadata().GetName() == "sleeper", "metadata %v", st.GetMetadata())

		must(t, b.rt.StopContainer(ctx, id, time.Second)) // not running: nothing to do
		expect(t, containerStatus(t, b, id).GetState() == runtimeapi.ContainerState_CONTAINER_CREATED, "stop changed a created container")

		must(t, b.rt.StartContainer(ctx, id))
		st = containerStatus(t, b, id)
		expect(t, st.GetState() == runtimeapi.ContainerState_CONTAINER_RUNNING, "state %v, want RUNNING", st.GetState())
		expect(t, st.GetStartedAt() >= st.GetCreatedAt() && st.GetFinishedAt() == 0, "times %d %d %d", st.GetCreatedAt(), st.GetStartedAt(), st.GetFinishedAt())
		err := b.rt.StartContainer(ctx, id)
		expect(t, err != nil && strings.Contains(err.Error(), "container is in CONTAINER_RUNNING state"), "second start: %v", err)

		must(t, b.rt.StopContainer(ctx, id, 2*time.Second))
		st = containerStatus(t, b, id)
		expect(t, st.GetState() == runtimeapi.ContainerState_CONTAINER_EXITED, "state after stop %v", st.GetState())
		expect(t, st.GetExitCode() == 143 && st.GetReason() == "Error", "exit code %d reason %q, want 143 Error (SIGTERM)", st.GetExitCode(), st.GetReason())
		expect(t, st.GetFinishedAt() > 0, "finishedAt %d", st.GetFinishedAt())
		must(t, b.rt.StopContainer(ctx, id, time.Second))
		err = b.rt.StartContainer(ctx, id)
		expect(t, err != nil && strings.Contains(err.Error(), "container is in CONTAINER_EXITED state"), "start after exit: %v", err)

		must(t, b.rt.RemoveContainer(ctx, id))
		_, err = b.rt.ContainerStatus(ctx, id)
		expect(t, errors.Is(err, cri.ErrNotFound), "status after remove: %v, want ErrNotFound", err)
		must(t, b.rt.RemoveContainer(ctx, id))
	}},
	{"StopContainer with timeout 0 kills", func(t *testing.T, b *backend) {
		sb, cfg := runSandbox(t, b, "kill")
		id := startContainer(t, b, sb, cfg, "sleeper", "sleep", "3600")
		must(t, b.rt.StopContainer(context.Background(), id, 0))
		st := containerStatus(t, b, id)
		expect(t, st.GetState() == runtimeapi.ContainerState_CONTAINER_EXITED && st.GetExitCode() == 137, "state %v exit code %d, want EXITED 137", st.GetState(), st.GetExitCode())
	}},
	{"a container running sh -c 'exit 3' ends EXITED with exit code 3", func(t *testing.T, b *backend) {
		sb, cfg := runSandbox(t, b, "exit3")
		id := startContainer(t, b, sb, cfg, "exiter", "sh", "-c", "exit 3")
		st := b.exited(t, id, 3)
		expect(t, st.GetState() == runtimeapi.ContainerState_CONTAINER_EXITED, "state %v", st.GetState())
		expect(t, st.GetExitCode() == 3 && st.GetReason() == "Error", "exit code %d reason %q", st.GetExitCode(), st.GetReason())
		expect(t, st.GetFinishedAt() > 0 && st.GetStartedAt() > 0, "times %d %d", st.GetStartedAt(), st.GetFinishedAt())
		okID := startContainer(t, b, sb, cfg, "completer", "sh", "-c", "exit 0")
		st = b.exited(t, okID, 0)
		expect(t, st.GetExitCode() == 0 && st.GetReason() == "Completed", "exit code %d reason %q", st.GetExitCode(), st.GetReason())
	}},
	{"container name is reserved per sandbox and attempt", func(t *testing.T, b *backend) {
		ctx := context.Background()
		sb, cfg := runSandbox(t, b, "names")
		createContainer(t, b, sb, cfg, "app", "sleep", "3600")
		_, err := b.rt.CreateContainer(ctx, sb, containerConfig("app", "sleep", "3600"), cfg)
		expect(t, err != nil && strings.Contains(err.Error(), "failed to reserve container name"), "same name twice: %v", err)
		c := containerConfig("app", "sleep", "3600")
		c.Metadata.Attempt = 1
		_, err = b.rt.CreateContainer(ctx, sb, c, cfg)
		must(t, err)
	}},
	{"missing things: remove is fine, the rest is ErrNotFound", func(t *testing.T, b *backend) {
		ctx := context.Background()
		missing := strings.Repeat("0f", 32)
		must(t, b.rt.RemovePodSandbox(ctx, missing))
		must(t, b.rt.RemoveContainer(ctx, missing))
		for name, err := range map[string]error{
			"StopPodSandbox":   b.rt.StopPodSandbox(ctx, missing),
			"PodSandboxStatus": second(b.rt.PodSandboxStatus(ctx, missing)),
			"ContainerStatus":  second(b.rt.ContainerStatus(ctx, missing)),
			"StartContainer":   b.rt.StartContainer(ctx, missing),
			"StopContainer":    b.rt.StopContainer(ctx, missing, time.Second),
			"ExecSync":         second(b.rt.ExecSync(ctx, missing, []string{"true"}, time.Second)),
		} {
			expect(t, errors.Is(err, cri.ErrNotFound), "%s of a missing ID: %v, want ErrNotFound", name, err)
		}
		list, err := b.rt.ListContainers(ctx, &runtimeapi.ContainerFilter{PodSandboxId: missing})
		must(t, err)
		expect(t, len(list) == 0, "containers of a missing sandbox: %v", list)
	}},
	{"creating a container in a removed or stopped sandbox fails", func(t *testing.T, b *backend) {
		ctx := context.Background()
		sb, cfg := runSandbox(t, b, "gone")
		must(t, b.rt.StopPodSandbox(ctx, sb))
		_, err := b.rt.CreateContainer(ctx, sb, containerConfig("late", "sleep", "3600"), cfg)
		expect(t, errors.Is(err, cri.ErrNotFound), "create in a stopped sandbox: %v, want ErrNotFound (no sandbox task)", err)
		must(t, b.rt.RemovePodSandbox(ctx, sb))
		_, err = b.rt.CreateContainer(ctx, sb, containerConfig("late", "sleep", "3600"), cfg)
		expect(t, errors.Is(err, cri.ErrNotFound) && strings.Contains(err.Error(), "failed to find sandbox"), "create in a removed sandbox: %v", err)
	}},
	{"starting a created container after its sandbox stopped is a StartError", func(t *testing.T, b *backend) {
		ctx := context.Background()
		sb, cfg := runSandbox(t, b, "starterr")
		id := createContainer(t, b, sb, cfg, "late", "sleep", "3600")
		must(t, b.rt.StopPodSandbox(ctx, sb))
		expect(t, containerStatus(t, b, id).GetState() == runtimeapi.ContainerState_CONTAINER_CREATED, "a created container changed when the sandbox stopped")
		err := b.rt.StartContainer(ctx, id)
		expect(t, err != nil && strings.Contains(err.Error(), "is not running"), "start: %v", err)
		st := containerStatus(t, b, id)
		expect(t, st.GetState() == runtimeapi.ContainerState_CONTAINER_EXITED && st.GetExitCode() == 128 && st.GetReason() == "StartError",
			"state %v exit %d reason %q, want EXITED 128 StartError", st.GetState(), st.GetExitCode(), st.GetReason())
	}},
	{"stopping a sandbox kills its running containers", func(t *testing.T, b *backend) {
		ctx := context.Background()
		sb, cfg := runSandbox(t, b, "sbstop")
		running := startContainer(t, b, sb, cfg, "running", "sleep", "3600")
		created := createContainer(t, b, sb, cfg, "created", "sleep", "3600")
		must(t, b.rt.StopPodSandbox(ctx, sb))
		st := containerStatus(t, b, running)
		expect(t, st.GetState() == runtimeapi.ContainerState_CONTAINER_EXITED && st.GetExitCode() == 137, "running container after sandbox stop: %v exit %d", st.GetState(), st.GetExitCode())
		expect(t, containerStatus(t, b, created).GetState() == runtimeapi.ContainerState_CONTAINER_CREATED, "created container changed")
	}},
	{"removing running things stops them first", func(t *testing.T, b *backend) {
		ctx := context.Background()
		sb, cfg := runSandbox(t, b, "rmrunning")
		id := startContainer(t, b, sb, cfg, "a", "sleep", "3600")
		must(t, b.rt.RemoveContainer(ctx, id))
		_, err := b.rt.ContainerStatus(ctx, id)
		expect(t, errors.Is(err, cri.ErrNotFound), "running container after remove: %v", err)
		other := startContainer(t, b, sb, cfg, "b", "sleep", "3600")
		must(t, b.rt.RemovePodSandbox(ctx, sb)) // ready, with a running container
		_, err = b.rt.ContainerStatus(ctx, other)
		expect(t, errors.Is(err, cri.ErrNotFound), "container of a removed sandbox: %v", err)
		list, err := b.rt.ListContainers(ctx, &runtimeapi.ContainerFilter{PodSandboxId: sb})
		must(t, err)
		expect(t, len(list) == 0, "containers of a removed sandbox listed: %v", list)
	}},
	{"ExecSync returns output and exit code", func(t *testing.T, b *backend) {
		ctx := context.Background()
		sb, cfg := runSandbox(t, b, "exec")
		id := startContainer(t, b, sb, cfg, "sleeper", "sleep", "3600")
		res, err := b.rt.ExecSync(ctx, id, []string{"sh", "-c", "echo hello; echo oops >&2; exit 2"}, 10*time.Second)
		must(t, err)
		expect(t, string(res.Stdout) == "hello\n" && string(res.Stderr) == "oops\n" && res.ExitCode == 2, "exec result %q %q %d", res.Stdout, res.Stderr, res.ExitCode)
		_, err = b.rt.ExecSync(ctx, id, []string{"sleep", "5"}, time.Second)
		expect(t, errors.Is(err, context.DeadlineExceeded), "exec past its timeout: %v, want DeadlineExceeded", err)
		must(t, b.rt.StopContainer(ctx, id, 0))
		_, err = b.rt.ExecSync(ctx, id, []string{"true"}, time.Second)
		expect(t, err != nil && !errors.Is(err, cri.ErrNotFound) && strings.Contains(err.Error(), "CONTAINER_EXITED"), "exec in an exited container: %v", err)
	}},
	{"stats: memory a container holds, CPU it burns, sandbox process, image fs", func(t *testing.T, b *backend) {
		ctx := context.Background()
		sb, cfg := runSandbox(t, b, "stats")
		// 30 MiB in a tmpfs (shmem counts in the cgroup's working set) and a busy loop
		mem := startContainer(t, b, sb, cfg, "mem", "sh", "-c", "dd if=/dev/zero of=/dev/shm/x bs=1M count=30 2>/dev/null; sleep 3600")
		cpu := startContainer(t, b, sb, cfg, "cpu", "sh", "-c", "while :; do :; done")
		idle := createContainer(t, b, sb, cfg, "idle", "sleep", "3600") // created, never started
		b.use(t, mem, fake.Usage{CPUCoreNanoSeconds: 5e6, WorkingSetBytes: 31 << 20, UsageBytes: 32 << 20, RSSBytes: 1 << 20})
		b.use(t, cpu, fake.Usage{CPUCoreNanoSeconds: 3e8, WorkingSetBytes: 300 << 10, UsageBytes: 400 << 10, RSSBytes: 200 << 10})
		byID := func() map[string]*runtimeapi.ContainerStats {
			list, err := b.rt.ListContainerStats(ctx, &runtimeapi.ContainerStatsFilter{PodSandboxId: sb})
			must(t, err)
			m := map[string]*runtimeapi.ContainerStats{}
			for _, s := range list {
				m[s.GetAttributes().GetId()] = s
			}
			return m
		}
		var stats map[string]*runtimeapi.ContainerStats
		deadline := time.Now().Add(20 * time.Second)
		for { // until dd has written its 30 MiB
			stats = byID()
			if stats[mem].GetMemory().GetWorkingSetBytes().GetValue() >= 30<<20 || time.Now().After(deadline) {
				break
			}
			time.Sleep(100 * time.Millisecond)
		}
		ws := stats[mem].GetMemory().GetWorkingSetBytes().GetValue()
		expect(t, ws >= 30<<20 && ws < 60<<20, "working set of a container holding 30 MiB: %d bytes", ws)
		expect(t, stats[mem].GetAttributes().GetMetadata().GetName() == "mem" && stats[mem].GetAttributes().GetLabels()["c"] == "mem",
			"attributes %v", stats[mem].GetAttributes())
		expect(t, stats[mem].GetMemory().GetTimestamp() > 0 && stats[mem].GetCpu().GetTimestamp() > 0, "no sample time: %v", stats[mem])
		expect(t, stats[mem].GetWritableLayer() != nil, "no writable layer: %v", stats[mem])
		first := stats[cpu].GetCpu()
		expect(t, first.GetUsageCoreNanoSeconds() != nil, "no CPU usage: %v", stats[cpu])
		if s, ok := stats[idle]; ok { // containerd lists it without a cgroup sample
			expect(t, s.GetCpu().GetUsageCoreNanoSeconds().GetValue() == 0, "a created container uses CPU: %v", s)
		}

		b.use(t, cpu, fake.Usage{CPUCoreNanoSeconds: 8e8, WorkingSetBytes: 300 << 10})
		var second *runtimeapi.CpuUsage
		var burnt uint64
		deadline = time.Now().Add(20 * time.Second)
		for { // the machine may be busy: wait for 100ms of CPU time
			time.Sleep(200 * time.Millisecond)
			second = byID()[cpu].GetCpu()
			burnt = second.GetUsageCoreNanoSeconds().GetValue() - first.GetUsageCoreNanoSeconds().GetValue()
			if burnt >= 1e8 || time.Now().After(deadline) {
				break
			}
		}
		elapsed := second.GetTimestamp() - first.GetTimestamp()
		t.Logf("busy loop used %d ms of CPU in %d ms", burnt/1e6, elapsed/1e6)
		expect(t, elapsed > 0 && burnt >= 1e8, "busy loop used %d ns of CPU in %d ns", burnt, elapsed)
		idleCPU := byID()[mem].GetCpu().GetUsageCoreNanoSeconds().GetValue()
		expect(t, idleCPU < second.GetUsageCoreNanoSeconds().GetValue(), "sleeping container used more CPU (%d) than the busy one", idleCPU)

		one, err := b.rt.ListContainerStats(ctx, &runtimeapi.ContainerStatsFilter{Id: mem})
		must(t, err)
		expect(t, len(one) == 1 && one[0].GetAttributes().GetId() == mem, "filter by id: %v", one)

		pid, err := b.rt.PodSandboxPID(ctx, sb)
		must(t, err)
		if _, isFake := b.rt.(*fake.Runtime); !isFake {
			dev, err := os.ReadFile(fmt.Sprintf("/proc/%d/net/dev", pid))
			must(t, err)
			expect(t, pid > 0 && strings.Contains(string(dev), "eth0:"), "sandbox pid %d: its net/dev has no eth0:\n%s", pid, dev)
		}
		_, err = b.rt.PodSandboxPID(ctx, "0000000000000000000000000000000000000000000000000000000000000000")
		expect(t, errors.Is(err, cri.ErrNotFound), "pid of a missing sandbox: %v", err)
		fs, err := b.rt.ImageFsInfo(ctx)
		must(t, err)
		expect(t, len(fs) > 0 && fs[0].GetFsId().GetMountpoint() != "" && fs[0].GetUsedBytes().GetValue() > 0, "image fs: %v", fs)
	}},
	{"Attach to a running container", func(t *testing.T, b *backend) {
		ctx := context.Background()
		sb, cfg := runSandbox(t, b, "attach")
		c := containerConfig("reader", "sh", "-c", "while read l; do echo got:$l; done")
		c.Stdin = true
		c.Labels["run"] = cfg.Labels["run"]
		id, err := b.rt.CreateContainer(ctx, sb, c, cfg)
		must(t, err)
		must(t, b.rt.StartContainer(ctx, id))
		_, err = b.rt.Attach(ctx, &runtimeapi.AttachRequest{ContainerId: "0000000000000000000000000000000000000000000000000000000000000000", Stdout: true})
		expect(t, errors.Is(err, cri.ErrNotFound), "attach to a missing container: %v", err)
		u, err := b.rt.Attach(ctx, &runtimeapi.AttachRequest{ContainerId: id, Stdin: true, Stdout: true})
		if _, isFake := b.rt.(*fake.Runtime); isFake {
			expect(t, err != nil && strings.Contains(err.Error(), "no stream server"), "fake attach: %v", err)
			return
		}
		must(t, err)
		expect(t, strings.HasPrefix(u, "http://") && strings.Contains(u, "/attach/"), "attach URL %q", u)
	}},
	{"images: status, list, missing, pull failure", func(t *testing.T, b *backend) {
		ctx := context.Background()
		img, err := b.rt.ImageStatus(ctx, &runtimeapi.ImageSpec{Image: "busybox:local"})
		must(t, err)
		expect(t, img != nil && slices.Contains(img.GetRepoTags(), busybox) && strings.HasPrefix(img.GetId(), "sha256:"), "busybox:local status %v", img)
		byID, err := b.rt.ImageStatus(ctx, &runtimeapi.ImageSpec{Image: img.GetId()})
		must(t, err)
		expect(t, byID.GetId() == img.GetId(), "status by ID %v", byID)

		img, err = b.rt.ImageStatus(ctx, &runtimeapi.ImageSpec{Image: "docker.io/library/busybox:no-such-tag"})
		expect(t, err == nil && img == nil, "missing image: %v, %v; want nil, nil", img, err)

		all, err := b.rt.ListImages(ctx, nil)
		must(t, err)
		expect(t, slices.ContainsFunc(all, func(i *runtimeapi.Image) bool { return slices.Contains(i.GetRepoTags(), busybox) }), "busybox not listed: %v", all)
		one, err := b.rt.ListImages(ctx, &runtimeapi.ImageFilter{Image: &runtimeapi.ImageSpec{Image: "busybox:local"}})
		must(t, err)
		expect(t, len(one) == 1 && slices.Contains(one[0].GetRepoTags(), busybox), "filtered list %v", one)
		none, err := b.rt.ListImages(ctx, &runtimeapi.ImageFilter{Image: &runtimeapi.ImageSpec{Image: "busybox:no-such-tag"}})
		must(t, err)
		expect(t, len(none) == 0, "filtered list of a missing image %v", none)

		_, err = b.rt.PullImage(ctx, &runtimeapi.ImageSpec{Image: missingPull}, nil, nil)
		expect(t, err != nil, "pull of a nonexistent image succeeded")
		want := fmt.Sprintf("failed to pull and unpack image %q: failed to resolve reference %q", missingPull, missingPull)
		expect(t, strings.Contains(err.Error(), want), "pull error %q does not contain %q", err, want)

		must(t, b.rt.RemoveImage(ctx, &runtimeapi.ImageSpec{Image: "docker.io/library/busybox:no-such-tag"}))
	}},
	{"creating a container from a missing image fails", func(t *testing.T, b *backend) {
		sb, cfg := runSandbox(t, b, "noimage")
		c := containerConfig("app", "sleep", "3600")
		c.Image.Image = "busybox:no-such-tag"
		_, err := b.rt.CreateContainer(context.Background(), sb, c, cfg)
		expect(t, errors.Is(err, cri.ErrNotFound) && strings.Contains(err.Error(), `failed to resolve image "busybox:no-such-tag"`), "create: %v", err)
		// the name was not kept: a retry with a present image works
		_, err = b.rt.CreateContainer(context.Background(), sb, containerConfig("app", "sleep", "3600"), cfg)
		must(t, err)
	}},
	{"ListContainers filters by label, sandbox, state and ID", func(t *testing.T, b *backend) {
		ctx := context.Background()
		sb1, cfg1 := runSandbox(t, b, "list1")
		sb2, cfg2 := runSandbox(t, b, "list2")
		a := startContainer(t, b, sb1, cfg1, "a", "sleep", "3600")
		bID := createContainer(t, b, sb1, cfg1, "b", "sleep", "3600")
		c := startContainer(t, b, sb2, cfg2, "c", "sleep", "3600")
		mine := map[string]string{testLabel: "true", "run": cfg1.Labels["run"]}
		ids := func(f *runtimeapi.ContainerFilter) []string {
			t.Helper()
			list, err := b.rt.ListContainers(ctx, f)
			must(t, err)
			var out []string
			for _, c := range list {
				if c.GetPodSandboxId() == sb1 || c.GetPodSandboxId() == sb2 { // ignore other scenarios' containers
					out = append(out, c.GetId())
				}
			}
			slices.Sort(out)
			return out
		}
		sorted := func(s ...string) []string { slices.Sort(s); return s }
		running := &runtimeapi.ContainerStateValue{State: runtimeapi.ContainerState_CONTAINER_RUNNING}
		for _, tc := range []struct {
			desc   string
			filter *runtimeapi.ContainerFilter
			want   []string
		}{
			{"all of this run", &runtimeapi.ContainerFilter{LabelSelector: mine}, sorted(a, bID, c)},
			{"label c=a", &runtimeapi.ContainerFilter{LabelSelector: map[string]string{"c": "a", "run": mine["run"]}}, []string{a}},
			{"label c=a and pod=list2", &runtimeapi.ContainerFilter{LabelSelector: map[string]string{"c": "a", "pod": "list2"}}, nil},
			{"label pod=list1", &runtimeapi.ContainerFilter{LabelSelector: map[string]string{"pod": "list1", "run": mine["run"]}}, sorted(a, bID)},
			{"sandbox 1", &runtimeapi.ContainerFilter{PodSandboxId: sb1}, sorted(a, bID)},
			{"sandbox 2 by prefix", &runtimeapi.ContainerFilter{PodSandboxId: sb2[:12]}, []string{c}},
			{"running", &runtimeapi.ContainerFilter{State: running, LabelSelector: mine}, sorted(a, c)},
			{"running in sandbox 1", &runtimeapi.ContainerFilter{State: running, PodSandboxId: sb1}, []string{a}},
			{"ID prefix", &runtimeapi.ContainerFilter{Id: bID[:12]}, []string{bID}},
			{"no match", &runtimeapi.ContainerFilter{LabelSelector: map[string]string{"c": "zzz"}}, nil},
		} {
			got := ids(tc.filter)
			expect(t, slices.Equal(got, tc.want), "%s: got %v, want %v", tc.desc, got, tc.want)
		}
		list, err := b.rt.ListContainers(ctx, &runtimeapi.ContainerFilter{Id: a})
		must(t, err)
		expect(t, len(list) == 1 && list[0].GetPodSandboxId() == sb1 && list[0].GetMetadata().GetName() == "a" &&
			list[0].GetState() == runtimeapi.ContainerState_CONTAINER_RUNNING && strings.HasPrefix(list[0].GetImageRef(), "sha256:") &&
			list[0].GetCreatedAt() > 0, "list entry %v", list)
	}},
	{"an unreachable runtime: every call wraps ErrUnavailable", func(t *testing.T, b *backend) {
		ctx := context.Background()
		rt := b.unreachable
		id := strings.Repeat("0f", 32)
		img := &runtimeapi.ImageSpec{Image: busybox}
		cfg := sandboxConfig("down", t.TempDir())
		for name, err := range map[string]error{
			"Version":            second(rt.Version(ctx)),
			"Status":             second(rt.Status(ctx)),
			"RunPodSandbox":      second(rt.RunPodSandbox(ctx, cfg, "")),
			"StopPodSandbox":     rt.StopPodSandbox(ctx, id),
			"RemovePodSandbox":   rt.RemovePodSandbox(ctx, id),
			"PodSandboxStatus":   second(rt.PodSandboxStatus(ctx, id)),
			"ListPodSandbox":     second(rt.ListPodSandbox(ctx, nil)),
			"CreateContainer":    second(rt.CreateContainer(ctx, id, containerConfig("x", "true"), cfg)),
			"StartContainer":     rt.StartContainer(ctx, id),
			"StopContainer":      rt.StopContainer(ctx, id, 0),
			"RemoveContainer":    rt.RemoveContainer(ctx, id),
			"ListContainers":     second(rt.ListContainers(ctx, nil)),
			"ContainerStatus":    second(rt.ContainerStatus(ctx, id)),
			"ExecSync":           second(rt.ExecSync(ctx, id, []string{"true"}, 0)),
			"ImageStatus":        second(rt.ImageStatus(ctx, img)),
			"PullImage":          second(rt.PullImage(ctx, img, nil, nil)),
			"ListImages":         second(rt.ListImages(ctx, nil)),
			"RemoveImage":        rt.RemoveImage(ctx, img),
			"Attach":             second(rt.Attach(ctx, &runtimeapi.AttachRequest{ContainerId: id, Stdout: true})),
			"ListContainerStats": second(rt.ListContainerStats(ctx, nil)),
			"PodSandboxPID":      second(rt.PodSandboxPID(ctx, id)),
			"ImageFsInfo":        second(rt.ImageFsInfo(ctx)),
		} {
			expect(t, errors.Is(err, cri.ErrUnavailable), "%s: %v, want ErrUnavailable", name, err)
		}
	}},
}

// ---------------------------------------------------------------- the two runs

func TestFakeContract(t *testing.T) {
	for _, sc := range scenarios {
		t.Run(sc.name, func(t *testing.T) {
			t.Parallel()
			f := fake.New()
			f.LoadImage(busybox, 2130731)
			f.LoadImage("registry.k8s.io/pause:3.10-local", 686894)
			f.SetExecHandler(fakeExec)
			down := fake.New()
			down.SetDown(true)
			sc.run(t, &backend{rt: f, unreachable: down,
				use: func(t *testing.T, id string, u fake.Usage) { must(t, f.SetUsage(id, u)) },
				exited: func(t *testing.T, id string, code int32) *runtimeapi.ContainerStatus {
					t.Helper()
					must(t, f.Exit(id, code))
					return containerStatus(t, &backend{rt: f}, id)
				}})
		})
	}
}

// fakeExec plays the commands the scenarios exec (and only those).
func fakeExec(ctx context.Context, _ string, cmd []string) (*cri.ExecResult, error) {
	switch strings.Join(cmd, " ") {
	case "sh -c echo hello; echo oops >&2; exit 2":
		return &cri.ExecResult{Stdout: []byte("hello\n"), Stderr: []byte("oops\n"), ExitCode: 2}, nil
	case "sleep 5":
		select {
		case <-ctx.Done():
			return nil, ctx.Err()
		case <-time.After(5 * time.Second):
			return &cri.ExecResult{}, nil
		}
	case "true":
		return &cri.ExecResult{}, nil
	}
	return nil, fmt.Errorf("fakeExec: no script for %q", cmd)
}

// dialReal connects to the real containerd (started by hack/cri-up.sh if need be).
func dialReal(t *testing.T) (*cri.Remote, *runtimeapi.VersionResponse, string) {
	t.Helper()
	endpoint := realEndpoint(t)
	r, err := cri.Dial(cri.RemoteOptions{Endpoint: endpoint, Timeout: time.Minute})
	must(t, err)
	t.Cleanup(func() { _ = r.Close() })
	v, err := r.Version(context.Background())
	must(t, err)
	return r, v, endpoint
}

func TestRealContainerd(t *testing.T) {
	r, v, endpoint := dialReal(t)
	t.Logf("runtime %s %s at %s", v.GetRuntimeName(), v.GetRuntimeVersion(), endpoint)
	removeLeftovers(t, r)

	unreachable, err := cri.Dial(cri.RemoteOptions{Endpoint: filepath.Join(t.TempDir(), "nothing.sock"), Timeout: 5 * time.Second})
	must(t, err)
	t.Cleanup(func() { _ = unreachable.Close() })
	b := &backend{rt: r, unreachable: unreachable, use: func(*testing.T, string, fake.Usage) {},
		exited: func(t *testing.T, id string, _ int32) *runtimeapi.ContainerStatus {
			t.Helper()
			deadline := time.Now().Add(20 * time.Second)
			for {
				st := containerStatus(t, &backend{rt: r}, id)
				if st.GetState() == runtimeapi.ContainerState_CONTAINER_EXITED || time.Now().After(deadline) {
					return st
				}
				time.Sleep(50 * time.Millisecond)
			}
		}}
	// Sequential on purpose: 2 cores, and each scenario is only a few hundred ms.
	for _, sc := range scenarios {
		t.Run(sc.name, func(t *testing.T) { sc.run(t, b) })
	}
	// Nothing of ours may be left behind.
	left, err := r.ListPodSandbox(context.Background(), &runtimeapi.PodSandboxFilter{LabelSelector: map[string]string{testLabel: "true"}})
	must(t, err)
	expect(t, len(left) == 0, "sandboxes left behind: %v", left)
}

// TestRealContainerdEvents: containerd 1.x has no GetContainerEvents (ErrUnimplemented,
// at once, so the agent relists only); 2.x streams until the context ends.
func TestRealContainerdEvents(t *testing.T) {
	r, v, _ := dialReal(t)
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
	defer cancel()
	opened := false
	err := r.ContainerEvents(ctx, func() { opened = true }, func(*runtimeapi.ContainerEventResponse) {})
	if strings.HasPrefix(strings.TrimPrefix(v.GetRuntimeVersion(), "v"), "1.") {
		expect(t, errors.Is(err, cri.ErrUnimplemented) && ctx.Err() == nil, "containerd %s: %v, want ErrUnimplemented at once", v.GetRuntimeVersion(), err)
		return
	}
	expect(t, err == nil && opened, "containerd %s: stream ended with %v (opened %v), want it open until the context ended", v.GetRuntimeVersion(), err, opened)
}

// ---------------------------------------------------------------- real containerd

var startedContainerd atomic.Bool

// realEndpoint is $NK_CRI_ENDPOINT, or our containerd, started with hack/cri-up.sh.
func realEndpoint(t *testing.T) string {
	if ep := os.Getenv("NK_CRI_ENDPOINT"); ep != "" {
		return ep
	}
	if os.Geteuid() != 0 {
		t.Skip("skipping the real containerd contract tests: they need root to start containerd " +
			"with hack/cri-up.sh (or set NK_CRI_ENDPOINT to a running CRI runtime)")
	}
	if testing.Short() {
		t.Skip("skipping the real containerd contract tests in -short mode")
	}
	cache := os.Getenv("NK_CACHE")
	if cache == "" {
		home, err := os.UserHomeDir()
		must(t, err)
		cache = filepath.Join(home, ".cache", "nodekeeper")
	}
	sock := "unix://" + filepath.Join(cache, "cri", "run", "containerd.sock")
	if answers(sock) {
		return sock
	}
	start := time.Now()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Minute) // a cold run installs packages
	defer cancel()
	cmd := exec.CommandContext(ctx, "../../hack/cri-up.sh")
	cmd.Stderr = &testLogWriter{t: t}
	cmd.WaitDelay = 10 * time.Second // never hang on a daemon that kept our stdout
	out, err := cmd.Output()
	if err != nil {
		t.Fatalf("hack/cri-up.sh: %v", err)
	}
	startedContainerd.Store(true)
	lines := strings.Split(strings.TrimSpace(string(out)), "\n")
	ep := lines[len(lines)-1]
	t.Logf("containerd started by hack/cri-up.sh in %v: %s", time.Since(start).Round(time.Millisecond), ep)
	return ep
}

func answers(endpoint string) bool {
	r, err := cri.Dial(cri.RemoteOptions{Endpoint: endpoint})
	if err != nil {
		return false
	}
	defer func() { _ = r.Close() }()
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
	defer cancel()
	_, err = r.Version(ctx)
	return err == nil
}

// TestMain stops the containerd the tests started (NK_CRI_KEEP=1 keeps it).
func TestMain(m *testing.M) {
	code := m.Run()
	if startedContainerd.Load() && os.Getenv("NK_CRI_KEEP") == "" {
		cmd := exec.Command("../../hack/cri-down.sh")
		cmd.Stdout, cmd.Stderr = os.Stderr, os.Stderr
		if err := cmd.Run(); err != nil {
			fmt.Fprintf(os.Stderr, "hack/cri-down.sh: %v\n", err)
			code = 1
		}
	}
	os.Exit(code)
}

// removeLeftovers removes sandboxes an interrupted earlier run left behind.
func removeLeftovers(t *testing.T, r cri.Runtime) {
	left, err := r.ListPodSandbox(context.Background(), &runtimeapi.PodSandboxFilter{LabelSelector: map[string]string{testLabel: "true"}})
	must(t, err)
	for _, sb := range left {
		t.Logf("removing sandbox %s left by an earlier run", sb.GetId())
		must(t, r.RemovePodSandbox(context.Background(), sb.GetId()))
	}
}

type testLogWriter struct{ t *testing.T }

func (w *testLogWriter) Write(p []byte) (int, error) {
	w.t.Log(strings.TrimRight(string(p), "\n"))
	return len(p), nil
}

// ---------------------------------------------------------------- helpers

var runSeq atomic.Int64

// runID tells this process's objects apart from other runs'.
var runID = fmt.Sprintf("%d-%d", os.Getpid(), time.Now().UnixNano()%1e6)

func sandboxConfig(name, logDir string) *runtimeapi.PodSandboxConfig {
	uid := fmt.Sprintf("%s-%d", runID, runSeq.Add(1))
	return &runtimeapi.PodSandboxConfig{
		Metadata:     &runtimeapi.PodSandboxMetadata{Name: name, Namespace: "nk-contract", Uid: uid},
		Hostname:     name,
		LogDirectory: logDir,
		Labels:       map[string]string{testLabel: "true", "app": name, "run": runID},
		Annotations:  map[string]string{"note": "kept"},
		Linux:        &runtimeapi.LinuxPodSandboxConfig{},
	}
}

// runSandbox runs a sandbox (with a fresh log directory) and removes it when the test ends.
func runSandbox(t *testing.T, b *backend, name string, mutate ...func(*runtimeapi.PodSandboxConfig)) (string, *runtimeapi.PodSandboxConfig) {
	t.Helper()
	logDir := filepath.Join(t.TempDir(), "pods", name)
	must(t, os.MkdirAll(logDir, 0o755))
	cfg := sandboxConfig(name, logDir)
	for _, m := range mutate {
		m(cfg)
	}
	id, err := b.rt.RunPodSandbox(context.Background(), cfg, "")
	if err != nil {
		t.Fatalf("RunPodSandbox %s: %v", name, err)
	}
	t.Cleanup(func() {
		if err := b.rt.RemovePodSandbox(context.Background(), id); err != nil {
			t.Errorf("cleanup: RemovePodSandbox %s: %v", id, err)
		}
	})
	return id, cfg
}

func containerConfig(name string, cmd ...string) *runtimeapi.ContainerConfig {
	return &runtimeapi.ContainerConfig{
		Metadata:    &runtimeapi.ContainerMetadata{Name: name},
		Image:       &runtimeapi.ImageSpec{Image: "busybox:local"},
		Command:     cmd,
		LogPath:     name + ".log",
		Labels:      map[string]string{testLabel: "true", "c": name},
		Annotations: map[string]string{"note": name},
		Linux:       &runtimeapi.LinuxContainerConfig{},
	}
}

func createContainer(t *testing.T, b *backend, sandboxID string, sb *runtimeapi.PodSandboxConfig, name string, cmd ...string) string {
	t.Helper()
	c := containerConfig(name, cmd...)
	c.Labels["pod"] = sb.Metadata.Name
	c.Labels["run"] = sb.Labels["run"]
	id, err := b.rt.CreateContainer(context.Background(), sandboxID, c, sb)
	if err != nil {
		t.Fatalf("CreateContainer %s: %v", name, err)
	}
	return id
}

func startContainer(t *testing.T, b *backend, sandboxID string, sb *runtimeapi.PodSandboxConfig, name string, cmd ...string) string {
	t.Helper()
	id := createContainer(t, b, sandboxID, sb, name, cmd...)
	if err := b.rt.StartContainer(context.Background(), id); err != nil {
		t.Fatalf("StartContainer %s: %v", name, err)
	}
	return id
}

func sandboxStatus(t *testing.T, b *backend, id string) *runtimeapi.PodSandboxStatus {
	t.Helper()
	st, err := b.rt.PodSandboxStatus(context.Background(), id)
	if err != nil {
		t.Fatalf("PodSandboxStatus: %v", err)
	}
	return st
}

func containerStatus(t *testing.T, b *backend, id string) *runtimeapi.ContainerStatus {
	t.Helper()
	st, err := b.rt.ContainerStatus(context.Background(), id)
	if err != nil {
		t.Fatalf("ContainerStatus: %v", err)
	}
	return st
}

func second[T any](_ T, err error) error { return err }

func must(t *testing.T, err error) {
	t.Helper()
	if err != nil {
		t.Fatal(err)
	}
}

func expect(t *testing.T, ok bool, format string, args ...any) {
	t.Helper()
	if !ok {
		t.Errorf(format, args...)
	}
}
