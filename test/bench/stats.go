package bench

import (
	"bufio"
	"fmt"
	"math"
	"os"
	"sort"
	"strconv"
	"strings"
)

// clockTicks is USER_HZ, the unit of /proc/<pid>/stat times (100 on every Linux
// architecture Go supports).
const clockTicks = 100

// ParseProcStat returns utime+stime+cutime+cstime of a /proc/<pid>/stat line, in
// seconds: the process's CPU plus that of the children it has waited for (the
// iptables-restore / nft processes an agent runs).
func ParseProcStat(line string) (float64, error) {
	i := strings.LastIndexByte(line, ')')
	if i < 0 {
		return 0, fmt.Errorf("malformed stat line %q", line)
	}
	f := strings.Fields(line[i+1:])
	// f[0] is field 3 (state); utime..cstime are fields 14..17
	if len(f) < 15 {
		return 0, fmt.Errorf("short stat line %q", line)
	}
	var sum int64
	for _, s := range f[11:15] {
		n, err := strconv.ParseInt(s, 10, 64)
		if err != nil {
			return 0, fmt.Errorf("stat field %q: %w", s, err)
		}
		sum += n
	}
	return float64(sum) / clockTicks, nil
}

// ProcCPU reads ParseProcStat for a process.
func ProcCPU(pid int) (float64, error) {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		return 0, err
	}
	return ParseProcStat(string(b))
}

// Memory is a process's resident set in KiB, from /proc/<pid>/status.
type Memory struct {
	RSSKiB  int64 `json:"rssKiB"`  // VmRSS
	PeakKiB int64 `json:"peakKiB"` // VmHWM
}

// ParseStatus reads VmRSS and VmHWM from /proc/<pid>/status content.
func ParseStatus(s string) Memory {
	var m Memory
	sc := bufio.NewScanner(strings.NewReader(s))
	for sc.Scan() {
		k, v, ok := strings.Cut(sc.Text(), ":")
		if !ok {
			continue
		}
		n, _ := strconv.ParseInt(strings.TrimSuffix(strings.TrimSpace(v), " kB"), 10, 64)
		switch k {
		case "VmRSS":
			m.RSSKiB = n
		case "VmHWM":
			m.PeakKiB = n
		}
	}
	return m
}

// ProcMemory reads ParseStatus for a process.
func ProcMemory(pid int) (Memory, error) {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", pid))
	if err != nil {
		return Memory{}, err
	}
	return ParseStatus(string(b)), nil
}

// Summary is the distribution of a set of latencies, in seconds.
type Summary struct {
	N                  int
	P50, P90, P99, Max float64
}

// Percentile is the nearest-rank q-quantile (0 < q ≤ 1) of sorted values.
func Percentile(sorted []float64, q float64) float64 {
	if len(sorted) == 0 {
		return math.NaN()
	}
	i := int(math.Ceil(q*float64(len(sorted)))) - 1
	if i < 0 {
		i = 0
	}
	return sorted[i]
}

// Summarize sorts a copy of vs and summarizes it.
func Summarize(vs []float64) Summary {
	s := append([]float64(nil), vs...)
	sort.Float64s(s)
	if len(s) == 0 {
		return Summary{}
	}
	return Summary{N: len(s), P50: Percentile(s, 0.5), P90: Percentile(s, 0.9), P99: Percentile(s, 0.99), Max: s[len(s)-1]}
}
