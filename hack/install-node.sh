#!/usr/bin/env bash
# install-node.sh: install nodekeeper on a node as its node agent (node mode), with systemd.
#
#   hack/install-node.sh [--binary bin/nodekeeper] [--config FILE] [--kubeconfig FILE]
#                        [--root /] [--no-start]
#
# Installs, under --root (default /):
#   usr/local/bin/nodekeeper                 the agent (default: make build's bin/nodekeeper)
#   etc/systemd/system/nodekeeper.service    config/systemd/nodekeeper.service
#   etc/nodekeeper/config.yaml               --config, or a starting AgentConfiguration;
#                                            an existing file is never overwritten
#   etc/nodekeeper/kubeconfig                --kubeconfig (mode 0600): the node's identity,
#                                            a client certificate for system:node:<name> in
#                                            group system:nodes (NodeRestriction, Node authorizer)
#   etc/default/nodekeeper                   NODEKEEPER_ARGS= (extra flags), if missing
# then, when --root is / and systemd runs: systemctl daemon-reload and enable --now
# (unless --no-start). The unit conflicts with kubelet.service: stop and disable the
# kubelet first. Run as root.
set -euo pipefail

HERE=$(cd "$(dirname "$0")" && pwd)
BIN=$HERE/../bin/nodekeeper CONFIG="" KUBECONFIG_IN="" ROOT=/ START=1
while (($#)); do
  case $1 in
  --binary) BIN=$2; shift 2 ;;
  --config) CONFIG=$2; shift 2 ;;
  --kubeconfig) KUBECONFIG_IN=$2; shift 2 ;;
  --root) ROOT=$2; shift 2 ;;
  --no-start) START=0; shift ;;
  -h | --help) sed -n '2,/^set -euo/p' "$0" | sed '$d; s/^# \{0,1\}//'; exit 0 ;;
  *) echo "install-node.sh: unknown argument $1 (see --help)" >&2; exit 2 ;;
  esac
done
log() { echo "[install-node] $*" >&2; }
[[ -x $BIN ]] || { log "no agent binary at $BIN (make build, or --binary)"; exit 1; }
ROOT=${ROOT%/}

install -D -m 0755 "$BIN" "$ROOT/usr/local/bin/nodekeeper"
install -D -m 0644 "$HERE/../config/systemd/nodekeeper.service" "$ROOT/etc/systemd/system/nodekeeper.service"
install -d -m 0750 "$ROOT/etc/nodekeeper"
if [[ -e $ROOT/etc/nodekeeper/config.yaml ]]; then
  log "keeping the existing $ROOT/etc/nodekeeper/config.yaml"
elif [[ -n $CONFIG ]]; then
  install -m 0644 "$CONFIG" "$ROOT/etc/nodekeeper/config.yaml"
else
  cat >"$ROOT/etc/nodekeeper/config.yaml" <<'YAML'
# nodekeeper's AgentConfiguration (README.md, "Configuration"); nodeName defaults to the
# hostname and nodeIP to the first global unicast address
apiVersion: nodekeeper.io/v1alpha1
kind: AgentConfiguration
containerRuntimeEndpoint: unix:///run/containerd/containerd.sock
rootDir: /var/lib/nodekeeper
clusterDNS: [10.96.0.10]
clusterDomain: cluster.local
clusterCIDR: 10.244.0.0/16
serviceCIDR: 10.96.0.0/12
systemReserved: {cpu: 100m, memory: 256Mi}
healthzBindAddress: 127.0.0.1:10248
YAML
  log "wrote a starting $ROOT/etc/nodekeeper/config.yaml: check clusterDNS, clusterCIDR, serviceCIDR"
fi
if [[ -n $KUBECONFIG_IN ]]; then
  install -m 0600 "$KUBECONFIG_IN" "$ROOT/etc/nodekeeper/kubeconfig"
elif [[ ! -e $ROOT/etc/nodekeeper/kubeconfig ]]; then
  log "no $ROOT/etc/nodekeeper/kubeconfig yet: put the node's kubeconfig there (--kubeconfig)"
fi
[[ -e $ROOT/etc/default/nodekeeper ]] || install -D -m 0644 /dev/stdin "$ROOT/etc/default/nodekeeper" <<'ENV'
# extra flags for nodekeeper.service, e.g. NODEKEEPER_ARGS="--v=2 --node-ip=192.0.2.10"
NODEKEEPER_ARGS=
ENV

if [[ -z $ROOT && $START == 1 ]] && command -v systemctl >/dev/null && [[ -d /run/systemd/system ]]; then
  systemctl daemon-reload
  systemctl enable --now nodekeeper.service
  log "nodekeeper.service enabled and started: journalctl -u nodekeeper -f"
else
  log "installed under ${ROOT:-/}; start it with: systemctl daemon-reload && systemctl enable --now nodekeeper"
fi
