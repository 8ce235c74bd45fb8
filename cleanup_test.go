package main

import (
	"context"
	"errors"
	"reflect"
	"testing"

	"github.com/nodekeeper/nodekeeper/api/v1alpha1"
	"github.com/nodekeeper/nodekeeper/netrules"
)

type fakeCleaner struct {
	name  string
	calls *[]string
	err   error
}

func (f fakeCleaner) Cleanup(context.Context) error {
	*f.calls = append(*f.calls, f.name)
	return f.err
}

// As kube-proxy's platformCleanup: starting in nftables mode removes the iptables rules,
// starting in iptables or ipvs mode the nftables table, for every family; failures do
// not stop the start.
func TestCleanupOtherModes(t *testing.T) {
	fams := []netrules.Family{netrules.IPv4, netrules.IPv6}
	for mode, want := range map[v1alpha1.ProxyMode][]string{
		v1alpha1.ProxyModeNFTables: {"iptables/4", "iptables/6"},
		v1alpha1.ProxyModeIPTables: {"nftables/4", "nftables/6"},
		v1alpha1.ProxyModeIPVS:     {"nftables/4", "nftables/6"},
	} {
		var calls []string
		cleanupOtherModes(context.Background(), mode, fams,
			func(f netrules.Family) cleaner {
				return fakeCleaner{name: "iptables/" + map[netrules.Family]string{netrules.IPv4: "4", netrules.IPv6: "6"}[f], calls: &calls, err: errors.New("boom")}
			},
			func(f netrules.Family) (cleaner, error) {
				return fakeCleaner{name: "nftables/" + map[netrules.Family]string{netrules.IPv4: "4", netrules.IPv6: "6"}[f], calls: &calls}, nil
			})
		if !reflect.DeepEqual(calls, want) {
			t.Errorf("%s: cleaned %v, want %v", mode, calls, want)
		}
	}
}
