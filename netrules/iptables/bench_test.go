package iptables

import (
	"context"
	"fmt"
	"testing"

	corev1 "k8s.io/api/core/v1"
	discoveryv1 "k8s.io/api/discovery/v1"

	"github.com/nodekeeper/nodekeeper/netrules"
)

func bigCluster(n int) ([]*corev1.Service, []*discoveryv1.EndpointSlice) {
	var svcs []*corev1.Service
	var slices []*discoveryv1.EndpointSlice
	for i := 0; i < n; i++ {
		s := netrules.MakeService("ns", fmt.Sprintf("s%05d", i), fmt.Sprintf("10.96.%d.%d", i/250, i%250+1), 80)
		svcs = append(svcs, s)
		var eps []netrules.SliceEndpoint
		for j := 0; j < 5; j++ {
			eps = append(eps, netrules.SliceEndpoint{IP: fmt.Sprintf("10.%d.%d.%d", 100+j, i/250, i%250+1)})
		}
		slices = append(slices, netrules.MakeSlice(s, s.Name+"-1", 8080, eps...))
	}
	return svcs, slices
}

// BenchmarkBuild5000 is the pure model build for 5,000 Services × 5 endpoints.
func BenchmarkBuild5000(b *testing.B) {
	svcs, slices := bigCluster(5000)
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		netrules.Build(svcs, slices, testNode)
	}
}

// BenchmarkRender5000 renders the iptables rules of 5,000 Services × 5 endpoints.
func BenchmarkRender5000(b *testing.B) {
	svcs, slices := bigCluster(5000)
	rs := netrules.Build(svcs, slices, testNode)[netrules.IPv4]
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		Render(rs)
	}
}

// BenchmarkPartialSync5000 is one endpoint move at 5,000 Services against the fake
// (everything but the iptables-restore process itself).
func BenchmarkPartialSync5000(b *testing.B) {
	svcs, slices := bigCluster(5000)
	p, _ := newFakeProxier()
	ctx := context.Background()
	if _, err := p.Sync(ctx, netrules.Build(svcs, slices, testNode)[netrules.IPv4], true); err != nil {
		b.Fatal(err)
	}
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		s := svcs[i%len(svcs)]
		slices[i%len(svcs)] = netrules.MakeSlice(s, s.Name+"-1", 8080, netrules.SliceEndpoint{IP: fmt.Sprintf("10.200.%d.%d", i%250, i%200+1)})
		if _, err := p.Sync(ctx, netrules.Build(svcs, slices, testNode)[netrules.IPv4], false); err != nil {
			b.Fatal(err)
		}
	}
}
