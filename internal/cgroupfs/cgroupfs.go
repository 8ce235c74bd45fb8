// Package cgroupfs reads the value files of cgroup v1 and v2 hierarchies: a single
// number (memory.usage_in_bytes, pids.current, cpuacct.usage) and "key value" lines
// (memory.stat, cpu.stat), for the stats provider and the cAdvisor-style collector.
package cgroupfs

import (
	"bufio"
	"bytes"
	"os"
	"strconv"
	"strings"
)

// Uint is the unsigned number a file holds alone (surrounding white space allowed).
func Uint(path string) (uint64, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return 0, err
	}
	return strconv.ParseUint(strings.TrimSpace(string(b)), 10, 64)
}

// Int is the signed number a file holds alone (memory.limit_in_bytes can be -1 on
// some kernels).
func Int(path string) (int64, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return 0, err
	}
	return strconv.ParseInt(strings.TrimSpace(string(b)), 10, 64)
}

// Keyed is a file of "key value" lines as a map; lines of another shape, or whose value
// is not an unsigned number, are skipped.
func Keyed(path string) (map[string]uint64, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return nil, err
	}
	out := map[string]uint64{}
	sc := bufio.NewScanner(bytes.NewReader(b))
	for sc.Scan() {
		f := strings.Fields(sc.Text())
		if len(f) == 2 {
			if v, err := strconv.ParseUint(f[1], 10, 64); err == nil {
				out[f[0]] = v
			}
		}
	}
	return out, nil
}
