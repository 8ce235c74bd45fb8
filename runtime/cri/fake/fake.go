// Package fake is an in-memory cri.Runtime for fast tests. It keeps state (sandboxes,
// containers, images, a registry to pull from, pod IPs) and enforces the rules a real
// containerd 1.6 enforces, with containerd's error messages; contract_test.go in the
// parent package runs the same scenarios against it and a real containerd.
//
// Nothing runs: a started container runs until the test makes it exit (Exit), it is
// stopped or its sandbox is. ExecSync answers through SetExecHandler. Tests change the
// runtime's health with SetDown and SetCondition.
package fake

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"net/netip"
	"os"
	"path/filepath"
	"sort"
	"strings"
	"sync"
	"time"

	"google.golang.org/protobuf/proto"
	runtimeapi "k8s.io/cri-api/pkg/apis/runtime/v1"
	"k8s.io/utils/clock"

	"github.com/nodekeeper/nodekeeper/runtime/cri"
)

// ExecHandler answers ExecSync for a running container. ctx carries ExecSync's timeout:
// a handler that blocks until ctx is done simulates a command that outlives it.
type ExecHandler func(ctx context.Context, containerID string, cmd []string) (*cri.ExecResult, error)

// Runtime is a fake container runtime. The zero value is not usable; call New.
type Runtime struct {
	mu         sync.Mutex
	name, ver  string
	down       bool
	conditions map[string]*runtimeapi.RuntimeCondition
	clock      clock.PassiveClock

	seq        int
	sandboxes  map[string]*sandbox               // by ID
	containers map[string]*container             // by ID
	names      map[string]string                 // reserved sandbox and container names -> ID
	images     map[string]*image                 // present, by ID
	registry   map[string]*image                 // pullable, by normalised reference
	auth       map[string]*runtimeapi.AuthConfig // registry images that need credentials
	pullAuths  []*runtimeapi.AuthConfig          // the credentials each pull carried (nil: none)
	exec       ExecHandler
	handlers   []*runtimeapi.RuntimeHandler

	podCIDR netip.Prefix
	lastIP  netip.Addr
	usedIPs map[netip.Addr]string // -> sandbox ID
}

type sandbox struct {
	id, name, handler string
	config            *runtimeapi.PodSandboxConfig
	state             runtimeapi.PodSandboxState
	createdAt         int64
	ip                string
}

type container struct {
	id, name, sandboxID string
	config              *runtimeapi.ContainerConfig
	image               *image
	logPath             string
	state               runtimeapi.ContainerState
	createdAt           int64
	startedAt           int64
	finishedAt          int64
	exitCode            int32
	reason, message     string
	usage               Usage
	// onTerm is the exit code when the process is asked to stop (SetTermExitCode);
	// nil: 143, as a process that SIGTERM ends
	onTerm *int32
	// stopLag (SetStopLag) is how many ContainerStatus reads still say running once a
	// StopContainer has ended the process; stoppedWith is the code it ended with
	stopLag     int
	stoppedWith *int32
}

// Usage is what a fake container uses, as ListContainerStats reports it (set with
// SetUsage; zero until then).
type Usage struct {
	CPUCoreNanoSeconds  uint64 // cumulative CPU time
	WorkingSetBytes     uint64
	UsageBytes          uint64
	RSSBytes            uint64
	WritableLayerBytes  uint64 // the container's writable layer
	WritableLayerInodes uint64
}

type image struct {
	id   string
	tags []string
	size uint64
}

var _ cri.Runtime = (*Runtime)(nil)

// Option configures New.
type Option func(*Runtime)

// WithClock makes the fake read time (createdAt, startedAt, finishedAt) from c.
func WithClock(c clock.PassiveClock) Option { return func(f *Runtime) { f.clock = c } }

// WithPodCIDR sets the subnet pod IPs come from (default 10.244.0.0/24, as
// hack/cri-up.sh's CNI network); like CNI host-local with a gateway, the first address
// after the network's is the bridge's and is never handed out.
func WithPodCIDR(cidr netip.Prefix) Option { return func(f *Runtime) { f.podCIDR = cidr.Masked() } }

// New returns a healthy fake runtime calling itself fake-runtime 0.1.0, with no images
// (LoadImage, AddRegistryImage) and an ExecSync that succeeds with no output.
func New(opts ...Option) *Runtime {
	f := &Runtime{
		name: "fake-runtime", ver: "0.1.0",
		conditions: map[string]*runtimeapi.RuntimeCondition{
			runtimeapi.RuntimeReady: {Type: runtimeapi.RuntimeReady, Status: true},
			runtimeapi.NetworkReady: {Type: runtimeapi.NetworkReady, Status: true},
		},
		clock:      clock.RealClock{},
		sandboxes:  map[string]*sandbox{},
		containers: map[string]*container{},
		names:      map[string]string{},
		images:     map[string]*image{},
		registry:   map[string]*image{},
		usedIPs:    map[netip.Addr]string{},
		podCIDR:    netip.MustParsePrefix("10.244.0.0/24"),
		exec: func(context.Context, string, []string) (*cri.ExecResult, error) {
			return &cri.ExecResult{}, nil
		},
	}
	for _, o := range opts {
		o(f)
	}
	return f
}

// ---------------------------------------------------------------- test hooks

// SetDown makes every call fail as if the socket were gone (or brings it back).
func (f *Runtime) SetDown(down bool) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.down = down
}

// SetCondition sets one runtime condition (RuntimeReady or NetworkReady).
func (f *Runtime) SetCondition(typ string, ok bool, reason, message string) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.conditions[typ] = &runtimeapi.RuntimeCondition{Type: typ, Status: ok, Reason: reason, Message: message}
}

// LoadImage makes an image present, as `ctr images import` does, and returns its ID.
// The reference is normalised (busybox:local is docker.io/library/busybox:local). It
// panics on a malformed reference: that is a bug in the test.
func (f *Runtime) LoadImage(ref string, size uint64) string {
	f.mu.Lock()
	defer f.mu.Unlock()
	img := newImage(mustNormalize(ref), size)
	f.addLocal(img)
	return img.id
}

// AddRegistryImage makes an image pullable (PullImage of any other reference fails as
// containerd's does for a reference its registry does not have) and returns its ID.
func (f *Runtime) AddRegistryImage(ref string, size uint64) string {
	f.mu.Lock()
	defer f.mu.Unlock()
	img := newImage(mustNormalize(ref), size)
	f.registry[img.tags[0]] = img
	return img.id
}

// SetExecHandler sets what ExecSync answers for running containers.
func (f *Runtime) SetExecHandler(h ExecHandler) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.exec = h
}

// SetUsage sets what a container uses from now on (cumulative CPU time only grows on
// a real runtime: tests should keep it so).
func (f *Runtime) SetUsage(containerID string, u Usage) error {
	f.mu.Lock()
	defer f.mu.Unlock()
	c, ok := f.containers[containerID]
	if !ok {
		return fmt.Errorf("container %q: %w", containerID, cri.ErrNotFound)
	}
	c.usage = u
	return nil
}

// Exit makes a running container's process end with exitCode, as a crash or a
// completed command would: the container is CONTAINER_EXITED, finishedAt now, reason
// "Completed" for 0 and "Error" otherwise.
func (f *Runtime) Exit(containerID string, exitCode int32) error {
	f.mu.Lock()
	defer f.mu.Unlock()
	c, ok := f.containers[containerID]
	if !ok {
		return fmt.Errorf("container %q: %w", containerID, cri.ErrNotFound)
	}
	if c.state != runtimeapi.ContainerState_CONTAINER_RUNNING {
		return fmt.Errorf("container %q is in %s state, not running", containerID, c.state)
	}
	f.exited(c, exitCode)
	return nil
}

// SandboxConfig returns a copy of the config a sandbox was run with (what a real
// runtime applied), or nil when there is no such sandbox.
func (f *Runtime) SandboxConfig(id string) *runtimeapi.PodSandboxConfig {
	f.mu.Lock()
	defer f.mu.Unlock()
	if sb, ok := f.sandboxes[id]; ok {
		return proto.Clone(sb.config).(*runtimeapi.PodSandboxConfig)
	}
	return nil
}

// ContainerConfig returns a copy of the config a container was created with, or nil
// when there is no such container.
func (f *Runtime) ContainerConfig(id string) *runtimeapi.ContainerConfig {
	f.mu.Lock()
	defer f.mu.Unlock()
	if c, ok := f.containers[id]; ok {
		return proto.Clone(c.config).(*runtimeapi.ContainerConfig)
	}
	return nil
}

// maxHostname is the kernel's limit on a UTS nodename (__NEW_UTS_LEN).
const maxHostname = 64

// SetTermExitCode makes a container's process handle SIGTERM by exiting with code
// (a shell that traps it and exits 0, say): StopContainer with a timeout ends it so.
func (f *Runtime) SetTermExitCode(containerID string, code int32) error {
	f.mu.Lock()
	defer f.mu.Unlock()
	c, ok := f.containers[containerID]
	if !ok {
		return fmt.Errorf("container %q: %w", containerID, cri.ErrNotFound)
	}
	c.onTerm = &code
	return nil
}

// SetStopLag makes StopContainer return before the container's state changes, as
// containerd 1.6 does while it handles the exit of a process that has just ended: the
// next reads ContainerStatus calls (and the listings until then) still say
// CONTAINER_RUNNING, StopPodSandbox leaves it so; the read after that finds it exited
// with the code it stopped with.
func (f *Runtime) SetStopLag(containerID string, reads int) error {
	f.mu.Lock()
	defer f.mu.Unlock()
	c, ok := f.containers[containerID]
	if !ok {
		return fmt.Errorf("container %q: %w", containerID, cri.ErrNotFound)
	}
	c.stopLag = reads
	return nil
}

// ---------------------------------------------------------------- runtime status

func (f *Runtime) check(call string) error {
	if f.down {
		return fmt.Errorf("%w: %s: connection refused", cri.ErrUnavailable, call)
	}
	return nil
}

// Version implements cri.Runtime.
func (f *Runtime) Version(context.Context) (*runtimeapi.VersionResponse, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	if err := f.check("Version"); err != nil {
		return nil, err
	}
	return &runtimeapi.VersionResponse{Version: "0.1.0", RuntimeName: f.name, RuntimeVersion: f.ver, RuntimeApiVersion: "v1"}, nil
}

// Status implements cri.Runtime.
func (f *Runtime) Status(context.Context) (*runtimeapi.RuntimeStatus, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	if err := f.check("Status"); err != nil {
		return nil, err
	}
	st := &runtimeapi.RuntimeStatus{}
	for _, t := range []string{runtimeapi.RuntimeReady, runtimeapi.NetworkReady} {
		if c, ok := f.conditions[t]; ok {
			st.Conditions = append(st.Conditions, &runtimeapi.RuntimeCondition{
				Type: c.Type, Status: c.Status, Reason: c.Reason, Message: c.Message})
		}
	}
	return st, nil
}

// SetRuntimeHandlers sets the handlers RuntimeHandlers reports (none by default, as
// containerd 1.6).
func (f *Runtime) SetRuntimeHandlers(hs ...*runtimeapi.RuntimeHandler) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.handlers = nil
	for _, h := range hs {
		f.handlers = append(f.handlers, proto.Clone(h).(*runtimeapi.RuntimeHandler))
	}
}

// RuntimeHandlers implements cri.Runtime.
func (f *Runtime) RuntimeHandlers(context.Context) ([]*runtimeapi.RuntimeHandler, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	if err := f.check("Status"); err != nil {
		return nil, err
	}
	var out []*runtimeapi.RuntimeHandler
	for _, h := range f.handlers {
		out = append(out, proto.Clone(h).(*runtimeapi.RuntimeHandler))
	}
	return out, nil
}

// ---------------------------------------------------------------- sandboxes

// RunPodSandbox implements cri.Runtime.
func (f *Runtime) RunPodSandbox(_ context.Context, config *runtimeapi.PodSandboxConfig, runtimeHandler string) (string, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	if err := f.check("RunPodSandbox"); err != nil {
		return "", err
	}
	if err := cri.ValidateSandboxConfig(config); err != nil {
		return "", fmt.Errorf("RunPodSandbox: %w", err)
	}
	id := f.newID()
	m := config.GetMetadata()
	name := fmt.Sprintf("%s_%s_%s_%d", m.GetName(), m.GetNamespace(), m.GetUid(), m.GetAttempt())
	if err := f.reserve(name, id, "sandbox"); err != nil {
		return "", fmt.Errorf("RunPodSandbox: %w", err)
	}
	hostNetwork := config.GetLinux().GetSecurityContext().GetNamespaceOptions().GetNetwork() == runtimeapi.NamespaceMode_NODE
	if hostNetwork && config.GetHostname() != "" {
		// containerd 1.6 gives a node-network sandbox the node's UTS namespace as well,
		// and runc will not set a hostname in it.
		delete(f.names, name)
		return "", errors.New("RunPodSandbox: failed to create containerd task: failed to create shim task: OCI runtime create failed: " +
			"runc create failed: unable to set hostname without a private UTS namespace: unknown")
	}
	if len(config.GetHostname()) > maxHostname {
		// the kernel's nodename holds 64 bytes: runc's sethostname fails
		delete(f.names, name)
		return "", errors.New("RunPodSandbox: failed to create containerd task: failed to create shim task: OCI runtime create failed: " +
			"runc create failed: unable to start container process: error during container init: sethostname: invalid argument: unknown")
	}
	sb := &sandbox{id: id, name: name, handler: runtimeHandler, createdAt: f.now(),
		config: proto.Clone(config).(*runtimeapi.PodSandboxConfig), state: runtimeapi.PodSandboxState_SANDBOX_READY}
	if !hostNetwork {
		ip, err := f.allocateIP(id)
		if err != nil {
			delete(f.names, name)
			return "", fmt.Errorf("RunPodSandbox: failed to setup network for sandbox %q: %w", id, err)
		}
		sb.ip = ip
	}
	f.sandboxes[id] = sb
	return id, nil
}

// StopPodSandbox implements cri.Runtime.
func (f *Runtime) StopPodSandbox(_ context.Context, podSandboxID string) error {
	f.mu.Lock()
	defer f.mu.Unlock()
	if err := f.check("StopPodSandbox"); err != nil {
		return err
	}
	sb, err := f.findSandbox("StopPodSandbox", podSandboxID)
	if err != nil {
		return err
	}
	f.stopSandbox(sb)
	return nil
}

// RemovePodSandbox implements cri.Runtime.
func (f *Runtime) RemovePodSandbox(_ context.Context, podSandboxID string) error {
	f.mu.Lock()
	defer f.mu.Unlock()
	if err := f.check("RemovePodSandbox"); err != nil {
		return err
	}
	sb, err := f.findSandbox("RemovePodSandbox", podSandboxID)
	if errors.Is(err, cri.ErrNotFound) {
		return nil
	} else if err != nil {
		return err
	}
	f.stopSandbox(sb)
	for _, c := range f.containers {
		if c.sandboxID == sb.id {
			f.removeContainer(c)
		}
	}
	delete(f.names, sb.name)
	delete(f.sandboxes, sb.id)
	return nil
}

// PodSandboxStatus implements cri.Runtime.
func (f *Runtime) PodSandboxStatus(_ context.Context, podSandboxID string) (*runtimeapi.PodSandboxStatus, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	if err := f.check("PodSandboxStatus"); err != nil {
		return nil, err
	}
	sb, err := f.findSandbox("PodSandboxStatus", podSandboxID)
	if err != nil {
		return nil, err
	}
	nsOpts := proto.Clone(sb.config.GetLinux().GetSecurityContext().GetNamespaceOptions()).(*runtimeapi.NamespaceOption)
	if nsOpts == nil {
		nsOpts = &runtimeapi.NamespaceOption{}
	}
	return &runtimeapi.PodSandboxStatus{
		Id: sb.id, Metadata: proto.Clone(sb.config.GetMetadata()).(*runtimeapi.PodSandboxMetadata),
		State: sb.state, CreatedAt: sb.createdAt,
		Network:        &runtimeapi.PodSandboxNetworkStatus{Ip: sb.ip},
		Linux:          &runtimeapi.LinuxPodSandboxStatus{Namespaces: &runtimeapi.Namespace{Options: nsOpts}},
		Labels:         copyMap(sb.config.GetLabels()),
		Annotations:    copyMap(sb.config.GetAnnotations()),
		RuntimeHandler: sb.handler,
	}, nil
}

// ListPodSandbox implements cri.Runtime.
func (f *Runtime) ListPodSandbox(_ context.Context, filter *runtimeapi.PodSandboxFilter) ([]*runtimeapi.PodSandbox, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	if err := f.check("ListPodSandbox"); err != nil {
		return nil, err
	}
	var out []*runtimeapi.PodSandbox
	for _, sb := range f.sandboxes {
		switch {
		case filter.GetId() != "" && !strings.HasPrefix(sb.id, filter.GetId()),
			filter.GetState() != nil && filter.GetState().GetState() != sb.state,
			!matchLabels(filter.GetLabelSelector(), sb.config.GetLabels()):
			continue
		}
		out = append(out, &runtimeapi.PodSandbox{
			Id: sb.id, Metadata: proto.Clone(sb.config.GetMetadata()).(*runtimeapi.PodSandboxMetadata),
			State: sb.state, CreatedAt: sb.createdAt, RuntimeHandler: sb.handler,
			Labels: copyMap(sb.config.GetLabels()), Annotations: copyMap(sb.config.GetAnnotations()),
		})
	}
	sort.Slice(out, func(i, j int) bool {
		if out[i].CreatedAt != out[j].CreatedAt {
			return out[i].CreatedAt < out[j].CreatedAt
		}
		return out[i].Id < out[j].Id
	})
	return out, nil
}

// ---------------------------------------------------------------- containers

// CreateContainer implements cri.Runtime.
func (f *Runtime) CreateContainer(_ context.Context, podSandboxID string, config *runtimeapi.ContainerConfig, sandboxConfig *runtimeapi.PodSandboxConfig) (string, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	if err := f.check("CreateContainer"); err != nil {
		return "", err
	}
	if err := cri.ValidateContainerConfig(config, sandboxConfig); err != nil {
		return "", fmt.Errorf("CreateContainer: %w", err)
	}
	sb, ok := f.lookupSandbox(podSandboxID)
	if !ok {
		return "", fmt.Errorf("CreateContainer: failed to find sandbox id %q: %w", podSandboxID, cri.ErrNotFound)
	}
	if sb.state != runtimeapi.PodSandboxState_SANDBOX_READY {
		return "", fmt.Errorf("CreateContainer: failed to get sandbox container task: no running task found: task %s not found: %w",
			sb.id, cri.ErrNotFound)
	}
	if config.GetLinux().GetSecurityContext().GetPrivileged() && !sb.config.GetLinux().GetSecurityContext().GetPrivileged() {
		// containerd checks the sandbox it runs in, not the config passed along
		return "", fmt.Errorf("CreateContainer: failed to generate container %q spec: no privileged container allowed in sandbox",
			config.GetMetadata().GetName())
	}
	id := f.newID()
	sm, cm := sandboxConfig.GetMetadata(), config.GetMetadata()
	name := fmt.Sprintf("%s_%s_%s_%s_%d", cm.GetName(), sm.GetName(), sm.GetNamespace(), sm.GetUid(), cm.GetAttempt())
	if err := f.reserve(name, id, "container"); err != nil {
		return "", fmt.Errorf("CreateContainer: %w", err)
	}
	img, ok := f.resolve(config.GetImage().GetImage())
	if !ok {
		delete(f.names, name)
		return "", fmt.Errorf("CreateContainer: failed to resolve image %q: %w", config.GetImage().GetImage(), cri.ErrNotFound)
	}
	c := &container{id: id, name: name, sandboxID: sb.id, image: img, createdAt: f.now(),
		config: proto.Clone(config).(*runtimeapi.ContainerConfig), state: runtimeapi.ContainerState_CONTAINER_CREATED}
	if dir, p := sandboxConfig.GetLogDirectory(), config.GetLogPath(); dir != "" && p != "" {
		c.logPath = filepath.Join(dir, p)
	}
	f.containers[id] = c
	return id, nil
}

// StartContainer implements cri.Runtime.
func (f *Runtime) StartContainer(_ context.Context, containerID string) error {
	f.mu.Lock()
	defer f.mu.Unlock()
	if err := f.check("StartContainer"); err != nil {
		return err
	}
	c, err := f.findContainer("StartContainer", containerID)
	if err != nil {
		return err
	}
	if c.state != runtimeapi.ContainerState_CONTAINER_CREATED {
		return fmt.Errorf("StartContainer: failed to set starting state for container %q: container is in %s state", c.id, c.state)
	}
	if sb := f.sandboxes[c.sandboxID]; sb == nil || sb.state != runtimeapi.PodSandboxState_SANDBOX_READY {
		msg := fmt.Sprintf("sandbox container %q is not running", c.sandboxID)
		c.state, c.finishedAt, c.exitCode, c.reason, c.message =
			runtimeapi.ContainerState_CONTAINER_EXITED, f.now(), 128, "StartError", msg
		return errors.New("StartContainer: " + msg)
	}
	c.state, c.startedAt = runtimeapi.ContainerState_CONTAINER_RUNNING, f.now()
	if c.logPath != "" {
		// as containerd: the log file is opened when the container starts
		if err := os.MkdirAll(filepath.Dir(c.logPath), 0o755); err == nil {
			if lf, err := os.OpenFile(c.logPath, os.O_CREATE|os.O_APPEND|os.O_WRONLY, 0o640); err == nil {
				_ = lf.Close()
			}
		}
	}
	return nil
}

// StopContainer implements cri.Runtime. The process is taken to honour SIGTERM (exit
// code 143, or the code SetTermExitCode gave) unless timeout is 0 (SIGKILL at once: 137).
func (f *Runtime) StopContainer(_ context.Context, containerID string, timeout time.Duration) error {
	f.mu.Lock()
	defer f.mu.Unlock()
	if err := f.check("StopContainer"); err != nil {
		return err
	}
	c, err := f.findContainer("StopContainer", containerID)
	if err != nil {
		return err
	}
	if c.state == runtimeapi.ContainerState_CONTAINER_RUNNING && c.stoppedWith == nil {
		code := int32(128 + 15)
		if c.onTerm != nil {
			code = *c.onTerm
		}
		if timeout <= 0 {
			code = 128 + 9
		}
		if c.stopLag > 0 {
			c.stoppedWith = &code // reads running for stopLag more ContainerStatus calls
			return nil
		}
		f.exited(c, code)
	}
	return nil
}

// RemoveContainer implements cri.Runtime.
func (f *Runtime) RemoveContainer(_ context.Context, containerID string) error {
	f.mu.Lock()
	defer f.mu.Unlock()
	if err := f.check("RemoveContainer"); err != nil {
		return err
	}
	c, err := f.findContainer("RemoveContainer", containerID)
	if errors.Is(err, cri.ErrNotFound) {
		return nil
	} else if err != nil {
		return err
	}
	f.removeContainer(c)
	return nil
}

// ListContainers implements cri.Runtime.
func (f *Runtime) ListContainers(_ context.Context, filter *runtimeapi.ContainerFilter) ([]*runtimeapi.Container, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	if err := f.check("ListContainers"); err != nil {
		return nil, err
	}
	sandboxID := filter.GetPodSandboxId()
	if sandboxID != "" {
		sb, ok := f.lookupSandbox(sandboxID)
		if !ok {
			return nil, nil
		}
		sandboxID = sb.id
	}
	var out []*runtimeapi.Container
	for _, c := range f.containers {
		switch {
		case filter.GetId() != "" && !strings.HasPrefix(c.id, filter.GetId()),
			filter.GetState() != nil && filter.GetState().GetState() != c.state,
			sandboxID != "" && c.sandboxID != sandboxID,
			!matchLabels(filter.GetLabelSelector(), c.config.GetLabels()):
			continue
		}
		out = append(out, &runtimeapi.Container{
			Id: c.id, PodSandboxId: c.sandboxID,
			Metadata: proto.Clone(c.config.GetMetadata()).(*runtimeapi.ContainerMetadata),
			Image:    proto.Clone(c.config.GetImage()).(*runtimeapi.ImageSpec), ImageRef: c.image.id,
			State: c.state, CreatedAt: c.createdAt,
			Labels: copyMap(c.config.GetLabels()), Annotations: copyMap(c.config.GetAnnotations()),
		})
	}
	sort.Slice(out, func(i, j int) bool {
		if out[i].CreatedAt != out[j].CreatedAt {
			return out[i].CreatedAt < out[j].CreatedAt
		}
		return out[i].Id < out[j].Id
	})
	return out, nil
}

// ContainerStatus implements cri.Runtime.
func (f *Runtime) ContainerStatus(_ context.Context, containerID string) (*runtimeapi.ContainerStatus, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	if err := f.check("ContainerStatus"); err != nil {
		return nil, err
	}
	c, err := f.findContainer("ContainerStatus", containerID)
	if err != nil {
		return nil, err
	}
	if c.stoppedWith != nil { // SetStopLag: the stop is not seen yet, or seen now
		if c.stopLag > 0 {
			c.stopLag--
		} else {
			f.exited(c, *c.stoppedWith)
			c.stoppedWith = nil
		}
	}
	imageName := c.config.GetImage().GetImage()
	if len(c.image.tags) > 0 {
		imageName = c.image.tags[0]
	}
	return &runtimeapi.ContainerStatus{
		Id: c.id, Metadata: proto.Clone(c.config.GetMetadata()).(*runtimeapi.ContainerMetadata),
		State: c.state, CreatedAt: c.createdAt, StartedAt: c.startedAt, FinishedAt: c.finishedAt,
		ExitCode: c.exitCode, Reason: c.reason, Message: c.message,
		Image: &runtimeapi.ImageSpec{Image: imageName}, ImageRef: c.image.id,
		Labels: copyMap(c.config.GetLabels()), Annotations: copyMap(c.config.GetAnnotations()),
		LogPath: c.logPath, Mounts: cloneMounts(c.config.GetMounts()),
	}, nil
}

func cloneMounts(in []*runtimeapi.Mount) []*runtimeapi.Mount {
	var out []*runtimeapi.Mount
	for _, m := range in {
		out = append(out, proto.Clone(m).(*runtimeapi.Mount))
	}
	return out
}

// ExecSync implements cri.Runtime.
func (f *Runtime) ExecSync(ctx context.Context, containerID string, cmd []string, timeout time.Duration) (*cri.ExecResult, error) {
	f.mu.Lock()
	if err := f.check("ExecSync"); err != nil {
		f.mu.Unlock()
		return nil, err
	}
	c, err := f.findContainer("ExecSync", containerID)
	if err != nil {
		f.mu.Unlock()
		return nil, err
	}
	if c.state != runtimeapi.ContainerState_CONTAINER_RUNNING {
		f.mu.Unlock()
		return nil, fmt.Errorf("ExecSync: failed to exec in container: container is in %s state", c.state)
	}
	h, id := f.exec, c.id
	f.mu.Unlock()

	if timeout > 0 {
		var cancel context.CancelFunc
		ctx, cancel = context.WithTimeout(ctx, timeout)
		defer cancel()
	}
	res, err := h(ctx, id, append([]string(nil), cmd...))
	if ctxErr := ctx.Err(); errors.Is(ctxErr, context.DeadlineExceeded) && timeout > 0 {
		return nil, fmt.Errorf("ExecSync: failed to exec in container: timeout %v exceeded: %w", timeout, ctxErr)
	}
	if err != nil {
		return nil, fmt.Errorf("ExecSync: failed to exec in container: %w", err)
	}
	if res == nil {
		res = &cri.ExecResult{}
	}
	return res, nil
}

// ---------------------------------------------------------------- images

// ImageStatus implements cri.Runtime.
func (f *Runtime) ImageStatus(_ context.Context, spec *runtimeapi.ImageSpec) (*runtimeapi.Image, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	if err := f.check("ImageStatus"); err != nil {
		return nil, err
	}
	img, ok := f.resolve(spec.GetImage())
	if !ok {
		return nil, nil
	}
	return img.api(), nil
}

// RequireAuth makes pulls of a registry image (AddRegistryImage) need these credentials.
func (f *Runtime) RequireAuth(ref, username, password string) {
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.auth == nil {
		f.auth = map[string]*runtimeapi.AuthConfig{}
	}
	f.auth[mustNormalize(ref)] = &runtimeapi.AuthConfig{Username: username, Password: password}
}

// PullAuths are the credentials each PullImage carried, in order (nil: none).
func (f *Runtime) PullAuths() []*runtimeapi.AuthConfig {
	f.mu.Lock()
	defer f.mu.Unlock()
	return append([]*runtimeapi.AuthConfig(nil), f.pullAuths...)
}

// PullImage implements cri.Runtime: it succeeds only for references added with
// AddRegistryImage, even when the image is already present (containerd always asks
// the registry).
func (f *Runtime) PullImage(_ context.Context, spec *runtimeapi.ImageSpec, auth *runtimeapi.AuthConfig, _ *runtimeapi.PodSandboxConfig) (string, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	if err := f.check("PullImage"); err != nil {
		return "", err
	}
	ref, err := normalize(spec.GetImage())
	if err != nil {
		return "", fmt.Errorf("PullImage: failed to parse image reference %q: %w", spec.GetImage(), err)
	}
	f.pullAuths = append(f.pullAuths, auth)
	img, ok := f.registry[ref]
	if !ok {
		return "", fmt.Errorf("PullImage: failed to pull and unpack image %q: failed to resolve reference %q: %s: %w",
			ref, ref, ref, cri.ErrNotFound)
	}
	if want := f.auth[ref]; want != nil && (auth == nil || auth.Username != want.Username || auth.Password != want.Password) {
		return "", fmt.Errorf("PullImage: failed to pull and unpack image %q: failed to resolve reference %q: pull access denied, "+
			"repository does not exist or may require authorization: authorization failed: 401 Unauthorized", ref, ref)
	}
	f.addLocal(&image{id: img.id, tags: []string{ref}, size: img.size})
	return img.id, nil
}

// ListImages implements cri.Runtime.
func (f *Runtime) ListImages(_ context.Context, filter *runtimeapi.ImageFilter) ([]*runtimeapi.Image, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	if err := f.check("ListImages"); err != nil {
		return nil, err
	}
	var out []*runtimeapi.Image
	if ref := filter.GetImage().GetImage(); ref != "" {
		if img, ok := f.resolve(ref); ok {
			out = append(out, img.api())
		}
		return out, nil
	}
	for _, img := range f.images {
		out = append(out, img.api())
	}
	sort.Slice(out, func(i, j int) bool { return out[i].Id < out[j].Id })
	return out, nil
}

// RemoveImage implements cri.Runtime.
func (f *Runtime) RemoveImage(_ context.Context, spec *runtimeapi.ImageSpec) error {
	f.mu.Lock()
	defer f.mu.Unlock()
	if err := f.check("RemoveImage"); err != nil {
		return err
	}
	if img, ok := f.resolve(spec.GetImage()); ok {
		delete(f.images, img.id)
	}
	return nil
}

// ---------------------------------------------------------------- internals (f.mu held)

func (f *Runtime) now() int64 { return f.clock.Now().UnixNano() }

// newID returns a 64-hex-digit ID, as containerd's, unique within this fake.
func (f *Runtime) newID() string {
	f.seq++
	sum := sha256.Sum256(fmt.Appendf(nil, "nodekeeper-fake-%p-%d", f, f.seq))
	return hex.EncodeToString(sum[:])
}

func (f *Runtime) reserve(name, id, kind string) error {
	if owner, ok := f.names[name]; ok {
		return fmt.Errorf("failed to reserve %s name %q: name %q is reserved for %q", kind, name, name, owner)
	}
	f.names[name] = id
	return nil
}

// lookupSandbox finds a sandbox by full ID or unique prefix, as containerd does.
func (f *Runtime) lookupSandbox(id string) (*sandbox, bool) {
	if sb, ok := f.sandboxes[id]; ok || id == "" {
		return sb, ok
	}
	var found *sandbox
	for sid, sb := range f.sandboxes {
		if strings.HasPrefix(sid, id) {
			if found != nil {
				return nil, false
			}
			found = sb
		}
	}
	return found, found != nil
}

func (f *Runtime) findSandbox(call, id string) (*sandbox, error) {
	if sb, ok := f.lookupSandbox(id); ok {
		return sb, nil
	}
	return nil, fmt.Errorf("%s: an error occurred when try to find sandbox %q: %w", call, id, cri.ErrNotFound)
}

func (f *Runtime) findContainer(call, id string) (*container, error) {
	if c, ok := f.containers[id]; ok {
		return c, nil
	}
	var found *container
	for cid, c := range f.containers {
		if id != "" && strings.HasPrefix(cid, id) {
			if found != nil {
				found = nil
				break
			}
			found = c
		}
	}
	if found != nil {
		return found, nil
	}
	return nil, fmt.Errorf("%s: an error occurred when try to find container %q: %w", call, id, cri.ErrNotFound)
}

// stopSandbox kills the sandbox's running containers and releases its IP.
func (f *Runtime) stopSandbox(sb *sandbox) {
	for _, c := range f.containers {
		// a container stopped under SetStopLag has ended already, with its own code
		if c.sandboxID == sb.id && c.state == runtimeapi.ContainerState_CONTAINER_RUNNING && c.stoppedWith == nil {
			f.exited(c, 128+9)
		}
	}
	if sb.ip != "" {
		delete(f.usedIPs, netip.MustParseAddr(sb.ip))
		sb.ip = ""
	}
	sb.state = runtimeapi.PodSandboxState_SANDBOX_NOTREADY
}

func (f *Runtime) removeContainer(c *container) {
	if c.state == runtimeapi.ContainerState_CONTAINER_RUNNING {
		f.exited(c, 128+9)
	}
	delete(f.names, c.name)
	delete(f.containers, c.id)
}

func (f *Runtime) exited(c *container, code int32) {
	c.state, c.finishedAt, c.exitCode = runtimeapi.ContainerState_CONTAINER_EXITED, f.now(), code
	c.reason = "Completed"
	if code != 0 {
		c.reason = "Error"
	}
}

// allocateIP hands out the next free address after the last one handed out, wrapping
// around, as CNI host-local does; the network address, the gateway (the first host
// address) and the broadcast address are never handed out.
func (f *Runtime) allocateIP(id string) (string, error) {
	first := f.podCIDR.Addr().Next().Next() // .0 is the network, .1 the gateway
	a := f.lastIP
	if !a.IsValid() || !f.podCIDR.Contains(a) {
		a = first.Prev()
	}
	for range 1 << min(f.podCIDR.Addr().BitLen()-f.podCIDR.Bits(), 16) {
		a = a.Next()
		if !f.podCIDR.Contains(a) || !f.podCIDR.Contains(a.Next()) { // past the end or broadcast
			a = first
		}
		if _, used := f.usedIPs[a]; !used {
			f.usedIPs[a], f.lastIP = id, a
			return a.String(), nil
		}
	}
	return "", fmt.Errorf("no IP addresses available in range set: %s", f.podCIDR)
}

func (f *Runtime) addLocal(img *image) {
	for _, t := range img.tags { // a tag points at one image: move it
		for _, other := range f.images {
			other.tags = remove(other.tags, t)
		}
	}
	if have, ok := f.images[img.id]; ok {
		for _, t := range img.tags {
			if !contains(have.tags, t) {
				have.tags = append(have.tags, t)
			}
		}
		return
	}
	f.images[img.id] = &image{id: img.id, tags: append([]string(nil), img.tags...), size: img.size}
}

// resolve finds a present image by reference (normalised) or by ID.
func (f *Runtime) resolve(ref string) (*image, bool) {
	if img, ok := f.images[ref]; ok {
		return img, true
	}
	if img, ok := f.images["sha256:"+ref]; ok {
		return img, true
	}
	n, err := normalize(ref)
	if err != nil {
		return nil, false
	}
	for _, img := range f.images {
		if contains(img.tags, n) {
			return img, true
		}
	}
	return nil, false
}

func newImage(ref string, size uint64) *image {
	sum := sha256.Sum256([]byte("nodekeeper-fake-image " + ref))
	return &image{id: "sha256:" + hex.EncodeToString(sum[:]), tags: []string{ref}, size: size}
}

func (img *image) api() *runtimeapi.Image {
	return &runtimeapi.Image{Id: img.id, RepoTags: append([]string(nil), img.tags...), Size: img.size}
}

// normalize turns a reference into docker's full form: docker.io/library/busybox:latest.
func normalize(ref string) (string, error) {
	name, suffix := ref, ""
	if i := strings.Index(name, "@"); i >= 0 {
		name, suffix = name[:i], name[i:]
	} else if i := strings.LastIndex(name, ":"); i > strings.LastIndex(name, "/") {
		name, suffix = name[:i], name[i:]
	}
	switch {
	case name == "" || suffix == ":" || suffix == "@" || strings.ContainsAny(name, " \t@") ||
		strings.HasPrefix(name, "/") || strings.HasSuffix(name, "/") || strings.Contains(name, "//"):
		return "", fmt.Errorf("invalid reference format")
	case strings.ToLower(name) != name:
		return "", fmt.Errorf("invalid reference format: repository name must be lowercase")
	}
	first, rest, hasSlash := strings.Cut(name, "/")
	if !hasSlash || !strings.ContainsAny(first, ".:") && first != "localhost" {
		if !hasSlash {
			name = "docker.io/library/" + name
		} else {
			name = "docker.io/" + name
		}
	} else if first == "docker.io" && !strings.Contains(rest, "/") {
		name = "docker.io/library/" + rest
	}
	if suffix == "" {
		suffix = ":latest"
	}
	return name + suffix, nil
}

func mustNormalize(ref string) string {
	n, err := normalize(ref)
	if err != nil {
		panic(fmt.Sprintf("fake: image reference %q: %v", ref, err))
	}
	return n
}

func matchLabels(selector, labels map[string]string) bool {
	for k, v := range selector {
		if have, ok := labels[k]; !ok || have != v {
			return false
		}
	}
	return true
}

func copyMap(m map[string]string) map[string]string {
	if m == nil {
		return nil
	}
	out := make(map[string]string, len(m))
	for k, v := range m {
		out[k] = v
	}
	return out
}

func contains(s []string, v string) bool {
	for _, x := range s {
		if x == v {
			return true
		}
	}
	return false
}

func remove(s []string, v string) []string {
	out := s[:0]
	for _, x := range s {
		if x != v {
			out = append(out, x)
		}
	}
	return out
}

// Exec implements cri.Runtime: the fake has no stream server, so streaming sessions
// are refused (for a running container) as a runtime without one would.
func (f *Runtime) Exec(_ context.Context, req *runtimeapi.ExecRequest) (string, error) {
	return f.stream("Exec", req.GetContainerId())
}

// Attach implements cri.Runtime, as Exec: refused for a running container (no stream
// server).
func (f *Runtime) Attach(_ context.Context, req *runtimeapi.AttachRequest) (string, error) {
	return f.stream("Attach", req.GetContainerId())
}

// ReopenContainerLog implements cri.Runtime: a running container's log file is created
// anew at its log path (the fake writes no logs itself).
func (f *Runtime) ReopenContainerLog(_ context.Context, containerID string) error {
	f.mu.Lock()
	defer f.mu.Unlock()
	if err := f.check("ReopenContainerLog"); err != nil {
		return err
	}
	c, err := f.findContainer("ReopenContainerLog", containerID)
	if err != nil {
		return err
	}
	if c.state != runtimeapi.ContainerState_CONTAINER_RUNNING {
		return fmt.Errorf("container %q is not running", containerID)
	}
	if c.logPath == "" {
		return nil
	}
	fh, err := os.OpenFile(c.logPath, os.O_CREATE|os.O_WRONLY, 0o640)
	if err != nil {
		return err
	}
	return fh.Close()
}

func (f *Runtime) stream(call, containerID string) (string, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	if err := f.check(call); err != nil {
		return "", err
	}
	c, err := f.findContainer(call, containerID)
	if err != nil {
		return "", err
	}
	if c.state != runtimeapi.ContainerState_CONTAINER_RUNNING {
		return "", fmt.Errorf("container %q is not running", containerID)
	}
	return "", fmt.Errorf("%s: the fake runtime has no stream server", call)
}

// ImageFsMountpoint is the mountpoint the fake's ImageFsInfo names.
const ImageFsMountpoint = "/"

// ListContainerStats implements cri.Runtime: a running container reports its Usage
// (SetUsage) sampled now; others report only their attributes, as containerd does.
func (f *Runtime) ListContainerStats(_ context.Context, filter *runtimeapi.ContainerStatsFilter) ([]*runtimeapi.ContainerStats, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	if err := f.check("ListContainerStats"); err != nil {
		return nil, err
	}
	now := f.now()
	var out []*runtimeapi.ContainerStats
	for _, c := range f.containers {
		switch {
		case filter.GetId() != "" && !strings.HasPrefix(c.id, filter.GetId()),
			filter.GetPodSandboxId() != "" && !strings.HasPrefix(c.sandboxID, filter.GetPodSandboxId()),
			!matchLabels(filter.GetLabelSelector(), c.config.GetLabels()):
			continue
		}
		st := &runtimeapi.ContainerStats{Attributes: &runtimeapi.ContainerAttributes{
			Id: c.id, Metadata: proto.Clone(c.config.GetMetadata()).(*runtimeapi.ContainerMetadata),
			Labels: copyMap(c.config.GetLabels()), Annotations: copyMap(c.config.GetAnnotations())}}
		if c.state == runtimeapi.ContainerState_CONTAINER_RUNNING {
			u := c.usage
			st.Cpu = &runtimeapi.CpuUsage{Timestamp: now, UsageCoreNanoSeconds: &runtimeapi.UInt64Value{Value: u.CPUCoreNanoSeconds}}
			st.Memory = &runtimeapi.MemoryUsage{Timestamp: now, WorkingSetBytes: &runtimeapi.UInt64Value{Value: u.WorkingSetBytes},
				UsageBytes: &runtimeapi.UInt64Value{Value: u.UsageBytes}, RssBytes: &runtimeapi.UInt64Value{Value: u.RSSBytes}}
			st.WritableLayer = &runtimeapi.FilesystemUsage{Timestamp: now, FsId: &runtimeapi.FilesystemIdentifier{Mountpoint: ImageFsMountpoint},
				UsedBytes: &runtimeapi.UInt64Value{Value: u.WritableLayerBytes}, InodesUsed: &runtimeapi.UInt64Value{Value: u.WritableLayerInodes}}
		}
		out = append(out, st)
	}
	sort.Slice(out, func(i, j int) bool { return out[i].Attributes.Id < out[j].Attributes.Id })
	return out, nil
}

// PodSandboxPID implements cri.Runtime: the fake runs no processes, so 0 (for a
// sandbox that exists).
func (f *Runtime) PodSandboxPID(_ context.Context, podSandboxID string) (int, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	if err := f.check("PodSandboxStatus"); err != nil {
		return 0, err
	}
	if _, err := f.findSandbox("PodSandboxStatus", podSandboxID); err != nil {
		return 0, err
	}
	return 0, nil
}

// ImageFsInfo implements cri.Runtime: one filesystem at ImageFsMountpoint using the
// sum of the present images' sizes.
func (f *Runtime) ImageFsInfo(context.Context) ([]*runtimeapi.FilesystemUsage, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	if err := f.check("ImageFsInfo"); err != nil {
		return nil, err
	}
	var used uint64
	for _, img := range f.images {
		used += img.size
	}
	return []*runtimeapi.FilesystemUsage{{Timestamp: f.now(), FsId: &runtimeapi.FilesystemIdentifier{Mountpoint: ImageFsMountpoint},
		UsedBytes: &runtimeapi.UInt64Value{Value: used}, InodesUsed: &runtimeapi.UInt64Value{Value: uint64(len(f.images))}}}, nil
}

// PortForward implements cri.Runtime (refused: no stream server).
func (f *Runtime) PortForward(_ context.Context, req *runtimeapi.PortForwardRequest) (string, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	if _, err := f.findSandbox("PortForward", req.GetPodSandboxId()); err != nil {
		return "", err
	}
	return "", fmt.Errorf("PortForward: the fake runtime has no stream server")
}
