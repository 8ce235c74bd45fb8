// Package podbench measures pod start-up latency on a real containerd: N pods created in
// the API at once, time from creationTimestamp to the Ready condition, as the upstream
// pod-startup SLO does (p99 ≤ 5 s). It prints figures; it is not a pass/fail timing test.
//
//	make bench-pods           (NK_BENCH_PODS=30 by default)
package podbench

import (
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"sort"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/util/rand"
	"k8s.io/client-go/kubernetes/scheme"
	ctrl "sigs.k8s.io/controller-runtime"
	"sigs.k8s.io/controller-runtime/pkg/client"
	metricsserver "sigs.k8s.io/controller-runtime/pkg/metrics/server"

	"github.com/nodekeeper/nodekeeper/api/v1alpha1"
	"github.com/nodekeeper/nodekeeper/controllers"
	testenv "github.com/nodekeeper/nodekeeper/envtest"
	"github.com/nodekeeper/nodekeeper/runtime/cri"
)

func TestPodStartupLatency(t *testing.T) {
	if os.Getenv("NK_BENCH") == "" {
		t.Skip("benchmark: run with `make bench-pods` (NK_BENCH=1)")
	}
	n := 30
	if v, err := strconv.Atoi(os.Getenv("NK_BENCH_PODS")); err == nil && v > 0 {
		n = v
	}
	ep := os.Getenv("NK_CRI_ENDPOINT")
	if ep == "" {
		out, err := exec.Command("../../hack/cri-up.sh").Output()
		if err != nil {
			t.Fatalf("hack/cri-up.sh: %v", err)
		}
		lines := strings.Split(strings.TrimSpace(string(out)), "\n")
		ep = lines[len(lines)-1]
	}
	rt, err := cri.Dial(cri.RemoteOptions{Endpoint: ep})
	if err != nil {
		t.Fatal(err)
	}
	defer rt.Close()
	env, err := testenv.Start()
	if err != nil {
		t.Fatal(err)
	}
	defer env.Stop()

	node := "bench-" + rand.String(5)
	root := t.TempDir()
	cfg := &v1alpha1.AgentConfiguration{NodeName: node, RootDir: root,
		PodLogsDir: filepath.Join(root, "logs"), ContainerLogsDir: filepath.Join(root, "containers")}
	v1alpha1.SetDefaults(cfg)
	mgr, err := ctrl.NewManager(env.Config, ctrl.Options{Scheme: scheme.Scheme,
		Metrics: metricsserver.Options{BindAddress: "0"}, HealthProbeBindAddress: "0"})
	if err != nil {
		t.Fatal(err)
	}
	if err := (&controllers.PodReconciler{Client: mgr.GetClient(), Runtime: rt, Recorder: mgr.GetEventRecorderFor("kubelet"),
		Config: cfg, HostIP: "192.0.2.10"}).SetupWithManager(mgr); err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { defer close(done); _ = mgr.Start(ctx) }()
	defer func() { cancel(); <-done }()

	c := env.Client
	ns := "bench-" + rand.String(5)
	if err := c.Create(ctx, &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: ns}}); err != nil {
		t.Fatal(err)
	}
	grace := int64(0)
	var wg sync.WaitGroup
	for i := 0; i < n; i++ {
		wg.Add(1)
		go func(i int) {
			defer wg.Done()
			p := &corev1.Pod{ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: fmt.Sprintf("p%03d", i)},
				Spec: corev1.PodSpec{NodeName: node, TerminationGracePeriodSeconds: &grace,
					Containers: []corev1.Container{{Name: "c", Image: "docker.io/library/busybox:local", Command: []string{"sleep", "3600"}}}}}
			if err := c.Create(ctx, p); err != nil {
				t.Error(err)
			}
		}(i)
	}
	wg.Wait()
	deadline := time.Now().Add(5 * time.Minute)
	var lat []time.Duration
	for time.Now().Before(deadline) {
		pods := &corev1.PodList{}
		if err := c.List(ctx, pods, client.InNamespace(ns)); err != nil {
			t.Fatal(err)
		}
		lat = lat[:0]
		for _, p := range pods.Items {
			for _, cond := range p.Status.Conditions {
				if cond.Type == corev1.PodReady && cond.Status == corev1.ConditionTrue {
					// conditions carry second precision, as upstream's SLO measurement
					lat = append(lat, cond.LastTransitionTime.Sub(p.CreationTimestamp.Time))
				}
			}
		}
		if len(lat) == n {
			break
		}
		time.Sleep(200 * time.Millisecond)
	}
	if len(lat) != n {
		t.Fatalf("only %d of %d pods became Ready", len(lat), n)
	}
	sort.Slice(lat, func(i, j int) bool { return lat[i] < lat[j] })
	pct := func(p float64) time.Duration { return lat[int(float64(len(lat)-1)*p)] }
	fmt.Printf("\npod start-up on containerd: %d pods created at once, creation -> Ready (second precision)\n", n)
	fmt.Printf("  p50 %v   p90 %v   p99 %v   max %v   (upstream SLO: p99 <= 5s)\n\n", pct(0.5), pct(0.9), pct(0.99), lat[len(lat)-1])

	// clean up: delete the pods and wait for their sandboxes to go
	if err := c.DeleteAllOf(ctx, &corev1.Pod{}, client.InNamespace(ns)); err != nil {
		t.Fatal(err)
	}
	for time.Now().Before(deadline) {
		pods := &corev1.PodList{}
		_ = c.List(ctx, pods, client.InNamespace(ns))
		if len(pods.Items) == 0 {
			break
		}
		time.Sleep(200 * time.Millisecond)
	}
}
