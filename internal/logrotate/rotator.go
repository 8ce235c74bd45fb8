package logrotate

import (
	"compress/gzip"
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"

	runtimeapi "k8s.io/cri-api/pkg/apis/runtime/v1"
	"k8s.io/utils/clock"
)

// Runtime is what the rotator needs of the container runtime.
type Runtime interface {
	ListContainers(ctx context.Context, filter *runtimeapi.ContainerFilter) ([]*runtimeapi.Container, error)
	ContainerStatus(ctx context.Context, containerID string) (*runtimeapi.ContainerStatus, error)
	ReopenContainerLog(ctx context.Context, containerID string) error
}

// Rotator rotates the logs of the running containers that carry Labels.
type Rotator struct {
	Runtime Runtime
	Policy  Policy
	Clock   clock.PassiveClock
	// Labels select the containers whose logs are rotated (nil: all).
	Labels map[string]string
}

// RotateAll rotates every running container's log that needs it (Decide); a failure
// with one container does not stop the others, and all are returned.
func (r *Rotator) RotateAll(ctx context.Context) error {
	cs, err := r.Runtime.ListContainers(ctx, &runtimeapi.ContainerFilter{LabelSelector: r.Labels,
		State: &runtimeapi.ContainerStateValue{State: runtimeapi.ContainerState_CONTAINER_RUNNING}})
	if err != nil {
		return fmt.Errorf("listing containers: %w", err)
	}
	var errs []error
	for _, c := range cs {
		if err := r.rotate(ctx, c.GetId()); err != nil {
			errs = append(errs, fmt.Errorf("container %s: %w", c.GetId(), err))
		}
	}
	return errors.Join(errs...)
}

func (r *Rotator) rotate(ctx context.Context, id string) error {
	st, err := r.Runtime.ContainerStatus(ctx, id)
	if err != nil {
		return fmt.Errorf("container status: %w", err)
	}
	path := st.GetLogPath()
	if path == "" {
		return nil
	}
	fi, err := os.Stat(path)
	if os.IsNotExist(err) {
		// as upstream: the log went away (removed by hand): the runtime makes it again
		if err := r.Runtime.ReopenContainerLog(ctx, id); err != nil {
			return fmt.Errorf("reopening missing log %s: %w", path, err)
		}
		fi, err = os.Stat(path)
	}
	if err != nil {
		return err
	}
	rotated, err := filepath.Glob(path + ".*")
	if err != nil {
		return err
	}
	plan := Decide(path, fi.Size(), rotated, r.Clock.Now(), r.Policy)
	return r.apply(ctx, id, path, plan)
}

// apply carries out plan for container id's log at path.
func (r *Rotator) apply(ctx context.Context, id, path string, plan Plan) error {
	for _, f := range plan.Remove {
		if err := os.Remove(f); err != nil && !os.IsNotExist(err) {
			return err
		}
	}
	for _, f := range plan.Compress {
		if err := compress(f); err != nil {
			return fmt.Errorf("compressing %s: %w", f, err)
		}
	}
	if plan.Rotate == "" {
		return nil
	}
	if err := os.Rename(path, plan.Rotate); err != nil {
		return err
	}
	if err := r.Runtime.ReopenContainerLog(ctx, id); err != nil {
		// the runtime still writes to the renamed file: put it back
		if rerr := os.Rename(plan.Rotate, path); rerr != nil {
			err = errors.Join(err, fmt.Errorf("renaming %s back: %w", plan.Rotate, rerr))
		}
		return fmt.Errorf("reopening the log: %w", err)
	}
	return nil
}

// compress gzips f into f.gz (written as f.tmp first, as upstream) and removes f.
func compress(f string) (err error) {
	in, err := os.Open(f)
	if err != nil {
		return err
	}
	defer func() { _ = in.Close() }()
	fi, err := in.Stat()
	if err != nil {
		return err
	}
	tmp := f + TmpSuffix
	out, err := os.OpenFile(tmp, os.O_WRONLY|os.O_CREATE|os.O_TRUNC, fi.Mode())
	if err != nil {
		return err
	}
	defer func() {
		if err != nil {
			_ = out.Close()
			_ = os.Remove(tmp)
		}
	}()
	w := gzip.NewWriter(out)
	if _, err = io.Copy(w, in); err != nil {
		return err
	}
	if err = w.Close(); err != nil {
		return err
	}
	if err = out.Close(); err != nil {
		return err
	}
	if err = os.Rename(tmp, f+CompressSuffix); err != nil {
		return err
	}
	return os.Remove(f)
}
