package mixin

// The same kubernetes-mixin queries over two scrapes of a running node's kubelet API
// through the API server's node proxy (as Prometheus's kubelet job reaches it in
// kube-prometheus), for one of the node's pods:
//
//	NK_MIXIN_KUBECONFIG=$RUN/admin.kubeconfig NK_MIXIN_NODE=nk-node NK_MIXIN_POD=default/burn \
//	  go test ./test/mixin -run Live -v
//
// The pod should be busy and have a CPU limit (the throttling panel divides by CFS
// periods, which only a quota makes). The test adds a pod whose image cannot be pulled
// before the first scrape and starts one between the scrapes (so that the runtime error
// and pod start panels have data).
//
// Skipped without NK_MIXIN_KUBECONFIG. kube_pod_info is made from the API's pods, as
// kube-state-metrics would export it.

import (
	"context"
	"fmt"
	"net/http"
	"net/http/httptest"
	"os"
	"strings"
	"testing"
	"time"

	"github.com/prometheus/prometheus/model/labels"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/tools/clientcmd"
)

func TestKubernetesMixinQueriesOnLiveNode(t *testing.T) {
	kc := os.Getenv("NK_MIXIN_KUBECONFIG")
	if kc == "" {
		t.Skip("NK_MIXIN_KUBECONFIG not set")
	}
	node, podRef := os.Getenv("NK_MIXIN_NODE"), os.Getenv("NK_MIXIN_POD")
	namespace, pod, ok := strings.Cut(podRef, "/")
	if node == "" || !ok {
		t.Fatal("NK_MIXIN_NODE and NK_MIXIN_POD (namespace/name) are needed")
	}
	cfg, err := clientcmd.BuildConfigFromFlags("", kc)
	must(t, err)
	cs := kubernetes.NewForConfigOrDie(cfg)
	ctx := context.Background()
	// the node proxy, served locally so that scrape() reads it as Prometheus would
	proxy := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		b, err := cs.CoreV1().RESTClient().Get().AbsPath("/api/v1/nodes/" + node + "/proxy" + r.URL.Path).DoRaw(r.Context())
		if err != nil {
			http.Error(w, err.Error(), http.StatusBadGateway)
			return
		}
		w.Header().Set("Content-Type", "text/plain; version=0.0.4")
		_, _ = w.Write(b)
	}))
	defer proxy.Close()
	db := &memStorage{}
	var last time.Time
	for i := 0; i < 2; i++ {
		if i > 0 {
			time.Sleep(25 * time.Second)
		}
		// a pod whose pulls keep failing (runtime operation errors, retried with back-off
		// across the window), then, in the window, a pod that starts
		if names := map[int]map[string]string{0: {"mixin-err": "nk-mixin.invalid/none:v1"}, 1: {"mixin-start": "busybox:local"}}[i]; names != nil {
			for name, image := range names {
				p := &corev1.Pod{ObjectMeta: metav1.ObjectMeta{GenerateName: name + "-", Namespace: namespace}, Spec: corev1.PodSpec{NodeName: node,
					Containers: []corev1.Container{{Name: "c", Image: image, ImagePullPolicy: corev1.PullIfNotPresent, Command: []string{"sleep", "3600"}}}}}
				created, err := cs.CoreV1().Pods(namespace).Create(ctx, p, metav1.CreateOptions{})
				must(t, err)
				t.Cleanup(func() {
					_ = cs.CoreV1().Pods(namespace).Delete(context.Background(), created.Name, metav1.DeleteOptions{})
				})
				if image == "busybox:local" { // wait until it runs
					for end := time.Now().Add(30 * time.Second); time.Now().Before(end); time.Sleep(200 * time.Millisecond) {
						if got, err := cs.CoreV1().Pods(namespace).Get(ctx, created.Name, metav1.GetOptions{}); err == nil && got.Status.Phase == corev1.PodRunning {
							break
						}
					}
				}
			}
			time.Sleep(3 * time.Second)
		}
		last = time.Now()
		for _, target := range []struct{ path, job string }{{"/metrics", "kubelet"}, {"/metrics/cadvisor", "cadvisor"}} {
			scrape(t, db, proxy.URL+target.path, last, map[string]string{"job": target.job, "metrics_path": target.path,
				"instance": node + ":10250", "node": node, "service": "kubelet", "endpoint": "https-metrics"})
		}
		pods, err := cs.CoreV1().Pods("").List(ctx, metav1.ListOptions{FieldSelector: "spec.nodeName=" + node})
		must(t, err)
		for _, p := range pods.Items {
			db.add(labels.FromStrings("__name__", "kube_pod_info", "job", "kube-state-metrics", "namespace", p.Namespace, "pod", p.Name,
				"node", node, "uid", string(p.UID)), last, 1)
		}
	}
	blockIO := false
	for k := range db.series {
		if strings.Contains(k, "container_fs_reads_total") {
			blockIO = true
		}
	}
	evaluate(t, db, last, namespace, pod, func(source string) string {
		if !blockIO && (strings.Contains(source, "IOPS") || strings.Contains(source, "ThroughPut")) {
			return "the kernel accounts no block IO to any cgroup on this machine (blkio files hold only \"Total 0\"), so there are no container_fs_* series, as with cAdvisor"
		}
		return ""
	})
	t.Logf("%d series from %s", len(db.series), fmt.Sprint(node))
}
