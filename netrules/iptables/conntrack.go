package iptables

import (
	"context"
	"errors"
	"fmt"
	"strconv"
	"strings"

	"github.com/nodekeeper/nodekeeper/netrules"
)

// Conntrack deletes conntrack entries with the conntrack(8) tool through a Runner.
type Conntrack struct{ Runner Runner }

// Delete implements controllers.ConntrackCleaner. "No entries matched" is not an error.
func (c Conntrack) Delete(ctx context.Context, flows []netrules.ConntrackFlow) error {
	var errs []error
	for _, f := range flows {
		args := []string{"-D", "-f", "ipv4", "-p", "udp"}
		if f.Family == netrules.IPv6 {
			args[2] = "ipv6"
		}
		if f.OrigDst.IsValid() {
			args = append(args, "--orig-dst", f.OrigDst.String())
		}
		if f.OrigPort != 0 {
			args = append(args, "--orig-port-dst", strconv.Itoa(int(f.OrigPort)))
		}
		if f.DstNAT.IsValid() {
			args = append(args, "--dst-nat", f.DstNAT.String())
		}
		out, err := c.Runner.Run(ctx, nil, "conntrack", args...)
		if err != nil && !strings.Contains(string(out), "0 flow entries have been deleted") {
			errs = append(errs, fmt.Errorf("conntrack %s: %w", strings.Join(args, " "), err))
		}
	}
	return errors.Join(errs...)
}
