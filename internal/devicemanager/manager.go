// Package devicemanager is the kubelet's device manager (pkg/kubelet/cm/devicemanager)
// for device plugins of API v1beta1: the Registration service on <dir>/kubelet.sock,
// one client per registered plugin following its ListAndWatch stream, the node's
// capacity and allocatable of each resource (all devices / healthy ones), and the
// allocation of devices to containers (the plugin's Allocate answer: env, mounts,
// device nodes, annotations, CDI devices).
//
// As upstream: a plugin whose GetDevicePluginOptions fails is refused at Register; when
// its ListAndWatch ends (the plugin fails or stops) all its devices turn unhealthy
// (allocatable 0, capacity kept) and ListAndWatch is not called again; 5 minutes later
// (endpointStopGracePeriod) the resource is dropped and reported as removed, the node
// then shows it with capacity 0. Allocations are checkpointed, as upstream's, in
// <dir>/kubelet_internal_checkpoint (upstream's format: package checkpoint), written after
// every allocation, device update and release and read back at Start: a restarted agent
// gives a restarted container the devices it had, and shows each checkpointed resource
// with no devices (its plugin stopped) until the plugin registers again.
package devicemanager

import (
	"context"
	"errors"
	"fmt"
	"net"
	"os"
	"path/filepath"
	"sort"
	"strings"
	"sync"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/protobuf/proto"
	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/api/resource"
	"k8s.io/apimachinery/pkg/util/validation"
	pluginapi "k8s.io/kubelet/pkg/apis/deviceplugin/v1beta1"
	"sigs.k8s.io/controller-runtime/pkg/log"

	"github.com/nodekeeper/nodekeeper/internal/devicemanager/checkpoint"
)

// StopGracePeriod is upstream's endpointStopGracePeriod: how long the resource of a
// plugin that went away is still reported (its devices unhealthy).
const StopGracePeriod = 5 * time.Minute

// SocketName is the Registration service's socket in the plugin folder.
const SocketName = "kubelet.sock"

type endpoint struct {
	resource string
	socket   string
	conn     *grpc.ClientConn
	api      pluginapi.DevicePluginClient
	options  *pluginapi.DevicePluginOptions
	stopTime time.Time
}

// allocation is what one container got for one resource.
type allocation struct {
	devices  []string
	response *pluginapi.ContainerAllocateResponse
}

// Manager is the device manager. The zero value is not usable: use New.
type Manager struct {
	dir      string
	now      func() time.Time
	onChange func()

	mu        sync.Mutex
	endpoints map[string]*endpoint // resource -> its (latest) plugin
	healthy   map[string]map[string]bool
	unhealthy map[string]map[string]bool
	// allocated: pod UID -> container -> resource -> devices
	allocated map[string]map[string]map[string]*allocation
	// removed: resources dropped after their plugin's grace period, reported with
	// capacity 0 from then on (upstream keeps them so in the node's status)
	removed map[string]bool
	server  *grpc.Server
	// writeMu orders checkpoint writes (each writes the state it read under mu)
	writeMu sync.Mutex

	pluginapi.UnsafeRegistrationServer
}

// New makes a device manager serving in dir (upstream: /var/lib/kubelet/device-plugins);
// onChange (may be nil) is called when capacity or allocatable may have changed.
func New(dir string, onChange func()) *Manager {
	return &Manager{dir: dir, now: time.Now, onChange: onChange,
		endpoints: map[string]*endpoint{}, healthy: map[string]map[string]bool{}, unhealthy: map[string]map[string]bool{},
		allocated: map[string]map[string]map[string]*allocation{}, removed: map[string]bool{}}
}

// SocketPath is the Registration service's socket.
func (m *Manager) SocketPath() string { return filepath.Join(m.dir, SocketName) }

// Start serves the Registration service until ctx ends (a manager.Runnable). As
// upstream's, it first removes the sockets left in the folder (stale plugins).
func (m *Manager) Start(ctx context.Context) error {
	if err := os.MkdirAll(m.dir, 0o750); err != nil {
		return fmt.Errorf("creating the device plugin folder: %w", err)
	}
	entries, err := os.ReadDir(m.dir)
	if err != nil {
		return err
	}
	var removeErr error
	for _, e := range entries {
		if e.Type()&os.ModeSocket != 0 {
			if err := os.Remove(filepath.Join(m.dir, e.Name())); err != nil && !os.IsNotExist(err) && e.Name() == SocketName {
				removeErr = err
			}
		}
	}
	if err := m.readCheckpoint(); err != nil {
		// as upstream: go on without it ("Device allocation info may NOT be up-to-date")
		log.FromContext(ctx).Error(err, "Continue after failing to read checkpoint file. Device allocation info may NOT be up-to-date")
	}
	ln, err := net.Listen("unix", m.SocketPath())
	if err != nil {
		if removeErr != nil {
			// the stale socket could not go (a read-only root dir): say why, not only
			// "address already in use"
			return fmt.Errorf("listening for device plugins: %w (removing the previous socket: %v)", err, removeErr)
		}
		return fmt.Errorf("listening for device plugins: %w", err)
	}
	srv := grpc.NewServer()
	pluginapi.RegisterRegistrationServer(srv, m)
	m.mu.Lock()
	m.server = srv
	m.mu.Unlock()
	go func() {
		<-ctx.Done()
		srv.Stop()
		m.mu.Lock()
		for _, e := range m.endpoints {
			if e.conn != nil { // nil: restored from the checkpoint, not registered since
				_ = e.conn.Close()
			}
		}
		m.mu.Unlock()
	}()
	log.FromContext(ctx).Info("Device plugin registration server listening", "socket", m.SocketPath())
	if err := srv.Serve(ln); err != nil && !errors.Is(err, grpc.ErrServerStopped) {
		return err
	}
	return nil
}

// NeedLeaderElection implements manager.LeaderElectionRunnable: every node runs its own.
func (m *Manager) NeedLeaderElection() bool { return false }

// Register implements the Registration service: upstream's server.Register and
// PluginConnected. The plugin's GetDevicePluginOptions is called before it answers.
func (m *Manager) Register(ctx context.Context, r *pluginapi.RegisterRequest) (*pluginapi.Empty, error) {
	logger := log.FromContext(ctx).WithValues("resource", r.ResourceName)
	logger.Info("Got registration request from device plugin")
	if r.Version != pluginapi.Version {
		return &pluginapi.Empty{}, fmt.Errorf("requested device plugin version %s is not supported; supported versions: %v", r.Version, pluginapi.SupportedVersions)
	}
	if !IsExtendedResourceName(corev1.ResourceName(r.ResourceName)) {
		return &pluginapi.Empty{}, fmt.Errorf("invalid resource name %q: it must be an extended resource name (domain/name, not kubernetes.io)", r.ResourceName)
	}
	socket := filepath.Join(m.dir, r.Endpoint)
	dctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	conn, err := grpc.NewClient("unix://"+socket, grpc.WithTransportCredentials(insecure.NewCredentials()), grpc.WithAuthority("localhost"))
	if err != nil {
		return &pluginapi.Empty{}, fmt.Errorf("failed to dial device plugin: %w", err)
	}
	api := pluginapi.NewDevicePluginClient(conn)
	options, err := api.GetDevicePluginOptions(dctx, &pluginapi.Empty{}, grpc.WaitForReady(true))
	if err != nil {
		_ = conn.Close()
		return &pluginapi.Empty{}, fmt.Errorf("failed to get device plugin options: %v", err)
	}
	e := &endpoint{resource: r.ResourceName, socket: socket, conn: conn, api: api, options: options}
	m.mu.Lock()
	if old, ok := m.endpoints[r.ResourceName]; ok && old.socket == socket && old.stopTime.IsZero() {
		m.mu.Unlock()
		_ = conn.Close()
		return &pluginapi.Empty{}, fmt.Errorf("device plugin already connected: %s", socket)
	}
	m.endpoints[r.ResourceName] = e
	delete(m.removed, r.ResourceName)
	m.mu.Unlock()
	logger.Info("Device plugin connected", "socket", socket)
	go m.run(context.WithoutCancel(ctx), e)
	return &pluginapi.Empty{}, nil
}

// run follows the plugin's ListAndWatch until it ends, then disconnects it (upstream's
// client.Run and PluginDisconnected): ListAndWatch is never called again.
func (m *Manager) run(ctx context.Context, e *endpoint) {
	logger := log.FromContext(ctx).WithValues("resource", e.resource)
	stream, err := e.api.ListAndWatch(context.Background(), &pluginapi.Empty{})
	if err == nil {
		for {
			var resp *pluginapi.ListAndWatchResponse
			resp, err = stream.Recv()
			if err != nil {
				break
			}
			m.Update(e.resource, resp.Devices)
		}
	}
	logger.Info("ListAndWatch ended for device plugin", "error", err)
	_ = e.conn.Close()
	m.disconnected(e)
}

// Update is a ListAndWatch answer: the resource's devices and their health.
func (m *Manager) Update(resourceName string, devices []*pluginapi.Device) {
	m.mu.Lock()
	h, u := map[string]bool{}, map[string]bool{}
	for _, d := range devices {
		if d.Health == pluginapi.Healthy {
			h[d.ID] = true
		} else {
			u[d.ID] = true
		}
	}
	m.healthy[resourceName], m.unhealthy[resourceName] = h, u
	m.mu.Unlock()
	m.writeCheckpoint()
	m.changed()
}

// disconnected marks the plugin stopped and all its devices unhealthy (upstream's
// markResourceUnhealthy), unless another plugin took the resource over since.
func (m *Manager) disconnected(e *endpoint) {
	m.mu.Lock()
	e.stopTime = m.now()
	if m.endpoints[e.resource] == e {
		u := m.unhealthy[e.resource]
		if u == nil {
			u = map[string]bool{}
		}
		for id := range m.healthy[e.resource] {
			u[id] = true
		}
		m.healthy[e.resource], m.unhealthy[e.resource] = map[string]bool{}, u
	}
	m.mu.Unlock()
	m.changed()
}

func (m *Manager) changed() {
	if m.onChange != nil {
		m.onChange()
	}
}

// Capacity is upstream's GetCapacity with the node status setter around it: per
// resource, all its devices (capacity) and the healthy ones (allocatable); a resource
// whose plugin has been gone longer than StopGracePeriod is dropped and from then on
// reported with capacity and allocatable 0 (until a plugin registers it again).
func (m *Manager) Capacity() (capacity, allocatable corev1.ResourceList) {
	m.mu.Lock()
	defer m.mu.Unlock()
	capacity, allocatable = corev1.ResourceList{}, corev1.ResourceList{}
	now := m.now()
	for name := range m.resourcesLocked() {
		e, ok := m.endpoints[name]
		if !ok || (!e.stopTime.IsZero() && now.Sub(e.stopTime) > StopGracePeriod) {
			m.removed[name] = true
			delete(m.endpoints, name)
			delete(m.healthy, name)
			delete(m.unhealthy, name)
			continue
		}
		h, u := len(m.healthy[name]), len(m.unhealthy[name])
		capacity[corev1.ResourceName(name)] = *resource.NewQuantity(int64(h+u), resource.DecimalSI)
		allocatable[corev1.ResourceName(name)] = *resource.NewQuantity(int64(h), resource.DecimalSI)
	}
	for name := range m.removed {
		if _, ok := capacity[corev1.ResourceName(name)]; !ok {
			capacity[corev1.ResourceName(name)] = *resource.NewQuantity(0, resource.DecimalSI)
			allocatable[corev1.ResourceName(name)] = *resource.NewQuantity(0, resource.DecimalSI)
		}
	}
	return capacity, allocatable
}

// resourcesLocked is every resource with devices known or a plugin.
func (m *Manager) resourcesLocked() map[string]bool {
	out := map[string]bool{}
	for n := range m.healthy {
		out[n] = true
	}
	for n := range m.unhealthy {
		out[n] = true
	}
	for n, e := range m.endpoints {
		// a plugin that never sent devices counts once it is gone (capacity 0)
		if !e.stopTime.IsZero() {
			out[n] = true
		}
	}
	return out
}

// Manages tells whether a resource is one of the device plugins' (registered now or
// in the grace period).
func (m *Manager) Manages(name corev1.ResourceName) bool {
	m.mu.Lock()
	defer m.mu.Unlock()
	_, ok := m.endpoints[string(name)]
	return ok
}

// ContainerDevices is what a container gets from the device plugins: the merged
// Allocate answers of its resources.
type ContainerDevices struct {
	Envs        map[string]string
	Mounts      []*pluginapi.Mount
	Devices     []*pluginapi.DeviceSpec
	Annotations map[string]string
	CDIDevices  []*pluginapi.CDIDevice
}

// Allocate gives the container the devices its limits ask for (device plugin resources
// only), asking each plugin to Allocate them; a container that has devices already
// (a restart) keeps them. As upstream's devicesToAllocate, an unregistered resource, one
// without healthy devices or with too few free ones is an error (the kubelet then
// rejects the pod: UnexpectedAdmissionError).
func (m *Manager) Allocate(ctx context.Context, podUID, container string, limits corev1.ResourceList) (*ContainerDevices, error) {
	names := make([]string, 0, len(limits))
	for n := range limits {
		names = append(names, string(n))
	}
	sort.Strings(names)
	out := &ContainerDevices{Envs: map[string]string{}, Annotations: map[string]string{}}
	found := false
	for _, name := range names {
		q := limits[corev1.ResourceName(name)]
		needed := int(q.Value())
		if !IsExtendedResourceName(corev1.ResourceName(name)) || needed == 0 {
			continue
		}
		m.mu.Lock()
		e, registered := m.endpoints[name]
		prev := m.allocated[podUID][container][name]
		m.mu.Unlock()
		if !registered && prev == nil {
			continue // not a device plugin's: nothing to allocate
		}
		a, err := m.allocateOne(ctx, e, podUID, container, name, needed, prev)
		if err != nil {
			return nil, err
		}
		found = true
		if r := a.response; r != nil {
			for k, v := range r.Envs {
				out.Envs[k] = v
			}
			for k, v := range r.Annotations {
				out.Annotations[k] = v
			}
			out.Mounts = append(out.Mounts, r.Mounts...)
			out.Devices = append(out.Devices, r.Devices...)
			out.CDIDevices = append(out.CDIDevices, r.CdiDevices...)
		}
	}
	if !found {
		return nil, nil
	}
	return out, nil
}

func (m *Manager) allocateOne(ctx context.Context, e *endpoint, podUID, container, name string, needed int, prev *allocation) (*allocation, error) {
	m.mu.Lock()
	healthy := m.healthy[name]
	if e == nil {
		m.mu.Unlock()
		return nil, fmt.Errorf("cannot allocate unregistered device %s", name)
	}
	if len(healthy) == 0 {
		m.mu.Unlock()
		return nil, fmt.Errorf("no healthy devices present; cannot allocate unhealthy devices %s", name)
	}
	if prev != nil {
		for _, id := range prev.devices {
			if !healthy[id] {
				m.mu.Unlock()
				return nil, fmt.Errorf("previously allocated devices are no longer healthy; cannot allocate unhealthy devices %s", name)
			}
		}
		if len(prev.devices) != needed {
			m.mu.Unlock()
			return nil, fmt.Errorf("pod %q container %q changed request for resource %q from %d to %d", podUID, container, name, len(prev.devices), needed)
		}
		m.mu.Unlock()
		return prev, nil
	}
	inUse := map[string]bool{}
	for _, cs := range m.allocated {
		for _, rs := range cs {
			if a := rs[name]; a != nil {
				for _, id := range a.devices {
					inUse[id] = true
				}
			}
		}
	}
	var free []string
	for id := range healthy {
		if !inUse[id] {
			free = append(free, id)
		}
	}
	sort.Strings(free)
	if len(free) < needed {
		m.mu.Unlock()
		return nil, fmt.Errorf("requested number of devices unavailable for %s. Requested: %d, Available: %d", name, needed, len(free))
	}
	devs := free[:needed]
	// reserve them before asking the plugin (another container may be allocating)
	a := &allocation{devices: devs}
	m.setLocked(podUID, container, name, a)
	m.mu.Unlock()

	if e.options.GetGetPreferredAllocationAvailable() {
		if pref, err := e.api.GetPreferredAllocation(ctx, &pluginapi.PreferredAllocationRequest{ContainerRequests: []*pluginapi.ContainerPreferredAllocationRequest{
			{AvailableDeviceIDs: free, AllocationSize: int32(needed)}}}); err == nil && len(pref.GetContainerResponses()) == 1 {
			if ids := pref.ContainerResponses[0].DeviceIDs; len(ids) == needed && subset(ids, free) {
				a.devices = ids
			}
		}
	}
	resp, err := e.api.Allocate(ctx, &pluginapi.AllocateRequest{ContainerRequests: []*pluginapi.ContainerAllocateRequest{{DevicesIds: a.devices}}})
	if err == nil && len(resp.GetContainerResponses()) == 0 {
		err = errors.New("the device plugin answered no container response")
	}
	if err != nil {
		m.mu.Lock()
		m.setLocked(podUID, container, name, nil)
		m.mu.Unlock()
		return nil, fmt.Errorf("allocating %s: %w", name, err)
	}
	m.mu.Lock()
	a.response = resp.ContainerResponses[0]
	m.mu.Unlock()
	m.writeCheckpoint()
	return a, nil
}

func subset(ids, of []string) bool {
	set := map[string]bool{}
	for _, id := range of {
		set[id] = true
	}
	for _, id := range ids {
		if !set[id] {
			return false
		}
	}
	return true
}

func (m *Manager) setLocked(podUID, container, name string, a *allocation) {
	if a == nil {
		delete(m.allocated[podUID][container], name)
		return
	}
	if m.allocated[podUID] == nil {
		m.allocated[podUID] = map[string]map[string]*allocation{}
	}
	if m.allocated[podUID][container] == nil {
		m.allocated[podUID][container] = map[string]*allocation{}
	}
	m.allocated[podUID][container][name] = a
}

// PreStart calls PreStartContainer of the plugins that ask for it (their options'
// PreStartRequired) with the container's devices, before it starts.
func (m *Manager) PreStart(ctx context.Context, podUID, container string) error {
	m.mu.Lock()
	type call struct {
		e    *endpoint
		devs []string
	}
	var calls []call
	for name, a := range m.allocated[podUID][container] {
		if e := m.endpoints[name]; e != nil && e.stopTime.IsZero() && e.options.GetPreStartRequired() {
			calls = append(calls, call{e, a.devices})
		}
	}
	m.mu.Unlock()
	for _, c := range calls {
		pctx, cancel := context.WithTimeout(ctx, pluginapi.KubeletPreStartContainerRPCTimeoutInSecs*time.Second)
		_, err := c.e.api.PreStartContainer(pctx, &pluginapi.PreStartContainerRequest{DevicesIds: c.devs})
		cancel()
		if err != nil {
			return fmt.Errorf("device plugin PreStartContainer rpc failed with err: %w", err)
		}
	}
	return nil
}

// Release frees every device of a pod (it is gone or will not run again).
func (m *Manager) Release(podUID string) {
	m.mu.Lock()
	_, had := m.allocated[podUID]
	delete(m.allocated, podUID)
	m.mu.Unlock()
	if had {
		m.writeCheckpoint()
	}
}

// checkpointLocked is upstream's writeCheckpoint data: every allocation that has its
// plugin's answer, and the healthy devices of every resource.
func (m *Manager) checkpointLocked() *checkpoint.Data {
	var entries []checkpoint.PodDevicesEntry
	for uid, cs := range m.allocated {
		for c, rs := range cs {
			for name, a := range rs {
				if a.response == nil {
					continue // still being allocated
				}
				b, err := proto.Marshal(a.response)
				if err != nil {
					continue
				}
				entries = append(entries, checkpoint.PodDevicesEntry{PodUID: uid, ContainerName: c, ResourceName: name,
					DeviceIDs: checkpoint.DevicesPerNUMA{checkpoint.NodeWithoutTopology: append([]string{}, a.devices...)}, AllocResp: b})
			}
		}
	}
	sort.Slice(entries, func(i, j int) bool {
		a, b := entries[i], entries[j]
		if a.PodUID != b.PodUID {
			return a.PodUID < b.PodUID
		}
		if a.ContainerName != b.ContainerName {
			return a.ContainerName < b.ContainerName
		}
		return a.ResourceName < b.ResourceName
	})
	registered := map[string][]string{}
	for name, h := range m.healthy {
		ids := make([]string, 0, len(h))
		for id := range h {
			ids = append(ids, id)
		}
		sort.Strings(ids)
		registered[name] = ids
	}
	return checkpoint.New(entries, registered)
}

func (m *Manager) writeCheckpoint() {
	m.writeMu.Lock()
	defer m.writeMu.Unlock()
	m.mu.Lock()
	d := m.checkpointLocked()
	m.mu.Unlock()
	if err := checkpoint.Write(m.dir, d); err != nil {
		log.Log.Error(err, "Failed to write checkpoint file", "checkpoint", checkpoint.FileName)
	}
}

// readCheckpoint is upstream's: the allocations come back, and every registered
// resource gets a stopped plugin and no devices, so its capacity is 0 until the plugin
// registers again (and it is dropped after StopGracePeriod if it does not).
func (m *Manager) readCheckpoint() error {
	d, err := checkpoint.Read(m.dir)
	if err != nil || d == nil {
		return err
	}
	entries, registered := d.GetData()
	m.mu.Lock()
	defer m.mu.Unlock()
	for _, e := range entries {
		resp := &pluginapi.ContainerAllocateResponse{}
		if err := proto.Unmarshal(e.AllocResp, resp); err != nil {
			continue
		}
		var devs []string
		for _, ids := range e.DeviceIDs {
			devs = append(devs, ids...)
		}
		sort.Strings(devs)
		m.setLocked(e.PodUID, e.ContainerName, e.ResourceName, &allocation{devices: devs, response: resp})
	}
	now := m.now()
	for name := range registered {
		m.healthy[name], m.unhealthy[name] = map[string]bool{}, map[string]bool{}
		if _, ok := m.endpoints[name]; !ok {
			m.endpoints[name] = &endpoint{resource: name, stopTime: now}
		}
	}
	return nil
}

// IsExtendedResourceName is upstream's v1helper.IsExtendedResourceName: a
// domain-prefixed name outside kubernetes.io and not requests.*, valid as a quota name.
func IsExtendedResourceName(name corev1.ResourceName) bool {
	s := string(name)
	if !strings.Contains(s, "/") || strings.Contains(s, corev1.ResourceDefaultNamespacePrefix) ||
		strings.HasPrefix(s, corev1.DefaultResourceRequestsPrefix) {
		return false
	}
	return len(validation.IsQualifiedName(corev1.DefaultResourceRequestsPrefix+s)) == 0
}
