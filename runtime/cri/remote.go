package cri

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"strings"
	"time"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	runtimeapi "k8s.io/cri-api/pkg/apis/runtime/v1"
)

var _ Runtime = (*Remote)(nil)

// rpcError is a failed CRI call: its message is the call's name and the runtime's own
// message; errors.Is finds the sentinel (ErrNotFound, ErrUnavailable,
// context.DeadlineExceeded) and status.FromError the gRPC status.
type rpcError struct {
	call string
	kind error // a sentinel, or nil
	st   error // the gRPC status error
}

func (e *rpcError) Error() string {
	msg := status.Convert(e.st).Message()
	if errors.Is(e.kind, ErrUnavailable) {
		return fmt.Sprintf("%v: %s: %v", e.kind, e.call, e.st)
	}
	return e.call + ": " + msg
}

func (e *rpcError) Unwrap() []error {
	if e.kind == nil {
		return []error{e.st}
	}
	return []error{e.kind, e.st}
}

// wrap turns a gRPC error into an rpcError with the sentinel its code implies.
func wrap(call string, err error) error {
	if err == nil {
		return nil
	}
	e := &rpcError{call: call, st: err}
	switch status.Code(err) {
	case codes.NotFound:
		e.kind = ErrNotFound
	case codes.Unavailable:
		e.kind = ErrUnavailable
	case codes.DeadlineExceeded:
		e.kind = context.DeadlineExceeded
	case codes.Canceled:
		e.kind = context.Canceled
	case codes.Unimplemented:
		e.kind = ErrUnimplemented
	}
	return e
}

// notFoundIsOK makes a call idempotent: its target being gone already is success.
func notFoundIsOK(err error) error {
	if errors.Is(err, ErrNotFound) {
		return nil
	}
	return err
}

// RunPodSandbox implements Runtime.
func (r *Remote) RunPodSandbox(ctx context.Context, config *runtimeapi.PodSandboxConfig, runtimeHandler string) (string, error) {
	if err := ValidateSandboxConfig(config); err != nil {
		return "", fmt.Errorf("RunPodSandbox: %w", err)
	}
	ctx, cancel := r.ctx(ctx)
	defer cancel()
	resp, err := r.rt.RunPodSandbox(ctx, &runtimeapi.RunPodSandboxRequest{Config: config, RuntimeHandler: runtimeHandler})
	if err != nil {
		return "", wrap("RunPodSandbox", err)
	}
	if resp.GetPodSandboxId() == "" {
		return "", fmt.Errorf("RunPodSandbox: the runtime returned no sandbox ID")
	}
	return resp.GetPodSandboxId(), nil
}

// StopPodSandbox implements Runtime.
func (r *Remote) StopPodSandbox(ctx context.Context, podSandboxID string) error {
	ctx, cancel := r.ctx(ctx)
	defer cancel()
	_, err := r.rt.StopPodSandbox(ctx, &runtimeapi.StopPodSandboxRequest{PodSandboxId: podSandboxID})
	return wrap("StopPodSandbox", err)
}

// RemovePodSandbox implements Runtime.
func (r *Remote) RemovePodSandbox(ctx context.Context, podSandboxID string) error {
	ctx, cancel := r.ctx(ctx)
	defer cancel()
	_, err := r.rt.RemovePodSandbox(ctx, &runtimeapi.RemovePodSandboxRequest{PodSandboxId: podSandboxID})
	return notFoundIsOK(wrap("RemovePodSandbox", err))
}

// PodSandboxStatus implements Runtime.
func (r *Remote) PodSandboxStatus(ctx context.Context, podSandboxID string) (*runtimeapi.PodSandboxStatus, error) {
	ctx, cancel := r.ctx(ctx)
	defer cancel()
	resp, err := r.rt.PodSandboxStatus(ctx, &runtimeapi.PodSandboxStatusRequest{PodSandboxId: podSandboxID})
	if err != nil {
		return nil, wrap("PodSandboxStatus", err)
	}
	if resp.GetStatus() == nil {
		return nil, fmt.Errorf("PodSandboxStatus %s: the runtime returned no status", podSandboxID)
	}
	return resp.GetStatus(), nil
}

// ListPodSandbox implements Runtime.
func (r *Remote) ListPodSandbox(ctx context.Context, filter *runtimeapi.PodSandboxFilter) ([]*runtimeapi.PodSandbox, error) {
	ctx, cancel := r.ctx(ctx)
	defer cancel()
	resp, err := r.rt.ListPodSandbox(ctx, &runtimeapi.ListPodSandboxRequest{Filter: filter})
	if err != nil {
		return nil, wrap("ListPodSandbox", err)
	}
	return resp.GetItems(), nil
}

// CreateContainer implements Runtime.
func (r *Remote) CreateContainer(ctx context.Context, podSandboxID string, config *runtimeapi.ContainerConfig, sandboxConfig *runtimeapi.PodSandboxConfig) (string, error) {
	if err := ValidateContainerConfig(config, sandboxConfig); err != nil {
		return "", fmt.Errorf("CreateContainer: %w", err)
	}
	ctx, cancel := r.ctx(ctx)
	defer cancel()
	resp, err := r.rt.CreateContainer(ctx, &runtimeapi.CreateContainerRequest{
		PodSandboxId: podSandboxID, Config: config, SandboxConfig: sandboxConfig})
	if err != nil {
		return "", wrap("CreateContainer", err)
	}
	if resp.GetContainerId() == "" {
		return "", fmt.Errorf("CreateContainer: the runtime returned no container ID")
	}
	return resp.GetContainerId(), nil
}

// StartContainer implements Runtime.
func (r *Remote) StartContainer(ctx context.Context, containerID string) error {
	ctx, cancel := r.ctx(ctx)
	defer cancel()
	_, err := r.rt.StartContainer(ctx, &runtimeapi.StartContainerRequest{ContainerId: containerID})
	return wrap("StartContainer", err)
}

// StopContainer implements Runtime.
func (r *Remote) StopContainer(ctx context.Context, containerID string, timeout time.Duration) error {
	ctx, cancel := r.callCtx(ctx, timeout)
	defer cancel()
	_, err := r.rt.StopContainer(ctx, &runtimeapi.StopContainerRequest{ContainerId: containerID, Timeout: seconds(timeout)})
	return wrap("StopContainer", err)
}

// RemoveContainer implements Runtime.
func (r *Remote) RemoveContainer(ctx context.Context, containerID string) error {
	ctx, cancel := r.ctx(ctx)
	defer cancel()
	_, err := r.rt.RemoveContainer(ctx, &runtimeapi.RemoveContainerRequest{ContainerId: containerID})
	return notFoundIsOK(wrap("RemoveContainer", err))
}

// ListContainers implements Runtime.
func (r *Remote) ListContainers(ctx context.Context, filter *runtimeapi.ContainerFilter) ([]*runtimeapi.Container, error) {
	ctx, cancel := r.ctx(ctx)
	defer cancel()
	resp, err := r.rt.ListContainers(ctx, &runtimeapi.ListContainersRequest{Filter: filter})
	if err != nil {
		return nil, wrap("ListContainers", err)
	}
	return resp.GetContainers(), nil
}

// ContainerStatus implements Runtime.
func (r *Remote) ContainerStatus(ctx context.Context, containerID string) (*runtimeapi.ContainerStatus, error) {
	ctx, cancel := r.ctx(ctx)
	defer cancel()
	resp, err := r.rt.ContainerStatus(ctx, &runtimeapi.ContainerStatusRequest{ContainerId: containerID})
	if err != nil {
		return nil, wrap("ContainerStatus", err)
	}
	if resp.GetStatus() == nil {
		return nil, fmt.Errorf("ContainerStatus %s: the runtime returned no status", containerID)
	}
	return resp.GetStatus(), nil
}

// ExecSync implements Runtime.
func (r *Remote) ExecSync(ctx context.Context, containerID string, cmd []string, timeout time.Duration) (*ExecResult, error) {
	ctx, cancel := r.callCtx(ctx, timeout)
	defer cancel()
	resp, err := r.rt.ExecSync(ctx, &runtimeapi.ExecSyncRequest{ContainerId: containerID, Cmd: cmd, Timeout: seconds(timeout)})
	if err != nil {
		e := wrap("ExecSync", err)
		// containerd reports its own timeout as a plain error ("timeout 1s exceeded").
		if timeout > 0 && status.Code(err) == codes.Unknown && isExecTimeout(status.Convert(err).Message()) {
			e.(*rpcError).kind = context.DeadlineExceeded
		}
		return nil, e
	}
	return &ExecResult{Stdout: resp.GetStdout(), Stderr: resp.GetStderr(), ExitCode: resp.GetExitCode()}, nil
}

// ImageStatus implements Runtime.
func (r *Remote) ImageStatus(ctx context.Context, image *runtimeapi.ImageSpec) (*runtimeapi.Image, error) {
	ctx, cancel := r.ctx(ctx)
	defer cancel()
	resp, err := r.img.ImageStatus(ctx, &runtimeapi.ImageStatusRequest{Image: image})
	if err != nil {
		if status.Code(err) == codes.NotFound { // containerd answers an empty status instead; others may not
			return nil, nil
		}
		return nil, wrap("ImageStatus", err)
	}
	return resp.GetImage(), nil
}

// PullImage implements Runtime.
func (r *Remote) PullImage(ctx context.Context, image *runtimeapi.ImageSpec, auth *runtimeapi.AuthConfig, sandboxConfig *runtimeapi.PodSandboxConfig) (string, error) {
	ctx, cancel := r.ctx(ctx)
	defer cancel()
	resp, err := r.img.PullImage(ctx, &runtimeapi.PullImageRequest{Image: image, Auth: auth, SandboxConfig: sandboxConfig})
	if err != nil {
		return "", wrap("PullImage", err)
	}
	return resp.GetImageRef(), nil
}

// ListImages implements Runtime.
func (r *Remote) ListImages(ctx context.Context, filter *runtimeapi.ImageFilter) ([]*runtimeapi.Image, error) {
	ctx, cancel := r.ctx(ctx)
	defer cancel()
	if ref := filter.GetImage().GetImage(); ref != "" {
		// containerd 1.6 ignores the filter: resolve the reference instead.
		img, err := r.ImageStatus(ctx, filter.GetImage())
		if err != nil || img == nil {
			return nil, err
		}
		return []*runtimeapi.Image{img}, nil
	}
	resp, err := r.img.ListImages(ctx, &runtimeapi.ListImagesRequest{})
	if err != nil {
		return nil, wrap("ListImages", err)
	}
	return resp.GetImages(), nil
}

// RemoveImage implements Runtime.
func (r *Remote) RemoveImage(ctx context.Context, image *runtimeapi.ImageSpec) error {
	ctx, cancel := r.ctx(ctx)
	defer cancel()
	_, err := r.img.RemoveImage(ctx, &runtimeapi.RemoveImageRequest{Image: image})
	return notFoundIsOK(wrap("RemoveImage", err))
}

// ValidateSandboxConfig rejects a sandbox config that a runtime cannot take: nil, or
// without metadata (name, namespace, uid). Remote and the fake both call it.
func ValidateSandboxConfig(config *runtimeapi.PodSandboxConfig) error {
	if config == nil || config.GetMetadata() == nil {
		return errors.New("sandbox config must include metadata")
	}
	if m := config.GetMetadata(); m.GetName() == "" || m.GetNamespace() == "" || m.GetUid() == "" {
		return errors.New("sandbox metadata must include name, namespace and uid")
	}
	return nil
}

// ValidateContainerConfig rejects a container config that a runtime cannot take: nil,
// without metadata or image, or without the sandbox config (containerd 1.6 crashes on a
// CreateContainer without one). Remote and the fake both call it.
func ValidateContainerConfig(config *runtimeapi.ContainerConfig, sandboxConfig *runtimeapi.PodSandboxConfig) error {
	switch {
	case config == nil || config.GetMetadata() == nil || config.GetMetadata().GetName() == "":
		return errors.New("container config must include metadata with a name")
	case config.GetImage().GetImage() == "":
		return errors.New("container config must include an image")
	}
	return ValidateSandboxConfig(sandboxConfig)
}

// callCtx is ctx for a call that may itself take up to d (stop grace period, exec
// timeout): without a deadline of its own it gets the call timeout plus d.
func (r *Remote) callCtx(ctx context.Context, d time.Duration) (context.Context, context.CancelFunc) {
	if _, ok := ctx.Deadline(); ok {
		return context.WithCancel(ctx)
	}
	return context.WithTimeout(ctx, r.timeout+d)
}

// seconds is d for CRI's whole-second timeouts, rounded up so that 1ms is not "none".
func seconds(d time.Duration) int64 {
	if d <= 0 {
		return 0
	}
	return int64((d + time.Second - 1) / time.Second)
}

func isExecTimeout(msg string) bool {
	return strings.Contains(msg, "timeout") && strings.Contains(msg, "exceeded")
}

// Exec implements Runtime.
func (r *Remote) Exec(ctx context.Context, req *runtimeapi.ExecRequest) (string, error) {
	ctx, cancel := r.ctx(ctx)
	defer cancel()
	resp, err := r.rt.Exec(ctx, req)
	if err != nil {
		return "", wrap("Exec", err)
	}
	return resp.GetUrl(), nil
}

// ReopenContainerLog implements Runtime.
func (r *Remote) ReopenContainerLog(ctx context.Context, containerID string) error {
	ctx, cancel := r.ctx(ctx)
	defer cancel()
	if _, err := r.rt.ReopenContainerLog(ctx, &runtimeapi.ReopenContainerLogRequest{ContainerId: containerID}); err != nil {
		return wrap("ReopenContainerLog", err)
	}
	return nil
}

// PortForward implements Runtime.
func (r *Remote) PortForward(ctx context.Context, req *runtimeapi.PortForwardRequest) (string, error) {
	ctx, cancel := r.ctx(ctx)
	defer cancel()
	resp, err := r.rt.PortForward(ctx, req)
	if err != nil {
		return "", wrap("PortForward", err)
	}
	return resp.GetUrl(), nil
}

// Attach implements Runtime.
func (r *Remote) Attach(ctx context.Context, req *runtimeapi.AttachRequest) (string, error) {
	ctx, cancel := r.ctx(ctx)
	defer cancel()
	resp, err := r.rt.Attach(ctx, req)
	if err != nil {
		return "", wrap("Attach", err)
	}
	return resp.GetUrl(), nil
}

// ListContainerStats implements Runtime.
func (r *Remote) ListContainerStats(ctx context.Context, filter *runtimeapi.ContainerStatsFilter) ([]*runtimeapi.ContainerStats, error) {
	ctx, cancel := r.ctx(ctx)
	defer cancel()
	resp, err := r.rt.ListContainerStats(ctx, &runtimeapi.ListContainerStatsRequest{Filter: filter})
	if err != nil {
		return nil, wrap("ListContainerStats", err)
	}
	return resp.GetStats(), nil
}

// PodSandboxPID implements Runtime from the verbose sandbox status: containerd puts
// {"pid": N, …} under info["info"].
func (r *Remote) PodSandboxPID(ctx context.Context, podSandboxID string) (int, error) {
	ctx, cancel := r.ctx(ctx)
	defer cancel()
	resp, err := r.rt.PodSandboxStatus(ctx, &runtimeapi.PodSandboxStatusRequest{PodSandboxId: podSandboxID, Verbose: true})
	if err != nil {
		return 0, wrap("PodSandboxStatus", err)
	}
	if resp.GetStatus().GetState() != runtimeapi.PodSandboxState_SANDBOX_READY {
		return 0, nil
	}
	var info struct {
		Pid int `json:"pid"`
	}
	if raw := resp.GetInfo()["info"]; raw != "" {
		if err := json.Unmarshal([]byte(raw), &info); err != nil {
			return 0, fmt.Errorf("PodSandboxStatus %s: verbose info: %w", podSandboxID, err)
		}
	}
	return info.Pid, nil
}

// ImageFsInfo implements Runtime.
func (r *Remote) ImageFsInfo(ctx context.Context) ([]*runtimeapi.FilesystemUsage, error) {
	ctx, cancel := r.ctx(ctx)
	defer cancel()
	resp, err := r.img.ImageFsInfo(ctx, &runtimeapi.ImageFsInfoRequest{})
	if err != nil {
		return nil, wrap("ImageFsInfo", err)
	}
	return resp.GetImageFilesystems(), nil
}

// ContainerEvents streams GetContainerEvents (EventStreamer). The stream has no deadline;
// a stream the runtime refuses (Unimplemented, which gRPC reports on the first receive)
// wraps ErrUnimplemented.
func (r *Remote) ContainerEvents(ctx context.Context, opened func(), each func(*runtimeapi.ContainerEventResponse)) error {
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	stream, err := r.rt.GetContainerEvents(ctx, &runtimeapi.GetEventsRequest{})
	if err != nil {
		return wrap("GetContainerEvents", err)
	}
	if opened != nil {
		opened()
	}
	for {
		ev, err := stream.Recv()
		if err != nil {
			if ctx.Err() != nil {
				return nil
			}
			return wrap("GetContainerEvents", err)
		}
		each(ev)
	}
}
