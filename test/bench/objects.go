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

// The objects the benchmark loads: N ClusterIP Services (one TCP port "http", 80 →
// 8080) in one namespace, each with one EndpointSlice of EndpointsPerService ready
// endpoints on other nodes. The changes create further Services ("new-NNNNN").
const (
	Namespace           = "bench"
	EndpointsPerService = 5
	PortName            = "http"
	ServicePort         = 80
	TargetPort          = 8080
	// ServiceCIDR is added to envtest's apiserver (whose own range, 10.0.0.0/24, holds
	// only 254 Services) as a ServiceCIDR object; ClusterIPs are set explicitly from it.
	ServiceCIDR = "10.96.0.0/16"
	// ClusterCIDR holds the pod (endpoint) addresses: the initial endpoints from its
	// start, the addresses changes move endpoints to from SpareBase on.
	ClusterCIDR = "10.128.0.0/10"
	SpareBase   = "10.160.0.0"
	// ManagedBy labels the EndpointSlices (there is no endpointslice controller in envtest).
	ManagedBy = "nodekeeper-bench"
	// MaxServices is how many loaded Services the address plan allows; MaxCreated how
	// many more the changes may create over a whole run.
	MaxServices = 60000
	MaxCreated  = 5000
	// NodeName is the node both agents run as; NodeIP its InternalIP (inside the node
	// namespace only).
	NodeName = "bench-node"
	NodeIP   = "10.240.0.1"
)

// ServiceName is the name of loaded Service i.
func ServiceName(i int) string { return fmt.Sprintf("svc-%05d", i) }

// CreatedName is the name of the k-th Service a change creates.
func CreatedName(k int) string { return fmt.Sprintf("new-%05d", k) }

func nth(base string, n int) netip.Addr {
	b := netip.MustParseAddr(base).As4()
	v := uint32(b[0])<<24 | uint32(b[1])<<16 | uint32(b[2])<<8 | uint32(b[3])
	v += uint32(n)
	return netip.AddrFrom4([4]byte{byte(v >> 24), byte(v >> 16), byte(v >> 8), byte(v)})
}

// ClusterIP is loaded Service i's ClusterIP; CreatedClusterIP the k-th created one's.
func ClusterIP(i int) netip.Addr        { return nth("10.96.0.0", 10+i) }
func CreatedClusterIP(k int) netip.Addr { return nth("10.96.0.0", 10+MaxServices+k) }

// EndpointIP is the j-th initial endpoint of loaded Service i.
func EndpointIP(i, j int) netip.Addr { return nth("10.128.0.0", 1+i*EndpointsPerService+j) }

// SpareEndpointIP is a random pod address outside the initial endpoints (2^21 of them).
func SpareEndpointIP(r *rand.Rand) netip.Addr { return nth(SpareBase, 1+r.IntN(1<<21-2)) }

// Port is the one port of a benchmark Service as kube-proxy names it.
func Port(name string) PortRef {
	return PortRef{Namespace: Namespace, Name: name, Port: PortName, Protocol: "tcp"}
}

// Endpoint is an endpoint address with the target port.
func Endpoint(ip netip.Addr) netip.AddrPort { return netip.AddrPortFrom(ip, TargetPort) }

// InitialEndpoints are loaded Service i's endpoints.
func InitialEndpoints(i int) []netip.Addr {
	out := make([]netip.Addr, EndpointsPerService)
	for j := range out {
		out[j] = EndpointIP(i, j)
	}
	return out
}

// NewService is a benchmark Service.
func NewService(name string, clusterIP netip.Addr) *corev1.Service {
	ip := clusterIP.String()
	return &corev1.Service{
		ObjectMeta: metav1.ObjectMeta{Namespace: Namespace, Name: name, Labels: map[string]string{"app": "bench"}},
		Spec: corev1.ServiceSpec{
			Type:       corev1.ServiceTypeClusterIP,
			ClusterIP:  ip,
			ClusterIPs: []string{ip},
			Selector:   map[string]string{"app": name},
			Ports:      []corev1.ServicePort{{Name: PortName, Port: ServicePort, TargetPort: intstr.FromInt32(TargetPort), Protocol: corev1.ProtocolTCP}},
		},
	}
}

// SliceName is the name of a Service's EndpointSlice.
func SliceName(service string) string { return service + "-bench" }

func endpoints(eps []netip.Addr, seed int) []discoveryv1.Endpoint {
	out := make([]discoveryv1.Endpoint, 0, len(eps))
	for j, ip := range eps {
		out = append(out, discoveryv1.Endpoint{
			Addresses:  []string{ip.String()},
			NodeName:   ptr.To(fmt.Sprintf("node-%d", (seed+j)%100)),
			Conditions: discoveryv1.EndpointConditions{Ready: ptr.To(true), Serving: ptr.To(true), Terminating: ptr.To(false)},
		})
	}
	return out
}

// NewEndpointSlice is a Service's EndpointSlice with the given endpoints.
func NewEndpointSlice(service string, eps []netip.Addr) *discoveryv1.EndpointSlice {
	return &discoveryv1.EndpointSlice{
		ObjectMeta: metav1.ObjectMeta{Namespace: Namespace, Name: SliceName(service), Labels: map[string]string{
			discoveryv1.LabelServiceName: service, discoveryv1.LabelManagedBy: ManagedBy}},
		AddressType: discoveryv1.AddressTypeIPv4,
		Ports:       []discoveryv1.EndpointPort{{Name: ptr.To(PortName), Port: ptr.To[int32](TargetPort), Protocol: ptr.To(corev1.ProtocolTCP)}},
		Endpoints:   endpoints(eps, len(service)),
	}
}

// Prepare creates the namespace, the ServiceCIDR (marked Ready, since envtest runs no
// controller-manager to do it) and the Node both agents run as.
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
	node := &corev1.Node{ObjectMeta: metav1.ObjectMeta{Name: NodeName, Labels: map[string]string{"kubernetes.io/hostname": NodeName}}}
	if err := c.Create(ctx, node); err != nil && !apierrors.IsAlreadyExists(err) {
		return fmt.Errorf("creating Node: %w", err)
	}
	if err := c.Get(ctx, client.ObjectKeyFromObject(node), node); err != nil {
		return err
	}
	node.Status.Addresses = []corev1.NodeAddress{{Type: corev1.NodeInternalIP, Address: NodeIP}, {Type: corev1.NodeHostName, Address: NodeName}}
	node.Status.Conditions = []corev1.NodeCondition{{Type: corev1.NodeReady, Status: corev1.ConditionTrue, Reason: "Bench",
		LastHeartbeatTime: metav1.Now(), LastTransitionTime: metav1.Now()}}
	if err := c.Status().Update(ctx, node); err != nil {
		return fmt.Errorf("setting Node status: %w", err)
	}
	return nil
}

// Load creates loaded Services from..to-1 and their EndpointSlices with workers
// goroutines; progress, when set, is called now and then with the number created so far.
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
				err := create(ctx, c, NewService(ServiceName(i), ClusterIP(i)))
				if err == nil {
					err = create(ctx, c, NewEndpointSlice(ServiceName(i), InitialEndpoints(i)))
				}
				if err != nil {
					once.Do(func() { firstErr = fmt.Errorf("creating %s: %w", ServiceName(i), err); cancel() })
					return
				}
				if d := done.Add(1); progress != nil && d%2000 == 0 {
					progress(from + int(d))
				}
			}
		}()
	}
	wg.Wait()
	return firstErr
}

// create creates o, tolerating AlreadyExists, retrying while the apiserver pushes back
// and while a just-deleted Service's ClusterIP is still being released.
func create(ctx context.Context, c client.Client, o client.Object) error {
	for attempt := 0; ; attempt++ {
		err := c.Create(ctx, o)
		if err == nil || apierrors.IsAlreadyExists(err) {
			return nil
		}
		retry := apierrors.IsTooManyRequests(err) || apierrors.IsServerTimeout(err) || apierrors.IsTimeout(err) ||
			(apierrors.IsInvalid(err) && attempt < 20) // "provided IP is already allocated" right after a delete
		if attempt >= 25 || !retry {
			return err
		}
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(time.Duration(min(attempt+1, 5)) * 200 * time.Millisecond):
		}
	}
}
