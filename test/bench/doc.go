// Package bench measures the ServiceReconciler (nodekeeper's kube-proxy) at scale, on
// the real path: Services and EndpointSlices in a real kube-apiserver (envtest), the
// reconciler in a controller-runtime manager watching them, and the rules programmed into
// the kernel of a network namespace the harness creates and removes.
//
// It prints figures; it is not a pass/fail test. Run it with `make bench` (as root);
// the program is cmd/svcbench, the knobs are documented there.
package bench
