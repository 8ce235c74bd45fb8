#!/usr/bin/env bash
# run.sh: a local single-node cluster whose node is nodekeeper.
#
#   hack/run.sh up     (make run)   build what is missing, start everything, print the kubeconfig
#   hack/run.sh down   (make down)  stop what `up` started (by PID), remove its netns and veth
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
---
apiVersion: rbac.authorization.k8s.io/v1
kind: ClusterRoleBinding
metadata: {name: "kubeadm:kubelet-bootstrap"}
roleRef: {apiGroup: rbac.authorization.k8s.io, kind: ClusterRole, name: "system:node-bootstrapper"}
subjects: [{apiGroup: rbac.authorization.k8s.io, kind: Group, name: "system:bootstrappers:kubeadm:default-node-token"}]
---
apiVersion: rbac.authorization.k8s.io/v1
kind: ClusterRoleBinding
metadata: {name: "kubeadm:node-autoapprove-bootstrap"}
roleRef: {apiGroup: rbac.authorization.k8s.io, kind: ClusterRole, name: "system:certificates.k8s.io:certificatesigningrequests:nodeclient"}
subjects: [{apiGroup: rbac.authorization.k8s.io, kind: Group, name: "system:bootstrappers:kubeadm:default-node-token"}]
---
apiVersion: rbac.authorization.k8s.io/v1
kind: ClusterRoleBinding
metadata: {name: "kubeadm:node-autoapprove-certificate-rotation"}
roleRef: {apiGroup: rbac.authorization.k8s.io, kind: ClusterRole, name: "system:certificates.k8s.io:certificatesigningrequests:selfnodeclient"}
subjects: [{apiGroup: rbac.authorization.k8s.io, kind: Group, name: "system:nodes"}]
EOF
  local kc=("$1/kubectl" config --kubeconfig "$RUN/bootstrap.kubeconfig")
  "${kc[@]}" set-cluster nk --server "https://$HOST_IP:$APISERVER_PORT" --certificate-authority "$RUN/pki/ca.crt" --embed-certs >/dev/null
  "${kc[@]}" set-credentials tls-bootstrap-token-user --token "$id.$secret" >/dev/null
  "${kc[@]}" set-context nk --cluster nk --user tls-bootstrap-token-user >/dev/null
  "${kc[@]}" use-context nk >/dev/null
  # a fresh identity each time
  rm -f "$RUN/agent/pki/kubeconfig" "$RUN"/agent/pki/kubelet-client-*.pem
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

up() {
  mkdir -p "$RUN"/{pids,logs,etcd,agent,manifests}
  local bins
  bins=$(K8S_EXTRA_BINS="kube-controller-manager kube-scheduler" "$ROOT/hack/k8s-bins.sh")
  log "building nodekeeper"
  make -C "$ROOT" --no-print-directory build >&2
  local ms=""
  [[ $METRICS_SERVER == 1 ]] && ms=$("$ROOT/hack/metrics-server.sh")
  certs
  kubelet_cert
  aggregator_certs
  kubeconfig admin admin; kubeconfig node node; kubeconfig kcm kcm; kubeconfig scheduler scheduler
  kubeconfig metrics-server metrics-server-client
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
    --kubelet-preferred-address-types InternalIP,Hostname \
    --requestheader-client-ca-file "$RUN/pki/front-proxy-ca.crt" --requestheader-allowed-names front-proxy-client \
    --requestheader-username-headers X-Remote-User --requestheader-group-headers X-Remote-Group \
    --requestheader-extra-headers-prefix X-Remote-Extra- \
    --proxy-client-cert-file "$RUN/pki/front-proxy-client.crt" --proxy-client-key-file "$RUN/pki/front-proxy-client.key" \
    --enable-aggregator-routing=true --enable-bootstrap-token-auth
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
readOnlyPort: $READ_ONLY_PORT
devicePluginDir: $DEVICE_PLUGIN_DIR
EOF
  local identity=(--kubeconfig "$RUN/node.kubeconfig")
  if [[ $TLS_BOOTSTRAP == 1 ]]; then
    bootstrap_token "$bins"
    echo "rotateCertificates: true" >>"$RUN/agent.yaml"
    identity=(--bootstrap-kubeconfig "$RUN/bootstrap.kubeconfig" --kubeconfig "$RUN/agent/pki/kubeconfig")
  fi
  case $NODE_AGENT in
  nodekeeper)
    start nodekeeper nsenter --net="/run/netns/$NETNS" "$ROOT/bin/nodekeeper" \
      --config "$RUN/agent.yaml" "${identity[@]}" ;;
  kubelet) start_kubelet "$cri" ;;
  *) die "NK_NODE_AGENT must be nodekeeper or kubelet, got '$NODE_AGENT'" ;;
  esac
  wait_for "node $NODE_NAME to register" 60 "$bins/kubectl" --kubeconfig "$RUN/admin.kubeconfig" get node "$NODE_NAME"
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
$top_hint
Stop it with: make down
EOF
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
  # unshare -m without --fork execs: the PID recorded by start is the kubelet's
  start kubelet unshare -m --propagation unchanged sh -c '
    mount --make-rprivate /proc
    mount --bind "$1/overcommit_memory" /proc/sys/vm/overcommit_memory
    mount --bind "$1/panic" /proc/sys/kernel/panic
    mount --bind "$1/panic_on_oops" /proc/sys/kernel/panic_on_oops
    shift; exec "$@"' sh "$RUN/kubelet-sysctl" \
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

apiservice_available() {
  [[ $("$1/kubectl" --kubeconfig "$RUN/admin.kubeconfig" get apiservice v1beta1.metrics.k8s.io \
    -o 'jsonpath={.status.conditions[?(@.type=="Available")].status}') == True ]]
}

down() {
  for c in metrics-server nodekeeper kubelet kube-scheduler kube-controller-manager kube-apiserver etcd; do stop "$c"; done
  NK_CACHE="$CRI_CACHE" NK_NETNS="$NETNS" "$ROOT/hack/cri-down.sh" || true
  kubelet_down
  # pod volumes the agent mounted (tmpfs for secrets, tokens, memory emptyDirs), and its
  # root folder's own bind mount (made rshared at start, as the kubelet's)
  awk -v d="$RUN/agent" '$2 == d || index($2, d "/") == 1 {print $2}' /proc/mounts | sort -r | while read -r m; do
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
