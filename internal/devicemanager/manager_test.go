package devicemanager

import (
	"context"
	"errors"
	"net"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"
	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/api/resource"
	pluginapi "k8s.io/kubelet/pkg/apis/deviceplugin/v1beta1"
)

// plugin is a device plugin as the e2e suite's testdeviceplugin: it streams its devices,
// again on each update, and fails a call when fail says so.
type plugin struct {
	pluginapi.UnsafeDevicePluginServer
	mu      sync.Mutex
	devices []*pluginapi.Device
	update  chan struct{}
	calls   []string
	fail    func(call string) error
	server  *grpc.Server
}

func (p *plugin) record(call string) error {
	p.mu.Lock()
	p.calls = append(p.calls, call)
	f := p.fail
	p.mu.Unlock()
	if f != nil {
		return f(call)
	}
	return nil
}

func (p *plugin) GetDevicePluginOptions(context.Context, *pluginapi.Empty) (*pluginapi.DevicePluginOptions, error) {
	return &pluginapi.DevicePluginOptions{}, p.record("GetDevicePluginOptions")
}

func (p *plugin) send(s pluginapi.DevicePlugin_ListAndWatchServer) error {
	p.mu.Lock()
	resp := &pluginapi.ListAndWatchResponse{Devices: append([]*pluginapi.Device(nil), p.devices...)}
	p.mu.Unlock()
	return s.Send(resp)
}

func (p *plugin) ListAndWatch(_ *pluginapi.Empty, s pluginapi.DevicePlugin_ListAndWatchServer) error {
	if err := p.record("ListAndWatch"); err != nil {
		return err
	}
	if err := p.send(s); err != nil {
		return err
	}
	for {
		select {
		case <-p.update:
			if err := p.send(s); err != nil {
				return err
			}
		case <-s.Context().Done():
			return nil
		}
	}
}

func (p *plugin) Allocate(_ context.Context, r *pluginapi.AllocateRequest) (*pluginapi.AllocateResponse, error) {
	_ = p.record("Allocate")
	out := &pluginapi.AllocateResponse{}
	for _, c := range r.ContainerRequests {
		out.ContainerResponses = append(out.ContainerResponses, &pluginapi.ContainerAllocateResponse{
			Envs:   map[string]string{"DEVICES": strings.Join(c.DevicesIds, ",")},
			Mounts: []*pluginapi.Mount{{ContainerPath: "/dev-" + c.DevicesIds[0], HostPath: "/tmp/x"}}})
	}
	return out, nil
}

func (p *plugin) GetPreferredAllocation(context.Context, *pluginapi.PreferredAllocationRequest) (*pluginapi.PreferredAllocationResponse, error) {
	return &pluginapi.PreferredAllocationResponse{}, nil
}

func (p *plugin) PreStartContainer(context.Context, *pluginapi.PreStartContainerRequest) (*pluginapi.PreStartContainerResponse, error) {
	return &pluginapi.PreStartContainerResponse{}, nil
}

func (p *plugin) setDevices(health ...string) {
	p.mu.Lock()
	p.devices = nil
	for i, h := range health {
		p.devices = append(p.devices, &pluginapi.Device{ID: string(rune('a' + i)), Health: h})
	}
	p.mu.Unlock()
}

type env struct {
	t   *testing.T
	m   *Manager
	dir string
	now time.Time
	mu  sync.Mutex
}

func newEnv(t *testing.T) *env {
	// unix socket paths are short: not under t.TempDir()'s long name
	dir, err := os.MkdirTemp("", "dm")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(dir) })
	e := &env{t: t, dir: dir, now: time.Unix(1000, 0)}
	e.m = New(dir, nil)
	e.m.now = func() time.Time { e.mu.Lock(); defer e.mu.Unlock(); return e.now }
	ctx, cancel := context.WithCancel(context.Background())
	t.Cleanup(cancel)
	go func() { _ = e.m.Start(ctx) }()
	for i := 0; i < 100; i++ {
		if _, err := os.Stat(e.m.SocketPath()); err == nil {
			break
		}
		time.Sleep(10 * time.Millisecond)
	}
	return e
}

func (e *env) advance(d time.Duration) {
	e.mu.Lock()
	e.now = e.now.Add(d)
	e.mu.Unlock()
}

// register serves p on its own socket and registers it for resource.
func (e *env) register(p *plugin, name, resourceName string) error {
	p.update = make(chan struct{})
	ln, err := net.Listen("unix", filepath.Join(e.dir, name))
	if err != nil {
		e.t.Fatal(err)
	}
	p.server = grpc.NewServer()
	pluginapi.RegisterDevicePluginServer(p.server, p)
	go func() { _ = p.server.Serve(ln) }()
	e.t.Cleanup(p.server.Stop)
	conn, err := grpc.NewClient("unix://"+e.m.SocketPath(), grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		e.t.Fatal(err)
	}
	defer conn.Close()
	_, err = pluginapi.NewRegistrationClient(conn).Register(context.Background(),
		&pluginapi.RegisterRequest{Version: pluginapi.Version, Endpoint: name, ResourceName: resourceName})
	return err
}

// values waits until the resource shows capacity/allocatable want (-1: absent).
func (e *env) expect(resourceName string, wantCap, wantAlloc int64) {
	e.t.Helper()
	get := func(l corev1.ResourceList) int64 {
		q, ok := l[corev1.ResourceName(resourceName)]
		if !ok {
			return -1
		}
		return q.Value()
	}
	var c, a int64
	for i := 0; i < 300; i++ {
		capacity, alloc := e.m.Capacity()
		c, a = get(capacity), get(alloc)
		if c == wantCap && a == wantAlloc {
			return
		}
		time.Sleep(10 * time.Millisecond)
	}
	e.t.Fatalf("%s: capacity %d allocatable %d, want %d and %d", resourceName, c, a, wantCap, wantAlloc)
}

func TestHealthAndFailures(t *testing.T) {
	e := newEnv(t)
	p := &plugin{}
	p.setDevices(pluginapi.Healthy, pluginapi.Healthy, pluginapi.Healthy, pluginapi.Healthy)
	if err := e.register(p, "p1.sock", "example.com/dev"); err != nil {
		t.Fatal(err)
	}
	e.expect("example.com/dev", 4, 4)
	p.setDevices(pluginapi.Healthy, pluginapi.Unhealthy, pluginapi.Healthy, pluginapi.Unhealthy)
	p.update <- struct{}{}
	e.expect("example.com/dev", 4, 2)
	p.setDevices(pluginapi.Healthy, pluginapi.Healthy, pluginapi.Healthy, pluginapi.Healthy)
	p.update <- struct{}{}
	e.expect("example.com/dev", 4, 4)

	// the plugin stops: every device unhealthy, the capacity kept for the grace period...
	p.server.Stop()
	e.expect("example.com/dev", 4, 0)
	e.advance(StopGracePeriod - time.Second)
	e.expect("example.com/dev", 4, 0)
	// ... then the resource stays, at 0
	e.advance(2 * time.Second)
	e.expect("example.com/dev", 0, 0)
	e.expect("example.com/dev", 0, 0)
}

func TestListAndWatchFailsImmediately(t *testing.T) {
	e := newEnv(t)
	p := &plugin{fail: func(call string) error {
		if call == "ListAndWatch" {
			return errors.New("ListAndWatch failed")
		}
		return nil
	}}
	p.setDevices(pluginapi.Healthy)
	if err := e.register(p, "p2.sock", "example.com/bad"); err != nil {
		t.Fatal(err)
	}
	e.expect("example.com/bad", 0, 0)
	time.Sleep(200 * time.Millisecond)
	p.mu.Lock()
	defer p.mu.Unlock()
	if strings.Join(p.calls, ",") != "GetDevicePluginOptions,ListAndWatch" {
		t.Errorf("calls %v: ListAndWatch must not be retried", p.calls)
	}
}

func TestRegistrationRefused(t *testing.T) {
	e := newEnv(t)
	p := &plugin{fail: func(call string) error {
		if call == "GetDevicePluginOptions" {
			return errors.New("GetDevicePluginOptions failed")
		}
		return nil
	}}
	err := e.register(p, "p3.sock", "example.com/opts")
	if err == nil || !strings.Contains(err.Error(), "failed to get device plugin options") || !strings.Contains(err.Error(), "GetDevicePluginOptions failed") {
		t.Fatalf("register: %v", err)
	}
	e.expect("example.com/opts", -1, -1)
	if err := e.register(&plugin{}, "p4.sock", "cpu"); err == nil {
		t.Error("a native resource name was accepted")
	}
}

func TestAllocate(t *testing.T) {
	e := newEnv(t)
	p := &plugin{}
	p.setDevices(pluginapi.Healthy, pluginapi.Healthy)
	if err := e.register(p, "p5.sock", "example.com/gpu"); err != nil {
		t.Fatal(err)
	}
	e.expect("example.com/gpu", 2, 2)
	ctx := context.Background()
	lim := func(n int64) corev1.ResourceList {
		return corev1.ResourceList{"example.com/gpu": *resource.NewQuantity(n, resource.DecimalSI), corev1.ResourceCPU: resource.MustParse("1")}
	}
	d, err := e.m.Allocate(ctx, "pod1", "c", lim(1))
	if err != nil || d == nil || d.Envs["DEVICES"] != "a" || len(d.Mounts) != 1 {
		t.Fatalf("allocate: %+v %v", d, err)
	}
	// a restart keeps its devices (no new Allocate)
	if d, err := e.m.Allocate(ctx, "pod1", "c", lim(1)); err != nil || d.Envs["DEVICES"] != "a" {
		t.Fatalf("reallocate: %+v %v", d, err)
	}
	if _, err := e.m.Allocate(ctx, "pod2", "c", lim(2)); err == nil ||
		err.Error() != "requested number of devices unavailable for example.com/gpu. Requested: 2, Available: 1" {
		t.Fatalf("over-allocation: %v", err)
	}
	if d, err := e.m.Allocate(ctx, "pod2", "c", lim(1)); err != nil || d.Envs["DEVICES"] != "b" {
		t.Fatalf("second pod: %+v %v", d, err)
	}
	e.m.Release("pod1")
	if d, err := e.m.Allocate(ctx, "pod3", "c", lim(1)); err != nil || d.Envs["DEVICES"] != "a" {
		t.Fatalf("after release: %+v %v", d, err)
	}
	// containers asking for no device-plugin resource get nothing
	if d, err := e.m.Allocate(ctx, "pod4", "c", corev1.ResourceList{corev1.ResourceCPU: resource.MustParse("1")}); d != nil || err != nil {
		t.Fatalf("no devices: %+v %v", d, err)
	}
	if _, err := e.m.Allocate(ctx, "pod5", "c", corev1.ResourceList{"example.com/none": *resource.NewQuantity(1, resource.DecimalSI)}); err != nil {
		t.Fatalf("an extended resource no plugin serves is not the device manager's: %v", err)
	}
	p.mu.Lock()
	n := strings.Count(strings.Join(p.calls, ","), "Allocate")
	p.mu.Unlock()
	if n != 3 {
		t.Errorf("%d Allocate calls, want 3", n)
	}
}

// A restarted manager (the agent restarted) reads the checkpoint: each resource shows no
// devices until its plugin registers again, and a container that had devices keeps them
// without a new Allocate, as upstream's readCheckpoint.
func TestCheckpointSurvivesRestart(t *testing.T) {
	e := newEnv(t)
	p := &plugin{}
	p.setDevices(pluginapi.Healthy, pluginapi.Healthy)
	if err := e.register(p, "p6.sock", "example.com/gpu"); err != nil {
		t.Fatal(err)
	}
	e.expect("example.com/gpu", 2, 2)
	ctx := context.Background()
	lim := corev1.ResourceList{"example.com/gpu": *resource.NewQuantity(1, resource.DecimalSI)}
	if d, err := e.m.Allocate(ctx, "pod1", "c", lim); err != nil || d.Envs["DEVICES"] != "a" {
		t.Fatalf("allocate: %+v %v", d, err)
	}
	if _, err := os.Stat(filepath.Join(e.dir, "kubelet_internal_checkpoint")); err != nil {
		t.Fatalf("no checkpoint: %v", err)
	}
	p.server.Stop()

	// a new manager on the same folder
	m2 := New(e.dir, nil)
	m2.now = e.m.now
	ctx2, cancel := context.WithCancel(context.Background())
	t.Cleanup(cancel)
	go func() { _ = m2.Start(ctx2) }()
	e.m = m2
	e.expect("example.com/gpu", 0, 0) // known, its plugin not back yet
	if !m2.Manages("example.com/gpu") {
		t.Error("the checkpointed resource is not managed")
	}
	if _, err := m2.Allocate(ctx, "pod1", "c", lim); err == nil {
		t.Error("allocated while the plugin is away")
	}
	p2 := &plugin{}
	p2.setDevices(pluginapi.Healthy, pluginapi.Healthy)
	if err := e.register(p2, "p7.sock", "example.com/gpu"); err != nil {
		t.Fatal(err)
	}
	e.expect("example.com/gpu", 2, 2)
	if d, err := m2.Allocate(ctx, "pod1", "c", lim); err != nil || d.Envs["DEVICES"] != "a" || len(d.Mounts) != 1 {
		t.Fatalf("restarted container: %+v %v", d, err)
	}
	if d, err := m2.Allocate(ctx, "pod2", "c", lim); err != nil || d.Envs["DEVICES"] != "b" {
		t.Fatalf("another pod must not get the checkpointed device: %+v %v", d, err)
	}
	p2.mu.Lock()
	n := strings.Count(strings.Join(p2.calls, ","), "Allocate")
	p2.mu.Unlock()
	if n != 1 {
		t.Errorf("%d Allocate calls on the new plugin, want 1 (pod2 only)", n)
	}
}
