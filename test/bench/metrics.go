package bench

import (
	"bufio"
	"fmt"
	"strconv"
	"strings"
)

// Sample is one line of the Prometheus text format.
type Sample struct {
	Labels string // as written between the braces, "" when none
	Value  float64
}

// ParseMetrics reads the Prometheus text exposition format into name → samples
// (comments skipped, histogram series under their _bucket/_sum/_count names).
func ParseMetrics(text string) (map[string][]Sample, error) {
	out := map[string][]Sample{}
	sc := bufio.NewScanner(strings.NewReader(text))
	sc.Buffer(make([]byte, 64*1024), 1024*1024)
	for sc.Scan() {
		line := strings.TrimSpace(sc.Text())
		if line == "" || line[0] == '#' {
			continue
		}
		name, labels, rest := line, "", ""
		if i := strings.IndexByte(line, '{'); i >= 0 {
			j := strings.LastIndexByte(line, '}')
			if j < i {
				return nil, fmt.Errorf("malformed metric line %q", line)
			}
			name, labels, rest = line[:i], line[i+1:j], line[j+1:]
		} else if i := strings.IndexAny(line, " \t"); i >= 0 {
			name, rest = line[:i], line[i:]
		} else {
			return nil, fmt.Errorf("malformed metric line %q", line)
		}
		f := strings.Fields(rest)
		if len(f) == 0 {
			return nil, fmt.Errorf("metric line without a value %q", line)
		}
		v, err := strconv.ParseFloat(f[0], 64)
		if err != nil {
			return nil, fmt.Errorf("metric line %q: %w", line, err)
		}
		out[name] = append(out[name], Sample{Labels: labels, Value: v})
	}
	return out, sc.Err()
}

// IPv4Value is the value of a metric for the IPv4 proxier: the sample labelled
// ip_family="IPv4" (kube-proxy labels per family), else the unlabelled one (nodekeeper),
// else the largest. ok is false when the metric is absent.
func IPv4Value(m map[string][]Sample, name string) (v float64, ok bool) {
	ss := m[name]
	if len(ss) == 0 {
		return 0, false
	}
	for _, s := range ss {
		if strings.Contains(s.Labels, `ip_family="IPv4"`) {
			return s.Value, true
		}
	}
	for _, s := range ss {
		if s.Labels == "" {
			return s.Value, true
		}
	}
	v = ss[0].Value
	for _, s := range ss[1:] {
		v = max(v, s.Value)
	}
	return v, true
}
