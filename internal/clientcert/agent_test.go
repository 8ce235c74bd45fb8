package clientcert_test

import (
	"bytes"
	"context"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"testing"
	"time"

	coordinationv1 "k8s.io/api/coordination/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
)

// The agent binary itself, given nothing but the bootstrap kubeconfig (a bootstrap
// token), registers its Node and holds its Lease as system:node:<name>: what it can do
// is what TLS bootstrap and the Node authorizer give a kubelet. (The node status
// reconciler only: no runtime is needed for registration.)
func TestAgentRunsWithOnlyBootstrapCredentials(t *testing.T) {
	c := start(t)
	_, here, _, _ := runtime.Caller(0)
	repo := filepath.Join(filepath.Dir(here), "..", "..")
	dir := t.TempDir()
	bin := filepath.Join(dir, "nodekeeper")
	build := exec.Command("go", "build", "-o", bin, ".")
	build.Dir = repo
	build.Env = append(os.Environ(), "CGO_ENABLED=0")
	if out, err := build.CombinedOutput(); err != nil {
		t.Fatalf("building the agent: %v\n%s", err, out)
	}
	cfg := filepath.Join(dir, "agent.yaml")
	must(t, os.WriteFile(cfg, []byte(`apiVersion: nodekeeper.io/v1alpha1
kind: AgentConfiguration
nodeName: nk-agent
nodeIP: 192.0.2.77
rootDir: `+filepath.Join(dir, "root")+`
containerRuntimeEndpoint: unix://`+filepath.Join(dir, "no-runtime.sock")+`
healthzBindAddress: "0"
metricsBindAddress: "0"
rotateCertificates: true
`), 0o600))
	var logs bytes.Buffer
	agent := exec.Command(bin, "--config", cfg, "--reconcilers", "nodestatus", "--bootstrap-kubeconfig", c.bootstrap)
	agent.Stdout, agent.Stderr = &logs, &logs
	must(t, agent.Start())
	defer func() {
		_ = agent.Process.Kill()
		_, _ = agent.Process.Wait()
		if t.Failed() {
			t.Logf("agent log:\n%s", tail(logs.String(), 40))
		}
	}()
	ctx := context.Background()
	var lease *coordinationv1.Lease
	deadline := time.Now().Add(90 * time.Second)
	for {
		if l, err := c.admin.CoordinationV1().Leases("kube-node-lease").Get(ctx, "nk-agent", metav1.GetOptions{}); err == nil {
			lease = l
			break
		}
		if time.Now().After(deadline) {
			t.Fatal("the agent registered no Lease")
		}
		time.Sleep(300 * time.Millisecond)
	}
	node, err := c.admin.CoreV1().Nodes().Get(ctx, "nk-agent", metav1.GetOptions{})
	must(t, err)
	if lease.Spec.HolderIdentity == nil || *lease.Spec.HolderIdentity != "nk-agent" {
		t.Errorf("lease holder %v", lease.Spec.HolderIdentity)
	}
	csrs, err := c.admin.CertificatesV1().CertificateSigningRequests().List(ctx, metav1.ListOptions{})
	must(t, err)
	if len(csrs.Items) != 1 || csrs.Items[0].Spec.Username != "system:bootstrap:abcdef" {
		t.Errorf("CSRs: %+v", csrs.Items)
	}
	if _, err := os.Stat(filepath.Join(dir, "root", "pki", "kubeconfig")); err != nil {
		t.Errorf("the node's kubeconfig: %v", err)
	}
	if node.Status.Addresses == nil || node.Status.NodeInfo.KubeletVersion == "" {
		t.Errorf("node status not written by the agent: %+v", node.Status)
	}
}
