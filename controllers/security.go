package controllers

import (
	"os"
	"runtime"
	"sync"

	"github.com/nodekeeper/nodekeeper/internal/podconfig"
)

// defaultMaskedPaths is upstream's default masked paths on this machine (the
// thermal_throttle folders of its possible CPUs that exist), computed once.
var defaultMaskedPaths = sync.OnceValue(func() []string {
	var cpus []int
	if b, err := os.ReadFile("/sys/devices/system/cpu/possible"); err == nil {
		cpus = podconfig.ParseCPUList(string(b))
	}
	if cpus == nil {
		for i := range runtime.NumCPU() {
			cpus = append(cpus, i)
		}
	}
	return podconfig.DefaultMaskedPaths(cpus, func(p string) bool {
		_, err := os.Stat(p)
		return err == nil
	})
})
