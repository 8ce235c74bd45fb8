package fault

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"syscall"
	"time"

	. "github.com/onsi/ginkgo/v2"
	. "github.com/onsi/gomega"
	runtimeapi "k8s.io/cri-api/pkg/apis/runtime/v1"

	"github.com/nodekeeper/nodekeeper/internal/netnstest"
)

// soakDuration: NK_SOAK (a Go duration; make soak sets 30m); 0 skips the soak.
func soakDuration() time.Duration {
	d, _ := time.ParseDuration(os.Getenv("NK_SOAK"))
	return d
}

func agentRSS(pid int) float64 {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", pid))
	Expect(err).NotTo(HaveOccurred())
	m := regexp.MustCompile(`(?m)^VmRSS:\s+(\d+) kB`).FindSubmatch(b)
	Expect(m).NotTo(BeNil())
	kb, _ := strconv.ParseFloat(string(m[1]), 64)
	return kb / 1024
}

func agentGoroutines() float64 { return agentMetric("go_goroutines") }

// agentHeapMiB is the Go heap in use (spans with objects), to tell a leak (the heap
// grows) from the runtime keeping freed memory (RSS grows, the heap does not).
func agentHeapMiB() float64 { return agentMetric("go_memstats_heap_inuse_bytes") / (1 << 20) }

func agentMetric(name string) float64 {
	body, err := netnstest.Get(netns, "http://127.0.0.1:10249/metrics")
	Expect(err).NotTo(HaveOccurred())
	m := regexp.MustCompile(`(?m)^` + regexp.QuoteMeta(name) + ` (\S+)$`).FindStringSubmatch(body)
	Expect(m).NotTo(BeNil(), name)
	v, _ := strconv.ParseFloat(m[1], 64)
	return v
}

// slope is the least-squares slope of ys over xs (per unit of x).
func slope(xs, ys []float64) float64 {
	n := float64(len(xs))
	if n < 2 {
		return 0
	}
	var sx, sy, sxx, sxy float64
	for i := range xs {
		sx, sy, sxx, sxy = sx+xs[i], sy+ys[i], sxx+xs[i]*xs[i], sxy+xs[i]*ys[i]
	}
	d := n*sxx - sx*sx
	if d == 0 {
		return 0
	}
	return (n*sxy - sx*sy) / d
}

// leftovers of pods that are gone: mounts naming their UID, their pod cgroups in every
// hierarchy, their sandboxes in the runtime, conntrack entries to their addresses
func leftovers(uids, ips []string) (mounts, cgroups, sandboxes, conntrack int) {
	pm, err := os.ReadFile("/proc/self/mountinfo")
	Expect(err).NotTo(HaveOccurred())
	rt := runtimeClient()
	defer rt.Close()
	for _, uid := range uids {
		mounts += strings.Count(string(pm), uid)
		ms, _ := filepath.Glob("/sys/fs/cgroup/*/kubepods/*pod" + uid)
		ms2, _ := filepath.Glob("/sys/fs/cgroup/*/kubepods/*/pod" + uid)
		ms3, _ := filepath.Glob("/sys/fs/cgroup/*/kubepods/pod" + uid)
		cgroups += len(ms) + len(ms2) + len(ms3)
		sbs, err := rt.ListPodSandbox(context.Background(), &runtimeapi.PodSandboxFilter{LabelSelector: map[string]string{"io.kubernetes.pod.uid": uid}})
		Expect(err).NotTo(HaveOccurred())
		sandboxes += len(sbs)
	}
	ct := inNode("sh", "-c", "conntrack -L 2>/dev/null || true")
	for _, ip := range ips {
		conntrack += strings.Count(ct, "dst="+ip+" ")
	}
	return
}

// orphanNetns counts network namespaces under /run/netns no process is in (machine-wide:
// other clusters' too, so it is reported, not asserted).
func orphanNetns() int {
	inUse := map[uint64]bool{}
	procs, _ := filepath.Glob("/proc/[0-9]*/ns/net")
	for _, p := range procs {
		var st syscall.Stat_t
		if syscall.Stat(p, &st) == nil {
			inUse[st.Ino] = true
		}
	}
	n := 0
	entries, _ := filepath.Glob("/run/netns/cni-*")
	for _, e := range entries {
		var st syscall.Stat_t
		if syscall.Stat(e, &st) == nil && !inUse[st.Ino] {
			n++
		}
	}
	return n
}

func soakCycleManifest(i int) string {
	var b strings.Builder
	fmt.Fprintf(&b, "apiVersion: v1\nkind: Service\nmetadata: {name: soak-%d, labels: {soak: \"1\"}}\nspec:\n  selector: {soak-cycle: \"%d\"}\n  ports: [{port: 80, targetPort: 8080}]\n", i, i)
	for j := 0; j < 5; j++ {
		fmt.Fprintf(&b, `---
apiVersion: v1
kind: Pod
metadata: {name: soak-%d-%d, labels: {soak: "1", soak-cycle: "%d"}}
spec:
  terminationGracePeriodSeconds: 1
  volumes: [{name: scratch, emptyDir: {}}, {name: cfg, configMap: {name: kube-root-ca.crt}}]
  containers:
  - name: httpd
    image: docker.io/library/busybox:local
    command: ["sh", "-c", "mkdir -p /www && hostname > /www/index.html && exec httpd -f -p 8080 -h /www"]
    readinessProbe: {httpGet: {path: /, port: 8080}, periodSeconds: 1}
    volumeMounts: [{name: scratch, mountPath: /scratch}, {name: cfg, mountPath: /cfg}]
`, i, j, i)
	}
	return b.String()
}

func soakCases() {
	It("creates and deletes pods and Services continuously with flat memory and goroutines and nothing leaked", func() {
		d := soakDuration()
		if d == 0 {
			Skip("the soak runs with make soak (NK_SOAK=30m)")
		}
		agent := readPID(pidFile("nodekeeper"))
		orphans0 := orphanNetns()
		var xs, rss, gor, heap []float64
		var uids, ips []string
		t0 := time.Now()
		cycles := 0
		dir := GinkgoT().TempDir()
		for time.Since(t0) < d {
			f := filepath.Join(dir, fmt.Sprintf("cycle-%d.yaml", cycles))
			Expect(os.WriteFile(f, []byte(soakCycleManifest(cycles)), 0o644)).To(Succeed())
			mustKubectl("apply", "-f", f)
			Eventually(func() int {
				n := 0
				for _, p := range podsOf(fmt.Sprintf("soak-cycle=%d", cycles)) {
					if p.Ready {
						n++
					}
				}
				return n
			}, 2*time.Minute, 500*time.Millisecond).Should(Equal(5))
			cip := mustKubectl("get", "svc", fmt.Sprintf("soak-%d", cycles), "-o", "jsonpath={.spec.clusterIP}")
			Eventually(func() (string, error) { return netnstest.Get(netns, "http://"+cip+"/") }, time.Minute, 200*time.Millisecond).Should(HavePrefix("soak-"))
			for _, p := range podsOf(fmt.Sprintf("soak-cycle=%d", cycles)) {
				uids = append(uids, p.UID)
			}
			for _, ip := range strings.Fields(mustKubectl("get", "pods", "-l", fmt.Sprintf("soak-cycle=%d", cycles), "-o", "jsonpath={.items[*].status.podIP}")) {
				ips = append(ips, ip)
			}
			mustKubectl("delete", "-f", f, "--wait=true", "--timeout=120s")
			cycles++
			xs = append(xs, time.Since(t0).Hours())
			rss = append(rss, agentRSS(agent))
			gor = append(gor, agentGoroutines())
			heap = append(heap, agentHeapMiB())
		}
		Expect(alive(agent)).To(BeTrue())
		// the second half, after caches and pools have warmed up
		h := len(xs) / 2
		rssSlope, gorSlope, heapSlope := slope(xs[h:], rss[h:]), slope(xs[h:], gor[h:]), slope(xs[h:], heap[h:])
		var mounts, cgroups, sandboxes, ct int
		Eventually(func() int {
			mounts, cgroups, sandboxes, ct = leftovers(uids, nil)
			return mounts + cgroups + sandboxes
		}, 2*time.Minute, 2*time.Second).Should(BeZero(), func() string {
			// (a func: the counts of the last poll, not the zeros of before the first)
			return fmt.Sprintf("leftovers of deleted pods: %d mounts, %d cgroups, %d sandboxes", mounts, cgroups, sandboxes)
		})
		_, _, _, ct = leftovers(nil, ips)
		orphans := orphanNetns() - orphans0
		figure(fmt.Sprintf("soak %v", d), "%d cycles (%d pods, %d Services); agent RSS %.1f→%.1f MiB (second-half slope %+.1f MiB/h), Go heap in use %.1f→%.1f MiB (slope %+.1f MiB/h), goroutines %.0f→%.0f (slope %+.1f/h); leftovers of deleted pods: %d mounts, %d cgroups, %d sandboxes; conntrack entries to their addresses %d; new orphan netns %d",
			cycles, 5*cycles, cycles, rss[0], rss[len(rss)-1], rssSlope, heap[0], heap[len(heap)-1], heapSlope, gor[0], gor[len(gor)-1], gorSlope, mounts, cgroups, sandboxes, ct, orphans)
		Expect(gor[len(gor)-1]).To(BeNumerically("<", gor[h]*1.25+20), "goroutines grow")
		Expect(rss[len(rss)-1]).To(BeNumerically("<", rss[h]*1.5+20), "RSS grows")
	})
}
