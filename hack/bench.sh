#!/usr/bin/env bash
# bench.sh: benchmark the ServiceReconciler (nodekeeper's kube-proxy) and print figures.
# Needs root. Builds test/bench/cmd/svcbench, gets kube-apiserver/etcd from
# hack/k8s-bins.sh (cached), and runs it; the figures table goes to stdout and to
# $NK_CACHE/bench/services-<date>.md, progress to stderr.
#
#   make bench                          # 1000, 5000 and 10000 Services × 5 endpoints
#   BENCH_SIZES=1000 make bench         # a quick run
#   BENCH_BACKENDS=nftables BENCH_CHANGES=5 make bench
#
# Other knobs: BENCH_TIMEOUT (limit for one first full sync, default 5m), BENCH_WORKERS
# (apiserver writers, default 16), BENCH_JSON (write the raw results there).
set -euo pipefail
cd "$(dirname "$0")/.."
NK_CACHE="${NK_CACHE:-$HOME/.cache/nodekeeper}"
if [[ $(id -u) != 0 ]]; then
  echo "bench.sh: must run as root (network namespaces, kernel rules)" >&2
  exit 1
fi
hack/net-deps.sh
KUBEBUILDER_ASSETS="$(hack/k8s-bins.sh)"
export KUBEBUILDER_ASSETS
mkdir -p "$NK_CACHE/bench"
bin="$NK_CACHE/bench/svcbench"
${GO:-go} build -o "$bin" ./test/bench/cmd/svcbench
out="$NK_CACHE/bench/services-$(date +%Y%m%d-%H%M%S).md"
"$bin" | tee "$out"
echo "(table saved to $out)" >&2
