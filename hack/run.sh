#!/usr/bin/env bash
# run.sh: a local single-node cluster whose node is nodekeeper.
#
#   hack/run.sh up     (make run)   build what is missing, start everything, print the kubeconfig
#   hack/run.sh down   (make down)  stop what `up` started (by PID), remove its netns and veth
#
# Layout (nothing is routed off the machine):
#   root netns:   etcd on 127.0.0.1, kube-apiserver / controller-manager / scheduler on
#                 $NK_HOST_IP (host side of a veth pair, 198.18.0.0/15 benchmark range)
#   node netns:   $NK_NETNS with the other end of the veth ($NK_NODE_IP), no default route;
#                 containerd (hack/cri-up.sh), its CNI bridge and pods, and the agent run
#                 here, started with `nsenter --net` so they keep the host's mounts and
#                 cgroups; the agent's Service rules are programmed in this namespace.
# State, certificates, pid files and logs live under $NK_RUN_DIR (outside the checkout).
set -euo pipefail

ROOT=$(cd "$(dirname "$0")/.." && pwd)
CACHE=${NK_CACHE:-$HOME/.cache/nodekeeper}
RUN=${NK_RUN_DIR:-$CACHE/run}
NETNS=${NK_NETNS:-nk-node}
HOST_IF=${NK_HOST_IF:-nk-host0}
NODE_IF=${NK_NODE_IF:-nk-node0}
HOST_IP=${NK_HOST_IP:-198.18.77.1}
NODE_IP=${NK_NODE_IP:-198.18.77.2}
NODE_NAME=${NK_NODE_NAME:-nk-node}
APISERVER_PORT=${NK_APISERVER_PORT:-6443}
ETCD_PORT=${NK_ETCD_PORT:-23790}
SERVICE_CIDR=${NK_SERVICE_CIDR:-10.96.0.0/16}
CLUSTER_CIDR=${NK_CLUSTER_CIDR:-10.244.0.0/16}
POD_CIDR=${NK_POD_CIDR:-10.244.0.0/24}
KCM_PORT=${NK_KCM_PORT:-10257}
SCHED_PORT=${NK_SCHED_PORT:-10259}
CRI_CACHE=${NK_CRI_CACHE:-$CACHE}   # containerd's state lives in $CRI_CACHE/cri
export PATH=/usr/local/go/bin:/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin

log() { echo "[run] $*" >&2; }
die() { log "ERROR: $*"; exit 1; }

pidfile() { echo "$RUN/pids/$1.pid"; }
running() { local p; p=$(cat "$(pidfile "$1")" 2>/dev/null) && kill -0 "$p" 2>/dev/null; }

# start NAME CMD...: start a daemon in its own session, logging to $RUN/logs/NAME.log
start() {
  local name=$1; shift
  if running "$name"; then log "$name already running (pid $(cat "$(pidfile "$name")"))"; return; fi
  setsid "$@" >"$RUN/logs/$name.log" 2>&1 < /dev/null &
  echo $! >"$(pidfile "$name")"
  log "started $name (pid $!, log $RUN/logs/$name.log)"
}

stop() {
  local name=$1 p i
  p=$(cat "$(pidfile "$name")" 2>/dev/null) || return 0
  if kill -0 "$p" 2>/dev/null; then
    kill -TERM "$p" 2>/dev/null || true
    for i in $(seq 1 50); do kill -0 "$p" 2>/dev/null || break; sleep 0.2; done
    kill -KILL "$p" 2>/dev/null || true
    log "stopped $name (pid $p)"
  fi
  rm -f "$(pidfile "$name")"
}

wait_for() { # desc, seconds, command...
  local desc=$1 secs=$2 i; shift 2
  for i in $(seq 1 $((secs * 5))); do "$@" >/dev/null 2>&1 && return 0; sleep 0.2; done
  die "timed out waiting for $desc"
}

certs() {
  local d=$RUN/pki
  [[ -f $d/.done ]] && return
  mkdir -p "$d"; cd "$d"
  log "generating certificates in $d"
  openssl req -x509 -newkey rsa:2048 -nodes -keyout ca.key -out ca.crt -days 3650 -subj "/CN=nodekeeper-ca" 2>/dev/null
  openssl genrsa -out sa.key 2048 2>/dev/null; openssl rsa -in sa.key -pubout -out sa.pub 2>/dev/null
  # sign NAME SUBJ [SAN]: a leaf signed by the CA
  sign() {
    openssl req -newkey rsa:2048 -nodes -keyout "$1.key" -out "$1.csr" -subj "$2" 2>/dev/null
    if [[ -n ${3:-} ]]; then printf 'subjectAltName=%s\n' "$3" >"$1.ext"; else : >"$1.ext"; fi
    openssl x509 -req -in "$1.csr" -CA ca.crt -CAkey ca.key -CAcreateserial -out "$1.crt" -days 3650 -extfile "$1.ext" 2>/dev/null
  }
  sign apiserver "/CN=kube-apiserver" "IP:$HOST_IP,IP:127.0.0.1,IP:${SERVICE_CIDR%.0/*}.1,DNS:localhost,DNS:kubernetes,DNS:kubernetes.default,DNS:kubernetes.default.svc,DNS:kubernetes.default.svc.cluster.local"
  sign admin "/O=system:masters/CN=nodekeeper-admin"
  sign node "/O=system:nodes/CN=system:node:$NODE_NAME"
  sign kcm "/CN=system:kube-controller-manager"
  sign scheduler "/CN=system:kube-scheduler"
  sign apiserver-kubelet-client "/O=kubeadm:cluster-admins/CN=kube-apiserver-kubelet-client"
  touch .done; cd - >/dev/null
}

# the agent's kubelet API serving certificate, signed by the cluster CA for the node IP,
# so the API server (--kubelet-certificate-authority) trusts it
kubelet_cert() {
  local d=$RUN/pki
  [[ -f $d/kubelet.crt ]] && return
  openssl req -newkey rsa:2048 -nodes -keyout "$d/kubelet.key" -out "$d/kubelet.csr" -subj "/CN=system:node:$NODE_NAME" 2>/dev/null
  printf 'subjectAltName=IP:%s,DNS:%s\n' "$NODE_IP" "$NODE_NAME" >"$d/kubelet.ext"
  openssl x509 -req -in "$d/kubelet.csr" -CA "$d/ca.crt" -CAkey "$d/ca.key" -CAcreateserial -out "$d/kubelet.crt" -days 3650 -extfile "$d/kubelet.ext" 2>/dev/null
}

kubeconfig() { # name cert
  cat >"$RUN/$1.kubeconfig" <<EOF
apiVersion: v1
kind: Config
clusters:
- name: nodekeeper
  cluster: {server: "https://$HOST_IP:$APISERVER_PORT", certificate-authority: "$RUN/pki/ca.crt"}
users:
- name: $1
  user: {client-certificate: "$RUN/pki/$2.crt", client-key: "$RUN/pki/$2.key"}
contexts:
- name: nodekeeper
  context: {cluster: nodekeeper, user: $1}
current-context: nodekeeper
EOF
}

netns_up() {
  ip netns list | grep -qw "$NETNS" || ip netns add "$NETNS"
  if ! ip link show "$HOST_IF" >/dev/null 2>&1; then
    ip link add "$HOST_IF" type veth peer name "$NODE_IF" netns "$NETNS"
  fi
  ip addr replace "$HOST_IP/30" dev "$HOST_IF"
  ip link set "$HOST_IF" up
  ip netns exec "$NETNS" ip addr replace "$NODE_IP/30" dev "$NODE_IF"
  ip netns exec "$NETNS" ip link set "$NODE_IF" up
  ip netns exec "$NETNS" ip link set lo up
}

netns_down() {
  ip link del "$HOST_IF" 2>/dev/null || true
  ip netns del "$NETNS" 2>/dev/null || true
}

up() {
  mkdir -p "$RUN"/{pids,logs,etcd,agent,manifests}
  local bins
  bins=$(K8S_EXTRA_BINS="kube-controller-manager kube-scheduler" "$ROOT/hack/k8s-bins.sh")
  log "building nodekeeper"
  make -C "$ROOT" --no-print-directory build >&2
  certs
  kubelet_cert
  kubeconfig admin admin; kubeconfig node node; kubeconfig kcm kcm; kubeconfig scheduler scheduler
  netns_up
  # containerd, its CNI bridge and the pods live in the node namespace too
  local cri
  cri=$(NK_CACHE="$CRI_CACHE" NK_NETNS="$NETNS" NK_POD_CIDR="$POD_CIDR" "$ROOT/hack/cri-up.sh")
  # the node has no default route: send Service addresses to lo so the node's own
  # connect() gets as far as the DNAT rules (nothing can leave the namespace)
  ip -n "$NETNS" route replace "$SERVICE_CIDR" dev lo

  start etcd "$bins/etcd" --data-dir "$RUN/etcd" --listen-client-urls "http://127.0.0.1:$ETCD_PORT" \
    --advertise-client-urls "http://127.0.0.1:$ETCD_PORT" --listen-peer-urls "http://127.0.0.1:$((ETCD_PORT + 1))" \
    --initial-advertise-peer-urls "http://127.0.0.1:$((ETCD_PORT + 1))" \
    --initial-cluster "default=http://127.0.0.1:$((ETCD_PORT + 1))" --unsafe-no-fsync
  start kube-apiserver "$bins/kube-apiserver" --etcd-servers "http://127.0.0.1:$ETCD_PORT" \
    --bind-address "$HOST_IP" --advertise-address "$HOST_IP" --secure-port "$APISERVER_PORT" \
    --tls-cert-file "$RUN/pki/apiserver.crt" --tls-private-key-file "$RUN/pki/apiserver.key" \
    --client-ca-file "$RUN/pki/ca.crt" --service-account-key-file "$RUN/pki/sa.pub" \
    --service-account-signing-key-file "$RUN/pki/sa.key" \
    --service-account-issuer https://kubernetes.default.svc.cluster.local \
    --service-cluster-ip-range "$SERVICE_CIDR" --authorization-mode Node,RBAC \
    --enable-admission-plugins NodeRestriction --allow-privileged=true \
    --kubelet-client-certificate "$RUN/pki/apiserver-kubelet-client.crt" \
    --kubelet-client-key "$RUN/pki/apiserver-kubelet-client.key" --kubelet-certificate-authority "$RUN/pki/ca.crt" \
    --kubelet-preferred-address-types InternalIP,Hostname
  wait_for "kube-apiserver" 60 "$bins/kubectl" --kubeconfig "$RUN/admin.kubeconfig" get --raw /readyz
  # the node identity is a kubelet's (Node authorizer); the proxy half also needs what
  # kube-proxy is granted: the built-in system:node-proxier role
  "$bins/kubectl" --kubeconfig "$RUN/admin.kubeconfig" apply -f - >/dev/null <<EOF
apiVersion: rbac.authorization.k8s.io/v1
kind: ClusterRoleBinding
metadata: {name: "nodekeeper:node-proxier"}
roleRef: {apiGroup: rbac.authorization.k8s.io, kind: ClusterRole, name: "system:node-proxier"}
subjects: [{apiGroup: rbac.authorization.k8s.io, kind: User, name: "system:node:$NODE_NAME"}]
---
# the API server's kubelet client may use the node's kubelet API (logs, exec, ...), as kubeadm sets up
apiVersion: rbac.authorization.k8s.io/v1
kind: ClusterRoleBinding
metadata: {name: "nodekeeper:apiserver-kubelet-client"}
roleRef: {apiGroup: rbac.authorization.k8s.io, kind: ClusterRole, name: "system:kubelet-api-admin"}
subjects: [{apiGroup: rbac.authorization.k8s.io, kind: User, name: "kube-apiserver-kubelet-client"}]
EOF
  start kube-controller-manager "$bins/kube-controller-manager" --kubeconfig "$RUN/kcm.kubeconfig" \
    --authentication-kubeconfig "$RUN/kcm.kubeconfig" --authorization-kubeconfig "$RUN/kcm.kubeconfig" \
    --bind-address 127.0.0.1 --secure-port "$KCM_PORT" --leader-elect=false \
    --service-account-private-key-file "$RUN/pki/sa.key" --root-ca-file "$RUN/pki/ca.crt" \
    --use-service-account-credentials --cluster-signing-cert-file "$RUN/pki/ca.crt" \
    --cluster-signing-key-file "$RUN/pki/ca.key" --service-cluster-ip-range "$SERVICE_CIDR" \
    --cluster-cidr "$CLUSTER_CIDR" --allocate-node-cidrs=false
  start kube-scheduler "$bins/kube-scheduler" --kubeconfig "$RUN/scheduler.kubeconfig" \
    --authentication-kubeconfig "$RUN/scheduler.kubeconfig" --authorization-kubeconfig "$RUN/scheduler.kubeconfig" \
    --bind-address 127.0.0.1 --secure-port "$SCHED_PORT" --leader-elect=false

  cat >"$RUN/agent.yaml" <<EOF
apiVersion: nodekeeper.io/v1alpha1
kind: AgentConfiguration
nodeName: $NODE_NAME
nodeIP: $NODE_IP
containerRuntimeEndpoint: $cri
rootDir: $RUN/agent
staticPodPath: $RUN/manifests
podCIDR: $POD_CIDR
clusterCIDR: $CLUSTER_CIDR
serviceCIDR: $SERVICE_CIDR
systemReserved: {cpu: 100m, memory: 256Mi}
kubeReserved: {cpu: 100m, memory: 256Mi}
evictionHard: {memory.available: 100Mi, nodefs.available: "10%"}
tlsCertFile: $RUN/pki/kubelet.crt
tlsPrivateKeyFile: $RUN/pki/kubelet.key
clientCAFile: $RUN/pki/ca.crt
EOF
  start nodekeeper nsenter --net="/run/netns/$NETNS" "$ROOT/bin/nodekeeper" \
    --config "$RUN/agent.yaml" --kubeconfig "$RUN/node.kubeconfig"
  wait_for "node $NODE_NAME to register" 60 "$bins/kubectl" --kubeconfig "$RUN/admin.kubeconfig" get node "$NODE_NAME"

  cat <<EOF

nodekeeper cluster is up. Logs: $RUN/logs
  export KUBECONFIG=$RUN/admin.kubeconfig
  export PATH=$bins:\$PATH
  kubectl get nodes -o wide
  kubectl get lease -n kube-node-lease
Stop it with: make down
EOF
}

down() {
  for c in nodekeeper kube-scheduler kube-controller-manager kube-apiserver etcd; do stop "$c"; done
  NK_CACHE="$CRI_CACHE" NK_NETNS="$NETNS" "$ROOT/hack/cri-down.sh" || true
  # pod volumes the agent mounted (tmpfs for secrets, tokens, memory emptyDirs)
  awk -v d="$RUN/agent/" 'index($2, d) == 1 {print $2}' /proc/mounts | sort -r | while read -r m; do
    umount -l "$m" 2>/dev/null || true
  done
  netns_down
  log "down (state kept in $RUN; remove it for a fresh cluster)"
}

case "${1:-}" in
  up) up ;;
  down) down ;;
  *) die "usage: $0 up|down" ;;
esac
