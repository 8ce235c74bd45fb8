// Package bench compares nodekeeper's Service proxy with upstream kube-proxy v1.37.2 at
// scale, treating both as black boxes: each agent runs as its own process in a node
// network namespace the harness creates, against one real kube-apiserver (envtest)
// holding the same Services and EndpointSlices, and the harness sees the result only in
// the kernel — chains read over netlink (github.com/google/nftables) for nftables and
// iptables-nft, iptables-legacy-save for legacy — and in the agent's /proc entries and
// metrics. Chain names are computed from upstream's naming (naming.go), not from
// nodekeeper's code.
//
// It prints figures; it is not a pass/fail test. Run it with `make bench` (as root);
// the program is cmd/svcbench, the knobs are documented there. The unit tests cover the
// pure helpers (naming against upstream's test data, parsers, schedules).
package bench
