package bench

import (
	"context"
	"fmt"
	"math/rand/v2"
	"net/netip"
	"sync"
	"sync/atomic"
	"time"

	corev1 "k8s.io/api/core/v1"
	discoveryv1 "k8s.io/api/discovery/v1"
	networkingv1 "k8s.io/api/networking/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/util/intstr"
	"k8s.io/utils/ptr"
	"sigs.k8s.io/controller-runtime/pkg/client"
)

// The objects the benchmark loads: N ClusterIP Services (one TCP port) in one namespace,
// each with one EndpointSlice of EndpointsPerService ready endpoints on other nodes.
const (
	Namespace           = "bench"
	EndpointsPerService = 5
	// ServiceCIDR is added to envtest's apiserver (whose own range, 10.0.0.0/24, holds
	// only 254 Services) as a ServiceCIDR object; ClusterIPs are set explicitly from it.
	ServiceCIDR = "10.96.0.0/16"
	// ClusterCIDR holds the pod (endpoint) addresses: 5 × 10,000 fit, the rest of the
	// /16 is for the addresses the change measurements move endpoints to.
	ClusterCIDR = "10.244.0.0/16"
	// ManagedBy labels the EndpointSlices (there is no endpointslice controller in envtest).
	ManagedBy = "nodekeeper-bench"
	// MaxServices is how many Services the address plan allows.
	MaxServices = 12000
)

// ServiceName is the name of Service i.
func ServiceName(i int) string { return fmt.Sprintf("svc-%05d", i) }

// SliceName is the name of Service i's EndpointSlice.
func SliceName(i int) string { return ServiceName(i) + "-bench" }

func nth(prefix string, n int) netip.Addr {
	b := netip.MustParsePrefix(prefix).Addr().As4()
	v := uint32(b[0])<<24 | uint32(b[1])<<16 | uint32(b[2])<<8 | uint32(b[3])
	v += uint32(n)
	return netip.AddrFrom4([4]byte{byte(v >> 24), byte(v >> 16), byte(v >> 8), byte(v)})
}

// ClusterIP is Service i's ClusterIP.
func ClusterIP(i int) netip.Addr { return nth(ServiceCIDR, 10+i) }

// EndpointIP is the j-th initial endpoint of Service i.
func EndpointIP(i, j int) netip.Addr { return nth(ClusterCIDR, 1+i*EndpointsPerService+j) }

// SpareEndpointIP is a random pod address outside the initial endpoints, for changes.
func SpareEndpointIP() netip.Addr {
	first := 1 + MaxServices*EndpointsPerService
	return nth(ClusterCIDR, first+rand.IntN(65534-first))
}

// Service is Service i.
func Service(i int) *corev1.Service {
	ip := ClusterIP(i).String()
	return &corev1.Service{
		ObjectMeta: metav1.ObjectMeta{Namespace: Namespace, Name: ServiceName(i), Labels: map[string]string{"app": "bench"}},
		Spec: corev1.ServiceSpec{
			Type:       corev1.ServiceTypeClusterIP,
			ClusterIP:  ip,
			ClusterIPs: []string{ip},
			Selector:   map[string]string{"app": ServiceName(i)},
			Ports:      []corev1.ServicePort{{Name: "http", Port: 80, TargetPort: intstr.FromInt32(8080), Protocol: corev1.ProtocolTCP}},
		},
	}
}

// EndpointSlice is Service i's EndpointSlice.
func EndpointSlice(i int) *discoveryv1.EndpointSlice {
	s := &discoveryv1.EndpointSlice{
		ObjectMeta: metav1.ObjectMeta{Namespace: Namespace, Name: SliceName(i), Labels: map[string]string{
			discoveryv1.LabelServiceName: ServiceName(i), discoveryv1.LabelManagedBy: ManagedBy}},
		AddressType: discoveryv1.AddressTypeIPv4,
		Ports:       []discoveryv1.EndpointPort{{Name: ptr.To("http"), Port: ptr.To[int32](8080), Protocol: ptr.To(corev1.ProtocolTCP)}},
	}
	for j := 0; j < EndpointsPerService; j++ {
		s.Endpoints = append(s.Endpoints, discoveryv1.Endpoint{
			Addresses:  []string{EndpointIP(i, j).String()},
			NodeName:   ptr.To(fmt.Sprintf("node-%d", (i+j)%100)),
			Conditions: discoveryv1.EndpointConditions{Ready: ptr.To(true), Serving: ptr.To(true), Terminating: ptr.To(false)},
		})
	}
	return s
}

// Prepare creates the namespace and the ServiceCIDR (marked Ready, since envtest runs no
// controller-manager to do it).
func Prepare(ctx context.Context, c client.Client) error {
	ns := &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: Namespace}}
	if err := c.Create(ctx, ns); err != nil && !apierrors.IsAlreadyExists(err) {
		return fmt.Errorf("creating namespace: %w", err)
	}
	cidr := &networkingv1.ServiceCIDR{ObjectMeta: metav1.ObjectMeta{Name: "bench"},
		Spec: networkingv1.ServiceCIDRSpec{CIDRs: []string{ServiceCIDR}}}
	if err := c.Create(ctx, cidr); err != nil && !apierrors.IsAlreadyExists(err) {
		return fmt.Errorf("creating ServiceCIDR %s: %w", ServiceCIDR, err)
	}
	if err := c.Get(ctx, client.ObjectKeyFromObject(cidr), cidr); err != nil {
		return err
	}
	cidr.Status.Conditions = []metav1.Condition{{Type: networkingv1.ServiceCIDRConditionReady, Status: metav1.ConditionTrue,
		Reason: "Bench", Message: "set by the benchmark", LastTransitionTime: metav1.Now()}}
	if err := c.Status().Update(ctx, cidr); err != nil {
		return fmt.Errorf("marking ServiceCIDR ready: %w", err)
	}
	return nil
}

// Load creates Services and EndpointSlices from..to-1 with workers goroutines; progress,
// when set, is called now and then with the number created so far.
func Load(ctx context.Context, c client.Client, from, to, workers int, progress func(done int)) error {
	if to > MaxServices {
		return fmt.Errorf("at most %d Services", MaxServices)
	}
	next := atomic.Int64{}
	next.Store(int64(from))
	var done atomic.Int64
	var firstErr error
	var once sync.Once
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	var wg sync.WaitGroup
	for w := 0; w < workers; w++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for {
				i := int(next.Add(1) - 1)
				if i >= to || ctx.Err() != nil {
					return
				}
				err := create(ctx, c, Service(i))
				if err == nil {
					err = create(ctx, c, EndpointSlice(i))
				}
				if err != nil {
					once.Do(func() { firstErr = fmt.Errorf("creating %s: %w", ServiceName(i), err); cancel() })
					return
				}
				if d := done.Add(1); progress != nil && d%1000 == 0 {
					progress(from + int(d))
				}
			}
		}()
	}
	wg.Wait()
	return firstErr
}

func create(ctx context.Context, c client.Client, o client.Object) error {
	for attempt := 0; ; attempt++ {
		err := c.Create(ctx, o)
		if err == nil || apierrors.IsAlreadyExists(err) {
			return nil
		}
		// the apiserver may push back under load; anything else is fatal
		if attempt >= 5 || !(apierrors.IsTooManyRequests(err) || apierrors.IsServerTimeout(err) || apierrors.IsTimeout(err)) {
			return err
		}
		time.Sleep(time.Duration(attempt+1) * 200 * time.Millisecond)
	}
}
