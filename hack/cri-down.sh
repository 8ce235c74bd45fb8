#!/usr/bin/env bash
# cri-down.sh: undo hack/cri-up.sh. Removes every container and sandbox of OUR containerd
# (k8s.io namespace, through ctr), stops that containerd by the PID cri-up.sh recorded,
# cleans what it leaves behind (shims started for our socket, mounts under our state dir,
# host-local IPAM leases, the CNI bridge) and deletes the network namespace only if
# cri-up.sh created it and no other process lives in it. Idempotent; safe when nothing runs.
#
#   hack/cri-down.sh           keep images and containerd's root (the next cri-up is fast)
#   hack/cri-down.sh --purge   also delete containerd's root/state (images, snapshots)
#
# Never touches the root network namespace, the machine's containerd, or processes it
# cannot prove are ours.
set -uo pipefail

CACHE=${NK_CACHE:-$HOME/.cache/nodekeeper}
BASE=$CACHE/cri
NETNS=${NK_NETNS:-nk-node}
BRIDGE=${NK_CNI_BRIDGE:-nk0}
SOCK=$BASE/run/containerd.sock
PIDFILE=$BASE/containerd.pid
NETNS_MARKER=$BASE/netns-created
export PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin

exec 1>&2
log() { echo "[cri-down] $*"; }
[[ $(id -u) == 0 ]] || { log "ERROR: must run as root"; exit 1; }

# ---------------------------------------------------------------- 1. pods, then containerd
if pid=$(cat "$PIDFILE" 2>/dev/null) && [[ -n $pid ]] && kill -0 "$pid" 2>/dev/null &&
  [[ $(readlink -f "/proc/$pid/exe") == */containerd ]]; then
  C=(ctr --address "$SOCK" -n k8s.io)
  if "${C[@]}" version >/dev/null 2>&1; then
    tasks=$("${C[@]}" tasks ls -q 2>/dev/null)
    for c in $tasks; do "${C[@]}" tasks kill -s SIGKILL "$c" >/dev/null 2>&1; done
    for _ in $(seq 1 50); do # until every task has stopped
      "${C[@]}" tasks ls 2>/dev/null | awk 'NR > 1 && $3 != "STOPPED"' | grep -q . || break
      sleep 0.1
    done
    for c in $tasks; do "${C[@]}" tasks delete -f "$c" >/dev/null 2>&1; done
    n=0
    for c in $("${C[@]}" containers ls -q 2>/dev/null); do
      "${C[@]}" containers delete "$c" >/dev/null 2>&1 && n=$((n + 1))
    done
    ((n == 0)) || log "removed $n containers and sandboxes"
  fi
  kill -TERM "$pid"
  for _ in $(seq 1 100); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
  if kill -0 "$pid" 2>/dev/null; then kill -KILL "$pid"; log "containerd pid $pid killed"; else log "containerd pid $pid stopped"; fi
fi
rm -f "$PIDFILE" "$SOCK" "$SOCK.ttrpc"

# ---------------------------------------------------------------- 2. leftovers
# Shims outlive containerd by design; ours carry our socket path on their command line.
for p in $(pgrep -f -- "-address $SOCK( |\$)" 2>/dev/null); do
  [[ $(readlink -f "/proc/$p/exe" 2>/dev/null) == *containerd-shim* ]] || continue
  kill -KILL "$p" 2>/dev/null && log "killed leftover shim pid $p"
done
# Mounts under our state dir (container rootfs, sandbox shm, pod netns), deepest first.
awk -v b="$BASE/" 'index($2, b) == 1 {print $2}' /proc/self/mounts | sort -r | while read -r m; do
  umount -l "$m" 2>/dev/null && log "unmounted $m"
done
rm -f "$BASE"/state/io.containerd.grpc.v1.cri/netns/cni-* 2>/dev/null
# Every pod is gone, so are its addresses (CNI DEL did not run for pods removed with ctr).
rm -rf "$BASE"/cni/ipam/*
# containerd 1.6 hard-codes its shim sockets' dir; drop it if it is empty.
rmdir /run/containerd/s /run/containerd 2>/dev/null
# Containers without a cgroup parent live in /k8s.io/<id> of every hierarchy (runc removes
# <id> on delete); drop the empty parents. rmdir never removes a cgroup still in use.
for d in /sys/fs/cgroup/*/k8s.io/ /sys/fs/cgroup/k8s.io/; do
  [[ -d $d ]] && rmdir "$d" 2>/dev/null
done

# ---------------------------------------------------------------- 3. the network namespace
if [[ -e /run/netns/$NETNS ]]; then
  ino=$(stat -L -c %i "/run/netns/$NETNS")
  users=()
  for d in /proc/[0-9]*; do
    [[ $(stat -L -c %i "$d/ns/net" 2>/dev/null) == "$ino" ]] && users+=("${d#/proc/}")
  done
  if [[ $(cat "$NETNS_MARKER" 2>/dev/null) == "$NETNS" && ${#users[@]} -eq 0 ]]; then
    ip netns del "$NETNS" && log "deleted network namespace $NETNS"
    rm -f "$NETNS_MARKER"
  else
    nsenter --net="/run/netns/$NETNS" ip link del "$BRIDGE" 2>/dev/null && log "removed bridge $BRIDGE in $NETNS"
    if [[ -f $NETNS_MARKER ]]; then
      log "keeping network namespace $NETNS: still used by pid(s) ${users[*]}"
    fi
  fi
else
  rm -f "$NETNS_MARKER"
fi

if [[ ${1:-} == --purge ]]; then
  rm -rf "$BASE"/{root,state,run,runc,cni/ipam,images/imported,snapshotter} && log "purged containerd root and state"
fi
log "down"
