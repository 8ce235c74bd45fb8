#!/usr/bin/env bash
# bench.sh: compare nodekeeper's Service proxy with upstream kube-proxy v1.37.2 and print
# figures (never pass/fail). Needs root. Builds the nodekeeper binary from NK_BENCH_SRC
# (default: this checkout) and test/bench/cmd/svcbench, gets kube-apiserver, etcd and
# kube-proxy from hack/k8s-bins.sh (cached), and runs the benchmark; the table goes to
# stdout and to $NK_CACHE/bench/services-<date>.md, progress to stderr.
#
#   make bench                                   # 1000, 10000, 50000 Services; nftables, iptables-nft
#   BENCH_SIZES=1000 BENCH_CHANGES=20 BENCH_PHASE=20s make bench   # a quick run
#   BENCH_MODES=nftables,iptables-nft,iptables-legacy make bench
#   NK_BENCH_SRC=/path/to/other/checkout make bench                # another nodekeeper
#
# Knobs (documented in test/bench/cmd/svcbench/main.go): BENCH_SIZES, BENCH_MODES,
# BENCH_AGENTS, BENCH_CHANGES, BENCH_PHASE, BENCH_CHURN, BENCH_SYNC_PERIOD,
# BENCH_KP_MIN_SYNC, BENCH_CHANGE_TIMEOUT, BENCH_TIMEOUT, BENCH_WORKERS, BENCH_JSON,
# BENCH_WORKDIR, BENCH_NETNS_PREFIX. Network namespaces are named nk-bench-kp / nk-bench-nk
# (BENCH_NETNS_PREFIX replaces nk-bench-). BENCH_OUT (default $NK_CACHE/bench) holds the
# binaries built and the tables, so that runs from several checkouts keep apart.
set -euo pipefail
cd "$(dirname "$0")/.."
NK_CACHE="${NK_CACHE:-$HOME/.cache/nodekeeper}"
if [[ $(id -u) != 0 ]]; then
  echo "bench.sh: must run as root (network namespaces, kernel rules)" >&2
  exit 1
fi
hack/net-deps.sh
KUBEBUILDER_ASSETS="$(K8S_EXTRA_BINS="${K8S_EXTRA_BINS:-kube-proxy}" hack/k8s-bins.sh)"
export KUBEBUILDER_ASSETS
export NK_BENCH_KUBE_PROXY="${NK_BENCH_KUBE_PROXY:-$KUBEBUILDER_ASSETS/kube-proxy}"
out_dir="${BENCH_OUT:-$NK_CACHE/bench}"
mkdir -p "$out_dir"
src="${NK_BENCH_SRC:-$PWD}"
echo "bench.sh: building nodekeeper from $src ($(git -C "$src" rev-parse --short HEAD 2>/dev/null || echo '?'))" >&2
(cd "$src" && ${GO:-go} build -o "$out_dir/nodekeeper" .)
export NK_BENCH_NODEKEEPER="$out_dir/nodekeeper"
bin="$out_dir/svcbench"
${GO:-go} build -o "$bin" ./test/bench/cmd/svcbench
stamp=$(date +%Y%m%d-%H%M%S)
out="$out_dir/services-$stamp.md"
export BENCH_JSON="${BENCH_JSON:-$out_dir/services-$stamp.json}"
"$bin" | tee "$out"
echo "(table saved to $out, raw results in $BENCH_JSON)" >&2
