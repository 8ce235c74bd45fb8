package host

import (
	"sync"

	corev1 "k8s.io/api/core/v1"
)

// Fake is an in-memory Host for tests; its figures are set with Set* and read under a lock.
type Fake struct {
	mu        sync.Mutex
	capacity  corev1.ResourceList
	info      Info
	stats     Stats
	addresses []corev1.NodeAddress
}

var _ Host = (*Fake)(nil)

// NewFake returns a fake host with the given capacity and stats.
func NewFake(capacity corev1.ResourceList, info Info, stats Stats, addrs []corev1.NodeAddress) *Fake {
	return &Fake{capacity: capacity, info: info, stats: stats, addresses: addrs}
}

// SetStat replaces one eviction signal observation.
func (f *Fake) SetStat(signal string, s Signal) {
	f.mu.Lock()
	defer f.mu.Unlock()
	next := Stats{}
	for k, v := range f.stats {
		next[k] = v
	}
	next[signal] = s
	f.stats = next
}

// SetAddresses replaces the node's addresses.
func (f *Fake) SetAddresses(a []corev1.NodeAddress) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.addresses = a
}

// Capacity implements Host.
func (f *Fake) Capacity() (corev1.ResourceList, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.capacity.DeepCopy(), nil
}

// Info implements Host.
func (f *Fake) Info() (Info, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.info, nil
}

// Stats implements Host.
func (f *Fake) Stats() (Stats, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.stats, nil
}

// Addresses implements Host; nodeIP and hostname, when set, replace the set ones.
func (f *Fake) Addresses(nodeIP, hostname string) ([]corev1.NodeAddress, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	out := append([]corev1.NodeAddress(nil), f.addresses...)
	if nodeIP != "" {
		for i := range out {
			if out[i].Type == corev1.NodeInternalIP {
				out[i].Address = nodeIP
			}
		}
	}
	if hostname != "" {
		for i := range out {
			if out[i].Type == corev1.NodeHostName {
				out[i].Address = hostname
			}
		}
	}
	return out, nil
}
