package controllers

import (
	"context"
	"os"
	"path/filepath"
	"sort"

	"k8s.io/apimachinery/pkg/api/resource"
	runtimeapi "k8s.io/cri-api/pkg/apis/runtime/v1"
	"k8s.io/utils/clock"
	"sigs.k8s.io/controller-runtime/pkg/log"

	"github.com/nodekeeper/nodekeeper/internal/podplan"
	"github.com/nodekeeper/nodekeeper/runtime/cri"
)

// rotatedSuffix is the timestamp layout of rotated log files (<log>.<suffix>), as the
// kubelet's container log manager names them.
const rotatedSuffix = "20060102-150405"

// excessLogs picks, among a container's rotated log files, the oldest ones to remove so
// that maxFiles remain counting the current file. Names sort by their timestamp.
func excessLogs(rotated []string, maxFiles int) []string {
	keep := maxFiles - 1
	if keep < 1 {
		keep = 1
	}
	if len(rotated) <= keep {
		return nil
	}
	sorted := append([]string(nil), rotated...)
	sort.Strings(sorted)
	return sorted[:len(sorted)-keep]
}

// logRotator is the kubelet's container log manager: every period it renames each
// running container's log that reached maxSize to <log>.<timestamp>, asks the runtime
// to reopen the log (CRI ReopenContainerLog), and removes the oldest rotated files
// beyond maxFiles. Rotated files are kept as they are (upstream gzips all but the
// newest).
type logRotator struct {
	rt       cri.Runtime
	maxSize  int64
	maxFiles int
	clock    clock.PassiveClock
}

func (l *logRotator) rotateAll(ctx context.Context) {
	logger := log.FromContext(ctx).WithName("logs")
	cs, err := l.rt.ListContainers(ctx, &runtimeapi.ContainerFilter{LabelSelector: map[string]string{podplan.LabelManaged: "true"},
		State: &runtimeapi.ContainerStateValue{State: runtimeapi.ContainerState_CONTAINER_RUNNING}})
	if err != nil {
		return
	}
	for _, c := range cs {
		st, err := l.rt.ContainerStatus(ctx, c.GetId())
		if err != nil || st.GetLogPath() == "" {
			continue
		}
		path := st.GetLogPath()
		l.removeExcess(path)
		fi, err := os.Stat(path)
		if err != nil || fi.Size() < l.maxSize {
			continue
		}
		rotated := path + "." + l.clock.Now().Format(rotatedSuffix)
		if _, err := os.Stat(rotated); err == nil {
			continue // rotated this second already
		}
		// as upstream's removeExcessLogs: make room first, so that with the file about to
		// be rotated and the reopened one there are never more than maxFiles
		for _, f := range excessLogsGlob(path, l.maxFiles-1) {
			_ = os.Remove(f)
		}
		if err := os.Rename(path, rotated); err != nil {
			logger.Error(err, "Rotating a container log failed", "path", path)
			continue
		}
		if err := l.rt.ReopenContainerLog(ctx, c.GetId()); err != nil {
			// the runtime still writes to the renamed file: put it back
			_ = os.Rename(rotated, path)
			logger.Error(err, "Reopening a container log failed", "container", c.GetId())
			continue
		}
		l.removeExcess(path)
	}
}

func (l *logRotator) removeExcess(path string) {
	for _, f := range excessLogsGlob(path, l.maxFiles) {
		_ = os.Remove(f)
	}
}

// excessLogsGlob is excessLogs over the rotated files of the log at path.
func excessLogsGlob(path string, maxFiles int) []string {
	rotated, _ := filepath.Glob(path + ".*")
	return excessLogs(rotated, maxFiles)
}

// newLogRotator builds the rotator from the configuration (nil when it cannot parse,
// which Validate has refused already).
func newLogRotator(rt cri.Runtime, maxSize string, maxFiles int32, c clock.PassiveClock) *logRotator {
	q, err := resource.ParseQuantity(maxSize)
	if err != nil || q.Value() <= 0 {
		return nil
	}
	return &logRotator{rt: rt, maxSize: q.Value(), maxFiles: int(maxFiles), clock: c}
}
