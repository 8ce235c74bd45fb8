// Package ipvs is the IPVS backend: virtual and real servers through github.com/moby/ipvs
// behind a small Handle interface (a stateful fake stands in where the kernel has no IPVS).
package ipvs

import (
	"errors"
	"fmt"
	"os"
)

// ErrNoKernelSupport means the running kernel was built without IPVS.
var ErrNoKernelSupport = errors.New("the kernel has no IPVS support (CONFIG_IP_VS is not set: /proc/net/ip_vs is missing)")

// KernelSupport reports whether the kernel offers IPVS. github.com/moby/ipvs does not
// tell: on a kernel without IPVS its calls "succeed" and return nothing, so look first.
func KernelSupport() error {
	if _, err := os.Stat("/proc/net/ip_vs"); err != nil {
		if os.IsNotExist(err) {
			return ErrNoKernelSupport
		}
		return fmt.Errorf("checking for IPVS: %w", err)
	}
	return nil
}
