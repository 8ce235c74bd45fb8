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
	"google.golang.org/grpc/credentials/insecure"
	runtimeapi "k8s.io/cri-api/pkg/apis/runtime/v1"
)

// ErrUnavailable wraps errors from a runtime that cannot be reached.
var ErrUnavailable = errors.New("container runtime is unavailable")

// Runtime is what nodekeeper asks of a container runtime. Every method takes the
// context first, is safe for concurrent use, and returns an error wrapping
// ErrUnavailable when the runtime cannot be reached.
type Runtime interface {
	// Version returns the runtime's name and version (e.g. containerd, 1.6.20).
	Version(ctx context.Context) (*runtimeapi.VersionResponse, error)
	// Status returns the runtime's conditions; RuntimeReady and NetworkReady are
	// always present in a healthy answer.
	Status(ctx context.Context) (*runtimeapi.RuntimeStatus, error)
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
		grpc.WithDefaultCallOptions(grpc.MaxCallRecvMsgSize(16*1024*1024)))
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
