package nftables

import (
	"fmt"
	"testing"
	"time"
)

// The pure part of one endpoint change at scale: Plan against a Planner holding N
// Services × 5 endpoints (figures printed by the benchmark, never asserted).
func BenchmarkPlanOneChange(b *testing.B) {
	for _, n := range []int{10000, 50000} {
		b.Run(fmt.Sprintf("services=%d", n), func(b *testing.B) {
			st, svcs, slices := bigState(n, 5)
			p := NewPlanner(EnvOf(st.Family, st.Node))
			now := time.Unix(1, 0)
			for _, k := range st.Services() {
				p.Plan(k, st.Ports(k), false, now)
			}
			b.ReportAllocs()
			b.ResetTimer()
			ops := 0
			for i := 0; i < b.N; i++ {
				key := moveOne(st, svcs, slices, (i*7919)%n, i)
				ops += len(p.Plan(key, st.Ports(key), false, now))
			}
			b.ReportMetric(float64(ops)/float64(b.N), "ops/change")
		})
	}
}
