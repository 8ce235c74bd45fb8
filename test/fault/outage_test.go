package fault

import (
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"syscall"
	"time"

	. "github.com/onsi/ginkgo/v2"
	. "github.com/onsi/gomega"
	runtimeapi "k8s.io/cri-api/pkg/apis/runtime/v1"
)

// outage returns how long a down-case keeps its daemon stopped: 60 s in the long run
// (make fault), a short stop in make test.
func outage() time.Duration {
	if long {
		return 60 * time.Second
	}
	return 15 * time.Second
}

func criUp() {
	cmd := exec.Command(filepath.Join(root, "hack", "cri-up.sh"))
	cmd.Env = append(scriptEnv(), "NK_CACHE="+criCache)
	cmd.Stdout, cmd.Stderr = GinkgoWriter, GinkgoWriter
	Expect(cmd.Run()).To(Succeed(), "hack/cri-up.sh")
}

// readyPods counts the steady pods the API shows Ready.
func readyPods() int {
	n := 0
	for _, p := range podsOf("app=steady") {
		if p.Ready {
			n++
		}
	}
	return n
}

func runtimeCases() {
	It("keeps every pod running through a containerd outage, reports the node NotReady with the reason, and adopts everything after", func() {
		if !long {
			// the outage cases lose about 1 request in 1,100–3,300 (known, unexplained: README,
			// Reliability) in about half the runs, over the traffic check's 1 in 500 at
			// times: they run in make fault until that is understood, not in make test
			Skip("outage traffic case: make fault (NK_FAULT_LONG=1)")
		}
		before := observeSteady()
		cip := startTraffic(clusterIPURL, 20*time.Millisecond)
		pid := readPID(filepath.Join(criCache, "cri", "containerd.pid"))
		t0 := time.Now()
		signalAndWait(pid, syscall.SIGTERM, 30*time.Second)
		// the node reports the runtime down (within a status update, 10 s) and why
		var notReadyIn time.Duration
		var msg string
		Eventually(func() string {
			s, m := nodeReady()
			msg = m
			return s
		}, 45*time.Second, 200*time.Millisecond).Should(Equal("False"))
		notReadyIn = time.Since(t0)
		Expect(msg).To(ContainSubstring("container runtime is down"))
		// the pods stay as they were in the API: Ready, no restarts (sampled every second
		// until the end of the case)
		minReady := len(before.pods)
		sample := func() {
			if n := readyPods(); n < minReady {
				minReady = n
			}
		}
		for time.Since(t0) < outage() {
			sample()
			time.Sleep(time.Second)
		}
		restart := time.Now()
		criUp()
		Eventually(func() string { sample(); s, _ := nodeReady(); return s }, time.Minute, 200*time.Millisecond).Should(Equal("True"))
		readyIn := time.Since(restart)
		for end := time.Now().Add(5 * time.Second); time.Now().Before(end); time.Sleep(time.Second) {
			sample()
		}
		cip.Stop()
		fmt.Fprintf(GinkgoWriter, "containerd back at +%.1fs; warnings since: %s\n", restart.Sub(t0).Seconds(), warningsSince(t0))
		figure(fmt.Sprintf("containerd down %v", outage()), "node NotReady after %v (%q), Ready %v after containerd is back; fewest Ready pods in the API meanwhile %d of %d; ClusterIP %s",
			notReadyIn.Round(100*time.Millisecond), msg, readyIn.Round(100*time.Millisecond), minReady, len(before.pods), cip.Summary())
		expectUnchanged(before)
		Expect(minReady).To(Equal(len(before.pods)), "pods went unready in the API while the runtime was down")
		expectServed(cip, "ClusterIP")
		// and nothing the agent made while the runtime was away is left as a duplicate
		rt := runtimeClient()
		defer rt.Close()
		sbs, err := rt.ListPodSandbox(context.Background(), &runtimeapi.PodSandboxFilter{})
		Expect(err).NotTo(HaveOccurred())
		perPod := map[string]int{}
		for _, s := range sbs {
			if s.State == runtimeapi.PodSandboxState_SANDBOX_READY {
				perPod[s.Metadata.Namespace+"/"+s.Metadata.Name]++
			}
		}
		for k, n := range perPod {
			Expect(n).To(Equal(1), "pod %s has %d ready sandboxes", k, n)
		}
	})

	It("restarts a pod's container killed while containerd was down, once it is back", func() {
		p := podsOf("app=steady")[0]
		before := observeRuntime([]string{p.UID})
		Expect(before.Containers[p.UID]).To(HaveLen(1))
		pid := readPID(filepath.Join(criCache, "cri", "containerd.pid"))
		signalAndWait(pid, syscall.SIGTERM, 30*time.Second)
		// the container's process dies while nobody watches: kill the httpd by its pid
		// (the shim survives containerd and reports the exit when it is back)
		out := sh("sh", "-c", fmt.Sprintf("for p in $(pgrep -x httpd); do grep -qs %s /proc/$p/cgroup /proc/$p/mountinfo && echo $p; done; true", before.Containers[p.UID][0]))
		pids := strings.Fields(out)
		if len(pids) == 0 {
			criUp()
			Skip("could not find the container's process")
		}
		for _, s := range pids {
			n, _ := strconv.Atoi(s)
			_ = syscall.Kill(n, syscall.SIGKILL)
		}
		time.Sleep(3 * time.Second)
		restart := time.Now()
		criUp()
		Eventually(func() int32 { return restartsOf(podsOf("app=steady"))[p.Name] }, time.Minute, 200*time.Millisecond).Should(Equal(p.Restarts + 1))
		figure("container died during a containerd outage", "restart count %d -> %d in the API %v after containerd came back", p.Restarts, p.Restarts+1, time.Since(restart).Round(100*time.Millisecond))
		Eventually(func() bool {
			for _, q := range podsOf("app=steady") {
				if q.Name == p.Name {
					return q.Ready
				}
			}
			return false
		}, time.Minute, time.Second).Should(BeTrue())
	})
}

// apiSYNs counts the node's new connections to the API server (a counting rule in the
// node namespace, in a chain of its own).
func apiSYNs() int {
	out := inNode("iptables", "-w", "-L", "FAULT-APISYN", "-v", "-x", "-n")
	m := regexp.MustCompile(`(?m)^\s*(\d+)\s+\d+\s+`).FindStringSubmatch(out)
	Expect(m).NotTo(BeNil(), "%s", out)
	n, _ := strconv.Atoi(m[1])
	return n
}

func apiServerCases() {
	It("keeps pods, Services and static pods through an API server and etcd outage without a hot loop, and reconciles after", func() {
		if !long {
			// the outage cases lose about 1 request in 1,100–3,300 (known, unexplained: README,
			// Reliability) in about half the runs, over the traffic check's 1 in 500 at
			// times: they run in make fault until that is understood, not in make test
			Skip("outage traffic case: make fault (NK_FAULT_LONG=1)")
		}
		host, port := clusterEnv["NK_HOST_IP"], clusterEnv["NK_APISERVER_PORT"]
		inNode("iptables", "-w", "-N", "FAULT-APISYN")
		inNode("iptables", "-w", "-A", "FAULT-APISYN", "-p", "tcp", "-d", host, "--dport", port, "--syn")
		inNode("iptables", "-w", "-I", "OUTPUT", "1", "-j", "FAULT-APISYN")
		DeferCleanup(func() {
			_ = exec.Command("ip", "netns", "exec", netns, "iptables", "-w", "-D", "OUTPUT", "-j", "FAULT-APISYN").Run()
			_ = exec.Command("ip", "netns", "exec", netns, "iptables", "-w", "-F", "FAULT-APISYN").Run()
			_ = exec.Command("ip", "netns", "exec", netns, "iptables", "-w", "-X", "FAULT-APISYN").Run()
		})
		before := observeSteady()
		cip := startTraffic(clusterIPURL, 20*time.Millisecond)
		np := startTraffic(nodePortURL, 50*time.Millisecond)
		agent := readPID(pidFile("nodekeeper"))
		syn0 := apiSYNs()
		for _, d := range []string{"kube-apiserver", "etcd"} {
			stopDaemon(readPID(pidFile(d)))
		}
		down := time.Now()
		cpu0 := cpuTicks(agent)
		// a static pod written while the API is away starts anyway
		manifest := filepath.Join(runDir, "manifests", "fault-static.yaml")
		Expect(os.WriteFile(manifest, []byte(`apiVersion: v1
kind: Pod
metadata: {name: fault-static, namespace: default}
spec:
  containers:
  - {name: main, image: docker.io/library/busybox:local, command: [sleep, "3600"]}
`), 0o644)).To(Succeed())
		DeferCleanup(func() { _ = os.Remove(manifest) })
		Eventually(func() int {
			rt := runtimeClient()
			defer rt.Close()
			cs, err := rt.ListContainers(context.Background(), &runtimeapi.ContainerFilter{
				State:         &runtimeapi.ContainerStateValue{State: runtimeapi.ContainerState_CONTAINER_RUNNING},
				LabelSelector: map[string]string{"io.kubernetes.pod.name": "fault-static-" + node}})
			if err != nil {
				return 0
			}
			return len(cs)
		}, outage(), time.Second).Should(Equal(1), "the static pod did not start while the API server was down")
		staticIn := time.Since(down)
		time.Sleep(time.Until(down.Add(outage())))
		elapsed := time.Since(down)
		cpu := float64(cpuTicks(agent)-cpu0) / 100 // USER_HZ
		syns := apiSYNs() - syn0
		runScript("up") // starts what is not running: etcd and the API server (and waits for /readyz)
		back := time.Now()
		Eventually(leaseRenewTime, time.Minute, 200*time.Millisecond).Should(BeTemporally(">", back))
		leaseIn := time.Since(back)
		Eventually(func() (string, error) {
			return kubectl("get", "pod", "fault-static-"+node, "-o", "jsonpath={.status.phase}")
		}, time.Minute, 500*time.Millisecond).Should(Equal("Running"))
		mirrorIn := time.Since(back)
		time.Sleep(3 * time.Second)
		cip.Stop()
		np.Stop()
		figure(fmt.Sprintf("API server + etcd down %v", outage()), "agent: %d new connections to the API server (%.2f/s), %.2f s CPU (%.1f%%) while it was down; static pod started without it in %v; once it was ready again the Lease was renewed in %v, the mirror pod Running in %v; ClusterIP %s; NodePort %s",
			syns, float64(syns)/elapsed.Seconds(), cpu, 100*cpu/elapsed.Seconds(), staticIn.Round(100*time.Millisecond),
			leaseIn.Round(100*time.Millisecond), mirrorIn.Round(100*time.Millisecond), cip.Summary(), np.Summary())
		expectServed(cip, "ClusterIP")
		expectServed(np, "NodePort")
		Expect(alive(agent)).To(BeTrue(), "the agent exited while the API server was down")
		// a hot loop would be hundreds a second; informers, the Lease and status back off
		Expect(float64(syns)/elapsed.Seconds()).To(BeNumerically("<", 20), "connection attempts per second while the API server was down")
		Expect(100*cpu/elapsed.Seconds()).To(BeNumerically("<", 25), "agent CPU while the API server was down")
		expectUnchanged(before)
		Eventually(func() string { s, _ := nodeReady(); return s }, time.Minute, time.Second).Should(Equal("True"))
	})
}

// warningsSince lists the Warning events that happened after t.
func warningsSince(t time.Time) string {
	out, err := kubectl("get", "events", "--field-selector", "type=Warning",
		"-o", `jsonpath={range .items[*]}{.lastTimestamp}{" "}{.involvedObject.name}{" "}{.reason}{": "}{.message}{"\n"}{end}`)
	if err != nil {
		return err.Error()
	}
	var keep []string
	for _, l := range strings.Split(strings.TrimSpace(out), "\n") {
		ts, _, _ := strings.Cut(l, " ")
		if at, err := time.Parse(time.RFC3339, ts); err == nil && !at.Before(t.Truncate(time.Second)) {
			keep = append(keep, l)
		}
	}
	return strings.Join(keep, "\n")
}
