package ipvs

import (
	"fmt"
	"net"
	"sort"
	"sync"
	"syscall"

	libipvs "github.com/moby/ipvs"
)

// Fake is a stateful in-memory IPVS for kernels without it. It enforces the kernel's
// rules: adding an existing service or real server fails with EEXIST, touching a missing
// one fails with ENOENT.
type Fake struct {
	mu       sync.Mutex
	services map[string]*fakeService
	// Calls counts mutating calls, so tests can see that an unchanged sync does nothing.
	Calls int
}

type fakeService struct {
	svc   libipvs.Service
	dests map[string]libipvs.Destination
}

// NewFake returns an empty IPVS table.
func NewFake() *Fake { return &Fake{services: map[string]*fakeService{}} }

var _ Handle = (*Fake)(nil)

func destKey(d *libipvs.Destination) string {
	return net.JoinHostPort(d.Address.String(), fmt.Sprint(d.Port))
}

// GetServices implements Handle.
func (f *Fake) GetServices() ([]*libipvs.Service, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	var out []*libipvs.Service
	for _, s := range f.services {
		c := s.svc
		out = append(out, &c)
	}
	sort.Slice(out, func(i, j int) bool { return keyOf(out[i]) < keyOf(out[j]) })
	return out, nil
}

// NewService implements Handle.
func (f *Fake) NewService(s *libipvs.Service) error {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.Calls++
	if _, ok := f.services[keyOf(s)]; ok {
		return syscall.EEXIST
	}
	f.services[keyOf(s)] = &fakeService{svc: *s, dests: map[string]libipvs.Destination{}}
	return nil
}

// UpdateService implements Handle.
func (f *Fake) UpdateService(s *libipvs.Service) error {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.Calls++
	cur, ok := f.services[keyOf(s)]
	if !ok {
		return syscall.ENOENT
	}
	cur.svc = *s
	return nil
}

// DelService implements Handle.
func (f *Fake) DelService(s *libipvs.Service) error {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.Calls++
	if _, ok := f.services[keyOf(s)]; !ok {
		return syscall.ENOENT
	}
	delete(f.services, keyOf(s))
	return nil
}

// GetDestinations implements Handle.
func (f *Fake) GetDestinations(s *libipvs.Service) ([]*libipvs.Destination, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	cur, ok := f.services[keyOf(s)]
	if !ok {
		return nil, syscall.ENOENT
	}
	var out []*libipvs.Destination
	for _, d := range cur.dests {
		c := d
		out = append(out, &c)
	}
	sort.Slice(out, func(i, j int) bool { return destKey(out[i]) < destKey(out[j]) })
	return out, nil
}

func (f *Fake) dest(s *libipvs.Service, d *libipvs.Destination, want bool, fn func(*fakeService)) error {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.Calls++
	cur, ok := f.services[keyOf(s)]
	if !ok {
		return syscall.ENOENT
	}
	_, exists := cur.dests[destKey(d)]
	if exists != want {
		if exists {
			return syscall.EEXIST
		}
		return syscall.ENOENT
	}
	fn(cur)
	return nil
}

// NewDestination implements Handle.
func (f *Fake) NewDestination(s *libipvs.Service, d *libipvs.Destination) error {
	return f.dest(s, d, false, func(c *fakeService) { c.dests[destKey(d)] = *d })
}

// UpdateDestination implements Handle.
func (f *Fake) UpdateDestination(s *libipvs.Service, d *libipvs.Destination) error {
	return f.dest(s, d, true, func(c *fakeService) { c.dests[destKey(d)] = *d })
}

// DelDestination implements Handle.
func (f *Fake) DelDestination(s *libipvs.Service, d *libipvs.Destination) error {
	return f.dest(s, d, true, func(c *fakeService) { delete(c.dests, destKey(d)) })
}

// Dump lists "proto/vip:port [flags timeout] -> reals" lines, sorted, like ipvsadm -Ln.
func (f *Fake) Dump() []string {
	f.mu.Lock()
	defer f.mu.Unlock()
	var out []string
	for k, s := range f.services {
		var ds []string
		for dk := range s.dests {
			ds = append(ds, dk)
		}
		sort.Strings(ds)
		line := fmt.Sprintf("%s %s", k, s.svc.SchedName)
		if s.svc.Flags&0x1 != 0 {
			line += fmt.Sprintf(" persistent %d", s.svc.Timeout)
		}
		out = append(out, fmt.Sprintf("%s -> %v", line, ds))
	}
	sort.Strings(out)
	return out
}
