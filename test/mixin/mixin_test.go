// Package mixin checks that the dashboards and recording rules operators already have
// find data in nodekeeper's metrics: the kubernetes-mixin expressions below are run, with
// Prometheus's own PromQL engine, over two scrapes of the kubelet API's /metrics and
// /metrics/cadvisor, and each must return series with values.
//
// The expressions are kubernetes-mixin's (github.com/kubernetes-monitoring/kubernetes-mixin,
// commit aa38e2bfa7ea6ec6870420b483046afe790a6411, files named with each), rendered with
// the mixin's default config (config.libsonnet: cadvisorSelector job="cadvisor",
// kubeletSelector job="kubelet", clusterLabel cluster, containerfsSelector container!="",
// diskDeviceSelector device=~"(/dev.+)|mmcblk.p.+|nvme.+|rbd.+|sd.+|vd.+|xvd.+|dm-.+|dasd.+")
// and the dashboards' variables set as Grafana would for this node: $cluster "" (one
// cluster), $instance ".+", $__rate_interval 1m; $namespace and $pod are the pod's.
//
// The data: a pod (shop/web, container app) on the fake runtime, its cgroups and
// network written as the kernel shows them (cgroup v1), the agent's own recording calls
// (relist, pod sync, pod start, CRI calls) and a real client-go request. kube_pod_info,
// which the recording rules join with, comes from kube-state-metrics, not from a
// kubelet: the test adds the one series kube-state-metrics would export for the pod.
package mixin

import (
	"context"
	"fmt"
	"math"
	"net/http"
	"net/http/httptest"
	"path/filepath"
	"sort"
	"strconv"
	"strings"
	"testing"
	"time"

	dto "github.com/prometheus/client_model/go"
	"github.com/prometheus/common/expfmt"
	"github.com/prometheus/common/model"
	"github.com/prometheus/prometheus/model/histogram"
	"github.com/prometheus/prometheus/model/labels"
	"github.com/prometheus/prometheus/promql"
	"github.com/prometheus/prometheus/storage"
	"github.com/prometheus/prometheus/tsdb/chunkenc"
	"github.com/prometheus/prometheus/tsdb/chunks"
	"github.com/prometheus/prometheus/util/annotations"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	k8stypes "k8s.io/apimachinery/pkg/types"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/rest"
	runtimeapi "k8s.io/cri-api/pkg/apis/runtime/v1"
	// the Go and process collectors, which controller-runtime's controllers register
	// into its registry (the agent always has them)
	_ "sigs.k8s.io/controller-runtime/pkg/controller"

	"github.com/nodekeeper/nodekeeper/internal/cadvisor"
	"github.com/nodekeeper/nodekeeper/internal/cadvisor/cgrouptest"
	"github.com/nodekeeper/nodekeeper/internal/kubeletmetrics"
	"github.com/nodekeeper/nodekeeper/internal/podplan"
	"github.com/nodekeeper/nodekeeper/kubeletapi"
	"github.com/nodekeeper/nodekeeper/runtime/cri/fake"
)

const diskDevices = `device=~"(/dev.+)|mmcblk.p.+|nvme.+|rbd.+|sd.+|vd.+|xvd.+|dm-.+|dasd.+"`

// queries are kubernetes-mixin's expressions, rendered as the package comment says.
var queries = []struct{ source, expr string }{
	// rules/apps.libsonnet
	{"rules/apps.libsonnet node_namespace_pod_container:container_cpu_usage_seconds_total:sum_rate5m", `
sum by (cluster, namespace, pod, container) (
  rate(container_cpu_usage_seconds_total{job="cadvisor", image!=""}[5m])
) * on (cluster, namespace, pod) group_left(node) topk by (cluster, namespace, pod) (
  1, max by(cluster, namespace, pod, node) (kube_pod_info{node!=""})
)`},
	{"rules/apps.libsonnet node_namespace_pod_container:container_cpu_usage_seconds_total:sum_irate", `
sum by (cluster, namespace, pod, container) (
  irate(container_cpu_usage_seconds_total{job="cadvisor", image!=""}[5m])
) * on (cluster, namespace, pod) group_left(node) topk by (cluster, namespace, pod) (
  1, max by(cluster, namespace, pod, node) (kube_pod_info{node!=""})
)`},
	{"rules/apps.libsonnet node_namespace_pod_container:container_memory_working_set_bytes", `
container_memory_working_set_bytes{job="cadvisor", image!=""}
* on (cluster, namespace, pod) group_left(node) topk by(cluster, namespace, pod) (1,
  max by(cluster, namespace, pod, node) (kube_pod_info{node!=""})
)`},
	{"rules/apps.libsonnet node_namespace_pod_container:container_memory_rss", `
container_memory_rss{job="cadvisor", image!=""}
* on (cluster, namespace, pod) group_left(node) topk by(cluster, namespace, pod) (1,
  max by(cluster, namespace, pod, node) (kube_pod_info{node!=""})
)`},
	{"rules/apps.libsonnet node_namespace_pod_container:container_memory_cache", `
container_memory_cache{job="cadvisor", image!=""}
* on (cluster, namespace, pod) group_left(node) topk by(cluster, namespace, pod) (1,
  max by(cluster, namespace, pod, node) (kube_pod_info{node!=""})
)`},
	{"rules/apps.libsonnet node_namespace_pod_container:container_memory_swap", `
container_memory_swap{job="cadvisor", image!=""}
* on (cluster, namespace, pod) group_left(node) topk by(cluster, namespace, pod) (1,
  max by(cluster, namespace, pod, node) (kube_pod_info{node!=""})
)`},
	// rules/kubelet.libsonnet (quantile 0.99; 0.9 and 0.5 differ only in the number)
	{"rules/kubelet.libsonnet node_quantile:kubelet_pleg_relist_duration_seconds:histogram_quantile", `
histogram_quantile(
  0.99,
  sum(rate(kubelet_pleg_relist_duration_seconds_bucket{job="kubelet"}[5m])) by (cluster, instance, le)
  * on(cluster, instance) group_left (node)
  max by (cluster, instance, node) (kubelet_node_name{job="kubelet"})
)`},
	// dashboards/kubelet.libsonnet
	{"dashboards/kubelet.libsonnet Running Kubelets", `sum(kubelet_node_name{cluster="", job="kubelet"})`},
	{"dashboards/kubelet.libsonnet Running Pods", `sum(kubelet_running_pods{cluster="", job="kubelet", instance=~".+"})`},
	{"dashboards/kubelet.libsonnet Running Containers", `sum(kubelet_running_containers{cluster="", job="kubelet", container_state="running", instance=~".+"})`},
	{"dashboards/kubelet.libsonnet Operation Rate", `sum(rate(kubelet_runtime_operations_total{cluster="",job="kubelet",instance=~".+"}[1m])) by (operation_type, instance)`},
	{"dashboards/kubelet.libsonnet Operation Error Rate", `sum(rate(kubelet_runtime_operations_errors_total{cluster="",job="kubelet",instance=~".+"}[1m])) by (instance, operation_type)`},
	{"dashboards/kubelet.libsonnet Operation duration 99th quantile", `histogram_quantile(0.99, sum(rate(kubelet_runtime_operations_duration_seconds_bucket{cluster="",job="kubelet",instance=~".+"}[1m])) by (instance, operation_type, le))`},
	{"dashboards/kubelet.libsonnet Pod Start Rate", `sum(rate(kubelet_pod_start_duration_seconds_count{cluster="",job="kubelet",instance=~".+"}[1m])) by (instance)`},
	{"dashboards/kubelet.libsonnet Pod Worker Rate", `sum(rate(kubelet_pod_worker_duration_seconds_count{cluster="",job="kubelet",instance=~".+"}[1m])) by (instance)`},
	{"dashboards/kubelet.libsonnet Pod Start Duration", `histogram_quantile(0.99, sum(rate(kubelet_pod_start_duration_seconds_bucket{cluster="",job="kubelet",instance=~".+"}[1m])) by (instance, le))`},
	{"dashboards/kubelet.libsonnet Pod Worker Duration", `histogram_quantile(0.99, sum(rate(kubelet_pod_worker_duration_seconds_bucket{cluster="",job="kubelet",instance=~".+"}[1m])) by (instance, le))`},
	{"dashboards/kubelet.libsonnet Cgroup manager operation rate", `sum(rate(kubelet_cgroup_manager_duration_seconds_count{cluster="", job="kubelet", instance=~".+"}[1m])) by (instance, operation_type)`},
	{"dashboards/kubelet.libsonnet Cgroup manager 99th quantile", `histogram_quantile(0.99, sum(rate(kubelet_cgroup_manager_duration_seconds_bucket{cluster="", job="kubelet", instance=~".+"}[1m])) by (instance, operation_type, le))`},
	{"dashboards/kubelet.libsonnet PLEG relist rate", `sum(rate(kubelet_pleg_relist_duration_seconds_count{cluster="", job="kubelet", instance=~".+"}[1m])) by (instance)`},
	{"dashboards/kubelet.libsonnet PLEG relist interval", `histogram_quantile(0.99, sum(rate(kubelet_pleg_relist_interval_seconds_bucket{cluster="",job="kubelet",instance=~".+"}[1m])) by (instance, le))`},
	{"dashboards/kubelet.libsonnet PLEG relist duration", `histogram_quantile(0.99, sum(rate(kubelet_pleg_relist_duration_seconds_bucket{cluster="",job="kubelet",instance=~".+"}[1m])) by (instance, le))`},
	{"dashboards/kubelet.libsonnet RPC rate (2xx)", `sum(rate(rest_client_requests_total{cluster="",job="kubelet", instance=~".+",code=~"2.."}[1m]))`},
	{"dashboards/kubelet.libsonnet Request duration 99th quantile", `histogram_quantile(0.99, sum(rate(rest_client_request_duration_seconds_bucket{cluster="",job="kubelet", instance=~".+"}[1m])) by (instance, verb, le))`},
	{"dashboards/kubelet.libsonnet Memory", `process_resident_memory_bytes{cluster="",job="kubelet",instance=~".+"}`},
	{"dashboards/kubelet.libsonnet CPU usage", `rate(process_cpu_seconds_total{cluster="",job="kubelet",instance=~".+"}[1m])`},
	{"dashboards/kubelet.libsonnet Goroutines", `go_goroutines{cluster="",job="kubelet",instance=~".+"}`},
	// dashboards/resources/queries/pod.libsonnet (k8s-resources-pod)
	{"dashboards/resources/queries/pod.libsonnet CPU throttling", `sum(increase(container_cpu_cfs_throttled_periods_total{job="cadvisor", namespace="$namespace", pod="$pod", container!="", cluster=""}[1m])) by (container) /sum(increase(container_cpu_cfs_periods_total{job="cadvisor", namespace="$namespace", pod="$pod", container!="", cluster=""}[1m])) by (container)`},
	{"dashboards/resources/queries/pod.libsonnet Memory Usage (WSS)", `sum(max by (cluster, namespace, pod, container)(container_memory_working_set_bytes{job="cadvisor", cluster="", namespace="$namespace", pod="$pod", container!="", image!=""})) by (container)`},
	{"dashboards/resources/queries/pod.libsonnet Memory Usage (RSS)", `sum(max by (cluster, namespace, pod, container)(container_memory_rss{job="cadvisor", cluster="", namespace="$namespace", pod="$pod", container != "", container != "POD"})) by (container)`},
	{"dashboards/resources/queries/pod.libsonnet Memory Usage (Cache)", `sum(max by (cluster, namespace, pod, container)(container_memory_cache{job="cadvisor", cluster="", namespace="$namespace", pod="$pod", container != "", container != "POD"})) by (container)`},
	{"dashboards/resources/queries/pod.libsonnet Memory Usage (Swap)", `sum(max by (cluster, namespace, pod, container)(container_memory_swap{job="cadvisor", cluster="", namespace="$namespace", pod="$pod", container != "", container != "POD"})) by (container)`},
	{"dashboards/resources/queries/pod.libsonnet Receive Bandwidth", `sum((8 * irate(container_network_receive_bytes_total{job="cadvisor", cluster="", namespace="$namespace", pod=~"$pod"}[1m]))) by (pod)`},
	{"dashboards/resources/queries/pod.libsonnet Transmit Bandwidth", `sum((8 * rate(container_network_transmit_bytes_total{job="cadvisor", cluster="", namespace="$namespace", pod=~"$pod"}[1m]))) by (pod)`},
	{"dashboards/resources/queries/pod.libsonnet Rate of Received Packets", `sum(rate(container_network_receive_packets_total{job="cadvisor", cluster="", namespace="$namespace", pod=~"$pod"}[1m])) by (pod)`},
	{"dashboards/resources/queries/pod.libsonnet Rate of Transmitted Packets", `sum(rate(container_network_transmit_packets_total{job="cadvisor", cluster="", namespace="$namespace", pod=~"$pod"}[1m])) by (pod)`},
	{"dashboards/resources/queries/pod.libsonnet Rate of Received Packets Dropped", `sum(rate(container_network_receive_packets_dropped_total{job="cadvisor", cluster="", namespace="$namespace", pod=~"$pod"}[1m])) by (pod)`},
	{"dashboards/resources/queries/pod.libsonnet Rate of Transmitted Packets Dropped", `sum(rate(container_network_transmit_packets_dropped_total{job="cadvisor", cluster="", namespace="$namespace", pod=~"$pod"}[1m])) by (pod)`},
	{"dashboards/resources/queries/pod.libsonnet IOPS (Reads)", `ceil(sum by(pod) (rate(container_fs_reads_total{job="cadvisor", ` + diskDevices + `, container!="", cluster="", namespace="$namespace", pod=~"$pod"}[1m])))`},
	{"dashboards/resources/queries/pod.libsonnet IOPS (Writes)", `ceil(sum by(pod) (rate(container_fs_writes_total{job="cadvisor", ` + diskDevices + `, container!="", cluster="",namespace="$namespace", pod=~"$pod"}[1m])))`},
	{"dashboards/resources/queries/pod.libsonnet ThroughPut (Read)", `sum by(pod) (rate(container_fs_reads_bytes_total{job="cadvisor", ` + diskDevices + `, container!="", cluster="", namespace="$namespace", pod=~"$pod"}[1m]))`},
	{"dashboards/resources/queries/pod.libsonnet ThroughPut (Write)", `sum by(pod) (rate(container_fs_writes_bytes_total{job="cadvisor", ` + diskDevices + `, container!="", cluster="", namespace="$namespace", pod=~"$pod"}[1m]))`},
	{"dashboards/resources/queries/pod.libsonnet IOPS (Reads+Writes) by container", `ceil(sum by(container) (rate(container_fs_reads_total{job="cadvisor", container!="", cluster="", namespace="$namespace", pod="$pod"}[1m]) + rate(container_fs_writes_total{job="cadvisor", container!="", cluster="", namespace="$namespace", pod="$pod"}[1m])))`},
	{"dashboards/resources/queries/pod.libsonnet ThroughPut (Read+Write) by container", `sum by(container) (rate(container_fs_reads_bytes_total{job="cadvisor", container!="", cluster="", namespace="$namespace", pod="$pod"}[1m]) + rate(container_fs_writes_bytes_total{job="cadvisor", container!="", cluster="", namespace="$namespace", pod="$pod"}[1m]))`},
}

// withPID gives the fake runtime's sandboxes a process (for their network namespace).
type withPID struct{ *fake.Runtime }

func (withPID) PodSandboxPID(context.Context, string) (int, error) { return 4242, nil }

func must(t *testing.T, err error) {
	t.Helper()
	if err != nil {
		t.Fatal(err)
	}
}

func TestKubernetesMixinQueriesFindData(t *testing.T) {
	ctx := context.Background()
	// the pod, on the fake runtime
	f := fake.New()
	f.LoadImage("busybox:1.37", 1<<20)
	labels0 := map[string]string{podplan.LabelManaged: "true"}
	sbCfg := &runtimeapi.PodSandboxConfig{Metadata: &runtimeapi.PodSandboxMetadata{Name: "web", Namespace: "shop", Uid: "u1"}, Labels: labels0}
	sb, err := f.RunPodSandbox(ctx, sbCfg, "")
	must(t, err)
	cid, err := f.CreateContainer(ctx, sb, &runtimeapi.ContainerConfig{Metadata: &runtimeapi.ContainerMetadata{Name: "app"},
		Image: &runtimeapi.ImageSpec{Image: "busybox:1.37"}, Labels: labels0}, sbCfg)
	must(t, err)
	must(t, f.StartContainer(ctx, cid))
	dir := t.TempDir()
	src := &cadvisor.Source{Runtime: withPID{f}, CgroupRoot: "/nk", CgroupMount: filepath.Join(dir, "cgroup"),
		ProcDir: filepath.Join(dir, "proc"), SysDir: filepath.Join(dir, "sys")}
	must(t, cgrouptest.WriteBlockDevice(src.SysDir, "253:0", "vda"))
	write := func(n uint64) { // the n-th state of the kernel's files
		pod := "/nk/kubepods/besteffort/podu1"
		app := cgrouptest.Usage{CPUNanos: n * 3e9, UserTicks: n * 200, SystemTicks: n * 100, Periods: n * 300, Throttled: n * 30, ThrottledNanos: n * 1e9,
			MemUsage: 50 << 20, MemMax: 60 << 20, InactiveFile: 10 << 20, RSS: 30 << 20, Cache: 15 << 20, Mapped: 1 << 20, Device: "253:0",
			ReadBytes: n * 4096, WriteBytes: n * 8192, Reads: n * 10, Writes: n * 20, Shares: 2, Period: 100000, Quota: 50000, Limit: 256 << 20}
		pause := cgrouptest.Usage{CPUNanos: n * 1e6, MemUsage: 1 << 20, RSS: 512 << 10, Device: "253:0", Shares: 2, Period: 100000, Quota: -1, Limit: 1 << 62}
		must(t, cgrouptest.WriteV1(src.CgroupMount, pod, app))
		must(t, cgrouptest.WriteV1(src.CgroupMount, pod+"/"+cid, app))
		must(t, cgrouptest.WriteV1(src.CgroupMount, pod+"/"+sb, pause))
		must(t, cgrouptest.WriteNetDev(src.ProcDir, 4242, cgrouptest.NetDev{Name: "eth0", RxBytes: n * 10000, RxPackets: n * 100, RxDropped: n,
			TxBytes: n * 20000, TxPackets: n * 200, TxDropped: n}))
	}

	// the agent's own metrics, as it records them
	kubeletmetrics.Register()
	kubeletmetrics.NodeName.WithLabelValues("nk-node").Set(1)
	notAfter := func() (time.Time, bool) { return time.Now().Add(24 * time.Hour), true }
	kubeletmetrics.RegisterServerCertificate(notAfter)
	kubeletmetrics.RegisterClientCertificate(notAfter)
	apiserver := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "application/json")
		_, _ = fmt.Fprint(w, `{"kind":"Node","apiVersion":"v1","metadata":{"name":"nk-node"}}`)
	}))
	defer apiserver.Close()
	cs := kubernetes.NewForConfigOrDie(&rest.Config{Host: apiserver.URL})
	var startup kubeletmetrics.StartupTracker
	activity := func(round int) {
		cl, err := f.ListContainers(ctx, nil)
		must(t, err)
		sbs, err := f.ListPodSandbox(ctx, nil)
		must(t, err)
		kubeletmetrics.ObserveRelist(time.Now().Add(-3*time.Millisecond), cl, sbs)
		kubeletmetrics.PodWorkerDuration.WithLabelValues("sync").Observe(0.02)
		kubeletmetrics.CgroupManagerDuration.WithLabelValues("create").Observe(0.001)
		kubeletmetrics.ObserveRuntimeOperation("/runtime.v1.RuntimeService/ListContainers", time.Now().Add(-2*time.Millisecond), nil)
		kubeletmetrics.ObserveRuntimeOperation("/runtime.v1.RuntimeService/StopContainer", time.Now().Add(-time.Millisecond), fmt.Errorf("boom"))
		uid := fmt.Sprintf("p%d", round)
		now := time.Now()
		startup.FirstSeen(k8stypes.UID(uid), now.Add(-2*time.Second))
		startup.StatusComputed(k8stypes.UID(uid), corev1.PodPending, corev1.PodRunning, now)
		_, err = cs.CoreV1().Nodes().Get(ctx, "nk-node", metav1.GetOptions{})
		must(t, err)
	}

	srv := &kubeletapi.Server{NodeName: "nk-node", Cadvisor: &cadvisor.Collector{Source: src,
		Machine: func() cadvisor.Machine { return cadvisor.Machine{CPUCores: 2, MemoryBytes: 4 << 30} }}}
	kubelet := httptest.NewServer(srv.ReadOnlyHandler())
	defer kubelet.Close()

	db := &memStorage{}
	t0 := time.Unix(1_800_000_000, 0)
	for i, at := range []time.Time{t0, t0.Add(30 * time.Second)} {
		write(uint64(i + 1))
		activity(i)
		for _, target := range []struct{ path, job string }{{"/metrics", "kubelet"}, {"/metrics/cadvisor", "cadvisor"}} {
			scrape(t, db, kubelet.URL+target.path, at, map[string]string{"job": target.job, "metrics_path": target.path,
				"instance": "198.18.77.2:10250", "node": "nk-node", "service": "kubelet", "endpoint": "https-metrics"})
		}
		// kube-state-metrics' series for the pod (not a kubelet's)
		db.add(labels.FromStrings("__name__", "kube_pod_info", "job", "kube-state-metrics", "namespace", "shop", "pod", "web",
			"node", "nk-node", "uid", "u1", "created_by_kind", "<none>"), at, 1)
	}

	evaluate(t, db, t0.Add(30*time.Second), "shop", "web", nil)
}

// evaluate runs every query at the time given for the pod; skip lists queries allowed
// to find nothing (with why).
func evaluate(t *testing.T, db *memStorage, at time.Time, namespace, pod string, skip func(source string) string) {
	t.Helper()
	ctx := context.Background()
	eng := promql.NewEngine(promql.EngineOpts{MaxSamples: 1e6, Timeout: time.Minute, LookbackDelta: 5 * time.Minute})
	for _, q := range queries {
		expr := strings.ReplaceAll(strings.ReplaceAll(q.expr, "$namespace", namespace), "$pod", pod)
		qry, err := eng.NewInstantQuery(ctx, db, nil, expr, at)
		if err != nil {
			t.Errorf("%s: %v", q.source, err)
			continue
		}
		res := qry.Exec(ctx)
		if res.Err != nil {
			t.Errorf("%s: %v", q.source, res.Err)
			continue
		}
		vec, err := res.Vector()
		if err != nil {
			t.Errorf("%s: %v", q.source, err)
			continue
		}
		// data: at least one series with a number (a histogram_quantile of an operation
		// that did not happen in the window is NaN, as with the kubelet)
		var vals []string
		ok := false
		for _, s := range vec {
			if !math.IsNaN(s.F) && !math.IsInf(s.F, 0) {
				ok = true
			}
			vals = append(vals, fmt.Sprintf("%s=%g", s.Metric.String(), s.F))
		}
		if !ok {
			if why := skipReason(skip, q.source); why != "" {
				t.Logf("%s: no data, allowed here: %s", q.source, why)
				continue
			}
			t.Errorf("%s: no data (%v)\n  %s", q.source, vals, strings.TrimSpace(expr))
			continue
		}
		t.Logf("%s: %s", q.source, strings.Join(vals, "; "))
		qry.Close()
	}
}

// scrape reads one exposition and stores its samples at the scrape time with the
// target's labels (honor_labels false: exposed labels that clash are renamed exported_*).
func scrape(t *testing.T, db *memStorage, url string, at time.Time, target map[string]string) {
	t.Helper()
	resp, err := http.Get(url)
	must(t, err)
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		t.Fatalf("%s: %s", url, resp.Status)
	}
	p := expfmt.NewTextParser(model.UTF8Validation)
	fams, err := p.TextToMetricFamilies(resp.Body)
	must(t, err)
	for name, mf := range fams {
		for _, m := range mf.GetMetric() {
			base := map[string]string{}
			for _, lp := range m.GetLabel() {
				k := lp.GetName()
				if _, clash := target[k]; clash {
					k = "exported_" + k
				}
				base[k] = lp.GetValue()
			}
			for k, v := range target {
				base[k] = v
			}
			emit := func(suffix string, v float64, extra ...string) {
				ls := map[string]string{"__name__": name + suffix}
				for k, val := range base {
					ls[k] = val
				}
				for i := 0; i+1 < len(extra); i += 2 {
					ls[extra[i]] = extra[i+1]
				}
				db.add(labels.FromMap(ls), at, v)
			}
			switch mf.GetType() {
			case dto.MetricType_COUNTER:
				emit("", m.GetCounter().GetValue())
			case dto.MetricType_GAUGE:
				emit("", m.GetGauge().GetValue())
			case dto.MetricType_UNTYPED:
				emit("", m.GetUntyped().GetValue())
			case dto.MetricType_HISTOGRAM:
				h := m.GetHistogram()
				for _, b := range h.GetBucket() {
					emit("_bucket", float64(b.GetCumulativeCount()), "le", formatLe(b.GetUpperBound()))
				}
				emit("_bucket", float64(h.GetSampleCount()), "le", "+Inf")
				emit("_sum", h.GetSampleSum())
				emit("_count", float64(h.GetSampleCount()))
			case dto.MetricType_SUMMARY:
				s := m.GetSummary()
				emit("_sum", s.GetSampleSum())
				emit("_count", float64(s.GetSampleCount()))
			}
		}
	}
}

func skipReason(skip func(string) string, source string) string {
	if skip == nil {
		return ""
	}
	return skip(source)
}

func formatLe(v float64) string {
	if math.IsInf(v, 1) {
		return "+Inf"
	}
	return strconv.FormatFloat(v, 'g', -1, 64)
}

// memStorage is a storage.Queryable over samples kept in memory.
type memStorage struct {
	series map[string]*memSeries
}

type memSeries struct {
	ls      labels.Labels
	samples []fSample
}

func (db *memStorage) add(ls labels.Labels, at time.Time, v float64) {
	if db.series == nil {
		db.series = map[string]*memSeries{}
	}
	k := ls.String()
	s := db.series[k]
	if s == nil {
		s = &memSeries{ls: ls}
		db.series[k] = s
	}
	s.samples = append(s.samples, fSample{t: at.UnixMilli(), f: v})
}

func (db *memStorage) Querier(mint, maxt int64) (storage.Querier, error) { return memQuerier{db}, nil }

type memQuerier struct{ db *memStorage }

func (q memQuerier) Select(_ context.Context, _ bool, _ *storage.SelectHints, ms ...*labels.Matcher) storage.SeriesSet {
	var out []storage.Series
	keys := make([]string, 0, len(q.db.series))
	for k := range q.db.series {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	for _, k := range keys {
		s := q.db.series[k]
		match := true
		for _, m := range ms {
			if !m.Matches(s.ls.Get(m.Name)) {
				match = false
				break
			}
		}
		if match {
			var cs []chunks.Sample
			for _, x := range s.samples {
				cs = append(cs, x)
			}
			out = append(out, storage.NewListSeries(s.ls, cs))
		}
	}
	sort.Slice(out, func(i, j int) bool { return labels.Compare(out[i].Labels(), out[j].Labels()) < 0 })
	return &listSet{series: out, i: -1}
}

func (q memQuerier) LabelValues(context.Context, string, *storage.LabelHints, ...*labels.Matcher) ([]string, annotations.Annotations, error) {
	return nil, nil, nil
}

func (q memQuerier) LabelNames(context.Context, *storage.LabelHints, ...*labels.Matcher) ([]string, annotations.Annotations, error) {
	return nil, nil, nil
}

func (q memQuerier) Close() error { return nil }

type listSet struct {
	series []storage.Series
	i      int
}

func (l *listSet) Next() bool                        { l.i++; return l.i < len(l.series) }
func (l *listSet) At() storage.Series                { return l.series[l.i] }
func (l *listSet) Err() error                        { return nil }
func (l *listSet) Warnings() annotations.Annotations { return nil }

type fSample struct {
	t int64
	f float64
}

func (s fSample) T() int64                      { return s.t }
func (s fSample) F() float64                    { return s.f }
func (s fSample) H() *histogram.Histogram       { return nil }
func (s fSample) FH() *histogram.FloatHistogram { return nil }
func (s fSample) Type() chunkenc.ValueType      { return chunkenc.ValFloat }
func (s fSample) Copy() chunks.Sample           { return s }
