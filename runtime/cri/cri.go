// Package cri is nodekeeper's narrow seam to the container runtime. Runtime is the
// interface the reconcilers use; Remote implements it over CRI gRPC and the fake
// package implements it in memory, keeping state and enforcing the same rules.
//
// (The package lives in the runtime/ folder but is named cri so that it does not
// shadow Go's runtime package or apimachinery's.)
package cri

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/backoff"
	"google.golang.org/grpc/credentials/insecure"
	runtimeapi "k8s.io/cri-api/pkg/apis/runtime/v1"

	"github.com/nodekeeper/nodekeeper/internal/kubeletmetrics"
)

// ErrUnavailable wraps errors from a runtime that cannot be reached.
var ErrUnavailable = errors.New("container runtime is unavailable")

// ErrNotFound wraps errors about a sandbox, container or image that does not exist
// (gRPC NotFound from a real runtime).
var ErrNotFound = errors.New("not found")

// ErrUnimplemented is a call the runtime does not have (containerd 1.6's
// GetContainerEvents).
var ErrUnimplemented = errors.New("not implemented by the runtime")

// EventStreamer is a runtime that streams container events (CRI GetContainerEvents:
// containerd 2.x). It is apart from Runtime: a runtime without it is relisted.
type EventStreamer interface {
	// ContainerEvents opens the stream (then calls opened, if set) and calls each for
	// every container or sandbox event until ctx ends (nil) or the stream breaks (the
	// error). A runtime without the call returns an error wrapping ErrUnimplemented
	// before any event.
	ContainerEvents(ctx context.Context, opened func(), each func(*runtimeapi.ContainerEventResponse)) error
}

// Runtime is what nodekeeper asks of a container runtime: the part of CRI a kubelet
// needs. Every method takes the context first, is safe for concurrent use, and returns
// an error wrapping ErrUnavailable when the runtime cannot be reached and ErrNotFound
// when the sandbox or container it names does not exist (unless its contract says
// otherwise). Other failures (a rule of the runtime broken, a failed pull) are plain
// errors carrying the runtime's message. IDs are the runtime's full IDs; results are
// the caller's to keep (never shared with the runtime's state).
//
// The fake package implements the same contract in memory; contract_test.go runs one
// table of scenarios against both it and a real containerd.
type Runtime interface {
	// Version returns the runtime's name and version (e.g. containerd, 1.6.20).
	// Any failure wraps ErrUnavailable.
	Version(ctx context.Context) (*runtimeapi.VersionResponse, error)
	// Status returns the runtime's conditions; RuntimeReady and NetworkReady are
	// always present in a healthy answer. Any failure wraps ErrUnavailable.
	Status(ctx context.Context) (*runtimeapi.RuntimeStatus, error)
	// RuntimeHandlers returns the runtime's handlers ("" is the default one) with the
	// features each supports (recursive read-only mounts, user namespaces), as CRI
	// Status reports them; a runtime that reports none (containerd 1.6) returns none.
	// Any failure wraps ErrUnavailable.
	RuntimeHandlers(ctx context.Context) ([]*runtimeapi.RuntimeHandler, error)

	// RunPodSandbox creates and starts a pod sandbox (its network namespace, with an IP
	// from the CNI network unless config asks for the node's network) and returns its
	// ID; the sandbox is SANDBOX_READY. runtimeHandler "" is the default runtime. A
	// second sandbox with the same metadata (name, namespace, uid, attempt) is refused
	// while the first exists, ready or not: bump Attempt, or remove the old one first.
	// config must carry metadata (ValidateSandboxConfig). A sandbox on the node's
	// network must not set Hostname: containerd 1.6 keeps it in the node's UTS
	// namespace too, and runc refuses ("unable to set hostname without a private UTS
	// namespace").
	RunPodSandbox(ctx context.Context, config *runtimeapi.PodSandboxConfig, runtimeHandler string) (string, error)
	// StopPodSandbox kills every running container of the sandbox (they end
	// CONTAINER_EXITED, exit code 137; created ones stay CONTAINER_CREATED), stops the
	// sandbox and releases its network (the IP); the sandbox stays,
	// SANDBOX_NOTREADY, until removed. Stopping a stopped sandbox is not an error;
	// stopping a missing one wraps ErrNotFound.
	StopPodSandbox(ctx context.Context, podSandboxID string) error
	// RemovePodSandbox removes the sandbox and all its containers, stopping them (and
	// the sandbox) first if they run. Removing a missing sandbox is not an error.
	RemovePodSandbox(ctx context.Context, podSandboxID string) error
	// PodSandboxStatus returns the sandbox's state, metadata, labels, annotations,
	// creation time and, while it is ready, its IP in Network.Ip (empty for a sandbox on
	// the node's network). A missing sandbox wraps ErrNotFound.
	PodSandboxStatus(ctx context.Context, podSandboxID string) (*runtimeapi.PodSandboxStatus, error)
	// ListPodSandbox returns the sandboxes that match filter (nil: all). Filter fields
	// combine with AND: Id (a full ID or a unique prefix), State, and LabelSelector (every
	// key=value must be among the sandbox's labels).
	ListPodSandbox(ctx context.Context, filter *runtimeapi.PodSandboxFilter) ([]*runtimeapi.PodSandbox, error)

	// CreateContainer creates a container in a ready sandbox and returns its ID; it is
	// CONTAINER_CREATED, not started. sandboxConfig is the config the sandbox was run
	// with (required: ValidateContainerConfig). It fails when the sandbox is missing or
	// not ready (both wrap ErrNotFound: containerd finds no sandbox task), when
	// config.Image is not present (wraps ErrNotFound; CreateContainer never pulls:
	// PullImage first), and when a container with the same metadata (name, attempt)
	// exists in the sandbox. The log file is sandboxConfig.LogDirectory/config.LogPath;
	// the runtime creates the directory if needed.
	CreateContainer(ctx context.Context, podSandboxID string, config *runtimeapi.ContainerConfig, sandboxConfig *runtimeapi.PodSandboxConfig) (string, error)
	// StartContainer starts a created container (CONTAINER_RUNNING). Starting a
	// container that is not CONTAINER_CREATED (running, or exited: containers are never
	// restarted, create a new one) is an error; a missing one wraps ErrNotFound. When
	// the container cannot start (e.g. its sandbox has been stopped) it is an error and
	// the container ends CONTAINER_EXITED with exit code 128, reason "StartError".
	StartContainer(ctx context.Context, containerID string) error
	// StopContainer stops a running container: SIGTERM (or the image's stop signal),
	// then SIGKILL after timeout (0: SIGKILL at once). It returns when the container has
	// exited; it is CONTAINER_EXITED with its exit code (143 for a process that SIGTERM
	// ended, 137 when killed) and reason "Error" (or "Completed" for 0). Stopping a
	// container that is not running (created or exited) is not an error and changes
	// nothing; stopping a missing one wraps ErrNotFound.
	StopContainer(ctx context.Context, containerID string, timeout time.Duration) error
	// RemoveContainer removes a container, killing it first if it is running (as
	// containerd does). Removing a missing container is not an error.
	RemoveContainer(ctx context.Context, containerID string) error
	// ListContainers returns the containers that match filter (nil: all). Filter
	// fields combine with AND: Id (full ID or unique prefix), State, PodSandboxId, and
	// LabelSelector (every key=value must be among the container's labels).
	ListContainers(ctx context.Context, filter *runtimeapi.ContainerFilter) ([]*runtimeapi.Container, error)
	// ContainerStatus returns the container's state, times (nanoseconds since the
	// epoch: CreatedAt; StartedAt once started; FinishedAt once exited), ExitCode and
	// Reason ("Completed" for 0, "Error" otherwise) once exited, image, labels,
	// annotations and LogPath. A missing container wraps ErrNotFound.
	ContainerStatus(ctx context.Context, containerID string) (*runtimeapi.ContainerStatus, error)
	// ExecSync runs cmd in a running container and waits for it, at most timeout
	// (0: no limit but ctx). A command that ran is not an error whatever its exit code:
	// the result carries it with the command's stdout and stderr. Exec in a container
	// that is not running is an error; a missing one wraps ErrNotFound; a command that
	// outlives timeout is an error wrapping context.DeadlineExceeded.
	ExecSync(ctx context.Context, containerID string, cmd []string, timeout time.Duration) (*ExecResult, error)
	// Exec prepares a streaming exec session in a running container and returns the URL
	// of the runtime's stream server that serves it (SPDY or WebSocket upgrade); the
	// session is started by the first request to that URL. A missing container wraps
	// ErrNotFound.
	Exec(ctx context.Context, req *runtimeapi.ExecRequest) (string, error)
	// PortForward prepares a port-forwarding session into a ready sandbox's network
	// namespace and returns the stream server URL serving it.
	PortForward(ctx context.Context, req *runtimeapi.PortForwardRequest) (string, error)
	// ReopenContainerLog makes a running container write to a new file at its log path
	// (after the old one was renamed away: log rotation). A container that is not
	// running is an error; a missing one wraps ErrNotFound.
	ReopenContainerLog(ctx context.Context, containerID string) error
	// Attach prepares a streaming attach session to a running container's main process
	// (its stdin if the container was created with Stdin, its stdout/stderr) and returns
	// the stream server URL serving it, like Exec. A missing container wraps
	// ErrNotFound; a container that is not running is an error.
	Attach(ctx context.Context, req *runtimeapi.AttachRequest) (string, error)

	// ListContainerStats returns resource usage (cpu, memory, writable layer) of the
	// containers that match filter (nil: all), as the runtime sampled it: cumulative
	// CPU time and the memory working set at Timestamp. containerd 1.6 answers only for
	// containers that are running (others have no cgroup), a sample without Cpu/Memory
	// for the rest. Filter fields: Id, PodSandboxId, LabelSelector (AND).
	ListContainerStats(ctx context.Context, filter *runtimeapi.ContainerStatsFilter) ([]*runtimeapi.ContainerStats, error)
	// PodSandboxPID returns the process ID (in the caller's PID namespace, which is the
	// runtime's) of a ready sandbox's infra process, whose /proc/<pid>/net is the pod's
	// network namespace; 0 when the runtime has no process for it (a stopped sandbox, or
	// the fake). A missing sandbox wraps ErrNotFound.
	//
	// (CRI ListPodSandboxStats would give pod cpu, memory and network directly, but
	// containerd 1.6 refuses it for a sandbox without a cgroup parent, and nodekeeper sets
	// none: "failed to get cgroup metrics for sandbox …: cgroupPath is empty".)
	PodSandboxPID(ctx context.Context, podSandboxID string) (int, error)
	// ImageFsInfo returns the filesystems holding images (mountpoint, bytes and inodes
	// used by the runtime).
	ImageFsInfo(ctx context.Context) ([]*runtimeapi.FilesystemUsage, error)

	// ImageStatus returns the image (ID, RepoTags, size) if it is present, or nil and no
	// error if it is not.
	// References are normalised as docker does (busybox:local is
	// docker.io/library/busybox:local); an image ID (sha256:...) works too.
	ImageStatus(ctx context.Context, image *runtimeapi.ImageSpec) (*runtimeapi.Image, error)
	// PullImage fetches the image from its registry and returns its reference (the image
	// ID). It always asks the registry, even when the image is already present: honour
	// imagePullPolicy with ImageStatus first. A failed pull is an error carrying the
	// runtime's message ("failed to pull and unpack image ..."). auth and sandboxConfig
	// may be nil. A reference the registry does not have may wrap ErrNotFound.
	PullImage(ctx context.Context, image *runtimeapi.ImageSpec, auth *runtimeapi.AuthConfig, sandboxConfig *runtimeapi.PodSandboxConfig) (string, error)
	// ListImages returns the images present; with filter.Image set, only the image that
	// reference resolves to (containerd 1.6 ignores the filter: Remote resolves it).
	ListImages(ctx context.Context, filter *runtimeapi.ImageFilter) ([]*runtimeapi.Image, error)
	// RemoveImage removes the image the reference resolves to, with all its tags (as
	// containerd does), even if containers use it. Removing a missing image is not an
	// error.
	RemoveImage(ctx context.Context, image *runtimeapi.ImageSpec) error
}

// ExecResult is what a command run by ExecSync produced.
type ExecResult struct {
	Stdout, Stderr []byte
	ExitCode       int32
}

// Remote talks CRI v1 over gRPC to a runtime such as containerd.
type Remote struct {
	conn    *grpc.ClientConn
	rt      runtimeapi.RuntimeServiceClient
	img     runtimeapi.ImageServiceClient
	timeout time.Duration
}

// RemoteOptions configure Dial.
type RemoteOptions struct {
	// Endpoint is unix:///path/to/socket (a bare path is taken as a unix socket).
	Endpoint string
	// Timeout bounds each call that has no deadline of its own (default 2 minutes, as upstream).
	Timeout time.Duration
}

// Dial prepares a client for the endpoint. It does not wait for the runtime: a runtime
// that is down makes calls fail with ErrUnavailable, and the client reconnects when it is back.
func Dial(opts RemoteOptions) (*Remote, error) {
	target := opts.Endpoint
	if strings.HasPrefix(target, "/") {
		target = "unix://" + target
	}
	if !strings.HasPrefix(target, "unix://") {
		return nil, fmt.Errorf("container runtime endpoint %q: only unix:// sockets are supported", opts.Endpoint)
	}
	conn, err := grpc.NewClient(target,
		grpc.WithTransportCredentials(insecure.NewCredentials()),
		grpc.WithDefaultCallOptions(grpc.MaxCallRecvMsgSize(16*1024*1024)),
		grpc.WithConnectParams(ConnectParams()),
		// every call counted and timed as upstream's instrumented runtime service
		// (kubelet_runtime_operations_total / _errors_total / _duration_seconds)
		grpc.WithChainUnaryInterceptor(instrumentUnary),
		grpc.WithChainStreamInterceptor(instrumentStream))
	if err != nil {
		return nil, fmt.Errorf("container runtime endpoint %q: %w", opts.Endpoint, err)
	}
	if opts.Timeout == 0 {
		opts.Timeout = 2 * time.Minute
	}
	return &Remote{
		conn: conn, timeout: opts.Timeout,
		rt:  runtimeapi.NewRuntimeServiceClient(conn),
		img: runtimeapi.NewImageServiceClient(conn),
	}, nil
}

// ConnectParams are the kubelet's (cri-client's remote runtime): reconnection attempts
// back off from 100 ms to at most 3 s, so the agent is back on a restarted runtime within
// seconds. gRPC's default backs off to 120 s: after a minute-long runtime outage the node
// stayed NotReady for up to two minutes more (found by the fault suite, test/fault).
func ConnectParams() grpc.ConnectParams {
	p := grpc.ConnectParams{Backoff: backoff.DefaultConfig, MinConnectTimeout: 5 * time.Second}
	p.Backoff.BaseDelay = 100 * time.Millisecond
	p.Backoff.MaxDelay = 3 * time.Second
	return p
}

// Close releases the connection.
func (r *Remote) Close() error { return r.conn.Close() }

func (r *Remote) ctx(ctx context.Context) (context.Context, context.CancelFunc) {
	if _, ok := ctx.Deadline(); ok {
		return context.WithCancel(ctx)
	}
	return context.WithTimeout(ctx, r.timeout)
}

// Version implements Runtime.
func (r *Remote) Version(ctx context.Context) (*runtimeapi.VersionResponse, error) {
	ctx, cancel := r.ctx(ctx)
	defer cancel()
	resp, err := r.rt.Version(ctx, &runtimeapi.VersionRequest{Version: "v1"})
	if err != nil {
		return nil, fmt.Errorf("%w: Version: %v", ErrUnavailable, err)
	}
	return resp, nil
}

// Status implements Runtime.
func (r *Remote) Status(ctx context.Context) (*runtimeapi.RuntimeStatus, error) {
	ctx, cancel := r.ctx(ctx)
	defer cancel()
	resp, err := r.rt.Status(ctx, &runtimeapi.StatusRequest{})
	if err != nil {
		return nil, fmt.Errorf("%w: Status: %v", ErrUnavailable, err)
	}
	if resp.GetStatus() == nil {
		return nil, fmt.Errorf("%w: Status: empty answer", ErrUnavailable)
	}
	return resp.GetStatus(), nil
}

// RuntimeHandlers implements Runtime.
func (r *Remote) RuntimeHandlers(ctx context.Context) ([]*runtimeapi.RuntimeHandler, error) {
	ctx, cancel := r.ctx(ctx)
	defer cancel()
	resp, err := r.rt.Status(ctx, &runtimeapi.StatusRequest{})
	if err != nil {
		return nil, fmt.Errorf("%w: Status: %v", ErrUnavailable, err)
	}
	return resp.GetRuntimeHandlers(), nil
}

func instrumentUnary(ctx context.Context, method string, req, reply any, cc *grpc.ClientConn, invoker grpc.UnaryInvoker, opts ...grpc.CallOption) error {
	start := time.Now()
	err := invoker(ctx, method, req, reply, cc, opts...)
	kubeletmetrics.ObserveRuntimeOperation(method, start, err)
	return err
}

// instrumentStream counts a stream (GetContainerEvents) when it is opened, as upstream.
func instrumentStream(ctx context.Context, desc *grpc.StreamDesc, cc *grpc.ClientConn, method string, streamer grpc.Streamer, opts ...grpc.CallOption) (grpc.ClientStream, error) {
	start := time.Now()
	s, err := streamer(ctx, desc, cc, method, opts...)
	kubeletmetrics.ObserveRuntimeOperation(method, start, err)
	return s, err
}
