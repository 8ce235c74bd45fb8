#!/usr/bin/env bash
# cri-up.sh: start nodekeeper's own containerd (CRI) inside the node network namespace,
# with local-only images. Prints the CRI endpoint (unix://.../containerd.sock) on stdout as
# the last line; everything else goes to stderr. Stop it with hack/cri-down.sh.
#
# Idempotent and cached: packages are installed only when missing, the images are built
# only when their tarballs are missing and imported only when containerd lacks them, and
# an already-running containerd (in the right namespace) is left alone: a second run takes
# well under a second.
#
# Everything lives under $NK_CACHE/cri (default ~/.cache/nodekeeper/cri), never in the
# machine defaults (/var/lib/containerd, /run/containerd, /etc/cni, /var/lib/cni):
#   etc/containerd.toml   config          root/ state/   containerd root and state
#   run/containerd.sock   CRI endpoint    runc/          runc state root
#   cni/net.d/            CNI conflist    cni/ipam/      host-local IPAM dataDir
#   images/*.tar          image tarballs  logs/          containerd.log, apt.log
#   containerd.pid        our containerd  netns-created  marker: we created $NK_NETNS
# The one exception is containerd 1.6's hard-coded shim socket dir /run/containerd/s.
#
# containerd runs inside the network namespace $NK_NETNS (default nk-node, the one
# `make run` puts the agent in; created here if missing), started with
# `nsenter --net=/run/netns/$NK_NETNS` (not `ip netns exec`, which remounts /sys and hides
# the cgroup mounts from containerd). The CNI bridge, pod veths, portmap rules and the
# ip_forward / bridge-nf-call-iptables sysctls all stay inside that namespace.
#
# Env knobs:
#   NK_CACHE            (~/.cache/nodekeeper)
#   NK_NETNS            (nk-node)          network namespace containerd and its pods live in
#   NK_CNI_BRIDGE       (nk0)              linux bridge of the pod network (<= 15 chars)
#   NK_POD_CIDR         (10.244.0.0/24)    host-local IPAM subnet
#   NK_CRI_SNAPSHOTTER  (overlayfs)        falls back to native if an overlay mount fails
#   NK_CRI_MIRRORS      ()                 registry mirrors, "HOST=ENDPOINT ...", e.g.
#                       "registry.k8s.io=http://127.0.0.1:5000" (a local registry in $NK_NETNS,
#                       as hack/conformance.sh runs one); PullImage tries ENDPOINT first
#   NK_CRI_RUNTIME_HANDLERS ()             extra RuntimeClass handler names, each runc as the
#                       default one (the node e2e suite's RuntimeClass specs use "test-handler")
#   NK_CONTAINERD_DIR   ()                 a folder with another containerd and its
#                       containerd-shim-runc-v2 (e.g. v2.4.2 built from the Go module proxy:
#                       hack/containerd2.sh), used instead of Debian's 1.6; give it its own
#                       NK_CACHE (containerd 2 migrates the metadata of a 1.6 root)
#
# Images (no registry needed; built from Debian packages and imported with ctr):
#   docker.io/library/busybox:local   static busybox + every applet symlink (sh, sleep, httpd, nc, ...);
#                                     wget and nslookup are hack/nktools (static Go): busybox-static's
#                                     wget dies on -T (exit 139), its nslookup ignores the search list
#   registry.k8s.io/pause:3.10-local  a tiny static C pause; the sandbox image
set -euo pipefail

HERE=$(cd "$(dirname "$0")" && pwd)
CACHE=${NK_CACHE:-$HOME/.cache/nodekeeper}
BASE=$CACHE/cri
NETNS=${NK_NETNS:-nk-node}
BRIDGE=${NK_CNI_BRIDGE:-nk0}
POD_CIDR=${NK_POD_CIDR:-10.244.0.0/24}
SNAP=${NK_CRI_SNAPSHOTTER:-overlayfs}
MIRRORS=${NK_CRI_MIRRORS:-}
HANDLERS=${NK_CRI_RUNTIME_HANDLERS:-}
SOCK=$BASE/run/containerd.sock
CFG=$BASE/etc/containerd.toml
PIDFILE=$BASE/containerd.pid
NETNS_MARKER=$BASE/netns-created
LOG=$BASE/logs/containerd.log
PAUSE_IMAGE=registry.k8s.io/pause:3.10-local
BUSYBOX_IMAGE=docker.io/library/busybox:local
IMAGES_REV=3 # bump when the image recipes below change: forces a rebuild and re-import
export PATH=/usr/local/go/bin:/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin

exec 3>&1 1>&2 # stdout is for the endpoint only (fd 3; daemons must not inherit it)
log() { echo "[cri-up] $*"; }
die() { log "ERROR: $*"; exit 1; }
now() { date +%s.%N; }
since() { awk -v a="$1" -v b="$(now)" 'BEGIN{printf "%.2fs", b-a}'; }
ctr() { command ctr --address "$SOCK" "$@"; }
answers() { ctr version >/dev/null 2>&1; }
pid_alive() { local p; p=$(cat "$PIDFILE" 2>/dev/null) && [[ -n $p ]] && kill -0 "$p" 2>/dev/null; }
netns_ino() { stat -L -c %i "/run/netns/$NETNS" 2>/dev/null; }
# in_netns PID: is PID's network namespace /run/netns/$NETNS?
in_netns() { [[ -n $(netns_ino) && $(stat -L -c %i "/proc/$1/ns/net" 2>/dev/null) == "$(netns_ino)" ]]; }
images_present() {
  local have; have=$(ctr -n k8s.io images ls -q 2>/dev/null) || return 1
  grep -qxF "$PAUSE_IMAGE" <<<"$have" && grep -qxF "$BUSYBOX_IMAGE" <<<"$have" &&
    [[ $(cat "$BASE/images/imported" 2>/dev/null) == "$IMAGES_REV $SNAP_USED" ]]
}
endpoint() { echo "unix://$SOCK" >&3; }

[[ $(id -u) == 0 ]] || die "must run as root (containerd, runc and network namespaces need it)"
[[ ${#BRIDGE} -le 15 ]] || die "NK_CNI_BRIDGE=$BRIDGE is longer than 15 characters"
[[ ${#SOCK} -le 98 ]] || die "socket path $SOCK is too long for a unix socket (with .ttrpc > 104 bytes): use a shorter NK_CACHE"
T0=$(now)
mkdir -p "$BASE"/{root,state,run,etc,logs,runc,cni/net.d,cni/ipam,images,build}

# ---------------------------------------------------------------- fast path: already up
SNAP_USED=$(cat "$BASE/snapshotter" 2>/dev/null || echo "$SNAP")
if pid_alive && answers; then
  pid=$(cat "$PIDFILE")
  if in_netns "$pid"; then
    if images_present; then
      log "containerd already running (pid $pid, netns $NETNS): $(since "$T0")"
      endpoint; exit 0
    fi
  else
    # e.g. `make down` deleted the namespace under it: its pods are unreachable anyway
    log "containerd pid $pid is not in network namespace $NETNS (deleted or recreated?): restarting it"
    "$HERE/cri-down.sh"
  fi
fi

# ---------------------------------------------------------------- 1. packages
t=$(now)
need=()
for p in containerd runc containernetworking-plugins busybox-static iptables gcc libc6-dev iproute2 util-linux; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q 'install ok installed' || need+=("$p")
done
if ((${#need[@]})); then
  log "installing ${need[*]}"
  for _ in $(seq 1 150); do # another apt may hold the lock on a shared machine
    fuser /var/lib/dpkg/lock-frontend >/dev/null 2>&1 || break; sleep 2
  done
  # No systemd here: the packages' own containerd service is not started; we start ours below.
  DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends "${need[@]}" >"$BASE/logs/apt.log" 2>&1 || {
    apt-get update >>"$BASE/logs/apt.log" 2>&1
    DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends "${need[@]}" >>"$BASE/logs/apt.log" 2>&1 ||
      die "apt-get install ${need[*]} failed; see $BASE/logs/apt.log"
  }
  log "installed ${need[*]}: $(since "$t")"
fi

# ---------------------------------------------------------------- cleanup on failure
# Whatever this run started or created is undone if a later step fails.
STARTED_PID= CREATED_NETNS=
on_exit() {
  local rc=$?
  ((rc == 0)) && return
  if [[ -n $STARTED_PID ]]; then
    if kill -0 "$STARTED_PID" 2>/dev/null; then
      log "failed: stopping the containerd this run started (pid $STARTED_PID)"
      kill -TERM "$STARTED_PID" 2>/dev/null
      for _ in $(seq 1 50); do kill -0 "$STARTED_PID" 2>/dev/null || break; sleep 0.1; done
      kill -KILL "$STARTED_PID" 2>/dev/null
    fi
    rm -f "$PIDFILE"
  fi
  if [[ -n $CREATED_NETNS ]]; then
    log "failed: deleting network namespace $NETNS created by this run"
    ip netns del "$NETNS" 2>/dev/null; rm -f "$NETNS_MARKER"
  fi
  log "see $LOG"
}
trap on_exit EXIT

# ---------------------------------------------------------------- 2. network namespace
if [[ -z $(netns_ino) ]]; then
  ip netns add "$NETNS"
  CREATED_NETNS=1
  echo "$NETNS" >"$NETNS_MARKER"
  log "created network namespace $NETNS"
fi
nsenter --net="/run/netns/$NETNS" ip link set lo up
# Per-namespace sysctls, written from inside the namespace only (never the root one's).
nsenter --net="/run/netns/$NETNS" sh -c 'echo 1 >/proc/sys/net/ipv4/ip_forward' 2>/dev/null ||
  log "warning: cannot enable ip_forward in $NETNS"
for f in bridge-nf-call-iptables bridge-nf-call-ip6tables; do
  nsenter --net="/run/netns/$NETNS" sh -c "echo 1 >/proc/sys/net/bridge/$f" 2>/dev/null ||
    log "warning: cannot set net.bridge.$f in $NETNS (br_netfilter not available?)"
done

# ---------------------------------------------------------------- 3. snapshotter probe
if ! pid_alive; then
  SNAP_USED=$SNAP
  if [[ $SNAP == overlayfs ]]; then
    d=$(mktemp -d "$BASE/build/ovl.XXXX"); mkdir -p "$d"/{l,u,w,m}
    if mount -t overlay overlay -o "lowerdir=$d/l,upperdir=$d/u,workdir=$d/w" "$d/m" 2>/dev/null; then
      umount "$d/m"
    else
      log "overlay mount failed under $BASE: using the native snapshotter"; SNAP_USED=native
    fi
    rm -rf "$d"
  fi
  echo "$SNAP_USED" >"$BASE/snapshotter"
fi

# ---------------------------------------------------------------- 4. configs
# restrict_oom_score_adj is required here: runc lacks CAP_SYS_RESOURCE and cannot give the
# pause container oom_score_adj -998 ("runc create failed: ... can't get final child's PID
# from pipe: EOF"); the option clamps scores to containerd's own.
# write_if_changed FILE: stdin -> FILE, only when different (keeps mtimes of a running setup)
CHANGED=
write_if_changed() {
  local tmp; tmp=$(mktemp "$1.XXXX"); cat >"$tmp"
  if cmp -s "$tmp" "$1"; then rm -f "$tmp"; else mv "$tmp" "$1"; CHANGED+=" $1"; fi
}
MIRROR_CFG=
for m in $MIRRORS; do
  [[ $m == *=http*://* ]] || die "NK_CRI_MIRRORS: '$m' is not HOST=http(s)://ENDPOINT"
  MIRROR_CFG+=$'\n'"    [plugins.\"io.containerd.grpc.v1.cri\".registry.mirrors.\"${m%%=*}\"]"
  MIRROR_CFG+=$'\n'"      endpoint = [\"${m#*=}\"]"
done
RUNC_OPTS="
          BinaryName = \"/usr/sbin/runc\"
          Root = \"$BASE/runc\"
          SystemdCgroup = false"
HANDLER_CFG=
for h in $HANDLERS; do
  [[ $h =~ ^[a-z0-9][a-z0-9.-]*$ ]] || die "NK_CRI_RUNTIME_HANDLERS: '$h' is not a RuntimeClass handler name"
  HANDLER_CFG+=$'\n'"      [plugins.\"io.containerd.grpc.v1.cri\".containerd.runtimes.$h]"
  HANDLER_CFG+=$'\n'"        runtime_type = \"io.containerd.runc.v2\""
  HANDLER_CFG+=$'\n'"        [plugins.\"io.containerd.grpc.v1.cri\".containerd.runtimes.$h.options]$RUNC_OPTS"
done
write_if_changed "$CFG" <<EOF
version = 2
root = "$BASE/root"
state = "$BASE/state"
disabled_plugins = ["io.containerd.internal.v1.opt", "io.containerd.snapshotter.v1.aufs", "io.containerd.snapshotter.v1.btrfs", "io.containerd.snapshotter.v1.devmapper", "io.containerd.snapshotter.v1.zfs"]

[grpc]
  address = "$SOCK"
[ttrpc]
  address = "$SOCK.ttrpc"
[debug]
  level = "info"
[metrics]
  address = ""

[plugins]
  [plugins."io.containerd.grpc.v1.cri"]
    sandbox_image = "$PAUSE_IMAGE"
    stream_server_address = "127.0.0.1"
    stream_server_port = "0"
    enable_selinux = false
    netns_mounts_under_state_dir = true
    restrict_oom_score_adj = true
    [plugins."io.containerd.grpc.v1.cri".containerd]
      snapshotter = "$SNAP_USED"
      default_runtime_name = "runc"
      [plugins."io.containerd.grpc.v1.cri".containerd.runtimes.runc]
        runtime_type = "io.containerd.runc.v2"
        [plugins."io.containerd.grpc.v1.cri".containerd.runtimes.runc.options]
          BinaryName = "/usr/sbin/runc"
          Root = "$BASE/runc"
          SystemdCgroup = false$HANDLER_CFG
    [plugins."io.containerd.grpc.v1.cri".cni]
      bin_dir = "/usr/lib/cni"
      conf_dir = "$BASE/cni/net.d"
      max_conf_num = 1$MIRROR_CFG
EOF
# CNI: a bridge inside the node namespace, host-local IPAM with its own dataDir, no
# masquerade (nothing leaves the machine), portmap for hostPorts.
write_if_changed "$BASE/cni/net.d/10-nodekeeper.conflist" <<EOF
{
  "cniVersion": "1.0.0",
  "name": "nodekeeper",
  "plugins": [
    {
      "type": "bridge",
      "bridge": "$BRIDGE",
      "isGateway": true,
      "ipMasq": false,
      "hairpinMode": true,
      "ipam": {
        "type": "host-local",
        "dataDir": "$BASE/cni/ipam",
        "ranges": [[{ "subnet": "$POD_CIDR" }]],
        "routes": [{ "dst": "0.0.0.0/0" }]
      }
    },
    { "type": "portmap", "capabilities": { "portMappings": true } }
  ]
}
EOF

# ---------------------------------------------------------------- 5. images (docker-archive tarballs)
B=$BASE/build
# mkimage NAME ROOTFS OUT.tar CMD_JSON: a reproducible single-layer docker-archive
mkimage() {
  local name=$1 rootfs=$2 out=$3 cmd=$4 w diff cfg; w=$(mktemp -d "$B/img.XXXX")
  tar --sort=name --mtime=@0 --owner=0 --group=0 --numeric-owner -C "$rootfs" -cf "$w/layer.tar" .
  diff=$(sha256sum "$w/layer.tar" | cut -d' ' -f1)
  mkdir "$w/$diff"; mv "$w/layer.tar" "$w/$diff/layer.tar"
  printf '{"architecture":"amd64","os":"linux","created":"1970-01-01T00:00:00Z","config":{"Env":["PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"],"Cmd":%s,"WorkingDir":"/"},"rootfs":{"type":"layers","diff_ids":["sha256:%s"]},"history":[{"created":"1970-01-01T00:00:00Z","created_by":"nodekeeper hack/cri-up.sh"}]}' \
    "$cmd" "$diff" >"$w/config.json"
  cfg=$(sha256sum "$w/config.json" | cut -d' ' -f1); mv "$w/config.json" "$w/$cfg.json"
  printf '[{"Config":"%s.json","RepoTags":["%s"],"Layers":["%s/layer.tar"]}]' "$cfg" "$name" "$diff" >"$w/manifest.json"
  tar --sort=name --mtime=@0 --owner=0 --group=0 --numeric-owner -C "$w" -cf "$out.tmp" .
  mv "$out.tmp" "$out"; rm -rf "$w"
}
if [[ $(cat "$BASE/images/rev" 2>/dev/null) != "$IMAGES_REV" || ! -f $BASE/images/pause.tar || ! -f $BASE/images/busybox.tar ]]; then
  t=$(now)
  rm -rf "$B/pause-rootfs" "$B/busybox-rootfs"; mkdir -p "$B/pause-rootfs"
  # pause: exits 0 on TERM/INT, reaps zombies, otherwise sleeps forever
  cat >"$B/pause.c" <<'EOF'
#include <signal.h>
#include <unistd.h>
#include <sys/wait.h>
static void down(int s) { (void)s; _exit(0); }
static void reap(int s) { (void)s; while (waitpid(-1, 0, WNOHANG) > 0) {} }
int main(void) {
  struct sigaction a = {0}, r = {0};
  a.sa_handler = down; sigaction(SIGINT, &a, 0); sigaction(SIGTERM, &a, 0);
  r.sa_handler = reap; r.sa_flags = SA_NOCLDSTOP; sigaction(SIGCHLD, &r, 0);
  for (;;) pause();
}
EOF
  gcc -static -Os -o "$B/pause-rootfs/pause" "$B/pause.c"
  strip "$B/pause-rootfs/pause"
  # busybox: static busybox, a symlink per applet (sh, sleep, httpd, nc, cat, echo, wget, ...)
  R=$B/busybox-rootfs
  mkdir -p "$R"/{bin,etc,tmp,proc,sys,dev,root,www,var/run}
  cp /bin/busybox "$R/bin/busybox"
  # wget and nslookup come from hack/nktools (a static Go helper using Go's resolver):
  # Debian's wget applet dies with SIGSEGV on -T and its nslookup ignores the search list.
  # busybox's sh runs its own applets before $PATH, so the two applets are renamed in the
  # copy's applet table (wge_, nslooku_: same length, same sort order) and sh finds
  # /bin/wget and /bin/nslookup
  perl -0777 -pi -e 's/\0wc\0wget\0which\0/\0wc\0wge_\0which\0/; s/\0nsenter\0nslookup\0nuke\0/\0nsenter\0nslooku_\0nuke\0/' "$R/bin/busybox"
  ! "$R/bin/busybox" --list | grep -qxE 'wget|nslookup' || die "could not take wget/nslookup out of busybox's applets"
  for a in $("$R/bin/busybox" --list); do [[ $a == busybox ]] || ln -sf busybox "$R/bin/$a"; done
  (cd "$HERE/.." && CGO_ENABLED=0 GOFLAGS=-buildvcs=false go build -trimpath -ldflags "-s -w" -o "$R/bin/nktools" ./hack/nktools) ||
    die "building hack/nktools (wget, nslookup for the busybox image)"
  ln -sf nktools "$R/bin/wget"; ln -sf nktools "$R/bin/nslookup"
  for a in sh sleep httpd nc cat echo wget nslookup; do [[ -L $R/bin/$a ]] || die "the busybox image lacks $a"; done
  printf 'root:x:0:0:root:/root:/bin/sh\nnobody:x:65534:65534:nobody:/:/bin/false\n' >"$R/etc/passwd"
  printf 'root:x:0:\nnogroup:x:65534:\n' >"$R/etc/group"
  echo 'hello from nodekeeper busybox' >"$R/www/index.html"
  chmod 1777 "$R/tmp"
  mkimage "$PAUSE_IMAGE" "$B/pause-rootfs" "$BASE/images/pause.tar" '["/pause"]'
  mkimage "$BUSYBOX_IMAGE" "$R" "$BASE/images/busybox.tar" '["sh"]'
  echo "$IMAGES_REV" >"$BASE/images/rev"
  rm -f "$BASE/images/imported"
  log "images built: $(since "$t")"
fi

# ---------------------------------------------------------------- 6. containerd
if pid_alive && answers; then
  log "containerd already running (pid $(cat "$PIDFILE"))"
  [[ -z $CHANGED ]] || log "warning: changed$CHANGED; run hack/cri-down.sh and this again to apply"
else
  if pid_alive; then # alive but not answering: not ours to guess about
    die "containerd pid $(cat "$PIDFILE") is alive but $SOCK does not answer; run hack/cri-down.sh"
  fi
  t=$(now)
  rm -f "$SOCK" "$SOCK.ttrpc" "$PIDFILE"
  # setsid: its own session, so it outlives this shell. nsenter execs containerd, so $! is
  # containerd's PID. PATH must reach runc, the shim and the CNI plugins' helpers.
  CPATH=/usr/sbin:/usr/bin:/sbin:/bin
  [[ -z ${NK_CONTAINERD_DIR:-} ]] || CPATH="$NK_CONTAINERD_DIR:$CPATH"
  setsid nsenter --net="/run/netns/$NETNS" env PATH="$CPATH" \
    containerd --config "$CFG" </dev/null >>"$LOG" 2>&1 3>&- &
  STARTED_PID=$!
  echo "$STARTED_PID" >"$PIDFILE"
  for _ in $(seq 1 600); do
    answers && break
    kill -0 "$STARTED_PID" 2>/dev/null || { tail -20 "$LOG"; die "containerd exited during start"; }
    sleep 0.05
  done
  answers || { tail -20 "$LOG"; die "containerd not answering on $SOCK after 30s"; }
  in_netns "$STARTED_PID" || die "containerd pid $STARTED_PID is not in network namespace $NETNS"
  log "containerd started (pid $STARTED_PID, netns $NETNS, snapshotter $SNAP_USED, log $LOG): $(since "$t")"
fi

# ---------------------------------------------------------------- 7. import images into k8s.io
if ! images_present; then
  t=$(now)
  for i in pause busybox; do
    ctr -n k8s.io images import --snapshotter "$SNAP_USED" "$BASE/images/$i.tar" >/dev/null
  done
  echo "$IMAGES_REV $SNAP_USED" >"$BASE/images/imported"
  log "images imported ($PAUSE_IMAGE, $BUSYBOX_IMAGE): $(since "$t")"
fi

STARTED_PID= CREATED_NETNS= # success: nothing to undo
log "ready: $(since "$T0")"
endpoint
