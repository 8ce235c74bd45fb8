package bench

import (
	"fmt"
	"io"
	"strings"
)

// Sec formats seconds for the table.
func Sec(s float64) string {
	switch {
	case s == 0:
		return "–"
	case s < 0.1:
		return fmt.Sprintf("%.1f ms", s*1000)
	case s < 1:
		return fmt.Sprintf("%.0f ms", s*1000)
	case s < 10:
		return fmt.Sprintf("%.2f s", s)
	default:
		return fmt.Sprintf("%.1f s", s)
	}
}

func lat(cs []Change) string {
	if len(cs) == 0 {
		return "–"
	}
	s := Summarize(latencies(cs))
	out := fmt.Sprintf("%s / %s / %s / %s (n=%d)", Sec(s.P50), Sec(s.P90), Sec(s.P99), Sec(s.Max), s.N)
	if t := timedOut(cs); t > 0 {
		out += fmt.Sprintf(", %d timed out", t)
	}
	return out
}

// breakdown formats the split of changes' latencies at the reference watch: the
// write's round trip, the watch delivery, and the rest (changes the watch missed are
// left out of the last two).
func breakdown(cs []Change) string {
	var written, watched, agent []float64
	for _, c := range cs {
		written = append(written, c.Written)
		if c.Watched > 0 && !c.TimedOut {
			watched = append(watched, c.Watched)
			agent = append(agent, max(c.Latency-c.Watched, 0))
		}
	}
	if len(cs) == 0 {
		return "–"
	}
	a, b, g := Summarize(written), Summarize(watched), Summarize(agent)
	return fmt.Sprintf("%s / %s, %s / %s, %s / %s / %s / %s (n=%d)", Sec(a.P50), Sec(a.P99), Sec(b.P50), Sec(b.P99),
		Sec(g.P50), Sec(g.P90), Sec(g.P99), Sec(g.Max), g.N)
}

func timedOut(cs []Change) int {
	n := 0
	for _, c := range cs {
		if c.TimedOut {
			n++
		}
	}
	return n
}

func ratio(a, b float64) string {
	if a <= 0 || b <= 0 {
		return "–"
	}
	return fmt.Sprintf("%.2f×", b/a)
}

func objects(r *Result) string {
	if r == nil || r.Counts == (Counts{}) {
		return "–"
	}
	c := r.Counts
	return fmt.Sprintf("%d ch / %d rules / %d el + %d inline", c.Chains, c.Rules, c.Elements, c.Inline)
}

func mib(kib int64) string {
	if kib == 0 {
		return "–"
	}
	return fmt.Sprintf("%.0f MiB", float64(kib)/1024)
}

// pair formats one figure of both agents as "kube-proxy / nodekeeper".
func pair(kp, nk *Result, f func(*Result) string) string {
	g := func(r *Result) string {
		if r == nil {
			return "–"
		}
		if r.Error != "" && r.FirstSync == 0 {
			return "failed"
		}
		return f(r)
	}
	return g(kp) + " / " + g(nk)
}

func phase(r *Result, name string) *Phase {
	if r == nil {
		return nil
	}
	for i := range r.Phases {
		if r.Phases[i].Name == name {
			return &r.Phases[i]
		}
	}
	return nil
}

func changes(r *Result, ph string, keep func(Change) bool) []Change {
	var out []Change
	if p := phase(r, ph); p != nil {
		for _, c := range p.Changes {
			if keep == nil || keep(c) {
				out = append(out, c)
			}
		}
	}
	return out
}

// PhasesOf lists the phase names in results, in order of first appearance.
func PhasesOf(rs []Result) []string {
	var out []string
	seen := map[string]bool{}
	for _, r := range rs {
		for _, p := range r.Phases {
			if !seen[p.Name] {
				seen[p.Name] = true
				out = append(out, p.Name)
			}
		}
	}
	return out
}

// PrintTable writes the comparison: one row per size, mode and phase, kube-proxy (the
// reference) and nodekeeper side by side; then the changes that overlapped a full sync
// and the per-kind figures.
func PrintTable(w io.Writer, rs []Result, phases []string) {
	type key struct {
		n    int
		mode string
	}
	var keys []key
	by := map[key]map[string]*Result{}
	for i := range rs {
		k := key{rs[i].Services, rs[i].Mode}
		if by[k] == nil {
			by[k] = map[string]*Result{}
			keys = append(keys, k)
		}
		by[k][rs[i].Agent] = &rs[i]
	}
	fmt.Fprintln(w, "| N | mode | load | kube-proxy p50 / p90 / p99 / max | nodekeeper p50 / p90 / p99 / max | nk/kp p50 | nk/kp p99 | CPU-s per change kp / nk | peak RSS kp / nk | first sync kp / nk | kernel objects kp / nk |")
	fmt.Fprintln(w, "|---:|---|---|---|---|---:|---:|---|---|---|---|")
	for _, k := range keys {
		kp, nk := by[k][AgentKubeProxy], by[k][AgentNodekeeper]
		for _, ph := range phases {
			a, b := changes(kp, ph, nil), changes(nk, ph, nil)
			sa, sb := Summarize(latencies(a)), Summarize(latencies(b))
			load := ph
			if ph == "churn" {
				// the churn rate reached (the apiserver and the machine may not keep up)
				load += " " + pair(kp, nk, func(r *Result) string {
					if p := phase(r, ph); p != nil && p.ChurnSeconds > 0 {
						return fmt.Sprintf("%.0f", float64(p.Churn)/p.ChurnSeconds)
					}
					return "–"
				}) + "/s"
			}
			fmt.Fprintf(w, "| %d | %s | %s | %s | %s | %s | %s | %s | %s | %s | %s |\n", k.n, k.mode, load, lat(a), lat(b),
				ratio(sa.P50, sb.P50), ratio(sa.P99, sb.P99),
				pair(kp, nk, func(r *Result) string {
					if p := phase(r, ph); p != nil {
						return fmt.Sprintf("%.4f", p.CPUPerChange())
					}
					return "–"
				}),
				pair(kp, nk, func(r *Result) string { return mib(r.Memory.PeakKiB) }),
				pair(kp, nk, func(r *Result) string { return Sec(r.FirstSync) }),
				pair(kp, nk, objects))
		}
	}
	fmt.Fprintln(w)
	fmt.Fprintln(w, "Changes in flight while the agent ran a full sync (its periodic repair), and full syncs seen during the phases:")
	fmt.Fprintln(w)
	fmt.Fprintln(w, "| N | mode | kube-proxy: full syncs, changes p50 / p90 / p99 / max | nodekeeper: full syncs, changes p50 / p90 / p99 / max |")
	fmt.Fprintln(w, "|---:|---|---|---|")
	during := func(c Change) bool { return c.DuringFull }
	for _, k := range keys {
		kp, nk := by[k][AgentKubeProxy], by[k][AgentNodekeeper]
		cell := func(r *Result) string {
			if r == nil {
				return "–"
			}
			var cs []Change
			for _, ph := range phases {
				cs = append(cs, changes(r, ph, during)...)
			}
			return fmt.Sprintf("%d, %s", r.FullSyncs, lat(cs))
		}
		fmt.Fprintf(w, "| %d | %s | %s | %s |\n", k.n, k.mode, cell(kp), cell(nk))
	}
	fmt.Fprintln(w)
	fmt.Fprintln(w, "Where the time goes, p50 / p99 (API write sent → write returned; → the harness's own watch got the event; watch event → kernel, the agent's part):")
	fmt.Fprintln(w)
	fmt.Fprintln(w, "| N | mode | load | kube-proxy: written, watched, agent part p50 / p90 / p99 / max | nodekeeper: written, watched, agent part p50 / p90 / p99 / max |")
	fmt.Fprintln(w, "|---:|---|---|---|---|")
	for _, k := range keys {
		kp, nk := by[k][AgentKubeProxy], by[k][AgentNodekeeper]
		for _, ph := range phases {
			cell := func(r *Result) string { return breakdown(changes(r, ph, nil)) }
			fmt.Fprintf(w, "| %d | %s | %s | %s | %s |\n", k.n, k.mode, ph, cell(kp), cell(nk))
		}
	}
	fmt.Fprintln(w)
	fmt.Fprintln(w, "By kind of change (both phases):")
	fmt.Fprintln(w)
	fmt.Fprintln(w, "| N | mode | kind | kube-proxy p50 / p90 / p99 / max | nodekeeper p50 / p90 / p99 / max |")
	fmt.Fprintln(w, "|---:|---|---|---|---|")
	for _, k := range keys {
		kp, nk := by[k][AgentKubeProxy], by[k][AgentNodekeeper]
		for _, kind := range Kinds {
			of := func(c Change) bool { return c.Kind == kind }
			var a, b []Change
			for _, ph := range phases {
				a = append(a, changes(kp, ph, of)...)
				b = append(b, changes(nk, ph, of)...)
			}
			fmt.Fprintf(w, "| %d | %s | %s | %s | %s |\n", k.n, k.mode, kind, lat(a), lat(b))
		}
	}
	var notes []string
	for _, r := range rs {
		if r.Error != "" {
			notes = append(notes, fmt.Sprintf("- %s %s %d: %s", r.Agent, r.Mode, r.Services, strings.ReplaceAll(r.Error, "\n", " ")))
		}
	}
	if len(notes) > 0 {
		fmt.Fprintln(w)
		fmt.Fprintln(w, "Errors:")
		for _, n := range notes {
			fmt.Fprintln(w, n)
		}
	}
}
