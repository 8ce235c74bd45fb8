package host

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"sort"
	"strconv"
	"strings"

	"github.com/nodekeeper/nodekeeper/internal/podplan"
)

// Cgroups creates, limits and removes pod-level cgroups (cgroupfs layout, the one the
// runtime's cgroupfs driver nests container cgroups in). It handles cgroup v1 (one
// hierarchy per controller under Mount) and v2 (a unified hierarchy at Mount).
type Cgroups struct {
	// Mount is where the cgroup filesystems are (default /sys/fs/cgroup).
	Mount string
}

func (c Cgroups) mount() string { return or(c.Mount, "/sys/fs/cgroup") }

// V2 reports whether the host has the unified (v2) hierarchy only.
func (c Cgroups) V2() bool {
	_, err := os.Stat(filepath.Join(c.mount(), "cgroup.controllers"))
	return err == nil
}

// Ensure creates the cgroup at path (e.g. /kubepods/burstable/pod<uid>) with its
// parents and applies r. On v1 the path is created in the cpu, cpuacct, memory and pids
// hierarchies (the runtime creates the others as it nests containers); on v2 the cpu,
// memory and pids controllers are enabled down the path. A BestEffort QoS folder gets
// the minimum CPU shares, as upstream's QoS cgroups.
func (c Cgroups) Ensure(path string, r podplan.CgroupResources) error {
	if c.V2() {
		return c.ensureV2(path, r)
	}
	for _, ctl := range []string{"cpu", "cpuacct", "memory", "pids"} {
		if _, err := os.Stat(filepath.Join(c.mount(), ctl)); err != nil {
			continue // controller not mounted on its own here
		}
		if err := os.MkdirAll(filepath.Join(c.mount(), ctl, path), 0o755); err != nil {
			return err
		}
	}
	if filepath.Base(filepath.Dir(path)) == "besteffort" {
		_ = write(filepath.Join(c.mount(), "cpu", filepath.Dir(path), "cpu.shares"), 2)
	}
	cpu, mem := filepath.Join(c.mount(), "cpu", path), filepath.Join(c.mount(), "memory", path)
	var errs []error
	if r.CPUShares != nil {
		errs = append(errs, write(filepath.Join(cpu, "cpu.shares"), *r.CPUShares))
	}
	if r.CPUPeriod != nil {
		errs = append(errs, write(filepath.Join(cpu, "cpu.cfs_period_us"), *r.CPUPeriod))
	}
	if r.CPUQuota != nil {
		errs = append(errs, write(filepath.Join(cpu, "cpu.cfs_quota_us"), *r.CPUQuota))
	}
	if r.MemoryLimit != nil {
		errs = append(errs, write(filepath.Join(mem, "memory.limit_in_bytes"), *r.MemoryLimit))
	}
	return errors.Join(errs...)
}

func (c Cgroups) ensureV2(path string, r podplan.CgroupResources) error {
	full := filepath.Join(c.mount(), path)
	if err := os.MkdirAll(full, 0o755); err != nil {
		return err
	}
	// enable the controllers from the root down to the pod's parent
	dir := c.mount()
	for _, part := range strings.Split(strings.Trim(path, "/"), "/") {
		_ = os.WriteFile(filepath.Join(dir, "cgroup.subtree_control"), []byte("+cpu +memory +pids"), 0o644)
		dir = filepath.Join(dir, part)
	}
	var errs []error
	if r.CPUShares != nil {
		// upstream's shares → weight conversion
		weight := 1 + ((*r.CPUShares-2)*9999)/262142
		errs = append(errs, write(filepath.Join(full, "cpu.weight"), weight))
	}
	if r.CPUQuota != nil && r.CPUPeriod != nil {
		errs = append(errs, os.WriteFile(filepath.Join(full, "cpu.max"), []byte(fmt.Sprintf("%d %d", *r.CPUQuota, *r.CPUPeriod)), 0o644))
	}
	if r.MemoryLimit != nil {
		errs = append(errs, write(filepath.Join(full, "memory.max"), *r.MemoryLimit))
	}
	return errors.Join(errs...)
}

// Remove deletes the cgroup at path, and any (empty) cgroups left below it, in every
// hierarchy. A cgroup that still has processes stays (EBUSY) and is an error.
func (c Cgroups) Remove(path string) error {
	roots := []string{c.mount()}
	if !c.V2() {
		entries, err := os.ReadDir(c.mount())
		if err != nil {
			return err
		}
		roots = nil
		for _, e := range entries {
			roots = append(roots, filepath.Join(c.mount(), e.Name()))
		}
	}
	var errs []error
	for _, root := range roots {
		full := filepath.Join(root, path)
		var dirs []string
		_ = filepath.WalkDir(full, func(p string, d os.DirEntry, err error) error {
			if err == nil && d.IsDir() {
				dirs = append(dirs, p)
			}
			return nil
		})
		sort.Slice(dirs, func(i, j int) bool { return len(dirs[i]) > len(dirs[j]) }) // deepest first
		for _, d := range dirs {
			if err := os.Remove(d); err != nil && !os.IsNotExist(err) {
				errs = append(errs, err)
			}
		}
	}
	return errors.Join(errs...)
}

// Exists reports whether the cgroup at path exists (in the memory hierarchy on v1).
func (c Cgroups) Exists(path string) bool {
	p := filepath.Join(c.mount(), path)
	if !c.V2() {
		p = filepath.Join(c.mount(), "memory", path)
	}
	_, err := os.Stat(p)
	return err == nil
}

func write(p string, v int64) error {
	return os.WriteFile(p, []byte(strconv.FormatInt(v, 10)), 0o644)
}
