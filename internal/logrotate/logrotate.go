// Package logrotate is the kubelet's container log manager (upstream
// pkg/kubelet/logs/container_log_manager.go): every period, each running container's
// log that reached maxSize is renamed to <log>.<timestamp> and the runtime is asked to
// reopen it (CRI ReopenContainerLog); older rotated files are gzipped and the oldest
// removed so that at most maxFiles remain, the current one included.
//
// Decide is the pure decision for one log; Rotator does the file work and the CRI calls.
package logrotate

import (
	"sort"
	"strings"
	"time"
)

// TimestampFormat is the layout of a rotated log's suffix (<log>.<timestamp>), upstream's.
const TimestampFormat = "20060102-150405"

// Suffixes of a compressed rotated log and of one being compressed.
const (
	CompressSuffix = ".gz"
	TmpSuffix      = ".tmp"
)

// Policy is containerLogMaxSize and containerLogMaxFiles.
type Policy struct {
	MaxSize  int64
	MaxFiles int
}

// Plan is what to do with one container's log, in this order: remove, compress
// (<f>.gz replaces <f>), then rename the current log to Rotate and reopen it.
type Plan struct {
	Remove   []string
	Compress []string
	// Rotate is the name the current log gets ("": it is not rotated).
	Rotate string
}

// Decide is upstream's rotateLog for the log at path with size bytes, given the files
// <path>.* beside it (rotated): nothing below maxSize; else the unused files go
// (unfinished .tmp compressions, and an uncompressed file whose .gz exists), then the
// oldest rotated files beyond maxFiles-2 (the current log and the one about to be rotated
// make maxFiles), every remaining uncompressed one is compressed, and the current log is
// rotated to <path>.<now>.
//
// Beyond upstream: when <path>.<now> (or its .gz) exists already — a second rotation
// within one second — nothing is done this time, where upstream's rename would replace
// that file.
func Decide(path string, size int64, rotated []string, now time.Time, p Policy) Plan {
	if size < p.MaxSize {
		return Plan{}
	}
	target := path + "." + now.Format(TimestampFormat)
	has := make(map[string]bool, len(rotated))
	for _, f := range rotated {
		has[f] = true
	}
	if has[target] || has[target+CompressSuffix] {
		return Plan{}
	}
	var plan Plan
	var inUse []string
	for _, f := range rotated {
		if strings.HasSuffix(f, TmpSuffix) || (!strings.HasSuffix(f, CompressSuffix) && has[f+CompressSuffix]) {
			plan.Remove = append(plan.Remove, f)
		} else {
			inUse = append(inUse, f)
		}
	}
	sort.Strings(plan.Remove)
	sort.Strings(inUse)
	keep := max(p.MaxFiles-2, 0)
	if n := len(inUse) - keep; n > 0 {
		plan.Remove = append(plan.Remove, inUse[:n]...)
		inUse = inUse[n:]
	}
	for _, f := range inUse {
		if !strings.HasSuffix(f, CompressSuffix) {
			plan.Compress = append(plan.Compress, f)
		}
	}
	plan.Rotate = target
	return plan
}
