package bench

import (
	"bufio"
	"os"
	"strconv"
	"strings"
)

// Memory is a process's resident set, in KiB, from /proc/<pid>/status.
type Memory struct {
	RSSKiB  int64 `json:"rssKiB"`  // VmRSS
	PeakKiB int64 `json:"peakKiB"` // VmHWM (since the last ResetPeak)
}

// ReadMemory reads VmRSS and VmHWM of this process.
func ReadMemory() (Memory, error) {
	f, err := os.Open("/proc/self/status")
	if err != nil {
		return Memory{}, err
	}
	defer f.Close()
	var m Memory
	sc := bufio.NewScanner(f)
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
	return m, sc.Err()
}

// ResetPeak resets VmHWM to the current RSS (writes 5 to /proc/self/clear_refs).
func ResetPeak() error { return os.WriteFile("/proc/self/clear_refs", []byte("5"), 0) }
