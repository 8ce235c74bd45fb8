package cri

import (
	"context"
	"net"
	"path/filepath"
	"testing"

	"github.com/prometheus/client_golang/prometheus/testutil"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	runtimeapi "k8s.io/cri-api/pkg/apis/runtime/v1"

	"github.com/nodekeeper/nodekeeper/internal/kubeletmetrics"
)

type versionOnly struct {
	runtimeapi.UnimplementedRuntimeServiceServer
}

func (versionOnly) Version(context.Context, *runtimeapi.VersionRequest) (*runtimeapi.VersionResponse, error) {
	return &runtimeapi.VersionResponse{RuntimeName: "test", RuntimeApiVersion: "v1"}, nil
}

func (versionOnly) StopPodSandbox(context.Context, *runtimeapi.StopPodSandboxRequest) (*runtimeapi.StopPodSandboxResponse, error) {
	return nil, status.Error(codes.Internal, "cannot")
}

// Every call over the connection is counted as upstream's instrumented runtime service
// counts it (kubelet_runtime_operations_*), errors included.
func TestCallsAreInstrumented(t *testing.T) {
	sock := filepath.Join(t.TempDir(), "cri.sock")
	l, err := net.Listen("unix", sock)
	if err != nil {
		t.Fatal(err)
	}
	srv := grpc.NewServer()
	runtimeapi.RegisterRuntimeServiceServer(srv, versionOnly{})
	go func() { _ = srv.Serve(l) }()
	defer srv.Stop()
	r, err := Dial(RemoteOptions{Endpoint: "unix://" + sock})
	if err != nil {
		t.Fatal(err)
	}
	defer r.Close()
	ops := func(op string) (float64, float64) {
		return testutil.ToFloat64(kubeletmetrics.RuntimeOperations.WithLabelValues(op)), testutil.ToFloat64(kubeletmetrics.RuntimeOperationsErrors.WithLabelValues(op))
	}
	v0, _ := ops("version")
	s0, se0 := ops("stop_podsandbox")
	ctx := context.Background()
	if _, err := r.Version(ctx); err != nil {
		t.Fatal(err)
	}
	if err := r.StopPodSandbox(ctx, "x"); err == nil {
		t.Fatal("want an error")
	}
	v1, _ := ops("version")
	s1, se1 := ops("stop_podsandbox")
	if v1-v0 != 1 || s1-s0 != 1 || se1-se0 != 1 {
		t.Errorf("version +%v, stop_podsandbox +%v errors +%v; want 1 each", v1-v0, s1-s0, se1-se0)
	}
	if n := testutil.CollectAndCount(kubeletmetrics.RuntimeOperationsDuration); n < 2 {
		t.Errorf("duration histograms: %d series", n)
	}
}
