#!/usr/bin/env bash
# bench-pods.sh (make bench-pods): pod start-up, upstream kubelet v1.37.2 vs nodekeeper.
#
# One cluster (hack/run.sh, names of its own: netns nk-bp, 198.18.94.0/24), whose node
# agent is first the upstream kubelet, then nodekeeper, on the same API server and the same
# containerd; each agent is started, measured by test/podbench TestPodStartupCompare
# (start → node Ready, 10 single pods, a burst of NK_BENCH_PODS (30), delete → gone, peak
# RSS; per-pod phases from containerd's timestamps), and stopped, its pods deleted and its
# sandboxes removed before the next. Prints the two columns; results (JSON and the
# Markdown table) under $NK_CACHE/bench/pods-<time>.*. The kubelet is built by
# `hack/conformance.sh build kubelet` when missing (under the k8s build lock).
# KEEP=1 leaves the cluster up.
set -euo pipefail
ROOT=$(cd "$(dirname "$0")/.." && pwd)
export NK_CACHE=${NK_CACHE:-$HOME/.cache/nodekeeper}
export NK_NETNS=${NK_NETNS:-nk-bp} NK_HOST_IF=${NK_HOST_IF:-nkbp-host0} NK_NODE_IF=${NK_NODE_IF:-nkbp-node0}
export NK_HOST_IP=${NK_HOST_IP:-198.18.94.1} NK_NODE_IP=${NK_NODE_IP:-198.18.94.2} NK_NODE_NAME=${NK_NODE_NAME:-nk-bp}
export NK_APISERVER_PORT=${NK_APISERVER_PORT:-6494} NK_ETCD_PORT=${NK_ETCD_PORT:-23894}
export NK_KCM_PORT=${NK_KCM_PORT:-10297} NK_SCHED_PORT=${NK_SCHED_PORT:-10298} NK_CNI_BRIDGE=${NK_CNI_BRIDGE:-nkbp0}
export NK_CRI_CACHE=${NK_CRI_CACHE:-$NK_CACHE/bp} NK_RUN_DIR=${NK_RUN_DIR:-$NK_CACHE/bp/run}
export NK_CLUSTER_CIDR=${NK_CLUSTER_CIDR:-10.250.0.0/16} NK_POD_CIDR=${NK_POD_CIDR:-10.250.0.0/24}
# nodekeeper at -v=2 (as the kubelet here): its per-pod start timelines are logged there
export NK_AGENT_V=${NK_AGENT_V:-2}
export NK_KUBELET_BIN=${NK_KUBELET_BIN:-$NK_CACHE/conformance/bin/kubelet}
export PATH=/usr/local/go/bin:/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin
RUN=$NK_RUN_DIR OUT=$NK_CACHE/bench STAMP=$(date +%Y%m%d-%H%M%S)
log() { echo "[bench-pods] $*" >&2; }

[[ -x $NK_KUBELET_BIN ]] || "$ROOT/hack/conformance.sh" build kubelet >&2
bins=$("$ROOT/hack/k8s-bins.sh")
kubectl() { "$bins/kubectl" --kubeconfig "$RUN/admin.kubeconfig" "$@"; }
mkdir -p "$OUT"
cleanup() { [[ ${KEEP:-0} == 1 ]] || "$ROOT/hack/run.sh" down >&2 || true; }
trap cleanup EXIT
NK_NODE_AGENT=kubelet "$ROOT/hack/run.sh" up >&2
"$ROOT/hack/run.sh" agent-stop >&2
cri=unix://$NK_CRI_CACHE/cri/run/containerd.sock
( cd "$ROOT" && go test -c -o "$OUT/.podbench.test" ./test/podbench/ )

# rm_sandboxes: what the previous agent left in containerd (a kubelet leaves its pods'
# sandboxes for its garbage collector): the next agent starts on an empty runtime
rm_sandboxes() { NK_BENCH_CLEAN_CRI=$cri "$OUT/.podbench.test" -test.run TestPodStartupCompare >&2; }

results=()
for agent in kubelet nodekeeper; do
  kubectl delete node "$NK_NODE_NAME" --ignore-not-found >/dev/null
  rm_sandboxes
  t0=$(date +%s%N)
  NK_NODE_AGENT=$agent "$ROOT/hack/run.sh" agent-start >&2
  pid=$(cat "$RUN/pids/$agent.pid")
  log "measuring $agent (pid $pid)"
  NK_BENCH_KUBECONFIG=$RUN/admin.kubeconfig NK_BENCH_AGENT=$agent NK_BENCH_NODE=$NK_NODE_NAME \
    NK_BENCH_T0=$t0 NK_BENCH_CRI=$cri NK_BENCH_PID=$pid NK_BENCH_AGENT_LOG=$RUN/logs/$agent.log NK_BENCH_OUT=$OUT/pods-$STAMP-$agent.json \
    "$OUT/.podbench.test" -test.run TestPodStartupCompare -test.v -test.timeout 20m | grep -v '^=== RUN' >&2
  results+=("$OUT/pods-$STAMP-$agent.json")
  kubectl delete namespace "bench-$agent" --wait=false >/dev/null 2>&1 || true
  "$ROOT/hack/run.sh" agent-stop >&2
done
NK_BENCH_REPORT=$(IFS=,; echo "${results[*]}") "$OUT/.podbench.test" -test.run TestPodStartupCompare |
  grep -v '^PASS$\|^ok ' | tee "$OUT/pods-$STAMP.md"
