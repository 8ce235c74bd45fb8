// Package charte2e installs the Helm chart, with its default values, into a `make run`
// cluster using the image `make image` builds, as an operator would: the cluster's node
// agent runs only the node part (NK_RECONCILERS=nodestatus,pods, the kubelet's job), so the
// chart's default — the Service proxy as a DaemonSet beside that kubelet — is the node's
// only kube-proxy. The DaemonSet's pod must become Ready and its rules must carry real
// Service traffic: a pod resolves names through the cluster DNS (CoreDNS behind the
// kube-dns ClusterIP) and fetches a page through a Service from a pod on the other node
// (NODES=2: one DaemonSet pod per node); `helm test` passes.
//
// Needs root (network namespaces, containerd); `make test` runs it.
package charte2e

import (
	"bytes"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

// the cluster's own names, addresses and ports: none collide with make run's or test/e2e's
var clusterEnv = map[string]string{
	"NK_NETNS": "nk-chart", "NK_HOST_IF": "nk-charth0", "NK_NODE_IF": "nk-chartn0",
	"NK_HOST_IP": "198.18.79.1", "NK_NODE_IP": "198.18.79.2", "NK_NODE_NAME": "nk-chart",
	"NK_APISERVER_PORT": "6446", "NK_ETCD_PORT": "23830", "NK_KCM_PORT": "10377", "NK_SCHED_PORT": "10379",
	"NK_CNI_BRIDGE": "nkchart0", "NK_POD_CIDR": "10.245.0.0/24", "NK_CLUSTER_CIDR": "10.245.0.0/16",
	"NK_RECONCILERS": "nodestatus,pods", "NK_DNS": "1",
	// two nodes: nk-chart-2 in netns nk-chart-2 (198.18.79.6, pods 10.245.1.0/24)
	"NODES": "2",
}

// altClusterEnv (NK_CHART_ALT=1) runs the same cluster under other names, addresses and
// ports, beside a run with clusterEnv (CI's): nk-chartx and nk-chartx-2 (198.18.97.2 and
// .6; run.sh derives the second node's netns, veths, IPs and pod range from these), with
// their own run folder and containerd state (etcd 23957: its peer port is the next one)
var altClusterEnv = map[string]string{
	"NK_NETNS": "nk-chartx", "NK_HOST_IF": "nk-cxh0", "NK_NODE_IF": "nk-cxn0",
	"NK_HOST_IP": "198.18.97.1", "NK_NODE_IP": "198.18.97.2", "NK_NODE_NAME": "nk-chartx",
	"NK_APISERVER_PORT": "6497", "NK_ETCD_PORT": "23957", "NK_KCM_PORT": "10301", "NK_SCHED_PORT": "10302",
	"NK_CNI_BRIDGE": "nkchx0", "NK_POD_CIDR": "10.251.0.0/24", "NK_CLUSTER_CIDR": "10.251.0.0/16",
	"NK_RECONCILERS": "nodestatus,pods", "NK_DNS": "1",
	// nk-chartx-2 in netns nk-chartx-2 (veths nk-cxh1/nk-cxn1, 198.18.97.5/.6, pods 10.251.1.0/24)
	"NODES": "2",
}

// clusterNames picks the environment (NK_CHART_ALT=1: altClusterEnv) and its run folder
// and containerd state folder names under the cache
func clusterNames() (env map[string]string, runDir, criCache string) {
	if os.Getenv("NK_CHART_ALT") == "1" {
		return altClusterEnv, "chart-e2ex-run", "chart-e2ex"
	}
	return clusterEnv, "chart-e2e-run", "chart-e2e"
}

type cluster struct {
	root, runDir, criCache, kubeconfig, kubectl, helm string
	vars                                              map[string]string
}

func cacheDir() string {
	if c := os.Getenv("NK_CACHE"); c != "" {
		return c
	}
	home, _ := os.UserHomeDir()
	return filepath.Join(home, ".cache", "nodekeeper")
}

func (c *cluster) env() []string {
	env := os.Environ()
	for k, v := range c.vars {
		env = append(env, k+"="+v)
	}
	return append(env, "NK_RUN_DIR="+c.runDir, "NK_CRI_CACHE="+c.criCache)
}

func (c *cluster) script(t *testing.T, name string, args ...string) string {
	t.Helper()
	cmd := exec.Command(filepath.Join(c.root, "hack", name), args...)
	cmd.Env = c.env()
	cmd.Dir = c.root
	var out, errb bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &errb
	if err := cmd.Run(); err != nil {
		t.Fatalf("hack/%s %v: %v\n%s", name, args, err, lastLines(errb.String(), 40))
	}
	return strings.TrimSpace(out.String())
}

func (c *cluster) run(name string, args ...string) (string, error) {
	cmd := exec.Command(name, args...)
	cmd.Env = append(os.Environ(), "KUBECONFIG="+c.kubeconfig)
	cmd.Dir = c.root
	var out, errb bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &errb
	err := cmd.Run()
	if err != nil {
		return out.String(), fmt.Errorf("%s %s: %w\n%s%s", filepath.Base(name), strings.Join(args, " "), err, out.String(), errb.String())
	}
	return out.String(), nil
}

func (c *cluster) kubectlOK(t *testing.T, args ...string) string {
	t.Helper()
	out, err := c.run(c.kubectl, args...)
	if err != nil {
		t.Fatal(err)
	}
	return out
}

func eventually(t *testing.T, d time.Duration, f func() error) {
	t.Helper()
	deadline := time.Now().Add(d)
	for {
		err := f()
		if err == nil {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("after %s: %v", d, err)
		}
		time.Sleep(2 * time.Second)
	}
}

func lastLines(s string, n int) string {
	l := strings.Split(strings.TrimRight(s, "\n"), "\n")
	if len(l) > n {
		l = l[len(l)-n:]
	}
	return strings.Join(l, "\n")
}

func TestChartDefaultInstall(t *testing.T) {
	if os.Geteuid() != 0 {
		t.Skip("the cluster needs root (network namespaces, containerd)")
	}
	wd, err := os.Getwd()
	if err != nil {
		t.Fatal(err)
	}
	vars, runDir, criCache := clusterNames()
	c := &cluster{root: filepath.Join(wd, "..", ".."), runDir: filepath.Join(cacheDir(), runDir), criCache: filepath.Join(cacheDir(), criCache), vars: vars}
	node1, node2 := vars["NK_NODE_NAME"], vars["NK_NODE_NAME"]+"-2"
	c.kubeconfig = filepath.Join(c.runDir, "admin.kubeconfig")
	c.helm = c.script(t, "helm.sh")
	c.script(t, "run.sh", "down") // leftovers of an interrupted run
	if err := os.RemoveAll(c.runDir); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		if t.Failed() {
			out, _ := c.run(c.kubectl, "get", "pods", "-A", "-o", "wide")
			t.Logf("pods:\n%s", out)
			out, _ = c.run(c.kubectl, "-n", "nodekeeper-system", "logs", "ds/nodekeeper", "--tail=40")
			t.Logf("the chart's agent:\n%s", out)
		}
		c.script(t, "run.sh", "down")
	})
	c.script(t, "run.sh", "up")
	c.kubectl = filepath.Join(c.script(t, "k8s-bins.sh"), "kubectl")

	// the image, as `make image` builds it (run.sh up built bin/nodekeeper), into the node
	tarball := filepath.Join(t.TempDir(), "nodekeeper-image.tar")
	cmd := exec.Command(filepath.Join(c.root, "hack", "image.sh"))
	cmd.Env = append(os.Environ(), "IMAGE_TAR="+tarball)
	if out, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("hack/image.sh: %v\n%s", err, out)
	}
	c.script(t, "run.sh", "load-image", tarball)

	eventually(t, 2*time.Minute, func() error {
		out, err := c.run(c.kubectl, "get", "nodes", "-o", `jsonpath={range .items[*]}{.metadata.name}={.status.conditions[?(@.type=="Ready")].status} {end}`)
		if want := node1 + "=True " + node2 + "=True "; err == nil && out != want {
			err = fmt.Errorf("nodes %q, want %s and %s Ready", out, node1, node2)
		}
		return err
	})
	eventually(t, time.Minute, func() error { _, err := c.run(c.kubectl, "get", "serviceaccount", "default"); return err })

	// the chart's defaults; only where the API server is (no proxy runs yet, so the
	// kubernetes Service's ClusterIP cannot be used) and the test image of make run
	if _, err := c.run(c.helm, "install", "nodekeeper", "charts/nodekeeper", "-n", "nodekeeper-system", "--create-namespace",
		"--set", "apiServer.host="+vars["NK_HOST_IP"], "--set", "apiServer.port="+vars["NK_APISERVER_PORT"],
		"--set", "test.image=docker.io/library/busybox:local", "--wait", "--timeout", "3m"); err != nil {
		t.Fatal(err)
	}
	c.kubectlOK(t, "-n", "nodekeeper-system", "rollout", "status", "ds/nodekeeper", "--timeout=2m")
	ds := c.kubectlOK(t, "-n", "nodekeeper-system", "get", "ds", "nodekeeper", "-o",
		`jsonpath={.status.numberReady}/{.status.desiredNumberScheduled} {.spec.template.spec.containers[0].image} {.spec.template.spec.containers[0].securityContext.privileged} {.spec.template.spec.containers[0].securityContext.capabilities.add}`)
	t.Logf("DaemonSet: %s", ds)
	if !strings.HasPrefix(ds, "2/2 nodekeeper/nodekeeper:v0.1.0-dev false ") || !strings.Contains(ds, "NET_ADMIN") {
		t.Errorf("DaemonSet %q: want 2/2 ready (a pod per node), make image's image, not privileged, NET_ADMIN", ds)
	}

	// Service traffic through the chart's proxy: DNS (kube-dns ClusterIP -> CoreDNS) and a
	// ClusterIP Service by name
	c.apply(t, fmt.Sprintf(`
apiVersion: v1
kind: Pod
metadata: {name: client}
spec:
  nodeName: %s
  containers: [{name: c, image: docker.io/library/busybox:local, imagePullPolicy: Never, command: [sleep, "3600"]}]
---
apiVersion: v1
kind: Pod
metadata: {name: web, labels: {app: web}}
spec:
  nodeName: %s
  containers: [{name: c, image: docker.io/library/busybox:local, imagePullPolicy: Never, command: [httpd, -f, -p, "8080", -h, /www]}]
---
apiVersion: v1
kind: Service
metadata: {name: web}
spec:
  selector: {app: web}
  ports: [{port: 80, targetPort: 8080}]
`, node1, node2))
	c.kubectlOK(t, "wait", "--for=condition=Ready", "pod/client", "pod/web", "--timeout=90s")
	eventually(t, time.Minute, func() error {
		out, err := c.run(c.kubectl, "exec", "client", "--", "nslookup", "kubernetes.default")
		if err == nil && !strings.Contains(out, "Name:\tkubernetes.default.svc.cluster.local") {
			err = fmt.Errorf("nslookup kubernetes.default:\n%s", out)
		}
		return err
	})
	eventually(t, time.Minute, func() error {
		out, err := c.run(c.kubectl, "exec", "client", "--", "wget", "-q", "-T", "5", "-O-", "http://web.default.svc.cluster.local/")
		if err == nil && !strings.Contains(out, "hello from nodekeeper busybox") {
			err = fmt.Errorf("wget http://web/: %q", out)
		}
		return err
	})
	if out, err := c.run(c.helm, "test", "nodekeeper", "-n", "nodekeeper-system", "--logs", "--timeout", "2m"); err != nil {
		t.Errorf("helm test: %v", err)
	} else {
		t.Logf("helm test:\n%s", lastLines(out, 8))
	}
	if t.Failed() {
		return // keep the release for the logs in Cleanup
	}
	if _, err := c.run(c.helm, "uninstall", "nodekeeper", "-n", "nodekeeper-system", "--wait"); err != nil {
		t.Error(err)
	}
}

func (c *cluster) apply(t *testing.T, manifests string) {
	t.Helper()
	cmd := exec.Command(c.kubectl, "--kubeconfig", c.kubeconfig, "apply", "-f", "-")
	cmd.Stdin = strings.NewReader(manifests)
	if out, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("kubectl apply: %v\n%s", err, out)
	}
}
