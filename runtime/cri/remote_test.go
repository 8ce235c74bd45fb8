package cri

import (
	"context"
	"errors"
	"strings"
	"testing"
	"time"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
)

func TestWrapMapsCodesToSentinels(t *testing.T) {
	for _, tc := range []struct {
		code codes.Code
		want error
	}{
		{codes.NotFound, ErrNotFound},
		{codes.Unavailable, ErrUnavailable},
		{codes.DeadlineExceeded, context.DeadlineExceeded},
		{codes.Canceled, context.Canceled},
		{codes.Unknown, nil},
	} {
		err := wrap("ContainerStatus", status.Error(tc.code, `an error occurred when try to find container "x": not found`))
		for _, s := range []error{ErrNotFound, ErrUnavailable, context.DeadlineExceeded, context.Canceled} {
			if got := errors.Is(err, s); got != (s == tc.want) {
				t.Errorf("%v: errors.Is(%v) = %v", tc.code, s, got)
			}
		}
		if status.Code(err) != tc.code {
			t.Errorf("%v: the gRPC status is lost: %v", tc.code, status.Code(err))
		}
		if tc.code != codes.Unavailable && err.Error() != `ContainerStatus: an error occurred when try to find container "x": not found` {
			t.Errorf("%v: message %q", tc.code, err)
		}
	}
	err := wrap("ListContainers", status.Error(codes.Unavailable, "connection refused"))
	if !strings.HasPrefix(err.Error(), "container runtime is unavailable: ListContainers: ") {
		t.Errorf("unavailable message %q", err)
	}
	if wrap("X", nil) != nil || notFoundIsOK(wrap("X", status.Error(codes.NotFound, "gone"))) != nil {
		t.Error("nil or NotFound-is-fine mapping broken")
	}
}

func TestSeconds(t *testing.T) {
	for d, want := range map[time.Duration]int64{0: 0, -time.Second: 0, time.Millisecond: 1, time.Second: 1, 1500 * time.Millisecond: 2, time.Minute: 60} {
		if got := seconds(d); got != want {
			t.Errorf("seconds(%v) = %d, want %d", d, got, want)
		}
	}
}

func TestValidate(t *testing.T) {
	if err := ValidateContainerConfig(nil, nil); err == nil {
		t.Error("nil container config accepted")
	}
	if !isExecTimeout("failed to exec in container: timeout 1s exceeded: context deadline exceeded") {
		t.Error("containerd's exec timeout message not recognised")
	}
}
