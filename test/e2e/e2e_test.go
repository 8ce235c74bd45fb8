// Package e2e drives a whole local cluster — etcd, kube-apiserver, controller-manager,
// scheduler, containerd and nodekeeper as the node, started by hack/run.sh exactly as
// `make run` does, in its own namespace, ports and state folder — with the real kubectl.
// It needs root; `make test` runs it.
package e2e

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	. "github.com/onsi/ginkgo/v2"
	. "github.com/onsi/gomega"
	"github.com/onsi/gomega/gbytes"
	runtimeapi "k8s.io/cri-api/pkg/apis/runtime/v1"

	"github.com/nodekeeper/nodekeeper/internal/netnstest"
	"github.com/nodekeeper/nodekeeper/internal/podplan"
	"github.com/nodekeeper/nodekeeper/runtime/cri"
)

// The cluster's own settings: none of them collide with `make run`'s.
var clusterEnv = map[string]string{
	"NK_NETNS": "nk-e2e", "NK_HOST_IF": "nk-e2eh0", "NK_NODE_IF": "nk-e2en0",
	"NK_HOST_IP": "198.18.78.1", "NK_NODE_IP": "198.18.78.2", "NK_NODE_NAME": "nk-e2e",
	"NK_APISERVER_PORT": "6444", "NK_ETCD_PORT": "23810", "NK_KCM_PORT": "10357", "NK_SCHED_PORT": "10359",
	// metrics-server on the host side of the veth, for kubectl top (top_test.go)
	"NK_METRICS_SERVER": "1", "NK_METRICS_SERVER_PORT": "4444",
}

const (
	netns   = "nk-e2e"
	node    = "nk-e2e"
	outside = "nk-e2e-out" // an "outside" namespace joined to the node by a veth
)

var (
	root, runDir, kubeconfig, kubectlBin string
	rt                                   *cri.Remote
)

func TestE2E(t *testing.T) {
	RegisterFailHandler(Fail)
	RunSpecs(t, "End-to-end Suite")
}

func runScript(args ...string) {
	cmd := exec.Command(filepath.Join(root, "hack", "run.sh"), args...)
	cmd.Env = os.Environ()
	for k, v := range clusterEnv {
		cmd.Env = append(cmd.Env, k+"="+v)
	}
	cmd.Env = append(cmd.Env, "NK_RUN_DIR="+runDir, "NK_CRI_CACHE="+filepath.Join(cacheDir(), "e2e"))
	cmd.Stdout, cmd.Stderr = GinkgoWriter, GinkgoWriter
	Expect(cmd.Run()).To(Succeed(), "hack/run.sh %v", args)
}

func cacheDir() string {
	if c := os.Getenv("NK_CACHE"); c != "" {
		return c
	}
	home, _ := os.UserHomeDir()
	return filepath.Join(home, ".cache", "nodekeeper")
}

func sh(args ...string) {
	out, err := exec.Command(args[0], args[1:]...).CombinedOutput()
	Expect(err).NotTo(HaveOccurred(), "%v: %s", args, out)
}

// kubectl runs the real kubectl against the cluster.
func kubectl(args ...string) (string, error) {
	cmd := exec.Command(kubectlBin, append([]string{"--kubeconfig", kubeconfig}, args...)...)
	var out, errb bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &errb
	err := cmd.Run()
	if err != nil {
		return out.String(), fmt.Errorf("kubectl %v: %w: %s", args, err, errb.String())
	}
	return out.String(), nil
}

func mustKubectl(args ...string) string {
	out, err := kubectl(args...)
	Expect(err).NotTo(HaveOccurred())
	return out
}

var _ = BeforeSuite(func() {
	if os.Geteuid() != 0 {
		Skip("the end-to-end cluster needs root (network namespaces, containerd)")
	}
	wd, err := os.Getwd()
	Expect(err).NotTo(HaveOccurred())
	root = filepath.Join(wd, "..", "..")
	runDir = filepath.Join(cacheDir(), "e2e-run")
	kubeconfig = filepath.Join(runDir, "admin.kubeconfig")
	runScript("down")                          // leftovers of an interrupted run
	Expect(os.RemoveAll(runDir)).To(Succeed()) // a fresh cluster each time
	// registered before `up` so that a failed start is torn down too (its daemons would
	// otherwise keep running, holding the caller's lock file descriptor)
	DeferCleanup(func() {
		_ = exec.Command("ip", "netns", "del", outside).Run()
		runScript("down")
	})
	runScript("up")
	bins, err := exec.Command(filepath.Join(root, "hack", "k8s-bins.sh")).Output()
	Expect(err).NotTo(HaveOccurred())
	kubectlBin = filepath.Join(strings.TrimSpace(string(bins)), "kubectl")

	rt, err = cri.Dial(cri.RemoteOptions{Endpoint: "unix://" + filepath.Join(cacheDir(), "e2e", "cri", "run", "containerd.sock")})
	Expect(err).NotTo(HaveOccurred())

	// an outside network joined to the node: 10.250.0.1 (node) <-> 10.250.0.2 (outside)
	sh("ip", "netns", "add", outside)
	sh("ip", "-n", netns, "link", "add", "e2eout", "type", "veth", "peer", "name", "eth0", "netns", outside)
	sh("ip", "-n", netns, "addr", "add", "10.250.0.1/24", "dev", "e2eout")
	sh("ip", "-n", netns, "link", "set", "e2eout", "up")
	sh("ip", "-n", outside, "addr", "add", "10.250.0.2/24", "dev", "eth0")
	sh("ip", "-n", outside, "link", "set", "eth0", "up")
	sh("ip", "-n", outside, "link", "set", "lo", "up")

	Eventually(func() (string, error) {
		return kubectl("get", "node", node, "-o", `jsonpath={.status.conditions[?(@.type=="Ready")].status}`)
	}, 2*time.Minute, time.Second).Should(Equal("True"))
	// pods need their namespace's default ServiceAccount, which the controller-manager
	// makes shortly after it starts
	Eventually(func() error { _, err := kubectl("get", "serviceaccount", "default", "-n", "default"); return err },
		time.Minute, time.Second).Should(Succeed())
})

// applyManifest applies YAML with kubectl and deletes it (waiting) when the spec ends.
func applyManifest(manifest string) {
	f := filepath.Join(GinkgoT().TempDir(), "manifest.yaml")
	Expect(os.WriteFile(f, []byte(manifest), 0o644)).To(Succeed())
	mustKubectl("apply", "-f", f)
	DeferCleanup(func() { _, _ = kubectl("delete", "-f", f, "--wait=true", "--timeout=60s") })
}

func clusterIPNS(ns, svc string) string {
	return mustKubectl("get", "svc", "-n", ns, svc, "-o", "jsonpath={.spec.clusterIP}")
}

func clusterIP(svc string) string {
	return mustKubectl("get", "svc", svc, "-o", "jsonpath={.spec.clusterIP}")
}

type podList struct {
	Items []struct {
		Metadata struct{ Name, UID string }
		Status   struct {
			PodIP             string
			ContainerStatuses []struct{ RestartCount int32 }
		}
	}
}

func pods(selector string) podList {
	var pl podList
	Expect(json.Unmarshal([]byte(mustKubectl("get", "pods", "-l", selector, "-o", "json")), &pl)).To(Succeed())
	return pl
}

func runtimeContainers(uid string) []*runtimeapi.Container {
	cs, err := rt.ListContainers(context.Background(), &runtimeapi.ContainerFilter{LabelSelector: map[string]string{podplan.LabelPodUID: uid}})
	Expect(err).NotTo(HaveOccurred())
	return cs
}

var _ = Describe("A nodekeeper cluster driven by kubectl", Ordered, func() {
	var leaseAtStart string
	BeforeAll(func() {
		leaseAtStart = mustKubectl("get", "lease", "-n", "kube-node-lease", node, "-o", "jsonpath={.spec.renewTime}")
	})

	It("runs a 3-replica Deployment and serves its Service on the ClusterIP and a NodePort", func() {
		mustKubectl("apply", "-f", filepath.Join(root, "examples", "hello.yaml"))
		mustKubectl("rollout", "status", "deployment/hello", "--timeout=180s")
		Eventually(func() string {
			return mustKubectl("get", "endpointslices", "-l", "kubernetes.io/service-name=hello",
				"-o", `jsonpath={range .items[*].endpoints[?(@.conditions.ready==true)]}{.addresses[0]}{" "}{end}`)
		}, time.Minute, time.Second).Should(MatchRegexp(`^(\S+ ){3}$`))
		names := map[string]bool{}
		for _, p := range pods("app=hello").Items {
			names[p.Metadata.Name] = true
		}
		Expect(names).To(HaveLen(3))
		cip := clusterIP("hello")
		var h map[string]int
		Eventually(func() map[string]int {
			h = netnstest.Histogram(netns, "http://"+cip+"/", 60)
			return h
		}, time.Minute, time.Second).Should(HaveLen(3))
		for n := range h {
			Expect(names).To(HaveKey(n), "answer from a pod that is not a replica: %v", h)
		}
		Eventually(func() (string, error) { return netnstest.Get(outside, "http://10.250.0.1:30080/") }, time.Minute, time.Second).
			Should(HavePrefix("hello-"))
	})

	It("gives the pods what in-cluster clients need: a service account token volume and KUBERNETES_SERVICE_HOST", func() {
		p := pods("app=hello").Items[0]
		var id string
		for _, c := range runtimeContainers(p.Metadata.UID) {
			if c.State == runtimeapi.ContainerState_CONTAINER_RUNNING {
				id = c.Id
			}
		}
		Expect(id).NotTo(BeEmpty())
		exec := func(cmd string) string {
			res, err := rt.ExecSync(context.Background(), id, []string{"sh", "-c", cmd}, 10*time.Second)
			Expect(err).NotTo(HaveOccurred())
			Expect(res.ExitCode).To(BeZero(), "%s: %s", cmd, res.Stderr)
			return strings.TrimSpace(string(res.Stdout))
		}
		sa := "/var/run/secrets/kubernetes.io/serviceaccount"
		Expect(exec("cat " + sa + "/namespace")).To(Equal("default"))
		Expect(exec("head -c 3 "+sa+"/token")).To(Equal("eyJ"), "a JWT from the TokenRequest API")
		Expect(exec("head -1 " + sa + "/ca.crt")).To(Equal("-----BEGIN CERTIFICATE-----"))
		Expect(exec("echo $KUBERNETES_SERVICE_HOST:$KUBERNETES_SERVICE_PORT")).To(Equal(clusterIPNS("default", "kubernetes") + ":443"))
		Expect(exec("echo $HELLO_SERVICE_HOST")).To(Equal(clusterIP("hello")))
		// the API server answers through the kubernetes Service (its replies come back
		// over the node's veth because the node masquerades pods going to the host)
		Expect(exec("nc -w 5 $KUBERNETES_SERVICE_HOST $KUBERNETES_SERVICE_PORT </dev/null && echo connected")).To(Equal("connected"))
	})

	It("serves kubectl logs through the API server's node proxy", func() {
		manifest := `
apiVersion: v1
kind: Pod
metadata: {name: talker}
spec:
  terminationGracePeriodSeconds: 1
  containers:
  - name: main
    image: docker.io/library/busybox:local
    command: ["sh", "-c", "for i in 1 2 3; do echo line $i; done; exec sleep 3600"]
`
		applyManifest(manifest)
		Eventually(func() (string, error) { return kubectl("logs", "talker") }, time.Minute, time.Second).Should(Equal("line 1\nline 2\nline 3\n"))
		Expect(kubectl("logs", "talker", "--tail=1")).To(Equal("line 3\n"))
		Expect(kubectl("get", "--raw", "/api/v1/nodes/"+node+"/proxy/healthz")).To(Equal("ok"))
		Expect(kubectl("exec", "talker", "--", "sh", "-c", "echo hi from $(hostname)")).To(Equal("hi from talker\n"))
		Expect(mustKubectl("get", "node", node, "-o", "jsonpath={.status.daemonEndpoints.kubeletEndpoint.Port}")).To(Equal("10250"))
	})

	It("resolves Service names through the cluster DNS (CoreDNS behind kube-dns) and fetches with wget", func() {
		applyManifest(`
apiVersion: v1
kind: Pod
metadata: {name: resolver}
spec:
  terminationGracePeriodSeconds: 1
  containers: [{name: main, image: docker.io/library/busybox:local, command: [sleep, "3600"]}]
`)
		mustKubectl("wait", "--for=condition=Ready", "pod/resolver", "--timeout=60s")
		dnsIP := clusterIPNS("kube-system", "kube-dns")
		Expect(kubectl("exec", "resolver", "--", "cat", "/etc/resolv.conf")).To(ContainSubstring("nameserver " + dnsIP + "\n"))
		// nslookup applies the search list, as the pod's own lookups do
		out, err := kubectl("exec", "resolver", "--", "nslookup", "kubernetes.default")
		Expect(err).NotTo(HaveOccurred(), out)
		Expect(out).To(ContainSubstring("Name:\tkubernetes.default.svc.cluster.local\nAddress: " + clusterIPNS("default", "kubernetes") + "\n"))
		// wget (not busybox-static's, which dies with SIGSEGV) by short and full name
		for _, u := range []string{"http://hello/", "http://hello.default.svc.cluster.local/"} {
			Eventually(func() (string, error) { return kubectl("exec", "resolver", "--", "wget", "-q", "-T", "5", "-O-", u) },
				30*time.Second, time.Second).Should(HavePrefix("hello-"), u)
		}
		// and from the shell, which runs busybox's own applets before $PATH
		Expect(kubectl("exec", "resolver", "--", "sh", "-c", "wget -q -T 5 -O- http://hello/ && nslookup kubernetes.default >/dev/null && echo both")).
			To(HaveSuffix("both\n"))
		_, err = kubectl("exec", "resolver", "--", "nslookup", "nonexistent.default.svc.cluster.local")
		Expect(err).To(HaveOccurred(), "a name that does not exist must not resolve")
	})

	It("forwards a local port to a pod with kubectl port-forward", func() {
		manifest := `
apiVersion: v1
kind: Pod
metadata: {name: forwarded}
spec:
  terminationGracePeriodSeconds: 1
  containers:
  - name: httpd
    image: docker.io/library/busybox:local
    command: ["sh", "-c", "mkdir -p /www && echo forwarded > /www/index.html && exec httpd -f -p 8080 -h /www"]
`
		applyManifest(manifest)
		Eventually(func() (string, error) {
			return kubectl("get", "pod", "forwarded", "-o", "jsonpath={.status.phase}")
		}, time.Minute, time.Second).Should(Equal("Running"))
		pf := exec.Command(kubectlBin, "--kubeconfig", kubeconfig, "port-forward", "--address", "127.0.0.1", "pod/forwarded", "18089:8080")
		pf.Stdout, pf.Stderr = GinkgoWriter, GinkgoWriter
		Expect(pf.Start()).To(Succeed())
		DeferCleanup(func() { _ = pf.Process.Kill(); _ = pf.Wait() })
		Eventually(func() (string, error) {
			resp, err := http.Get("http://127.0.0.1:18089/")
			if err != nil {
				return "", err
			}
			defer resp.Body.Close()
			b, err := io.ReadAll(resp.Body)
			return string(b), err
		}, 30*time.Second, 500*time.Millisecond).Should(Equal("forwarded\n"))
	})

	It("attaches to a pod's stdin with kubectl attach, and serves its stats through the node proxy", func() {
		manifest := `
apiVersion: v1
kind: Pod
metadata: {name: reader}
spec:
  terminationGracePeriodSeconds: 1
  containers:
  - name: main
    image: docker.io/library/busybox:local
    stdin: true
    command: ["sh", "-c", "echo ready; while read l; do echo got:$l; done"]
`
		applyManifest(manifest)
		Eventually(func() (string, error) { return kubectl("logs", "reader") }, time.Minute, time.Second).Should(Equal("ready\n"))
		// kubectl attach sends a line and shows the container's answer; then its stdin
		// ends (the container's stays open: stdinOnce is false)
		ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
		defer cancel()
		at := exec.CommandContext(ctx, kubectlBin, "--kubeconfig", kubeconfig, "attach", "-i", "reader", "-c", "main")
		stdin, err := at.StdinPipe()
		Expect(err).NotTo(HaveOccurred())
		out := gbytes.NewBuffer()
		at.Stdout, at.Stderr = io.MultiWriter(out, GinkgoWriter), GinkgoWriter
		Expect(at.Start()).To(Succeed())
		DeferCleanup(func() { _ = at.Process.Kill(); _ = at.Wait() })
		Eventually(func() error { _, err := io.WriteString(stdin, "hello\n"); return err }, 10*time.Second, time.Second).Should(Succeed())
		Eventually(out, 30*time.Second).Should(gbytes.Say("got:hello"), "kubectl attach shows the container's answer")
		Expect(stdin.Close()).To(Succeed())
		Eventually(func() (string, error) { return kubectl("logs", "reader") }, 30*time.Second, time.Second).Should(HavePrefix("ready\ngot:hello\n"))

		var summary struct {
			Node struct {
				NodeName string
				CPU      struct{ UsageCoreNanoSeconds uint64 }
				Memory   struct{ WorkingSetBytes uint64 }
				Fs       struct{ CapacityBytes uint64 }
			}
			Pods []struct {
				PodRef     struct{ Name, Namespace string }
				Containers []struct {
					Name   string
					Memory struct{ WorkingSetBytes uint64 }
				}
				Network *struct{ Name string }
			}
		}
		raw := mustKubectl("get", "--raw", "/api/v1/nodes/"+node+"/proxy/stats/summary")
		Expect(json.Unmarshal([]byte(raw), &summary)).To(Succeed())
		Expect(summary.Node.NodeName).To(Equal(node))
		Expect(summary.Node.CPU.UsageCoreNanoSeconds).To(BeNumerically(">", 0))
		Expect(summary.Node.Memory.WorkingSetBytes).To(BeNumerically(">", 0))
		Expect(summary.Node.Fs.CapacityBytes).To(BeNumerically(">", 0))
		found := map[string]bool{}
		for _, p := range summary.Pods {
			if p.PodRef.Namespace != "default" {
				continue
			}
			found[p.PodRef.Name] = true
			Expect(p.Containers).NotTo(BeEmpty(), "pod %s", p.PodRef.Name)
			Expect(p.Containers[0].Memory.WorkingSetBytes).To(BeNumerically(">", 0), "pod %s", p.PodRef.Name)
			Expect(p.Network).NotTo(BeNil(), "pod %s has no network stats", p.PodRef.Name)
			Expect(p.Network.Name).To(Equal("eth0"))
		}
		Expect(found).To(HaveKey("reader"))
		for _, p := range pods("app=hello").Items {
			Expect(found).To(HaveKey(p.Metadata.Name))
		}
		metrics := mustKubectl("get", "--raw", "/api/v1/nodes/"+node+"/proxy/metrics/resource")
		Expect(metrics).To(MatchRegexp(`(?m)^container_memory_working_set_bytes\{container="main",namespace="default",pod="reader"\} [0-9.e+]+ [0-9]+$`))
		Expect(metrics).To(MatchRegexp(`(?m)^node_cpu_usage_seconds_total [0-9.e+]+ [0-9]+$`))
		Expect(metrics).To(ContainSubstring("\nscrape_error 0\n"))
	})

	It("follows a scale to 1 and back to 3", func() {
		mustKubectl("scale", "deployment/hello", "--replicas=1")
		Eventually(func() int { return len(pods("app=hello").Items) }, 2*time.Minute, time.Second).Should(Equal(1))
		left := pods("app=hello").Items[0].Metadata.Name
		cip := clusterIP("hello")
		Eventually(func() map[string]int { return netnstest.Histogram(netns, "http://"+cip+"/", 20) }, time.Minute, time.Second).
			Should(Equal(map[string]int{left: 20}))
		mustKubectl("scale", "deployment/hello", "--replicas=3")
		mustKubectl("rollout", "status", "deployment/hello", "--timeout=180s")
		Eventually(func() map[string]int { return netnstest.Histogram(netns, "http://"+cip+"/", 60) }, time.Minute, time.Second).Should(HaveLen(3))
	})

	It("replaces a deleted pod, whose containers are removed once it has left the API", func() {
		victim := pods("app=hello").Items[0]
		Expect(runtimeContainers(victim.Metadata.UID)).NotTo(BeEmpty())
		mustKubectl("delete", "pod", victim.Metadata.Name, "--wait=true", "--timeout=60s")
		// as the kubelet, the containers (and their logs) stay until the Pod object is
		// deleted, and go right after
		Eventually(func() int { return len(runtimeContainers(victim.Metadata.UID)) }, 30*time.Second, 200*time.Millisecond).
			Should(BeZero(), "the pod left the API but its containers remain")
		mustKubectl("rollout", "status", "deployment/hello", "--timeout=180s")
		Eventually(func() int { return len(pods("app=hello").Items) }, time.Minute, time.Second).Should(Equal(3))
	})

	It("restarts a container killed in the runtime and kubectl shows the restart", func() {
		p := pods("app=hello").Items[0]
		cs := runtimeContainers(p.Metadata.UID)
		var running string
		for _, c := range cs {
			if c.State == runtimeapi.ContainerState_CONTAINER_RUNNING {
				running = c.Id
			}
		}
		Expect(running).NotTo(BeEmpty())
		Expect(rt.StopContainer(context.Background(), running, 0)).To(Succeed())
		Eventually(func() string {
			return mustKubectl("get", "pod", p.Metadata.Name, "-o", "jsonpath={.status.containerStatuses[0].restartCount}")
		}, time.Minute, time.Second).Should(Equal("1"))
		Expect(mustKubectl("get", "pod", p.Metadata.Name)).To(MatchRegexp(`Running\s+1 \(`))
	})

	It("removes pods, containers, sandboxes and every rule when the Deployment and Service are deleted", func() {
		uids := []string{}
		for _, p := range pods("app=hello").Items {
			uids = append(uids, p.Metadata.UID)
		}
		mustKubectl("delete", "-f", filepath.Join(root, "examples", "hello.yaml"), "--wait=true", "--timeout=120s")
		Eventually(func() int { return len(pods("app=hello").Items) }, 2*time.Minute, time.Second).Should(BeZero())
		for _, uid := range uids {
			Eventually(func() int { return len(runtimeContainers(uid)) }, time.Minute, time.Second).Should(BeZero())
			// the sandbox goes with its containers, once the pod has left the API
			Eventually(func() ([]*runtimeapi.PodSandbox, error) {
				return rt.ListPodSandbox(context.Background(), &runtimeapi.PodSandboxFilter{LabelSelector: map[string]string{podplan.LabelPodUID: uid}})
			}, 10*time.Second, 100*time.Millisecond).Should(BeEmpty())
		}
		Eventually(func() string {
			out, _ := exec.Command("ip", "netns", "exec", netns, "iptables-save").CombinedOutput()
			return string(out)
		}, time.Minute, time.Second).ShouldNot(ContainSubstring("default/hello"))
	})

	It("kept the node Ready and its Lease renewing throughout", func() {
		Expect(mustKubectl("get", "node", node, "-o", `jsonpath={.status.conditions[?(@.type=="Ready")].status}`)).To(Equal("True"))
		transitions := mustKubectl("get", "events", "--field-selector", "involvedObject.kind=Node,reason=NodeNotReady", "-o", "name")
		Expect(strings.TrimSpace(transitions)).To(BeEmpty(), "the node went NotReady during the run")
		Expect(mustKubectl("get", "lease", "-n", "kube-node-lease", node, "-o", "jsonpath={.spec.renewTime}")).NotTo(Equal(leaseAtStart))
	})

	It("keeps a pod whose readiness probe fails out of the Service's ready endpoints and traffic", func() {
		manifest := `
apiVersion: v1
kind: Service
metadata: {name: picky}
spec:
  selector: {app: picky}
  ports: [{port: 80, targetPort: 8080}]
---
apiVersion: v1
kind: Pod
metadata: {name: picky-good, labels: {app: picky}}
spec:
  terminationGracePeriodSeconds: 1
  containers:
  - name: httpd
    image: docker.io/library/busybox:local
    command: ["sh", "-c", "mkdir -p /www && hostname > /www/index.html && touch /www/ready && exec httpd -f -p 8080 -h /www"]
    readinessProbe: {httpGet: {path: /ready, port: 8080}, periodSeconds: 1}
---
apiVersion: v1
kind: Pod
metadata: {name: picky-bad, labels: {app: picky}}
spec:
  terminationGracePeriodSeconds: 1
  containers:
  - name: httpd
    image: docker.io/library/busybox:local
    command: ["sh", "-c", "mkdir -p /www && hostname > /www/index.html && exec httpd -f -p 8080 -h /www"]
    readinessProbe: {httpGet: {path: /ready, port: 8080}, periodSeconds: 1}
`
		applyManifest(manifest)
		Eventually(func() string {
			return mustKubectl("get", "pod", "picky-good", "-o", `jsonpath={.status.conditions[?(@.type=="Ready")].status}`)
		}, 2*time.Minute, time.Second).Should(Equal("True"))
		Consistently(func() string {
			return mustKubectl("get", "pod", "picky-bad", "-o", `jsonpath={.status.phase}/{.status.conditions[?(@.type=="Ready")].status}`)
		}, 5*time.Second, time.Second).Should(Equal("Running/False"))
		Eventually(func() string {
			return mustKubectl("get", "endpointslices", "-l", "kubernetes.io/service-name=picky",
				"-o", `jsonpath={range .items[*].endpoints[*]}{.targetRef.name}={.conditions.ready}{" "}{end}`)
		}, time.Minute, time.Second).Should(And(ContainSubstring("picky-good=true"), ContainSubstring("picky-bad=false")))
		cip := clusterIP("picky")
		Eventually(func() map[string]int { return netnstest.Histogram(netns, "http://"+cip+"/", 20) }, time.Minute, time.Second).
			Should(Equal(map[string]int{"picky-good": 20}))
	})
})
