package stats

import (
	"time"

	"github.com/prometheus/client_golang/prometheus"
	statsapi "k8s.io/kubelet/pkg/apis/stats/v1alpha1"
)

// The /metrics/resource metrics, named, labelled and described as upstream's
// pkg/kubelet/metrics/collectors/resource_metrics.go (component-base prefixes the help
// with the stability level). Swap metrics are left out: nodekeeper reads no swap.
var (
	nodeCPUUsageDesc = prometheus.NewDesc("node_cpu_usage_seconds_total",
		"[STABLE] Cumulative cpu time consumed by the node in core-seconds", nil, nil)
	nodeMemoryUsageDesc = prometheus.NewDesc("node_memory_working_set_bytes",
		"[STABLE] Current working set of the node in bytes", nil, nil)
	containerCPUUsageDesc = prometheus.NewDesc("container_cpu_usage_seconds_total",
		"[STABLE] Cumulative cpu time consumed by the container in core-seconds", []string{"container", "pod", "namespace"}, nil)
	containerMemoryUsageDesc = prometheus.NewDesc("container_memory_working_set_bytes",
		"[STABLE] Current working set of the container in bytes", []string{"container", "pod", "namespace"}, nil)
	containerStartTimeDesc = prometheus.NewDesc("container_start_time_seconds",
		"[STABLE] Start time of the container since unix epoch in seconds", []string{"container", "pod", "namespace"}, nil)
	podCPUUsageDesc = prometheus.NewDesc("pod_cpu_usage_seconds_total",
		"[STABLE] Cumulative cpu time consumed by the pod in core-seconds", []string{"pod", "namespace"}, nil)
	podMemoryUsageDesc = prometheus.NewDesc("pod_memory_working_set_bytes",
		"[STABLE] Current working set of the pod in bytes", []string{"pod", "namespace"}, nil)
	scrapeErrorDesc = prometheus.NewDesc("scrape_error",
		"[ALPHA] 1 if there was an error while getting container metrics, 0 otherwise", nil, nil)
	resourceScrapeErrorDesc = prometheus.NewDesc("resource_scrape_error",
		"[STABLE] 1 if there was an error while getting container metrics, 0 otherwise", nil, nil)
)

// ResourceMetrics are the /metrics/resource samples for a summary (nil: the scrape
// failed, only scrape_error=1 is reported), as upstream: CPU and memory samples carry
// the time the runtime took them; start times and scrape_error carry none.
func ResourceMetrics(s *statsapi.Summary) []prometheus.Metric {
	errValue := 0.0
	if s == nil {
		errValue = 1
	}
	out := []prometheus.Metric{}
	if s != nil {
		n := s.Node
		if n.CPU != nil && n.CPU.UsageCoreNanoSeconds != nil {
			out = append(out, stamped(n.CPU.Time.Time, prometheus.MustNewConstMetric(nodeCPUUsageDesc, prometheus.CounterValue, seconds(*n.CPU.UsageCoreNanoSeconds))))
		}
		if n.Memory != nil && n.Memory.WorkingSetBytes != nil {
			out = append(out, stamped(n.Memory.Time.Time, prometheus.MustNewConstMetric(nodeMemoryUsageDesc, prometheus.GaugeValue, float64(*n.Memory.WorkingSetBytes))))
		}
		for _, p := range s.Pods {
			for _, c := range p.Containers {
				if c.StartTime.Unix() > 0 {
					out = append(out, prometheus.MustNewConstMetric(containerStartTimeDesc, prometheus.GaugeValue,
						float64(c.StartTime.UnixNano())/float64(time.Second), c.Name, p.PodRef.Name, p.PodRef.Namespace))
				}
				if c.CPU != nil && c.CPU.UsageCoreNanoSeconds != nil {
					out = append(out, stamped(c.CPU.Time.Time, prometheus.MustNewConstMetric(containerCPUUsageDesc, prometheus.CounterValue,
						seconds(*c.CPU.UsageCoreNanoSeconds), c.Name, p.PodRef.Name, p.PodRef.Namespace)))
				}
				if c.Memory != nil && c.Memory.WorkingSetBytes != nil {
					out = append(out, stamped(c.Memory.Time.Time, prometheus.MustNewConstMetric(containerMemoryUsageDesc, prometheus.GaugeValue,
						float64(*c.Memory.WorkingSetBytes), c.Name, p.PodRef.Name, p.PodRef.Namespace)))
				}
			}
			if p.CPU != nil && p.CPU.UsageCoreNanoSeconds != nil {
				out = append(out, stamped(p.CPU.Time.Time, prometheus.MustNewConstMetric(podCPUUsageDesc, prometheus.CounterValue,
					seconds(*p.CPU.UsageCoreNanoSeconds), p.PodRef.Name, p.PodRef.Namespace)))
			}
			if p.Memory != nil && p.Memory.WorkingSetBytes != nil {
				out = append(out, stamped(p.Memory.Time.Time, prometheus.MustNewConstMetric(podMemoryUsageDesc, prometheus.GaugeValue,
					float64(*p.Memory.WorkingSetBytes), p.PodRef.Name, p.PodRef.Namespace)))
			}
		}
	}
	return append(out,
		prometheus.MustNewConstMetric(scrapeErrorDesc, prometheus.GaugeValue, errValue),
		prometheus.MustNewConstMetric(resourceScrapeErrorDesc, prometheus.GaugeValue, errValue))
}

// ResourceCollector is a prometheus.Collector serving ResourceMetrics of what Summary
// returns at each scrape.
type ResourceCollector struct {
	Summary func() (*statsapi.Summary, error)
	// OnError receives a failed scrape's error (the scrape itself reports scrape_error 1).
	OnError func(error)
}

// Describe implements prometheus.Collector.
func (c ResourceCollector) Describe(ch chan<- *prometheus.Desc) {
	for _, d := range []*prometheus.Desc{nodeCPUUsageDesc, nodeMemoryUsageDesc, containerCPUUsageDesc, containerMemoryUsageDesc,
		containerStartTimeDesc, podCPUUsageDesc, podMemoryUsageDesc, scrapeErrorDesc, resourceScrapeErrorDesc} {
		ch <- d
	}
}

// Collect implements prometheus.Collector.
func (c ResourceCollector) Collect(ch chan<- prometheus.Metric) {
	s, err := c.Summary()
	if err != nil {
		s = nil
		if c.OnError != nil {
			c.OnError(err)
		}
	}
	for _, m := range ResourceMetrics(s) {
		ch <- m
	}
}

func stamped(t time.Time, m prometheus.Metric) prometheus.Metric {
	return prometheus.NewMetricWithTimestamp(t, m)
}

func seconds(ns uint64) float64 { return float64(ns) / float64(time.Second) }
