package kubeletapi

import (
	"context"
	"crypto/tls"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	authenticationv1 "k8s.io/api/authentication/v1"
	corev1 "k8s.io/api/core/v1"
	rbacv1 "k8s.io/api/rbac/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	runtimeapi "k8s.io/cri-api/pkg/apis/runtime/v1"

	"github.com/nodekeeper/nodekeeper/api/v1alpha1"
	testenv "github.com/nodekeeper/nodekeeper/envtest"
	"github.com/nodekeeper/nodekeeper/internal/podplan"
	"github.com/nodekeeper/nodekeeper/internal/stats"
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
		Spec: corev1.PodSpec{NodeName: node, Containers: []corev1.Container{{Name: "app", Image: "busybox"}, {Name: "late", Image: "busybox"}}}}
	must(t, c.Create(ctx, pod))
	// "late" is not created yet
	pod.Status.ContainerStatuses = []corev1.ContainerStatus{{Name: "app", State: corev1.ContainerState{Running: &corev1.ContainerStateRunning{}}},
		{Name: "late", State: corev1.ContainerState{Waiting: &corev1.ContainerStateWaiting{Reason: "ContainerCreating"}}}}
	must(t, c.Status().Update(ctx, pod))
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
	nodeLogs := t.TempDir()
	must(t, os.WriteFile(filepath.Join(nodeLogs, "syslog"), []byte("node log line\n"), 0o644))
	s := &Server{NodeName: node, Pods: c, Reviews: c, Runtime: rt, Config: cfg, LogDir: nodeLogs}
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
		// as the kubelet: 404 for a container the spec does not have, else 400 saying why
		{"no previous instance", reader, logs + "?previous=true", 400, `previous terminated container "app" in pod "talker" not found`},
		{"not created yet", reader, "/containerLogs/" + ns + "/talker/late", 400, `container "late" in pod "talker" is waiting to start: ContainerCreating`},
		{"no such container", reader, "/containerLogs/" + ns + "/talker/nope", 404, `container "nope" not found in pod "talker"`},
		{"pod on another node", reader, "/containerLogs/" + ns + "/elsewhere/app", 404, "not found on node"},
		{"nodes/log does not grant exec", reader, "/exec/" + ns + "/talker/app?command=sh", 403, "Forbidden"},
		{"nodes/log does not grant /pods", reader, "/pods", 403, "Forbidden"},
		{"nodes/log does not grant /configz", reader, "/configz", 403, "Forbidden"},
		{"configz", admin, "/configz", 200, `"staticPodPath":"/etc/kubernetes/manifests"`},
		{"configz shape", admin, "/configz", 200, `{"kubeletconfig":{`},
		{"pods", admin, "/pods", 200, `"name":"talker"`},
		{"node logs with nodes/log", reader, "/logs/syslog", 200, "node log line\n"},
		{"node log folder", reader, "/logs/", 200, "syslog"},
		{"node logs refused without nodes/log", nobody, "/logs/syslog", 403, "Forbidden"},
		{"named health check", admin, "/healthz/syncloop", 200, "ok"},
		{"metrics", admin, "/metrics", 200, ""},
		{"probe metrics", admin, "/metrics/probes", 200, ""},
	} {
		code, body := get(tc.tok, tc.path)
		if code != tc.code || !strings.Contains(body, tc.body) {
			t.Errorf("%s: GET %s = %d %q, want %d containing %q", tc.name, tc.path, code, body, tc.code, tc.body)
		}
	}
}

// fixedHost is a stats.HostReader with fixed readings.
type fixedHost struct{}

func (fixedHost) Node() (stats.Host, error) {
	return stats.Host{Time: time.Now(), BootTime: time.Now().Add(-time.Hour), CPUNanoSeconds: 42e9,
		Memory:     stats.Meminfo{TotalBytes: 4 << 30, FreeBytes: 2 << 30, InactiveFileBytes: 1 << 30, AnonBytes: 1 << 29},
		Interfaces: []stats.Interface{{Name: "eth0", RxBytes: 1000, TxBytes: 2000}}}, nil
}
func (fixedHost) Statfs(string) (*stats.Fs, error) {
	return &stats.Fs{CapacityBytes: 10 << 30, AvailableBytes: 4 << 30, UsedBytes: 6 << 30, Inodes: 1000, InodesFree: 400}, nil
}
func (fixedHost) NetDev(int) ([]stats.Interface, error)   { return nil, nil }
func (fixedHost) DirUsage(string) (uint64, uint64, error) { return 4096, 1, nil }

func TestStatsMetricsAttachAndReadOnlyPort(t *testing.T) {
	env, err := testenv.Start()
	if err != nil {
		t.Fatal(err)
	}
	defer env.Stop()
	ctx := context.Background()
	c := env.Client
	const node, ns = "stats-node", "stats"
	must(t, c.Create(ctx, &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: ns}}))
	token := func(name string) string {
		sa := &corev1.ServiceAccount{ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: name}}
		must(t, c.Create(ctx, sa))
		tr := &authenticationv1.TokenRequest{}
		must(t, c.SubResource("token").Create(ctx, sa, tr))
		return tr.Status.Token
	}
	bind := func(sa string, rules ...rbacv1.PolicyRule) {
		must(t, c.Create(ctx, &rbacv1.ClusterRole{ObjectMeta: metav1.ObjectMeta{Name: sa}, Rules: rules}))
		must(t, c.Create(ctx, &rbacv1.ClusterRoleBinding{ObjectMeta: metav1.ObjectMeta{Name: sa},
			RoleRef:  rbacv1.RoleRef{APIGroup: "rbac.authorization.k8s.io", Kind: "ClusterRole", Name: sa},
			Subjects: []rbacv1.Subject{{Kind: "ServiceAccount", Namespace: ns, Name: sa}}}))
	}
	// what metrics-server gets (system:metrics-server: nodes/metrics, nodes/stats)
	bind("scraper", rbacv1.PolicyRule{APIGroups: []string{""}, Resources: []string{"nodes/metrics", "nodes/stats"}, Verbs: []string{"get"}})
	bind("attacher", rbacv1.PolicyRule{APIGroups: []string{""}, Resources: []string{"nodes/proxy"}, Verbs: []string{"get", "create"}})
	scraper, attacher, nobody := token("scraper"), token("attacher"), token("nobody")

	pod := &corev1.Pod{ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: "busy"},
		Spec: corev1.PodSpec{NodeName: node, Containers: []corev1.Container{{Name: "app", Image: "busybox"}, {Name: "side", Image: "busybox"}}}}
	must(t, c.Create(ctx, pod))
	started := metav1.NewTime(time.Now().Add(-time.Minute).Truncate(time.Second))
	pod.Status.StartTime = &started
	must(t, c.Status().Update(ctx, pod))

	rt := fake.New()
	rt.LoadImage("docker.io/library/busybox:local", 1)
	sbCfg := &runtimeapi.PodSandboxConfig{Metadata: &runtimeapi.PodSandboxMetadata{Name: "busy", Namespace: ns, Uid: string(pod.UID)},
		Labels: map[string]string{podplan.LabelManaged: "true", podplan.LabelPodUID: string(pod.UID)}}
	sb, err := rt.RunPodSandbox(ctx, sbCfg, "")
	must(t, err)
	ids := map[string]string{}
	for _, name := range []string{"app", "side"} {
		id, err := rt.CreateContainer(ctx, sb, &runtimeapi.ContainerConfig{Metadata: &runtimeapi.ContainerMetadata{Name: name},
			Image: &runtimeapi.ImageSpec{Image: "docker.io/library/busybox:local"}, Labels: map[string]string{podplan.LabelManaged: "true",
				podplan.LabelPodUID: string(pod.UID), podplan.LabelContainerName: name}}, sbCfg)
		must(t, err)
		must(t, rt.StartContainer(ctx, id))
		ids[name] = id
	}
	must(t, rt.SetUsage(ids["app"], fake.Usage{CPUCoreNanoSeconds: 3e9, WorkingSetBytes: 30 << 20, UsageBytes: 31 << 20}))
	must(t, rt.SetUsage(ids["side"], fake.Usage{CPUCoreNanoSeconds: 1e9, WorkingSetBytes: 10 << 20, UsageBytes: 11 << 20}))

	s := &Server{NodeName: node, Pods: c, Reviews: c, Runtime: rt,
		Stats: &stats.Provider{NodeName: node, Runtime: rt, Host: fixedHost{}, Pods: c, RootDir: t.TempDir()}}
	srv := httptest.NewServer(s.Handler())
	defer srv.Close()
	get := func(base, tok, path string) (int, string) {
		req, _ := http.NewRequest(http.MethodGet, base+path, nil)
		if tok != "" {
			req.Header.Set("Authorization", "Bearer "+tok)
		}
		resp, err := http.DefaultClient.Do(req)
		must(t, err)
		defer resp.Body.Close()
		b, _ := io.ReadAll(resp.Body)
		return resp.StatusCode, string(b)
	}
	for _, tc := range []struct {
		name, tok, path string
		code            int
		body            []string
	}{
		{"summary anonymous", "", "/stats/summary", 401, []string{"Unauthorized"}},
		{"summary unauthorized", nobody, "/stats/summary", 403, []string{"Forbidden", "subresource(s)=[stats]"}},
		{"summary", scraper, "/stats/summary", 200, []string{`"nodeName":"stats-node"`, `"podRef":{"name":"busy","namespace":"stats","uid":"` + string(pod.UID) + `"}`,
			`"startTime":"` + started.UTC().Format(time.RFC3339) + `"`, `"name":"app"`, `"name":"side"`, `"usageCoreNanoSeconds":3000000000`,
			`"workingSetBytes":31457280`, `"workingSetBytes":41943040`, `"fs":{`, `"imageFs":{`, `"rootfs":{`, `"logs":{`}},
		{"summary cpu and memory", scraper, "/stats/summary?only_cpu_and_memory=true", 200, []string{`"name":"app"`, `"workingSetBytes":31457280`}},
		{"resource metrics anonymous", "", "/metrics/resource", 401, []string{"Unauthorized"}},
		{"resource metrics unauthorized", nobody, "/metrics/resource", 403, []string{"Forbidden", "subresource(s)=[metrics]"}},
		{"resource metrics", scraper, "/metrics/resource", 200, []string{
			`container_cpu_usage_seconds_total{container="app",namespace="stats",pod="busy"} 3 `,
			`container_memory_working_set_bytes{container="side",namespace="stats",pod="busy"} 1.048576e+07 `,
			`container_start_time_seconds{container="app",namespace="stats",pod="busy"} `,
			`pod_cpu_usage_seconds_total{namespace="stats",pod="busy"} 4 `,
			`pod_memory_working_set_bytes{namespace="stats",pod="busy"} 4.194304e+07 `,
			"node_cpu_usage_seconds_total 42 ", "node_memory_working_set_bytes 1.073741824e+09 ", "\nscrape_error 0\n"}},
		{"stats do not grant attach", scraper, "/attach/" + ns + "/busy/app?stdout=1", 403, []string{"Forbidden", "subresource(s)=[proxy]"}},
		{"attach reaches the runtime", attacher, "/attach/" + ns + "/busy/app?stdout=1", 500, []string{"Attach: the fake runtime has no stream server"}},
		{"attach, uid form", attacher, "/attach/" + ns + "/busy/" + string(pod.UID) + "/app?stdout=1", 500, []string{"Attach: the fake runtime has no stream server"}},
		{"attach to a missing container", attacher, "/attach/" + ns + "/busy/nope?stdout=1", 404, []string{"is not running"}},
	} {
		code, body := get(srv.URL, tc.tok, tc.path)
		ok := code == tc.code
		for _, b := range tc.body {
			ok = ok && strings.Contains(body, b)
		}
		if !ok {
			t.Errorf("%s: GET %s = %d %q, want %d containing %q", tc.name, tc.path, code, body, tc.code, tc.body)
		}
	}

	// the runtime down: a failed scrape says so
	rt.SetDown(true)
	if code, body := get(srv.URL, scraper, "/metrics/resource"); code != 200 || !strings.Contains(body, "\nscrape_error 1\n") {
		t.Errorf("resource metrics with the runtime down: %d %q", code, body)
	}
	if code, _ := get(srv.URL, scraper, "/stats/summary"); code != 500 {
		t.Errorf("summary with the runtime down: %d", code)
	}
	rt.SetDown(false)

	// the read-only port: no authentication, and only the default handlers
	listeners := map[string]net.Listener{}
	for _, name := range []string{"secure", "readonly"} {
		l, err := net.Listen("tcp", "127.0.0.1:0")
		must(t, err)
		listeners[name] = l
	}
	s.Addr, s.ReadOnlyAddr = "secure", "readonly"
	s.Listen = func(a string) (net.Listener, error) { return listeners[a], nil }
	runCtx, cancel := context.WithCancel(ctx)
	done := make(chan error, 1)
	go func() { done <- s.Start(runCtx) }()
	defer func() {
		cancel()
		must(t, <-done)
	}()
	ro := "http://" + listeners["readonly"].Addr().String()
	waitUntil := time.Now().Add(10 * time.Second)
	for {
		if code, _ := get(ro, "", "/healthz"); code == 200 || time.Now().After(waitUntil) {
			break
		}
		time.Sleep(50 * time.Millisecond)
	}
	for _, tc := range []struct {
		path string
		code int
		body string
	}{
		{"/healthz", 200, "ok"},
		{"/pods", 200, `"name":"busy"`},
		{"/stats/summary", 200, `"nodeName":"stats-node"`},
		{"/metrics/resource", 200, `pod_cpu_usage_seconds_total{namespace="stats",pod="busy"} 4 `},
		{"/metrics", 200, ""},
		{"/exec/" + ns + "/busy/app?command=sh", 404, ""},
		{"/attach/" + ns + "/busy/app?stdout=1", 404, ""},
		{"/containerLogs/" + ns + "/busy/app", 404, ""},
		{"/portForward/" + ns + "/busy", 404, ""},
		{"/configz", 404, ""},
	} {
		if code, body := get(ro, "", tc.path); code != tc.code || !strings.Contains(body, tc.body) {
			t.Errorf("read-only port: GET %s = %d %q, want %d containing %q", tc.path, code, body, tc.code, tc.body)
		}
	}
	// the secure port still wants a caller
	tlsClient := &http.Client{Transport: &http.Transport{TLSClientConfig: &tls.Config{InsecureSkipVerify: true}}}
	resp, err := tlsClient.Get("https://" + listeners["secure"].Addr().String() + "/stats/summary")
	must(t, err)
	resp.Body.Close()
	if resp.StatusCode != 401 {
		t.Errorf("secure port, anonymous: %d", resp.StatusCode)
	}
}
