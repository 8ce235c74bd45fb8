package kubeletapi

import (
	"context"
	"io"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"testing"

	authenticationv1 "k8s.io/api/authentication/v1"
	corev1 "k8s.io/api/core/v1"
	rbacv1 "k8s.io/api/rbac/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	runtimeapi "k8s.io/cri-api/pkg/apis/runtime/v1"

	"github.com/nodekeeper/nodekeeper/api/v1alpha1"
	testenv "github.com/nodekeeper/nodekeeper/envtest"
	"github.com/nodekeeper/nodekeeper/internal/podplan"
	"github.com/nodekeeper/nodekeeper/runtime/cri/fake"
)

func must(t *testing.T, err error) {
	t.Helper()
	if err != nil {
		t.Fatal(err)
	}
}

func TestContainerLogsAuthenticatedAndAuthorized(t *testing.T) {
	env, err := testenv.Start()
	if err != nil {
		t.Fatal(err)
	}
	defer env.Stop()
	ctx := context.Background()
	c := env.Client
	const node, ns = "api-node", "logs"
	must(t, c.Create(ctx, &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: ns}}))
	// reader may read node logs (nodes/log); nobody may do nothing
	must(t, c.Create(ctx, &rbacv1.ClusterRole{ObjectMeta: metav1.ObjectMeta{Name: "node-log-reader"},
		Rules: []rbacv1.PolicyRule{{APIGroups: []string{""}, Resources: []string{"nodes/log"}, Verbs: []string{"get"}}}}))
	must(t, c.Create(ctx, &rbacv1.ClusterRoleBinding{ObjectMeta: metav1.ObjectMeta{Name: "node-log-reader"},
		RoleRef:  rbacv1.RoleRef{APIGroup: "rbac.authorization.k8s.io", Kind: "ClusterRole", Name: "node-log-reader"},
		Subjects: []rbacv1.Subject{{Kind: "ServiceAccount", Namespace: ns, Name: "reader"}}}))
	token := func(name string) string {
		sa := &corev1.ServiceAccount{ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: name}}
		must(t, c.Create(ctx, sa))
		tr := &authenticationv1.TokenRequest{}
		must(t, c.SubResource("token").Create(ctx, sa, tr))
		return tr.Status.Token
	}
	must(t, c.Create(ctx, &rbacv1.ClusterRoleBinding{ObjectMeta: metav1.ObjectMeta{Name: "node-admin"},
		RoleRef:  rbacv1.RoleRef{APIGroup: "rbac.authorization.k8s.io", Kind: "ClusterRole", Name: "system:kubelet-api-admin"},
		Subjects: []rbacv1.Subject{{Kind: "ServiceAccount", Namespace: ns, Name: "admin"}}}))
	reader, nobody, admin := token("reader"), token("nobody"), token("admin")

	// a pod on the node with a container whose CRI log holds three lines, the last one
	// written in two parts
	pod := &corev1.Pod{ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: "talker"},
		Spec: corev1.PodSpec{NodeName: node, Containers: []corev1.Container{{Name: "app", Image: "busybox"}}}}
	must(t, c.Create(ctx, pod))
	other := &corev1.Pod{ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: "elsewhere"},
		Spec: corev1.PodSpec{NodeName: "another-node", Containers: []corev1.Container{{Name: "app", Image: "busybox"}}}}
	must(t, c.Create(ctx, other))
	rt := fake.New()
	rt.LoadImage("docker.io/library/busybox:local", 1)
	logDir := t.TempDir()
	labels := map[string]string{podplan.LabelPodUID: string(pod.UID), podplan.LabelContainerName: "app"}
	sbCfg := &runtimeapi.PodSandboxConfig{Metadata: &runtimeapi.PodSandboxMetadata{Name: "talker", Namespace: ns, Uid: string(pod.UID)}, LogDirectory: logDir}
	sb, err := rt.RunPodSandbox(ctx, sbCfg, "")
	must(t, err)
	id, err := rt.CreateContainer(ctx, sb, &runtimeapi.ContainerConfig{Metadata: &runtimeapi.ContainerMetadata{Name: "app"},
		Image: &runtimeapi.ImageSpec{Image: "docker.io/library/busybox:local"}, Labels: labels, LogPath: "app/0.log"}, sbCfg)
	must(t, err)
	must(t, os.MkdirAll(filepath.Join(logDir, "app"), 0o755))
	must(t, os.WriteFile(filepath.Join(logDir, "app", "0.log"), []byte(
		"2026-11-23T10:00:00.000000001Z stdout F line 1\n"+
			"2026-11-23T10:00:01.000000001Z stderr F line 2\n"+
			"2026-11-23T10:00:02.000000001Z stdout P line \n"+
			"2026-11-23T10:00:02.000000002Z stdout F 3\n"), 0o644))
	_ = id

	cfg := &v1alpha1.AgentConfiguration{NodeName: node, StaticPodPath: "/etc/kubernetes/manifests"}
	v1alpha1.SetDefaults(cfg)
	s := &Server{NodeName: node, Pods: c, Reviews: c, Runtime: rt, Config: cfg}
	srv := httptest.NewServer(s.Handler())
	defer srv.Close()
	get := func(tok, path string) (int, string) {
		req, _ := http.NewRequest(http.MethodGet, srv.URL+path, nil)
		if tok != "" {
			req.Header.Set("Authorization", "Bearer "+tok)
		}
		resp, err := http.DefaultClient.Do(req)
		must(t, err)
		defer resp.Body.Close()
		b, _ := io.ReadAll(resp.Body)
		return resp.StatusCode, string(b)
	}
	logs := "/containerLogs/" + ns + "/talker/app"
	for _, tc := range []struct {
		name, tok, path string
		code            int
		body            string
	}{
		{"anonymous", "", logs, 401, "Unauthorized"},
		{"bad token", "not-a-token", logs, 401, "Unauthorized"},
		{"not allowed", nobody, logs, 403, "Forbidden"},
		{"logs", reader, logs, 200, "line 1\nline 2\nline 3\n"},
		{"tail", reader, logs + "?tailLines=1", 200, "line 3\n"},
		{"limit", reader, logs + "?limitBytes=8", 200, "line 1\nl"},
		{"timestamps", reader, logs + "?tailLines=1&timestamps=true", 200, "2026-11-23T10:00:02.000000002Z line 3\n"}, // a joined line carries its last part's time
		{"since", reader, logs + "?sinceTime=2026-11-23T10:00:01Z", 200, "line 2\nline 3\n"},
		{"no previous instance", reader, logs + "?previous=true", 404, "not available"},
		{"no such container", reader, "/containerLogs/" + ns + "/talker/nope", 404, "not available"},
		{"pod on another node", reader, "/containerLogs/" + ns + "/elsewhere/app", 404, "not found on node"},
		{"nodes/log does not grant exec", reader, "/exec/" + ns + "/talker/app?command=sh", 403, "Forbidden"},
		{"nodes/log does not grant /pods", reader, "/pods", 403, "Forbidden"},
		{"nodes/log does not grant /configz", reader, "/configz", 403, "Forbidden"},
		{"configz", admin, "/configz", 200, `"staticPodPath":"/etc/kubernetes/manifests"`},
		{"configz shape", admin, "/configz", 200, `{"kubeletconfig":{`},
		{"pods", admin, "/pods", 200, `"name":"talker"`},
		{"metrics", admin, "/metrics", 200, ""},
		{"probe metrics", admin, "/metrics/probes", 200, ""},
	} {
		code, body := get(tc.tok, tc.path)
		if code != tc.code || !strings.Contains(body, tc.body) {
			t.Errorf("%s: GET %s = %d %q, want %d containing %q", tc.name, tc.path, code, body, tc.code, tc.body)
		}
	}
}
