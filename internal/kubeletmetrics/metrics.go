// Package kubeletmetrics holds the kubelet metric families nodekeeper serves on the
// kubelet API's /metrics (and the agent's metrics endpoint), with upstream's names,
// labels, help texts and buckets (k8s.io/kubernetes v1.37 pkg/kubelet/metrics/metrics.go,
// pkg/kubelet/certificate/kubelet.go, cmd/kubelet/app/server.go,
// pkg/kubelet/kuberuntime/instrumented_services.go). component-base prefixes the help
// with the stability level; so does this package. They are registered once into
// controller-runtime's registry, where client-go's rest_client_* metrics also are.
package kubeletmetrics

import (
	"math"
	"sort"
	"strings"
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	runtimeapi "k8s.io/cri-api/pkg/apis/runtime/v1"
	crmetrics "sigs.k8s.io/controller-runtime/pkg/metrics"
)

const subsystem = "kubelet"

// upstream's bucket boundaries
var (
	podStartupDurationBuckets  = []float64{0.5, 1, 2, 3, 4, 5, 6, 8, 10, 20, 30, 45, 60, 120, 180, 240, 300, 360, 480, 600, 900, 1200, 1800, 2700, 3600}
	certificateRotationBuckets = []float64{60, 3600, 14400, 86400, 604800, 2592000, 7776000, 15552000, 31104000, 124416000}
)

// The families. Names and labels as upstream; every one is ALPHA there.
var (
	NodeName = prometheus.NewGaugeVec(prometheus.GaugeOpts{Subsystem: subsystem, Name: "node_name",
		Help: "[ALPHA] The node's name. The count is always 1."}, []string{"node"})
	PodWorkerDuration = prometheus.NewHistogramVec(prometheus.HistogramOpts{Subsystem: subsystem, Name: "pod_worker_duration_seconds",
		Help:    "[ALPHA] Duration in seconds to sync a single pod. Broken down by operation type: create, update, or sync",
		Buckets: prometheus.DefBuckets}, []string{"operation_type"})
	PodStartDuration = prometheus.NewHistogram(prometheus.HistogramOpts{Subsystem: subsystem, Name: "pod_start_duration_seconds",
		Help:    "[ALPHA] Duration in seconds from kubelet seeing a pod for the first time to the pod starting to run",
		Buckets: podStartupDurationBuckets})
	PodStartSLIDuration = prometheus.NewHistogramVec(prometheus.HistogramOpts{Subsystem: subsystem, Name: "pod_start_sli_duration_seconds",
		Help:    "[ALPHA] Duration in seconds to start a pod, excluding time to pull images and run init containers, measured from pod creation timestamp to when all its containers are reported as started and observed via watch",
		Buckets: podStartupDurationBuckets}, []string{})
	PodStartTotalDuration = prometheus.NewHistogramVec(prometheus.HistogramOpts{Subsystem: subsystem, Name: "pod_start_total_duration_seconds",
		Help:    "[ALPHA] Duration in seconds to start a pod since creation, including time to pull images and run init containers, measured from pod creation timestamp to when all its containers are reported as started and observed via watch",
		Buckets: podStartupDurationBuckets}, []string{})
	CgroupManagerDuration = prometheus.NewHistogramVec(prometheus.HistogramOpts{Subsystem: subsystem, Name: "cgroup_manager_duration_seconds",
		Help: "[ALPHA] Duration in seconds for cgroup manager operations. Broken down by method.", Buckets: prometheus.DefBuckets},
		[]string{"operation_type"})
	PLEGRelistDuration = prometheus.NewHistogram(prometheus.HistogramOpts{Subsystem: subsystem, Name: "pleg_relist_duration_seconds",
		Help: "[ALPHA] Duration in seconds for relisting pods in PLEG.", Buckets: prometheus.DefBuckets})
	PLEGRelistInterval = prometheus.NewHistogram(prometheus.HistogramOpts{Subsystem: subsystem, Name: "pleg_relist_interval_seconds",
		Help: "[ALPHA] Interval in seconds between relisting in PLEG.", Buckets: prometheus.DefBuckets})
	PLEGLastSeen = prometheus.NewGauge(prometheus.GaugeOpts{Subsystem: subsystem, Name: "pleg_last_seen_seconds",
		Help: "[ALPHA] Timestamp in seconds when PLEG was last seen active."})
	// the evented PLEG's stream (upstream's names; the stream is containerd 2.x's
	// GetContainerEvents)
	EventedPLEGConnErr = prometheus.NewCounter(prometheus.CounterOpts{Subsystem: subsystem, Name: "evented_pleg_connection_error_count",
		Help: "[ALPHA] The number of errors encountered during the establishment of streaming connection with the CRI runtime."})
	EventedPLEGConn = prometheus.NewCounter(prometheus.CounterOpts{Subsystem: subsystem, Name: "evented_pleg_connection_success_count",
		Help: "[ALPHA] The number of times a streaming client was obtained to receive CRI Events."})
	EventedPLEGConnLatency = prometheus.NewHistogram(prometheus.HistogramOpts{Subsystem: subsystem, Name: "evented_pleg_connection_latency_seconds",
		Help: "[ALPHA] The latency of streaming connection with the CRI runtime, measured in seconds.", Buckets: prometheus.DefBuckets})
	RunningPodCount = prometheus.NewGauge(prometheus.GaugeOpts{Subsystem: subsystem, Name: "running_pods",
		Help: "[ALPHA] Number of pods that have a running pod sandbox"})
	RunningContainerCount = prometheus.NewGaugeVec(prometheus.GaugeOpts{Subsystem: subsystem, Name: "running_containers",
		Help: "[ALPHA] Number of containers currently running"}, []string{"container_state"})
	RuntimeOperations = prometheus.NewCounterVec(prometheus.CounterOpts{Subsystem: subsystem, Name: "runtime_operations_total",
		Help: "[ALPHA] Cumulative number of runtime operations by operation type."}, []string{"operation_type"})
	RuntimeOperationsDuration = prometheus.NewHistogramVec(prometheus.HistogramOpts{Subsystem: subsystem, Name: "runtime_operations_duration_seconds",
		Help:    "[ALPHA] Duration in seconds of runtime operations. Broken down by operation type.",
		Buckets: prometheus.ExponentialBuckets(.005, 2.5, 14)}, []string{"operation_type"})
	RuntimeOperationsErrors = prometheus.NewCounterVec(prometheus.CounterOpts{Subsystem: subsystem, Name: "runtime_operations_errors_total",
		Help: "[ALPHA] Cumulative number of runtime operation errors by operation type."}, []string{"operation_type"})

	// the serving certificate's (serverTLSBootstrap) and the client certificate's
	// (bootstrap kubeconfig) managers
	ServerExpirationRenewErrors = prometheus.NewCounter(prometheus.CounterOpts{Subsystem: subsystem, Name: "server_expiration_renew_errors",
		Help: "[ALPHA] Counter of certificate renewal errors."})
	ServerRotationSeconds = prometheus.NewHistogram(prometheus.HistogramOpts{Subsystem: subsystem, Name: "certificate_manager_server_rotation_seconds",
		Help: "[ALPHA] Histogram of the number of seconds the previous certificate lived before being rotated.", Buckets: certificateRotationBuckets})
	ClientExpirationRenewErrors = prometheus.NewCounter(prometheus.CounterOpts{Namespace: subsystem, Subsystem: "certificate_manager", Name: "client_expiration_renew_errors",
		Help: "[ALPHA] Counter of certificate renewal errors."})
)

var registerOnce sync.Once

// Register adds the families to controller-runtime's registry (once; later calls do
// nothing) and turns on the client-go request latency metrics controller-runtime keeps
// off by default (it always has rest_client_requests_total).
func Register() {
	registerOnce.Do(func() {
		crmetrics.Registry.MustRegister(NodeName, PodWorkerDuration, CgroupManagerDuration, PodStartDuration, PodStartSLIDuration, PodStartTotalDuration,
			PLEGRelistDuration, PLEGRelistInterval, PLEGLastSeen, EventedPLEGConnErr, EventedPLEGConn, EventedPLEGConnLatency, RunningPodCount, RunningContainerCount,
			RuntimeOperations, RuntimeOperationsDuration, RuntimeOperationsErrors)
		RegisterRESTClient()
	})
}

// RegisterRESTClient turns on client-go's request latency, size, rate-limiter and retry
// metrics in controller-runtime's registry (idempotent), as every component has them.
func RegisterRESTClient() {
	crmetrics.RegisterRESTClientMetrics(crmetrics.MetricRequestLatency, crmetrics.MetricRequestSize,
		crmetrics.MetricResponseSize, crmetrics.MetricRateLimiterLatency, crmetrics.MetricRequestRetry)
}

// CertificateTTL is a gauge function of the seconds left on the certificate current
// returns, truncated, +Inf when there is none (upstream's
// kubelet_certificate_manager_{client,server}_ttl_seconds).
func CertificateTTL(name, help string, notAfter func() (time.Time, bool)) prometheus.GaugeFunc {
	return prometheus.NewGaugeFunc(prometheus.GaugeOpts{Subsystem: subsystem, Name: name, Help: "[ALPHA] " + help}, func() float64 {
		if t, ok := notAfter(); ok {
			return math.Trunc(time.Until(t).Seconds())
		}
		return math.Inf(1)
	})
}

var serverCertOnce, clientCertOnce sync.Once

// RegisterServerCertificate registers the serving certificate's families (once).
func RegisterServerCertificate(notAfter func() (time.Time, bool)) {
	serverCertOnce.Do(func() {
		crmetrics.Registry.MustRegister(ServerExpirationRenewErrors, ServerRotationSeconds,
			CertificateTTL("certificate_manager_server_ttl_seconds", "Gauge of the shortest TTL (time-to-live) of "+
				"the Kubelet's serving certificate. The value is in seconds "+
				"until certificate expiry (negative if already expired). If "+
				"serving certificate is invalid or unused, the value will "+
				"be +INF.", notAfter))
	})
}

// RegisterClientCertificate registers the client certificate's families (once).
func RegisterClientCertificate(notAfter func() (time.Time, bool)) {
	clientCertOnce.Do(func() {
		crmetrics.Registry.MustRegister(ClientExpirationRenewErrors,
			CertificateTTL("certificate_manager_client_ttl_seconds", "Gauge of the TTL (time-to-live) of the Kubelet's client certificate. "+
				"The value is in seconds until certificate expiry (negative if already expired). "+
				"If client certificate is invalid or unused, the value will be +INF.", notAfter))
	})
}

// ContainerState is the kubelet's name of a CRI container state (kubecontainer's
// ContainerState: created, running, exited, unknown), the container_state label.
func ContainerState(s runtimeapi.ContainerState) string {
	switch s {
	case runtimeapi.ContainerState_CONTAINER_CREATED:
		return "created"
	case runtimeapi.ContainerState_CONTAINER_RUNNING:
		return "running"
	case runtimeapi.ContainerState_CONTAINER_EXITED:
		return "exited"
	}
	return "unknown"
}

// RunningCounts is what upstream's PLEG sets after a relist: the pods with a ready
// sandbox, and the containers by state (only the states seen appear).
func RunningCounts(cs []*runtimeapi.Container, sbs []*runtimeapi.PodSandbox) (pods int, containers map[string]int) {
	containers = map[string]int{}
	for _, c := range cs {
		containers[ContainerState(c.GetState())]++
	}
	ready := map[string]bool{}
	for _, sb := range sbs {
		if sb.GetState() == runtimeapi.PodSandboxState_SANDBOX_READY {
			ready[sb.GetMetadata().GetUid()] = true
		}
	}
	return len(ready), containers
}

var relistMu sync.Mutex
var lastRelist time.Time

// ObserveRelist records one relist that started at start (upstream's GenericPLEG.Relist).
func ObserveRelist(start time.Time, cs []*runtimeapi.Container, sbs []*runtimeapi.PodSandbox) {
	relistMu.Lock()
	if !lastRelist.IsZero() {
		PLEGRelistInterval.Observe(start.Sub(lastRelist).Seconds())
	}
	lastRelist = start
	relistMu.Unlock()
	PLEGLastSeen.Set(float64(start.Unix()))
	PLEGRelistDuration.Observe(time.Since(start).Seconds())
	pods, containers := RunningCounts(cs, sbs)
	for state, n := range containers {
		RunningContainerCount.WithLabelValues(state).Set(float64(n))
	}
	RunningPodCount.Set(float64(pods))
}

// OperationType is the operation_type label upstream's instrumented runtime service
// records for a CRI method (full gRPC name or bare method); "" when it records none.
func OperationType(method string) string {
	if i := strings.LastIndex(method, "/"); i >= 0 {
		method = method[i+1:]
	}
	return operationTypes[method]
}

var operationTypes = map[string]string{
	"Version": "version", "Status": "status", "CreateContainer": "create_container", "StartContainer": "start_container",
	"StopContainer": "stop_container", "RemoveContainer": "remove_container", "ListContainers": "list_containers",
	"ContainerStatus": "container_status", "UpdateContainerResources": "update_container", "ReopenContainerLog": "reopen_container_log",
	"ExecSync": "exec_sync", "Exec": "exec", "Attach": "attach", "RunPodSandbox": "run_podsandbox", "StopPodSandbox": "stop_podsandbox",
	"RemovePodSandbox": "remove_podsandbox", "PodSandboxStatus": "podsandbox_status", "ListPodSandbox": "list_podsandbox",
	"ContainerStats": "container_stats", "ListContainerStats": "list_container_stats", "PodSandboxStats": "podsandbox_stats",
	"ListPodSandboxStats": "list_podsandbox_stats", "PortForward": "port_forward", "UpdatePodSandboxResources": "update_podsandbox_resources",
	"UpdateRuntimeConfig": "update_runtime_config", "ListImages": "list_images", "ImageStatus": "image_status", "PullImage": "pull_image",
	"RemoveImage": "remove_image", "ImageFsInfo": "image_fs_info", "CheckpointContainer": "checkpoint_container",
	"GetContainerEvents": "get_container_events", "ListMetricDescriptors": "list_metric_descriptors",
	"ListPodSandboxMetrics": "list_podsandbox_metrics", "RuntimeConfig": "runtime_config",
	"CheckpointPod": "checkpoint_pod", "RestorePod": "restore_pod",
	// the streaming forms of the lists: upstream instruments the list call, whichever
	// form carries it
	"StreamPodSandboxes": "list_podsandbox", "StreamContainers": "list_containers", "StreamContainerStats": "list_container_stats",
	"StreamPodSandboxStats": "list_podsandbox_stats", "StreamPodSandboxMetrics": "list_podsandbox_metrics", "StreamImages": "list_images",
}

// ObserveRuntimeOperation records one CRI call (upstream's recordOperation and recordError).
func ObserveRuntimeOperation(method string, start time.Time, err error) {
	op := OperationType(method)
	if op == "" {
		return
	}
	RuntimeOperations.WithLabelValues(op).Inc()
	RuntimeOperationsDuration.WithLabelValues(op).Observe(time.Since(start).Seconds())
	if err != nil {
		RuntimeOperationsErrors.WithLabelValues(op).Inc()
	}
}

// OperationTypes lists every operation_type label (sorted), for tests and docs.
func OperationTypes() []string {
	var out []string
	for _, v := range operationTypes {
		out = append(out, v)
	}
	sort.Strings(out)
	return out
}
