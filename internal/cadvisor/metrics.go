// Package cadvisor serves the kubelet's /metrics/cadvisor: the container_* series
// cAdvisor exports, for the cgroups of the node's pods, with the labels the kubelet gives
// them (pkg/kubelet/server/server.go containerPrometheusLabelsFunc: container, id,
// image, name, namespace, pod). Metrics is the pure part (readings → samples); Source
// reads the readings from the runtime (CRI), the cgroup filesystems and /proc.
package cadvisor

import (
	"sort"
	"time"

	"github.com/prometheus/client_golang/prometheus"
)

// Cgroup is one cgroup as cAdvisor reports it: a pod's cgroup (Name, Image and
// Container empty), a pod's sandbox (pause) container, or an application container.
type Cgroup struct {
	// ID is the cgroup's path (label id), e.g. /kubepods/besteffort/pod<uid>/<containerID>.
	ID string
	// Name is the container's ID (label name, cAdvisor's first alias); "" for a pod cgroup.
	Name string
	// Image is the container's image (label image); "" for a pod cgroup.
	Image                     string
	Pod, Namespace, Container string
	Stats                     Stats
}

// Stats are one reading of a cgroup; nil parts were not read.
type Stats struct {
	Time      time.Time
	StartTime time.Time
	CPU       *CPU
	Memory    *Memory
	Blkio     []Device
	Network   []Interface
	Spec      *Spec
}

// CPU is cumulative CPU time (nanoseconds) and CFS throttling.
type CPU struct {
	UsageNanos, UserNanos, SystemNanos uint64
	HaveUserSystem                     bool
	Periods, ThrottledPeriods          uint64
	ThrottledNanos                     uint64
	HaveCFS                            bool
}

// Memory is the cgroup's memory in bytes (as cAdvisor: working set is usage minus
// inactive file pages; rss and cache are the hierarchical figures).
type Memory struct {
	Usage, MaxUsage, WorkingSet, RSS, Cache, Swap, MappedFile, Failcnt uint64
}

// Device is block IO of the cgroup on one device (cAdvisor's device label is its path).
type Device struct {
	Device                string
	ReadBytes, WriteBytes uint64
	Reads, Writes         uint64
}

// Interface is one network interface of the cgroup's network namespace.
type Interface struct {
	Name                                    string
	RxBytes, RxPackets, RxErrors, RxDropped uint64
	TxBytes, TxPackets, TxErrors, TxDropped uint64
}

// Spec is the cgroup's limits (cAdvisor's container_spec_*); zero: not set.
type Spec struct {
	CPUShares, CPUPeriod, CPUQuota uint64
	MemoryLimit                    uint64
	HaveMemoryLimit                bool
}

// Machine is the node (machine_* series).
type Machine struct {
	CPUCores    int
	MemoryBytes uint64
}

var containerLabels = []string{"container", "id", "image", "name", "namespace", "pod"}

func desc(name, help string, extra ...string) *prometheus.Desc {
	return prometheus.NewDesc(name, help, append(append([]string{}, containerLabels...), extra...), nil)
}

// cAdvisor's families (metrics/prometheus.go), names and help as there.
var (
	cpuUsage         = desc("container_cpu_usage_seconds_total", "Cumulative cpu time consumed in seconds.", "cpu")
	cpuUser          = desc("container_cpu_user_seconds_total", "Cumulative user cpu time consumed in seconds.")
	cpuSystem        = desc("container_cpu_system_seconds_total", "Cumulative system cpu time consumed in seconds.")
	cfsPeriods       = desc("container_cpu_cfs_periods_total", "Number of elapsed enforcement period intervals.")
	cfsThrottled     = desc("container_cpu_cfs_throttled_periods_total", "Number of throttled period intervals.")
	cfsThrottledTime = desc("container_cpu_cfs_throttled_seconds_total", "Total time duration the container has been throttled.")
	memUsage         = desc("container_memory_usage_bytes", "Current memory usage in bytes, including all memory regardless of when it was accessed")
	memMaxUsage      = desc("container_memory_max_usage_bytes", "Maximum memory usage recorded in bytes")
	memWorkingSet    = desc("container_memory_working_set_bytes", "Current working set in bytes.")
	memRSS           = desc("container_memory_rss", "Size of RSS in bytes.")
	memCache         = desc("container_memory_cache", "Number of bytes of page cache memory.")
	memSwap          = desc("container_memory_swap", "Container swap usage in bytes.")
	memMapped        = desc("container_memory_mapped_file", "Size of memory mapped files in bytes.")
	memFailcnt       = desc("container_memory_failcnt", "Number of memory usage hits limits")
	fsReadBytes      = desc("container_fs_reads_bytes_total", "Cumulative count of bytes read", "device")
	fsWriteBytes     = desc("container_fs_writes_bytes_total", "Cumulative count of bytes written", "device")
	fsReads          = desc("container_fs_reads_total", "Cumulative count of reads completed", "device")
	fsWrites         = desc("container_fs_writes_total", "Cumulative count of writes completed", "device")
	netRxBytes       = desc("container_network_receive_bytes_total", "Cumulative count of bytes received", "interface")
	netRxPackets     = desc("container_network_receive_packets_total", "Cumulative count of packets received", "interface")
	netRxDropped     = desc("container_network_receive_packets_dropped_total", "Cumulative count of packets dropped while receiving", "interface")
	netRxErrors      = desc("container_network_receive_errors_total", "Cumulative count of errors encountered while receiving", "interface")
	netTxBytes       = desc("container_network_transmit_bytes_total", "Cumulative count of bytes transmitted", "interface")
	netTxPackets     = desc("container_network_transmit_packets_total", "Cumulative count of packets transmitted", "interface")
	netTxDropped     = desc("container_network_transmit_packets_dropped_total", "Cumulative count of packets dropped while transmitting", "interface")
	netTxErrors      = desc("container_network_transmit_errors_total", "Cumulative count of errors encountered while transmitting", "interface")
	startTime        = desc("container_start_time_seconds", "Start time of the container since unix epoch in seconds.")
	lastSeen         = desc("container_last_seen", "Last time a container was seen by the exporter")
	specCPUShares    = desc("container_spec_cpu_shares", "CPU share of the container.")
	specCPUPeriod    = desc("container_spec_cpu_period", "CPU period of the container.")
	specCPUQuota     = desc("container_spec_cpu_quota", "CPU quota of the container.")
	specMemoryLimit  = desc("container_spec_memory_limit_bytes", "Memory limit for the container.")
	machineCores     = prometheus.NewDesc("machine_cpu_cores", "Number of logical CPU cores.", nil, nil)
	machineMemory    = prometheus.NewDesc("machine_memory_bytes", "Amount of memory installed on the machine.", nil, nil)
	allDescs         = []*prometheus.Desc{cpuUsage, cpuUser, cpuSystem, cfsPeriods, cfsThrottled, cfsThrottledTime, memUsage, memMaxUsage,
		memWorkingSet, memRSS, memCache, memSwap, memMapped, memFailcnt, fsReadBytes, fsWriteBytes, fsReads, fsWrites,
		netRxBytes, netRxPackets, netRxDropped, netRxErrors, netTxBytes, netTxPackets, netTxDropped, netTxErrors,
		startTime, lastSeen, specCPUShares, specCPUPeriod, specCPUQuota, specMemoryLimit, machineCores, machineMemory}
)

// Metrics are the samples for the cgroups and the machine, in a stable order. As
// cAdvisor's collector, usage samples carry the reading's time.
func Metrics(cgs []Cgroup, m Machine) []prometheus.Metric {
	sorted := append([]Cgroup(nil), cgs...)
	sort.Slice(sorted, func(i, j int) bool { return sorted[i].ID < sorted[j].ID })
	var out []prometheus.Metric
	for _, c := range sorted {
		lv := []string{c.Container, c.ID, c.Image, c.Name, c.Namespace, c.Pod}
		s := c.Stats
		add := func(d *prometheus.Desc, t prometheus.ValueType, v float64, extra ...string) {
			m := prometheus.MustNewConstMetric(d, t, v, append(append([]string{}, lv...), extra...)...)
			if !s.Time.IsZero() {
				m = prometheus.NewMetricWithTimestamp(s.Time, m)
			}
			out = append(out, m)
		}
		counter, gauge := prometheus.CounterValue, prometheus.GaugeValue
		if cpu := s.CPU; cpu != nil {
			add(cpuUsage, counter, nanos(cpu.UsageNanos), "total")
			if cpu.HaveUserSystem {
				add(cpuUser, counter, nanos(cpu.UserNanos))
				add(cpuSystem, counter, nanos(cpu.SystemNanos))
			}
			if cpu.HaveCFS {
				add(cfsPeriods, counter, float64(cpu.Periods))
				add(cfsThrottled, counter, float64(cpu.ThrottledPeriods))
				add(cfsThrottledTime, counter, nanos(cpu.ThrottledNanos))
			}
		}
		if mem := s.Memory; mem != nil {
			add(memUsage, gauge, float64(mem.Usage))
			add(memMaxUsage, gauge, float64(mem.MaxUsage))
			add(memWorkingSet, gauge, float64(mem.WorkingSet))
			add(memRSS, gauge, float64(mem.RSS))
			add(memCache, gauge, float64(mem.Cache))
			add(memSwap, gauge, float64(mem.Swap))
			add(memMapped, gauge, float64(mem.MappedFile))
			add(memFailcnt, counter, float64(mem.Failcnt))
		}
		devs := append([]Device(nil), s.Blkio...)
		sort.Slice(devs, func(i, j int) bool { return devs[i].Device < devs[j].Device })
		for _, d := range devs {
			add(fsReadBytes, counter, float64(d.ReadBytes), d.Device)
			add(fsWriteBytes, counter, float64(d.WriteBytes), d.Device)
			add(fsReads, counter, float64(d.Reads), d.Device)
			add(fsWrites, counter, float64(d.Writes), d.Device)
		}
		ifs := append([]Interface(nil), s.Network...)
		sort.Slice(ifs, func(i, j int) bool { return ifs[i].Name < ifs[j].Name })
		for _, i := range ifs {
			add(netRxBytes, counter, float64(i.RxBytes), i.Name)
			add(netRxPackets, counter, float64(i.RxPackets), i.Name)
			add(netRxDropped, counter, float64(i.RxDropped), i.Name)
			add(netRxErrors, counter, float64(i.RxErrors), i.Name)
			add(netTxBytes, counter, float64(i.TxBytes), i.Name)
			add(netTxPackets, counter, float64(i.TxPackets), i.Name)
			add(netTxDropped, counter, float64(i.TxDropped), i.Name)
			add(netTxErrors, counter, float64(i.TxErrors), i.Name)
		}
		if sp := s.Spec; sp != nil {
			add(specCPUShares, gauge, float64(sp.CPUShares))
			add(specCPUPeriod, gauge, float64(sp.CPUPeriod))
			if sp.CPUQuota > 0 {
				add(specCPUQuota, gauge, float64(sp.CPUQuota))
			}
			if sp.HaveMemoryLimit {
				add(specMemoryLimit, gauge, float64(sp.MemoryLimit))
			}
		}
		if !s.StartTime.IsZero() {
			out = append(out, prometheus.MustNewConstMetric(startTime, gauge, float64(s.StartTime.UnixNano())/1e9, lv...))
		}
		if !s.Time.IsZero() {
			out = append(out, prometheus.MustNewConstMetric(lastSeen, gauge, float64(s.Time.Unix()), lv...))
		}
	}
	if m.CPUCores > 0 {
		out = append(out, prometheus.MustNewConstMetric(machineCores, prometheus.GaugeValue, float64(m.CPUCores)))
	}
	if m.MemoryBytes > 0 {
		out = append(out, prometheus.MustNewConstMetric(machineMemory, prometheus.GaugeValue, float64(m.MemoryBytes)))
	}
	return out
}

func nanos(v uint64) float64 { return float64(v) / 1e9 }
