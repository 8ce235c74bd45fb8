#!/usr/bin/env bash
# run.sh: a local single-node cluster whose node is nodekeeper.
#
#   hack/run.sh up     (make run)   build what is missing, start everything, print the kubeconfig
#   hack/run.sh down   (make down)  stop what `up` started (by PID), remove its netns and veth
#   hack/run.sh load-image TARBALL  (make load-image IMAGE=...) import an image tarball (docker
#                      save / OCI layout, e.g. make image's) into the cluster's containerd
#
# NK_NODE_AGENT=kubelet runs the upstream kubelet (NK_KUBELET_BIN) as the node instead of
# nodekeeper, on the same containerd, API server and addresses (see start_kubelet).
#
# Layout (nothing is routed off the machine):
#   root netns:   etcd on 127.0.0.1, kube-apiserver / controller-manager / scheduler on
#                 $NK_HOST_IP (host side of a veth pair, 198.18.0.0/15 benchmark range)
#   node netns:   $NK_NETNS with the other end of the veth ($NK_NODE_IP), no default route;
#                 containerd (hack/cri-up.sh), its CNI bridge and pods, and the agent run
#                 here, started with `nsenter --net` so they keep the host's mounts and
#                 cgroups; the agent's Service rules are programmed in this namespace.
#   metrics-server (NK_METRICS_SERVER=1, off by default: its first build takes minutes):
#                 a host process on $NK_HOST_IP:$NK_METRICS_SERVER_PORT, registered with the
#                 API server's aggregation layer (front-proxy certificates, a selector-less
#                 Service + EndpointSlice, the v1beta1.metrics.k8s.io APIService), so
#                 `kubectl top` works; it scrapes the agent's /metrics/resource.
#   NODES=2:      a second nodekeeper node, $NK_NODE_NAME-2, in its own namespace
#                 $NK_NETNS-2 with its own containerd (state in $NK_CRI_CACHE-2), veth to the
#                 host ($NK_HOST_IP+4 / $NK_NODE_IP+4, /30) and pod range (the next /24);
#                 the two node namespaces are joined by a third veth pair (the .8/30 of the
#                 host /24) with routes to each other's pod range and node IP, so pods and
#                 Services reach across nodes — all inside the namespaces run.sh made.
#   CoreDNS (NK_DNS=1, the default; hack/coredns.sh builds it once): a host process on
#                 $NK_HOST_IP:$NK_DNS_PORT (1053) serving cluster.local from the API server
#                 (kubernetes plugin, identity system:coredns); the kube-system/kube-dns
#                 Service ($NK_DNS_IP, the 10th address of the Service range, port 53) has an
#                 EndpointSlice naming it, and the agent's clusterDNS is that address, so pods'
#                 lookups go through the agent's Service rules to it.
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
METRICS_SERVER=${NK_METRICS_SERVER:-0}
# the node agent: nodekeeper, or the upstream kubelet (NK_KUBELET_BIN, e.g. built by
# hack/conformance.sh build with NODE=kubelet) on the same containerd, as a baseline
NODE_AGENT=${NK_NODE_AGENT:-nodekeeper}
# the agent's --reconcilers: without services, the node has no Service proxy until one is
# installed (e.g. the Helm chart's DaemonSet, which is what its default installs)
RECONCILERS=${NK_RECONCILERS:-nodestatus,pods,services}
KUBELET_BIN=${NK_KUBELET_BIN:-$CACHE/conformance/bin/kubelet}
# the kubelet's cgroup parent (cgroupRoot), created in every v1 hierarchy and removed by down
KUBELET_CGROUP=${NK_KUBELET_CGROUP_ROOT:-/$NETNS}
# NK_TLS_BOOTSTRAP=1: the agent gets its identity as a kubeadm-joined kubelet does, from a
# bootstrap token (--bootstrap-kubeconfig; the CSR is approved and signed by the
# controller-manager) instead of a certificate made here; rotateCertificates on
TLS_BOOTSTRAP=${NK_TLS_BOOTSTRAP:-0}
# the node's unauthenticated read-only port (/pods, /metrics...): 0 = off, as upstream's default
READ_ONLY_PORT=${NK_READ_ONLY_PORT:-0}
MS_PORT=${NK_METRICS_SERVER_PORT:-4443}
# NK_AGENT_V: nodekeeper's log verbosity (--v; make bench-pods uses 2, as its kubelet runs)
# extra lines for the agent's configuration file (test/fault sets proxySyncPeriod)
AGENT_CONFIG=${NK_AGENT_CONFIG:-}
# NODES=2: the second node (see the header)
NODES=${NODES:-${NK_NODES:-1}}
ip_add() { # IP N: the IPv4 address N after IP
  local IFS=. a b c d; read -r a b c d <<<"$1"
  local n=$(( (a << 24) + (b << 16) + (c << 8) + d + $2 ))
  echo "$(( (n >> 24) & 255 )).$(( (n >> 16) & 255 )).$(( (n >> 8) & 255 )).$(( n & 255 ))"
}
NETNS2=${NK_NETNS2:-$NETNS-2}
HOST_IF2=${NK_HOST_IF2:-${HOST_IF%0}1}
NODE_IF2=${NK_NODE_IF2:-${NODE_IF%0}1}
XIF1=${NODE_IF%0}x XIF2=${NODE_IF%0}y # the node-to-node veth pair
HOST_IP2=${NK_HOST_IP2:-$(ip_add "$HOST_IP" 4)}
NODE_IP2=${NK_NODE_IP2:-$(ip_add "$NODE_IP" 4)}
XIP1=$(ip_add "$HOST_IP" 8) XIP2=$(ip_add "$HOST_IP" 9)
NODE_NAME2=${NK_NODE_NAME2:-$NODE_NAME-2}
POD_CIDR2=${NK_POD_CIDR2:-$(ip_add "${POD_CIDR%/*}" 256)/${POD_CIDR#*/}}
CRI_CACHE2=${NK_CRI_CACHE2:-$CRI_CACHE-2}
# cluster DNS: CoreDNS on the host side of the veth behind the kube-dns Service
DNS=${NK_DNS:-1}
DNS_PORT=${NK_DNS_PORT:-1053}  # health on DNS_PORT+1, ready on DNS_PORT+2
DNS_IP=${NK_DNS_IP:-${SERVICE_CIDR%.0/*}.10}
CLUSTER_DOMAIN=cluster.local
# the device plugins' folder (kubelet.sock): the cluster's own unless told (device plugins
# and upstream's node e2e suite use /var/lib/kubelet/device-plugins, which hack/conformance.sh
# passes; one cluster at a time can have it)
DEVICE_PLUGIN_DIR=${NK_DEVICE_PLUGIN_DIR:-$RUN/agent/device-plugins}
export PATH=/usr/local/go/bin:/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin

log() { echo "[run] $*" >&2; }
die() { log "ERROR: $*"; exit 1; }

pidfile() { echo "$RUN/pids/$1.pid"; }
running() { local p; p=$(cat "$(pidfile "$1")" 2>/dev/null) && kill -0 "$p" 2>/dev/null; }

# bootstrap_token BINS: a bootstrap token and kubeadm's RBAC for joining nodes (create
# CSRs, auto-approve node client certificates and their renewals), and
# $RUN/bootstrap.kubeconfig holding only the token, as kubeadm join's bootstrap-kubelet.conf
bootstrap_token() {
  local id=nkboot secret
  secret=$(head -c 8 /dev/urandom | od -An -tx1 | tr -d ' \n')
  "$1/kubectl" --kubeconfig "$RUN/admin.kubeconfig" apply -f - >/dev/null <<EOF
apiVersion: v1
kind: Secret
metadata: {name: bootstrap-token-$id, namespace: kube-system}
type: bootstrap.kubernetes.io/token
stringData: {token-id: $id, token-secret: "$secret", usage-bootstrap-authentication: "true",
  auth-extra-groups: "system:bootstrappers:kubeadm:default-node-token"}
EOF
  local joiners=system:bootstrappers:kubeadm:default-node-token csrs=system:certificates.k8s.io:certificatesigningrequests
  bind_role "$1" kubeadm:kubelet-bootstrap system:node-bootstrapper Group "$joiners"
  bind_role "$1" kubeadm:node-autoapprove-bootstrap "$csrs:nodeclient" Group "$joiners"
  bind_role "$1" kubeadm:node-autoapprove-certificate-rotation "$csrs:selfnodeclient" Group system:nodes
  local kc=("$1/kubectl" config --kubeconfig "$RUN/bootstrap.kubeconfig")
  "${kc[@]}" set-cluster nk --server "https://$HOST_IP:$APISERVER_PORT" --certificate-authority "$RUN/pki/ca.crt" --embed-certs >/dev/null
  "${kc[@]}" set-credentials tls-bootstrap-token-user --token "$id.$secret" >/dev/null
  "${kc[@]}" set-context nk --cluster nk --user tls-bootstrap-token-user >/dev/null
  "${kc[@]}" use-context nk >/dev/null
  # a fresh identity each time
  rm -f "$RUN/agent/pki/kubeconfig" "$RUN"/agent/pki/kubelet-client-*.pem "$RUN/agent-2/pki/kubeconfig" "$RUN"/agent-2/pki/kubelet-client-*.pem
}

# start NAME CMD...: start a daemon in its own session, logging to $RUN/logs/NAME.log.
# Descriptors above 2 are closed first: a caller's lock (e.g. `flock /tmp/nk-e2e.lock go
# test ...`) would otherwise be held by the daemons until they stop. The subshell execs
# setsid, which execs the daemon, so $! is the daemon's PID.
start() {
  local name=$1; shift
  if running "$name"; then log "$name already running (pid $(cat "$(pidfile "$name")"))"; return; fi
  ( closefds; exec setsid "$@" ) >"$RUN/logs/$name.log" 2>&1 < /dev/null &
  echo $! >"$(pidfile "$name")"
  log "started $name (pid $!, log $RUN/logs/$name.log)"
}

closefds() {
  local fd
  for fd in /proc/$BASHPID/fd/*; do
    fd=${fd##*/}
    if (( fd > 2 )); then eval "exec $fd>&-"; fi
  done
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

# heartbeat DESC CMD...: run CMD, saying every 30 s how long it has been running (the first
# builds of the control plane, CoreDNS and metrics-server take minutes with no output)
heartbeat() {
  local desc=$1 t0=$SECONDS hb rc=0; shift
  ( while sleep 30; do log "$desc: still running, $((SECONDS - t0))s elapsed"; done ) >&2 &
  hb=$!
  "$@" || rc=$?
  kill "$hb" 2>/dev/null; wait "$hb" 2>/dev/null || true
  (( SECONDS - t0 < 30 )) || log "$desc: done in $((SECONDS - t0))s"
  return $rc
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
  sign kcm "/CN=system:kube-controller-manager"
  sign scheduler "/CN=system:kube-scheduler"
  sign apiserver-kubelet-client "/O=kubeadm:cluster-admins/CN=kube-apiserver-kubelet-client"
  touch .done; cd - >/dev/null
}

# node_certs NAME IP CLIENT SERVING: a node's client certificate (system:node:NAME in
# system:nodes; CLIENT.crt/.key) and its kubelet API serving certificate (SERVING.crt/.key,
# for IP and NAME), both signed by the cluster CA, so the Node authorizer knows the node
# and the API server (--kubelet-certificate-authority) trusts its kubelet API
node_certs() {
  local name=$1 ip=$2 client=$RUN/pki/$3 serving=$RUN/pki/$4 ca=$RUN/pki/ca
  if [[ ! -f $client.crt ]]; then
    openssl req -newkey rsa:2048 -nodes -keyout "$client.key" -out "$client.csr" -subj "/O=system:nodes/CN=system:node:$name" 2>/dev/null
    openssl x509 -req -in "$client.csr" -CA "$ca.crt" -CAkey "$ca.key" -CAcreateserial -out "$client.crt" -days 3650 2>/dev/null
  fi
  [[ -f $serving.crt ]] && return
  openssl req -newkey rsa:2048 -nodes -keyout "$serving.key" -out "$serving.csr" -subj "/CN=system:node:$name" 2>/dev/null
  printf 'subjectAltName=IP:%s,DNS:%s\n' "$ip" "$name" >"$serving.ext"
  openssl x509 -req -in "$serving.csr" -CA "$ca.crt" -CAkey "$ca.key" -CAcreateserial -out "$serving.crt" -days 3650 -extfile "$serving.ext" 2>/dev/null
}

# bind_role BINS BINDING ROLE KIND NAME: the ClusterRoleBinding BINDING of ClusterRole
# ROLE to the User or Group NAME
bind_role() {
  "$1/kubectl" --kubeconfig "$RUN/admin.kubeconfig" apply -f - >/dev/null <<EOF
apiVersion: rbac.authorization.k8s.io/v1
kind: ClusterRoleBinding
metadata: {name: "$2"}
roleRef: {apiGroup: rbac.authorization.k8s.io, kind: ClusterRole, name: "$3"}
subjects: [{apiGroup: rbac.authorization.k8s.io, kind: $4, name: "$5"}]
EOF
}

# agent_config NAME IP CRI DIR MANIFESTS POD_CIDR SERVING DEVICE_PLUGINS DNS: a node's
# AgentConfiguration on stdout: its names, addresses and folders (the agent's root DIR,
# the static pod folder MANIFESTS, the serving certificate SERVING under pki/, the device
# plugins' folder) and the cluster's settings; NK_AGENT_CONFIG's lines, clusterDNS when
# DNS is 1, certificate rotation with TLS bootstrap
agent_config() {
  local name=$1 ip=$2 cri=$3 dir=$4 manifests=$5 pod_cidr=$6 serving=$RUN/pki/$7 devices=$8 dns=$9
  cat <<EOF
apiVersion: nodekeeper.io/v1alpha1
kind: AgentConfiguration
nodeName: $name
nodeIP: $ip
containerRuntimeEndpoint: $cri
rootDir: $dir
staticPodPath: $manifests
podCIDR: $pod_cidr
clusterCIDR: $CLUSTER_CIDR
serviceCIDR: $SERVICE_CIDR
systemReserved: {cpu: 100m, memory: 256Mi}
kubeReserved: {cpu: 100m, memory: 256Mi}
evictionHard: {memory.available: 100Mi, nodefs.available: "10%"}
tlsCertFile: $serving.crt
tlsPrivateKeyFile: $serving.key
clientCAFile: $RUN/pki/ca.crt
readOnlyPort: $READ_ONLY_PORT
devicePluginDir: $devices
EOF
  # NK_AGENT_CONFIG: extra AgentConfiguration lines (e.g. "proxySyncPeriod: 10s")
  [[ -z $AGENT_CONFIG ]] || printf '%s\n' "$AGENT_CONFIG"
  if [[ ,$RECONCILERS, != *,services,* ]]; then
    # leave kube-proxy's metrics port (10249) to the proxy that will run beside it
    echo "metricsBindAddress: 127.0.0.1:10269"
  fi
  [[ $dns != 1 ]] || printf 'clusterDNS: [%s]\nclusterDomain: %s\n' "$DNS_IP" "$CLUSTER_DOMAIN"
  [[ $TLS_BOOTSTRAP != 1 ]] || echo "rotateCertificates: true"
}

# identity KUBECONFIG DIR: IDENTITY, the agent's flags for its identity: its client
# certificate's KUBECONFIG, or with TLS bootstrap (the bootstrap kubeconfig up made) the
# kubeconfig the agent writes under DIR/pki
identity() {
  IDENTITY=(--kubeconfig "$1")
  [[ $TLS_BOOTSTRAP != 1 ]] || IDENTITY=(--bootstrap-kubeconfig "$RUN/bootstrap.kubeconfig" --kubeconfig "$2/pki/kubeconfig")
}

# node_cri NETNS POD_CIDR CRI_CACHE: a node's containerd (its CNI bridge and its pods live
# in the node namespace too); prints its endpoint. The node has no default route: Service
# addresses go to lo so the node's own connect() gets as far as the DNAT rules (nothing
# can leave the namespace).
node_cri() {
  NK_CACHE="$3" NK_NETNS="$1" NK_POD_CIDR="$2" "$ROOT/hack/cri-up.sh"
  ip -n "$1" route replace "$SERVICE_CIDR" dev lo
}

# CoreDNS's client certificate (system:coredns, bound to upstream's system:coredns role)
coredns_cert() {
  local d=$RUN/pki
  [[ -f $d/coredns.crt ]] && return
  openssl req -newkey rsa:2048 -nodes -keyout "$d/coredns.key" -out "$d/coredns.csr" -subj "/CN=system:coredns" 2>/dev/null
  openssl x509 -req -in "$d/coredns.csr" -CA "$d/ca.crt" -CAkey "$d/ca.key" -CAcreateserial -out "$d/coredns.crt" -days 3650 2>/dev/null
}

# the aggregation layer's certificates, as kubeadm makes them: a front-proxy CA of its own
# and the API server's proxy client (front-proxy-client) signed by it; metrics-server's
# client identity (system:metrics-server) and its serving certificate, for the name the
# API server checks (the Service's DNS name), both signed by the cluster CA
aggregator_certs() {
  local d=$RUN/pki
  [[ -f $d/metrics-server.crt ]] && return
  openssl req -x509 -newkey rsa:2048 -nodes -keyout "$d/front-proxy-ca.key" -out "$d/front-proxy-ca.crt" -days 3650 -subj "/CN=front-proxy-ca" 2>/dev/null
  openssl req -newkey rsa:2048 -nodes -keyout "$d/front-proxy-client.key" -out "$d/front-proxy-client.csr" -subj "/CN=front-proxy-client" 2>/dev/null
  openssl x509 -req -in "$d/front-proxy-client.csr" -CA "$d/front-proxy-ca.crt" -CAkey "$d/front-proxy-ca.key" -CAcreateserial -out "$d/front-proxy-client.crt" -days 3650 2>/dev/null
  openssl req -newkey rsa:2048 -nodes -keyout "$d/metrics-server-client.key" -out "$d/metrics-server-client.csr" -subj "/CN=system:metrics-server" 2>/dev/null
  openssl x509 -req -in "$d/metrics-server-client.csr" -CA "$d/ca.crt" -CAkey "$d/ca.key" -CAcreateserial -out "$d/metrics-server-client.crt" -days 3650 2>/dev/null
  openssl req -newkey rsa:2048 -nodes -keyout "$d/metrics-server.key" -out "$d/metrics-server.csr" -subj "/CN=metrics-server" 2>/dev/null
  printf 'subjectAltName=DNS:metrics-server.kube-system.svc,DNS:metrics-server.kube-system.svc.cluster.local,IP:%s\n' "$HOST_IP" >"$d/metrics-server.ext"
  openssl x509 -req -in "$d/metrics-server.csr" -CA "$d/ca.crt" -CAkey "$d/ca.key" -CAcreateserial -out "$d/metrics-server.crt" -days 3650 -extfile "$d/metrics-server.ext" 2>/dev/null
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

netns_up() { # [NETNS HOST_IF NODE_IF HOST_IP NODE_IP POD_CIDR]: the first node's by default
  local NETNS=${1:-$NETNS} HOST_IF=${2:-$HOST_IF} NODE_IF=${3:-$NODE_IF} HOST_IP=${4:-$HOST_IP} NODE_IP=${5:-$NODE_IP} POD_CIDR=${6:-$POD_CIDR}
  ip netns list | awk '{print $1}' | grep -qxF "$NETNS" || ip netns add "$NETNS"
  if ! ip link show "$HOST_IF" >/dev/null 2>&1; then
    ip link add "$HOST_IF" type veth peer name "$NODE_IF" netns "$NETNS"
  fi
  ip addr replace "$HOST_IP/30" dev "$HOST_IF"
  ip link set "$HOST_IF" up
  ip netns exec "$NETNS" ip addr replace "$NODE_IP/30" dev "$NODE_IF"
  ip netns exec "$NETNS" ip link set "$NODE_IF" up
  ip netns exec "$NETNS" ip link set lo up
  # pods reaching the host side of the veth (the API server as the `kubernetes` Service,
  # metrics-server) leave the node masqueraded as the node IP: the host has no route to
  # the pod range, so replies to a pod address would otherwise follow the host's
  # default route off the machine. Rule inside the node namespace only.
  local masq=(-s "$POD_CIDR" -o "$NODE_IF" -m comment --comment "nodekeeper make run: pods to the host" -j MASQUERADE)
  ip netns exec "$NETNS" iptables -t nat -C POSTROUTING "${masq[@]}" 2>/dev/null ||
    ip netns exec "$NETNS" iptables -t nat -A POSTROUTING "${masq[@]}"
}

netns_down() {
  ip link del "$HOST_IF" 2>/dev/null || true
  ip netns del "$NETNS" 2>/dev/null || true
}

# node2_net: the second node's namespace (its veth to the host, where only the API
# server's address is routed), and the link between the two node namespaces with routes
# to each other's pod range and node IP
node2_net() {
  netns_up "$NETNS2" "$HOST_IF2" "$NODE_IF2" "$HOST_IP2" "$NODE_IP2" "$POD_CIDR2"
  ip -n "$NETNS2" route replace "$HOST_IP/32" via "$HOST_IP2" dev "$NODE_IF2"
  if ! ip -n "$NETNS" link show "$XIF1" >/dev/null 2>&1; then
    ip -n "$NETNS" link add "$XIF1" type veth peer name "$XIF2" netns "$NETNS2"
  fi
  ip -n "$NETNS" addr replace "$XIP1/30" dev "$XIF1"; ip -n "$NETNS" link set "$XIF1" up
  ip -n "$NETNS2" addr replace "$XIP2/30" dev "$XIF2"; ip -n "$NETNS2" link set "$XIF2" up
  ip -n "$NETNS" route replace "$POD_CIDR2" via "$XIP2" dev "$XIF1"
  ip -n "$NETNS" route replace "$NODE_IP2/32" via "$XIP2" dev "$XIF1"
  ip -n "$NETNS2" route replace "$POD_CIDR" via "$XIP1" dev "$XIF2"
  ip -n "$NETNS2" route replace "$NODE_IP/32" via "$XIP1" dev "$XIF2"
}

# start_node2 BINS DNS: containerd and the agent of the second node, configured as the
# first but for its names, addresses and folders
start_node2() {
  local bins=$1 cri2
  node_certs "$NODE_NAME2" "$NODE_IP2" node2 kubelet2
  kubeconfig node2 node2
  node2_net
  cri2=$(node_cri "$NETNS2" "$POD_CIDR2" "$CRI_CACHE2")
  bind_role "$bins" "nodekeeper:node-proxier:2" system:node-proxier User "system:node:$NODE_NAME2"
  mkdir -p "$RUN/agent-2" "$RUN/manifests-2"
  agent_config "$NODE_NAME2" "$NODE_IP2" "$cri2" "$RUN/agent-2" "$RUN/manifests-2" "$POD_CIDR2" kubelet2 \
    "$RUN/agent-2/device-plugins" "$2" >"$RUN/agent-2.yaml"
  identity "$RUN/node2.kubeconfig" "$RUN/agent-2"
  start nodekeeper-2 nsenter --net="/run/netns/$NETNS2" "$ROOT/bin/nodekeeper" \
    --config "$RUN/agent-2.yaml" "${IDENTITY[@]}" --reconcilers "$RECONCILERS"
  wait_for "node $NODE_NAME2 to register" 60 "$bins/kubectl" --kubeconfig "$RUN/admin.kubeconfig" get node "$NODE_NAME2"
}

up() {
  mkdir -p "$RUN"/{pids,logs,etcd,agent,manifests}
  local bins
  bins=$(K8S_EXTRA_BINS="kube-controller-manager kube-scheduler" heartbeat "building kube-apiserver, etcd, kubectl, kube-controller-manager, kube-scheduler (hack/k8s-bins.sh; first time 10-20 min)" "$ROOT/hack/k8s-bins.sh")
  log "building nodekeeper"
  # one build at a time (test/e2e and test/charte2e start clusters in parallel): a second
  # writer would meet the first's running agent binary (ETXTBSY)
  mkdir -p "$ROOT/bin"
  heartbeat "building nodekeeper" flock "$ROOT/bin/.build.lock" make -C "$ROOT" --no-print-directory build >&2
  local ms="" dns=""
  if [[ $METRICS_SERVER == 1 ]]; then ms=$(heartbeat "building metrics-server (hack/metrics-server.sh; first time ~5 min)" "$ROOT/hack/metrics-server.sh"); fi
  if [[ $DNS == 1 ]]; then dns=$(heartbeat "building CoreDNS (hack/coredns.sh; first time 5-15 min, mostly module downloads)" "$ROOT/hack/coredns.sh"); fi
  certs
  node_certs "$NODE_NAME" "$NODE_IP" node kubelet
  aggregator_certs
  coredns_cert
  kubeconfig admin admin; kubeconfig node node; kubeconfig kcm kcm; kubeconfig scheduler scheduler
  kubeconfig metrics-server metrics-server-client; kubeconfig coredns coredns
  netns_up
  local cri
  cri=$(node_cri "$NETNS" "$POD_CIDR" "$CRI_CACHE")

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
    --kubelet-preferred-address-types InternalIP,Hostname \
    --requestheader-client-ca-file "$RUN/pki/front-proxy-ca.crt" --requestheader-allowed-names front-proxy-client \
    --requestheader-username-headers X-Remote-User --requestheader-group-headers X-Remote-Group \
    --requestheader-extra-headers-prefix X-Remote-Extra- \
    --proxy-client-cert-file "$RUN/pki/front-proxy-client.crt" --proxy-client-key-file "$RUN/pki/front-proxy-client.key" \
    --enable-aggregator-routing=true --enable-bootstrap-token-auth
  wait_for "kube-apiserver" 60 "$bins/kubectl" --kubeconfig "$RUN/admin.kubeconfig" get --raw /readyz
  # the node identity is a kubelet's (Node authorizer); the proxy half also needs what
  # kube-proxy is granted: the built-in system:node-proxier role
  bind_role "$bins" nodekeeper:node-proxier system:node-proxier User "system:node:$NODE_NAME"
  # the API server's kubelet client may use the node's kubelet API (logs, exec, ...), as kubeadm sets up
  bind_role "$bins" nodekeeper:apiserver-kubelet-client system:kubelet-api-admin User kube-apiserver-kubelet-client
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

  local dns_on=0
  if [[ -n $dns ]]; then
    dns_on=1
    start_coredns "$bins" "$dns"
  fi
  [[ $TLS_BOOTSTRAP != 1 ]] || bootstrap_token "$bins"
  agent_config "$NODE_NAME" "$NODE_IP" "$cri" "$RUN/agent" "$RUN/manifests" "$POD_CIDR" kubelet \
    "$DEVICE_PLUGIN_DIR" "$dns_on" >"$RUN/agent.yaml"
  identity "$RUN/node.kubeconfig" "$RUN/agent"
  start_node_agent "$cri"
  wait_for "node $NODE_NAME to register" 60 "$bins/kubectl" --kubeconfig "$RUN/admin.kubeconfig" get node "$NODE_NAME"
  case $NODES in
  1) ;;
  2) [[ $NODE_AGENT == nodekeeper ]] || die "NODES=2 runs nodekeeper on both nodes (NK_NODE_AGENT=$NODE_AGENT)"
     start_node2 "$bins" "$dns_on" ;;
  *) die "NODES must be 1 or 2, got '$NODES'" ;;
  esac
  local nodes_hint="  (NODES=2 make run: a second node)"
  [[ $NODES != 2 ]] || nodes_hint="  second node: $NODE_NAME2 ($NODE_IP2, netns $NETNS2, pods $POD_CIDR2; log: logs/nodekeeper-2.log)"
  local dns_hint="  (NK_DNS=0: no cluster DNS)"
  [[ -z $dns ]] || dns_hint="  cluster DNS: kube-system/kube-dns $DNS_IP -> CoreDNS on $HOST_IP:$DNS_PORT (log: logs/coredns.log)"
  local top_hint="  (NK_METRICS_SERVER=1 make run also runs metrics-server, for kubectl top)"
  if [[ -n $ms ]]; then
    metrics_server "$bins" "$ms"
    top_hint="  kubectl top node; kubectl top pod -A   # figures after metrics-server's second scrape (~20 s)"
  else
    # a state folder kept from a run with metrics-server still has its APIService: left
    # unavailable, it would make every discovery (kubectl, namespace deletion) complain
    "$bins/kubectl" --kubeconfig "$RUN/admin.kubeconfig" delete apiservice v1beta1.metrics.k8s.io --ignore-not-found >/dev/null
  fi

  cat <<EOF

nodekeeper cluster is up. Logs: $RUN/logs
  export KUBECONFIG=$RUN/admin.kubeconfig
  export PATH=$bins:\$PATH
  kubectl get nodes -o wide
  kubectl get lease -n kube-node-lease
$nodes_hint
$dns_hint
$top_hint
  make load-image IMAGE=image.tar   # brings an image tarball into the node's containerd
Stop it with: make down
EOF
}

# start_node_agent CRI: the node agent NK_NODE_AGENT (nodekeeper or the upstream kubelet)
start_node_agent() {
  case $NODE_AGENT in
  nodekeeper)
    start nodekeeper nsenter --net="/run/netns/$NETNS" "$ROOT/bin/nodekeeper" \
      --config "$RUN/agent.yaml" "${IDENTITY[@]}" --reconcilers "$RECONCILERS" ${NK_AGENT_V:+--v "$NK_AGENT_V"} ;;
  kubelet) start_kubelet "$1" ;;
  *) die "NK_NODE_AGENT must be nodekeeper or kubelet, got '$NODE_AGENT'" ;;
  esac
}

# agent-stop / agent-start: swap the node agent of a cluster that is up (the benchmarks
# run nodekeeper and the kubelet one after the other on the same API server and containerd)
agent_stop() {
  stop nodekeeper; stop kubelet
  kubelet_down
}
agent_start() {
  [[ -f $RUN/agent.yaml ]] || die "no cluster in $RUN: run '$0 up' first"
  [[ ! -f $RUN/bootstrap.kubeconfig ]] || TLS_BOOTSTRAP=1 # the cluster was made with it
  identity "$RUN/node.kubeconfig" "$RUN/agent"
  local cri
  cri=$(node_cri "$NETNS" "$POD_CIDR" "$CRI_CACHE")
  start_node_agent "$cri"
}

# start_kubelet CRI: the upstream kubelet as the node, configured like the agent above
# (same reserved resources, eviction thresholds, certificates, static pod folder), without
# touching machine-wide settings:
# - cgroupfs driver under its own cgroupRoot ($KUBELET_CGROUP, made in every v1 hierarchy);
#   failSwapOn and failCgroupV1 off (this machine has cgroup v1);
# - it runs in a mount namespace of its own (unshare -m) where files holding the values it
#   wants are bind-mounted over /proc/sys/vm/overcommit_memory, kernel/panic and
#   kernel/panic_on_oops (it would otherwise rewrite them for the whole machine). Its root
#   folder is a shared mount made before the unshare, so the volumes it mounts there
#   (secrets, projected tokens) propagate to the host, where containerd and runc look;
#   Its cAdvisor finds containerd only at the default socket (/run/containerd/containerd.sock,
#   no setting changes that): the node's containerd socket is bind-mounted there, over a
#   tmpfs, inside that mount namespace (the machine's root mount is private: nothing of this
#   reaches the host), else cAdvisor sees raw cgroups only and its container metrics carry
#   no pod, namespace or container labels;
# - and in the node network namespace (nsenter --net), as the agent.
start_kubelet() {
  local cri=$1 kroot=$RUN/kubelet h
  [[ -x $KUBELET_BIN ]] || die "no kubelet at $KUBELET_BIN (NODE=kubelet hack/conformance.sh build)"
  mkdir -p "$kroot" "$RUN/kubelet-sysctl"
  if ! mountpoint -q "$kroot"; then mount --bind "$kroot" "$kroot"; fi
  mount --make-shared "$kroot"
  for h in /sys/fs/cgroup/*/; do
    [[ -e $h/cgroup.procs && ! -e $h/cgroup.controllers ]] || continue # v1 hierarchies only
    mkdir -p "$h${KUBELET_CGROUP#/}"
    if [[ -e $h/cpuset.cpus ]]; then
      cat "$h/cpuset.cpus" >"$h${KUBELET_CGROUP#/}/cpuset.cpus"
      cat "$h/cpuset.mems" >"$h${KUBELET_CGROUP#/}/cpuset.mems"
    fi
  done
  echo 1 >"$RUN/kubelet-sysctl/overcommit_memory"; echo 10 >"$RUN/kubelet-sysctl/panic"
  echo 1 >"$RUN/kubelet-sysctl/panic_on_oops"
  cat >"$RUN/kubelet.yaml" <<EOF
apiVersion: kubelet.config.k8s.io/v1beta1
kind: KubeletConfiguration
address: 0.0.0.0
port: 10250
readOnlyPort: $READ_ONLY_PORT
healthzBindAddress: 127.0.0.1
healthzPort: 10248
tlsCertFile: $RUN/pki/kubelet.crt
tlsPrivateKeyFile: $RUN/pki/kubelet.key
authentication:
  anonymous: {enabled: false}
  webhook: {enabled: true}
  x509: {clientCAFile: $RUN/pki/ca.crt}
authorization: {mode: Webhook}
containerRuntimeEndpoint: $cri
cgroupDriver: cgroupfs
cgroupRoot: $KUBELET_CGROUP
failSwapOn: false
failCgroupV1: false
staticPodPath: $RUN/manifests
podCIDR: $POD_CIDR
systemReserved: {cpu: 100m, memory: 256Mi}
kubeReserved: {cpu: 100m, memory: 256Mi}
evictionHard: {memory.available: 100Mi, nodefs.available: "10%"}
resolvConf: /etc/resolv.conf
fileCheckFrequency: 10s
volumeStatsAggPeriod: 10s
serializeImagePulls: false
rotateCertificates: false
serverTLSBootstrap: false
EOF
  # the cluster DNS, as the agent's (when CoreDNS runs)
  grep -E '^(clusterDNS|clusterDomain):' "$RUN/agent.yaml" >>"$RUN/kubelet.yaml" || true
  # unshare -m without --fork execs: the PID recorded by start is the kubelet's
  start kubelet unshare -m --propagation unchanged sh -c '
    mount --make-rprivate /proc
    mount --bind "$1/overcommit_memory" /proc/sys/vm/overcommit_memory
    mount --bind "$1/panic" /proc/sys/kernel/panic
    mount --bind "$1/panic_on_oops" /proc/sys/kernel/panic_on_oops
    mkdir -p /run/containerd && mount -t tmpfs -o mode=0711 nk-kubelet-cri /run/containerd &&
      touch /run/containerd/containerd.sock && mount --bind "$2" /run/containerd/containerd.sock
    shift 2; exec "$@"' sh "$RUN/kubelet-sysctl" "${cri#unix://}" \
    nsenter --net="/run/netns/$NETNS" "$KUBELET_BIN" --config "$RUN/kubelet.yaml" \
    --kubeconfig "$RUN/node.kubeconfig" --root-dir "$kroot" --hostname-override "$NODE_NAME" \
    --node-ip "$NODE_IP" --v 2
}

# kubelet_down: what start_kubelet made on the host: its root folder's mounts (the shared
# bind mount and the pod volumes under it) and its cgroups (after the pods are gone)
kubelet_down() {
  local kroot=$RUN/kubelet h
  awk -v d="$kroot" '$2 == d || index($2, d "/") == 1 {print $2}' /proc/mounts | sort -r | while read -r m; do
    umount -l "$m" 2>/dev/null || true
  done
  for h in /sys/fs/cgroup/*/; do
    [[ -d $h${KUBELET_CGROUP#/} ]] || continue
    find "$h${KUBELET_CGROUP#/}" -depth -type d -exec rmdir {} + 2>/dev/null || true
  done
}

# metrics_server BINS MS: run metrics-server on the host side of the veth and register it
# with the aggregation layer. The API server (--enable-aggregator-routing) dials the
# EndpointSlice's address itself, so nothing depends on Service rules in the host namespace.
metrics_server() {
  local bins=$1 ms=$2 cabundle
  mkdir -p "$RUN/metrics-server"
  cabundle=$(base64 -w0 <"$RUN/pki/ca.crt")
  "$bins/kubectl" --kubeconfig "$RUN/admin.kubeconfig" apply -f - >/dev/null <<EOF
# upstream's RBAC (metrics-server's components.yaml) for the identity system:metrics-server
apiVersion: rbac.authorization.k8s.io/v1
kind: ClusterRole
metadata: {name: "system:metrics-server"}
rules:
- {apiGroups: [""], resources: [nodes/metrics], verbs: [get]}
- {apiGroups: [""], resources: [pods, nodes], verbs: [get, list, watch]}
---
apiVersion: rbac.authorization.k8s.io/v1
kind: ClusterRoleBinding
metadata: {name: "system:metrics-server"}
roleRef: {apiGroup: rbac.authorization.k8s.io, kind: ClusterRole, name: "system:metrics-server"}
subjects: [{apiGroup: rbac.authorization.k8s.io, kind: User, name: "system:metrics-server"}]
---
apiVersion: rbac.authorization.k8s.io/v1
kind: ClusterRoleBinding
metadata: {name: "metrics-server:system:auth-delegator"}
roleRef: {apiGroup: rbac.authorization.k8s.io, kind: ClusterRole, name: "system:auth-delegator"}
subjects: [{apiGroup: rbac.authorization.k8s.io, kind: User, name: "system:metrics-server"}]
---
apiVersion: rbac.authorization.k8s.io/v1
kind: RoleBinding
metadata: {name: metrics-server-auth-reader, namespace: kube-system}
roleRef: {apiGroup: rbac.authorization.k8s.io, kind: Role, name: extension-apiserver-authentication-reader}
subjects: [{apiGroup: rbac.authorization.k8s.io, kind: User, name: "system:metrics-server"}]
---
# who may read metrics.k8s.io: aggregated into view/edit/admin, as upstream
apiVersion: rbac.authorization.k8s.io/v1
kind: ClusterRole
metadata:
  name: "system:aggregated-metrics-reader"
  labels:
    rbac.authorization.k8s.io/aggregate-to-admin: "true"
    rbac.authorization.k8s.io/aggregate-to-edit: "true"
    rbac.authorization.k8s.io/aggregate-to-view: "true"
rules:
- {apiGroups: [metrics.k8s.io], resources: [pods, nodes], verbs: [get, list, watch]}
---
# no selector: the EndpointSlice below points at the host process
apiVersion: v1
kind: Service
metadata: {name: metrics-server, namespace: kube-system, labels: {k8s-app: metrics-server}}
spec:
  ports: [{name: https, port: 443, protocol: TCP, targetPort: $MS_PORT}]
---
apiVersion: discovery.k8s.io/v1
kind: EndpointSlice
metadata:
  name: metrics-server-host
  namespace: kube-system
  labels: {kubernetes.io/service-name: metrics-server, endpointslice.kubernetes.io/managed-by: nodekeeper-run}
addressType: IPv4
endpoints: [{addresses: ["$HOST_IP"], conditions: {ready: true}}]
ports: [{name: https, port: $MS_PORT, protocol: TCP}]
---
apiVersion: apiregistration.k8s.io/v1
kind: APIService
metadata: {name: v1beta1.metrics.k8s.io, labels: {k8s-app: metrics-server}}
spec:
  group: metrics.k8s.io
  version: v1beta1
  groupPriorityMinimum: 100
  versionPriority: 100
  service: {name: metrics-server, namespace: kube-system, port: 443}
  caBundle: $cabundle
EOF
  # the kubeconfig's identity is also the one it presents to the kubelet API, which
  # authorizes it by SubjectAccessReview (nodes/metrics); the node's serving certificate is
  # verified against the cluster CA. Resolution 10s is metrics-server's minimum; its kubelet
  # request timeout must then be below 9s.
  start metrics-server "$ms" --kubeconfig "$RUN/metrics-server.kubeconfig" \
    --authentication-kubeconfig "$RUN/metrics-server.kubeconfig" --authorization-kubeconfig "$RUN/metrics-server.kubeconfig" \
    --bind-address "$HOST_IP" --secure-port "$MS_PORT" --cert-dir "$RUN/metrics-server" \
    --tls-cert-file "$RUN/pki/metrics-server.crt" --tls-private-key-file "$RUN/pki/metrics-server.key" \
    --kubelet-preferred-address-types InternalIP --kubelet-use-node-status-port \
    --kubelet-certificate-authority "$RUN/pki/ca.crt" \
    --metric-resolution 10s --kubelet-request-timeout 5s
  wait_for "APIService v1beta1.metrics.k8s.io to be Available" 90 apiservice_available "$bins"
}

# start_coredns BINS COREDNS: CoreDNS on the host side of the veth, behind kube-system/kube-dns.
# Its identity system:coredns gets upstream's ClusterRole (what CoreDNS's own deployment
# manifests grant). The Service has no selector: its EndpointSlice names the host process,
# so a pod's query to $DNS_IP:53 is DNATed by the agent's rules to $HOST_IP:$DNS_PORT
# (and masqueraded to the node IP on the way out, as every pod-to-host packet).
start_coredns() {
  local bins=$1 bin=$2
  mkdir -p "$RUN/coredns"
  "$bins/kubectl" --kubeconfig "$RUN/admin.kubeconfig" apply -f - >/dev/null <<EOF
apiVersion: rbac.authorization.k8s.io/v1
kind: ClusterRole
metadata: {name: "system:coredns", labels: {kubernetes.io/bootstrapping: rbac-defaults}}
rules:
- {apiGroups: [""], resources: [endpoints, services, pods, namespaces], verbs: [list, watch]}
- {apiGroups: [discovery.k8s.io], resources: [endpointslices], verbs: [list, watch]}
---
apiVersion: rbac.authorization.k8s.io/v1
kind: ClusterRoleBinding
metadata: {name: "system:coredns"}
roleRef: {apiGroup: rbac.authorization.k8s.io, kind: ClusterRole, name: "system:coredns"}
subjects: [{apiGroup: rbac.authorization.k8s.io, kind: User, name: "system:coredns"}]
---
apiVersion: v1
kind: Service
metadata:
  name: kube-dns
  namespace: kube-system
  labels: {k8s-app: kube-dns, kubernetes.io/name: CoreDNS}
spec:
  clusterIP: $DNS_IP
  ports:
  - {name: dns, port: 53, protocol: UDP, targetPort: $DNS_PORT}
  - {name: dns-tcp, port: 53, protocol: TCP, targetPort: $DNS_PORT}
---
apiVersion: discovery.k8s.io/v1
kind: EndpointSlice
metadata:
  name: kube-dns-host
  namespace: kube-system
  labels: {kubernetes.io/service-name: kube-dns, endpointslice.kubernetes.io/managed-by: nodekeeper-run}
addressType: IPv4
endpoints: [{addresses: ["$HOST_IP"], conditions: {ready: true}}]
ports:
- {name: dns, port: $DNS_PORT, protocol: UDP}
- {name: dns-tcp, port: $DNS_PORT, protocol: TCP}
EOF
  # no forward plugin: names outside the cluster are not looked up (nothing leaves the machine)
  cat >"$RUN/coredns/Corefile" <<EOF
.:$DNS_PORT {
    bind $HOST_IP
    errors
    health $HOST_IP:$((DNS_PORT + 1))
    ready $HOST_IP:$((DNS_PORT + 2))
    kubernetes $CLUSTER_DOMAIN in-addr.arpa ip6.arpa {
        kubeconfig $RUN/coredns.kubeconfig nodekeeper
        pods insecure
        fallthrough in-addr.arpa ip6.arpa
        ttl 30
    }
    cache 30
    loop
    loadbalance
}
EOF
  start coredns "$bin" -conf "$RUN/coredns/Corefile"
  wait_for "CoreDNS to be ready (http://$HOST_IP:$((DNS_PORT + 2))/ready)" 60 curl -fsS "http://$HOST_IP:$((DNS_PORT + 2))/ready"
}

# load_image TARBALL: import an image archive into the node's containerd (namespace k8s.io,
# where the CRI looks), with the snapshotter cri-up.sh chose; pods then use it under its
# name with imagePullPolicy IfNotPresent (or Never)
load_image() {
  local tar=${1:-} cache sock snap
  [[ -n $tar && -f $tar ]] || die "usage: make load-image IMAGE=path/to/image.tar (no file '${tar}')"
  [[ -S $CRI_CACHE/cri/run/containerd.sock ]] || die "no containerd at $CRI_CACHE/cri/run/containerd.sock: start the cluster first (make run)"
  for cache in "$CRI_CACHE" "$CRI_CACHE2"; do # every node's (NODES=2: the second one's too)
    sock=$cache/cri/run/containerd.sock
    [[ -S $sock ]] && ctr --address "$sock" version >/dev/null 2>&1 || continue
    snap=$(cat "$cache/cri/snapshotter" 2>/dev/null || echo overlayfs)
    ctr --address "$sock" -n k8s.io images import --snapshotter "$snap" "$tar" >&2
    log "imported $tar into $sock; its images now:"
    ctr --address "$sock" -n k8s.io images ls -q | grep -v '^sha256:' >&2
  done
}

apiservice_available() {
  [[ $("$1/kubectl" --kubeconfig "$RUN/admin.kubeconfig" get apiservice v1beta1.metrics.k8s.io \
    -o 'jsonpath={.status.conditions[?(@.type=="Available")].status}') == True ]]
}

down() {
  for c in coredns metrics-server nodekeeper-2 nodekeeper kubelet kube-scheduler kube-controller-manager kube-apiserver etcd; do stop "$c"; done
  NK_CACHE="$CRI_CACHE" NK_NETNS="$NETNS" "$ROOT/hack/cri-down.sh" || true
  # the second node (NODES=2), if one was started
  if [[ -d $CRI_CACHE2/cri ]]; then NK_CACHE="$CRI_CACHE2" NK_NETNS="$NETNS2" "$ROOT/hack/cri-down.sh" || true; fi
  kubelet_down
  # pod volumes the agent mounted (tmpfs for secrets, tokens, memory emptyDirs), and its
  # root folder's own bind mount (made rshared at start, as the kubelet's)
  awk -v d="$RUN/agent" '$2 == d || index($2, d "/") == 1 || $2 == d "-2" || index($2, d "-2/") == 1 {print $2}' /proc/mounts | sort -r | while read -r m; do
    umount -l "$m" 2>/dev/null || true
  done
  netns_down
  ip link del "$HOST_IF2" 2>/dev/null || true
  ip netns del "$NETNS2" 2>/dev/null || true
  log "down (state kept in $RUN; remove it for a fresh cluster)"
}

case "${1:-}" in
  up) up ;;
  down) down ;;
  agent-stop) agent_stop ;;
  agent-start) agent_start ;;
  load-image) load_image "${2:-}" ;;
  *) die "usage: $0 up|down|agent-stop|agent-start|load-image TARBALL" ;;
esac
