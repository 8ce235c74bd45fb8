#!/usr/bin/env bash
# conformance.sh: run upstream's node conformance suite (k8s.io/kubernetes/test/e2e_node,
# v1.37.2, the [NodeConformance] specs) against a local single-node cluster (hack/run.sh)
# whose node is nodekeeper — or, with NODE=kubelet, the upstream kubelet v1.37.2 on the
# same containerd, as the baseline of what passes on this machine.
#
#   hack/conformance.sh [all]   (make conformance) build, images, cluster up, run, summary, down
#   hack/conformance.sh build   e2e_node.test, agnhost, nnp (and kubelet for NODE=kubelet)
#   hack/conformance.sh build kubelet   only the named binaries (make bench-pods needs only the kubelet)
#   hack/conformance.sh images  build the test images (docker-archive tarballs, cached)
#   hack/conformance.sh import  images built and loaded into the running cluster
#   hack/conformance.sh up      cluster up (hack/run.sh) + images imported + bearer token
#   hack/conformance.sh run     run the selected specs against the cluster that is up
#   hack/conformance.sh summary summarize the latest run of this cluster (or the folder given)
#   hack/conformance.sh status  progress of the latest run, per shard
#   hack/conformance.sh list    print the names of the selected specs (dry run)
#   hack/conformance.sh down    stop the cluster (hack/run.sh down with the same env)
#
# Selection (all optional):
#   FOCUS   ginkgo focus regex                 (default '\[NodeConformance\]')
#   SKIP    ginkgo skip regex                  (default '\[Flaky\]|\[Slow\]|\[Serial\]|\[Disruptive\]|\[Feature:')
#   SPECS   a file of spec names, one a line, as the summary prints them (runs exactly those,
#           within FOCUS/SKIP); '#' comments and blank lines ignored
#   SHARDS  N e2e_node.test processes run at once on disjoint spec lists (default 8: the
#           specs mostly wait, a failing one for minutes); each Ordered container stays in one
#           shard
#   STALL   minutes a shard may print nothing before it is interrupted (default 20; the
#           longest spec timeout is 10 min). Its running spec is reported interrupted, its
#           specs not yet run are listed in notrun.txt (rerun them with SPECS=)
#   TIMEOUT ginkgo suite timeout (default 3h)
#   KEEP=1  `all` leaves the cluster up at the end
#   MERGE   an earlier results folder: the summary takes its results for the specs this run
#           did not run (with SPECS=<that folder>/failures.txt: a rerun of its failures)
#
# Node and cluster:
#   NODE    nodekeeper (default) | kubelet (upstream v1.37.2, built from the module proxy)
#   The cluster gets its own names and addresses so it can coexist with `make run` and other
#   helpers: NK_NETNS (nk-conf), NK_HOST_IF/NK_NODE_IF (nkc-host0/nkc-node0), NK_HOST_IP /
#   NK_NODE_IP (198.18.81.1/.2), NK_NODE_NAME (nk-conf), NK_APISERVER_PORT (6481),
#   NK_ETCD_PORT (23881), NK_KCM_PORT (10281), NK_SCHED_PORT (10282), NK_CNI_BRIDGE (nkconf0),
#   NK_CRI_CACHE ($NK_CACHE/conf), NK_RUN_DIR ($NK_CACHE/conf/run-$NODE), NK_DEVICE_PLUGIN_DIR
#   (/var/lib/kubelet/device-plugins, the suite's: one cluster at a time). NODE=kubelet has its
#   own defaults (nk-confk, nkck-*, 198.18.82.0/30, 6482, 23883, 10283/10284, nkconfk0,
#   $NK_CACHE/confk), so the two clusters can run side by side.
#
# Everything is kept under $NK_CACHE/conformance (CONF_DIR): bin/ (e2e_node.test, kubelet,
# agnhost, nnp), images/ (tarballs), results/<node>-<time>/ (per shard: the scratch working
# folder, ginkgo output, JUnit XML; summary.txt). The upstream binaries are built in the
# throwaway module of hack/k8s-bins.sh, with its GOCACHE and under its lock.
set -euo pipefail
# the whole script is one compound command, parsed before it runs: editing the file while a
# long run goes on does not change that run
{

ROOT=$(cd "$(dirname "$0")/.." && pwd)
K8S_VERSION=1.37.2
NK_CACHE=${NK_CACHE:-$HOME/.cache/nodekeeper}
K8S_CACHE=$NK_CACHE/k8s
CONF_DIR=${CONF_DIR:-$NK_CACHE/conformance}
BIN=$CONF_DIR/bin
NODE=${NODE:-nodekeeper}
FOCUS=${FOCUS-'\[NodeConformance\]'}
SKIP=${SKIP-'\[Flaky\]|\[Slow\]|\[Serial\]|\[Disruptive\]|\[Feature:'}
SPECS=${SPECS:-}
SHARDS=${SHARDS:-8}
STALL=${STALL:-20}
TIMEOUT=${TIMEOUT:-3h}
export PATH=/usr/local/go/bin:/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin

case $NODE in nodekeeper | kubelet) ;; *) echo "NODE must be nodekeeper or kubelet, got '$NODE'" >&2; exit 2 ;; esac

# the cluster's identity: distinct defaults, exported for hack/run.sh and hack/cri-up.sh;
# the kubelet's cluster has its own set, so both can be up at once
if [[ $NODE == nodekeeper ]]; then n=1 k=""; else n=2 k=k; fi
export NK_CACHE
export NK_NETNS=${NK_NETNS:-nk-conf$k}
export NK_HOST_IF=${NK_HOST_IF:-nkc$k-host0}
export NK_NODE_IF=${NK_NODE_IF:-nkc$k-node0}
export NK_HOST_IP=${NK_HOST_IP:-198.18.8$n.1}
export NK_NODE_IP=${NK_NODE_IP:-198.18.8$n.2}
export NK_NODE_NAME=${NK_NODE_NAME:-nk-conf$k}
# no cluster DNS (make run's CoreDNS): the suite's pods use dnsPolicy Default, and the
# figures stay comparable with the runs before make run had one
export NK_DNS=${NK_DNS:-0}
export NK_APISERVER_PORT=${NK_APISERVER_PORT:-648$n}
export NK_ETCD_PORT=${NK_ETCD_PORT:-2388$((n * 2 - 1))}
export NK_KCM_PORT=${NK_KCM_PORT:-1028$((n * 2 - 1))}
export NK_SCHED_PORT=${NK_SCHED_PORT:-1028$((n * 2))}
export NK_CNI_BRIDGE=${NK_CNI_BRIDGE:-nkconf${k}0}
export NK_CRI_CACHE=${NK_CRI_CACHE:-$NK_CACHE/conf$k}
export NK_RUN_DIR=${NK_RUN_DIR:-$NK_CACHE/conf/run-$NODE}
export NK_READ_ONLY_PORT=${NK_READ_ONLY_PORT:-10255} # as the suite's own kubelet config
# the device plugin specs register at the path upstream's kubelet hard-codes (as the kubelet
# baseline does, so two clusters running those specs at once would meet there)
export NK_DEVICE_PLUGIN_DIR=${NK_DEVICE_PLUGIN_DIR:-/var/lib/kubelet/device-plugins}
export NK_NODE_AGENT=$NODE
export NK_KUBELET_BIN=$BIN/kubelet
RUN=$NK_RUN_DIR
# the latest run's results: per cluster (another cluster's runs go on beside this one's)
LATEST=$CONF_DIR/results/latest-$NODE
[[ $NK_NETNS == "nk-conf$k" ]] || LATEST+=-$NK_NETNS
# specs the upstream kubelet fails on this machine too: "name ## reason" lines
EXPECTED=${EXPECTED:-$ROOT/test/conformance/expected-failures.txt}
CRI_SOCK=$NK_CRI_CACHE/cri/run/containerd.sock

log() { echo "[conformance] $*" >&2; }
die() { log "ERROR: $*"; exit 1; }
now() { date +%s; }

# ============================================================ 1. upstream binaries
# version stamps as hack/k8s-bins.sh (and kubernetes' hack/lib/golang.sh) set them
ldflags() {
  local date p ld="-s -w" info
  info=$(go env GOMODCACHE)/cache/download/k8s.io/kubernetes/@v/v$K8S_VERSION.info
  date=$(sed -n 's/.*"Time":"\([^"]*\)".*/\1/p' "$info" 2>/dev/null); date=${date:-1970-01-01T00:00:00Z}
  for p in k8s.io/component-base/version k8s.io/client-go/pkg/version; do
    ld+=" -X $p.gitVersion=v$K8S_VERSION -X $p.gitMajor=1 -X $p.gitMinor=$(cut -d. -f2 <<<"$K8S_VERSION")"
    ld+=" -X $p.gitTreeState=clean -X $p.buildDate=$date"
  done
  echo "$ld"
}

# stamp NAME: the binary was built from this version with this recipe
STAMP_REV=1
stamp_ok() { [[ -x $BIN/$1 && $(cat "$BIN/.$1.stamp" 2>/dev/null) == "v$K8S_VERSION rev$STAMP_REV" ]]; }
stamp() { echo "v$K8S_VERSION rev$STAMP_REV" >"$BIN/.$1.stamp"; }

build() {
  local want=(e2e_node.test agnhost nnp) todo=() b
  [[ $NODE == kubelet || ${BUILD_KUBELET:-0} == 1 ]] && want+=(kubelet)
  (($#)) && want=("$@")
  for b in "${want[@]}"; do stamp_ok "$b" || todo+=("$b"); done
  ((${#todo[@]})) || { log "binaries ready in $BIN"; return; }
  # the control-plane binaries first (they create the throwaway module); no-op when present
  K8S_EXTRA_BINS="kube-controller-manager kube-scheduler" "$ROOT/hack/k8s-bins.sh" >/dev/null
  local src=$K8S_CACHE/src/kubernetes-v$K8S_VERSION
  [[ -f $src/go.mod ]] || die "no throwaway module at $src (hack/k8s-bins.sh should have made it)"
  mkdir -p "$BIN"
  (
    # same isolation and lock as hack/k8s-bins.sh: it rewrites go.mod when it builds
    exec 9>"$K8S_CACHE/.lock"; flock 9
    export GOWORK=off GOFLAGS=-buildvcs=false CGO_ENABLED=0 GOCACHE=$K8S_CACHE/go-build
    unset GOOS GOARCH GOEXPERIMENT
    cd "$src"
    log "resolving k8s.io/kubernetes/test/e2e_node@v$K8S_VERSION (with its test dependencies)"
    go get -t "k8s.io/kubernetes/test/e2e_node@v$K8S_VERSION" "k8s.io/kubernetes/cmd/kubelet@v$K8S_VERSION" \
      "k8s.io/kubernetes/test/images/agnhost@v$K8S_VERSION" >&2
    ld=$(ldflags)
    for b in "${todo[@]}"; do
      t=$(now)
      case $b in
      e2e_node.test)
        log "building e2e_node.test v$K8S_VERSION (cold: ~7 min on 2 cores)"
        go test -c -vet=off -trimpath -tags selinux,notest,grpcnotrace -ldflags "all=$ld" \
          -o "$BIN/.e2e_node.test.tmp" k8s.io/kubernetes/test/e2e_node ;;
      kubelet)
        log "building kubelet v$K8S_VERSION"
        go build -trimpath -tags selinux,notest,grpcnotrace -ldflags "all=$ld" \
          -o "$BIN/.kubelet.tmp" k8s.io/kubernetes/cmd/kubelet ;;
      agnhost)
        log "building agnhost $(cat "$(go env GOMODCACHE)/k8s.io/kubernetes@v$K8S_VERSION/test/images/agnhost/VERSION")"
        go build -trimpath -ldflags "-s -w" -o "$BIN/.agnhost.tmp" k8s.io/kubernetes/test/images/agnhost ;;
      nnp)
        go build -trimpath -ldflags "-s -w" -o "$BIN/.nnp.tmp" k8s.io/kubernetes/test/images/nonewprivs ;;
      esac
      mv -f "$BIN/.$b.tmp" "$BIN/$b"; stamp "$b"
      log "built $b in $(($(now) - t))s"
    done
  )
  log "binaries ready in $BIN"
}

# ============================================================ 2. test images
# The suite's images, built locally under the exact references it uses (tagged, so pulled
# IfNotPresent: nothing is fetched) from Debian packages and the upstream sources, as
# single-layer docker-archive tarballs imported with `ctr images import` (the same way
# hack/cri-up.sh makes its images). What each one holds follows upstream's Dockerfiles in
# k8s.io/kubernetes/test/images; `invalid.registry.k8s.io/...` is left unresolvable.
IMG=$CONF_DIR/images
IMAGES_REV=5 # bump when a recipe below changes: rebuilds and re-imports
E2E=registry.k8s.io/e2e-test-images
IMAGE_REFS=(
  "$E2E/agnhost:2.66.1" "$E2E/agnhost:2.55"
  "$E2E/busybox:1.37.0-2"
  "$E2E/nginx:1.27.0-2" "$E2E/nginx:1.28.0-2"
  "registry.k8s.io/pause:3.10.2"
  "$E2E/nonroot:1.5"
  "$E2E/nonewprivs:1.4"
  "$E2E/glibc-dns-testing:2.1.1"
)
IMAGE_TARS=(agnhost agnhost-2.55 busybox nginx nginx-1.28 pause nonroot nonewprivs glibc-dns-testing)
IMAGE_PKGS=(bzip2 make curl netcat-openbsd bind9-dnsutils iproute2 socat bash util-linux gcc libc6-dev jq)

apt_install() {
  local need=() p
  for p in "$@"; do
    dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q 'install ok installed' || need+=("$p")
  done
  ((${#need[@]})) || return 0
  log "installing ${need[*]}"
  for _ in $(seq 1 150); do fuser /var/lib/dpkg/lock-frontend >/dev/null 2>&1 || break; sleep 2; done
  DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends "${need[@]}" >&2 || {
    apt-get update >&2
    DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends "${need[@]}" >&2
  }
}

# mkimage OUT.tar ROOTFS CONFIG_JSON REF...: a reproducible single-layer docker-archive
# whose image config is CONFIG_JSON (Entrypoint, Cmd, User, ...) and whose tags are REF...
mkimage() {
  local out=$1 rootfs=$2 conf=$3 w diff cfg tags; shift 3
  w=$(mktemp -d "$IMG/.img.XXXX")
  tar --sort=name --mtime=@0 --owner=0 --group=0 --numeric-owner -C "$rootfs" -cf "$w/layer.tar" .
  diff=$(sha256sum "$w/layer.tar" | cut -d' ' -f1)
  mkdir "$w/$diff"; mv "$w/layer.tar" "$w/$diff/layer.tar"
  jq -cn --argjson c "$conf" --arg d "sha256:$diff" '{architecture: "amd64", os: "linux",
    created: "1970-01-01T00:00:00Z",
    config: ({Env: ["PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"], WorkingDir: "/"} + $c),
    rootfs: {type: "layers", diff_ids: [$d]},
    history: [{created: "1970-01-01T00:00:00Z", created_by: "nodekeeper hack/conformance.sh"}]}' >"$w/config.json"
  cfg=$(sha256sum "$w/config.json" | cut -d' ' -f1); mv "$w/config.json" "$w/$cfg.json"
  tags=$(printf '%s\n' "$@" | jq -R . | jq -cs .)
  jq -cn --arg c "$cfg.json" --argjson t "$tags" --arg l "$diff/layer.tar" '[{Config: $c, RepoTags: $t, Layers: [$l]}]' >"$w/manifest.json"
  tar --sort=name --mtime=@0 --owner=0 --group=0 --numeric-owner -C "$w" -cf "$out.tmp" manifest.json "$cfg.json" "$diff"
  mv "$out.tmp" "$out"; rm -rf "$w"
}

# copy_bin ROOTFS SRC [DEST]: a dynamically linked binary and every shared library ldd
# names (at the same paths), so Debian's tools run in a busybox-based rootfs
copy_bin() {
  local r=$1 src=$2 dst=${3:-$2} lib
  mkdir -p "$r$(dirname "$dst")"; cp -L "$src" "$r$dst"
  for lib in $(ldd "$src" 2>/dev/null | grep -o '/[^ ]*'); do
    [[ -e $r$lib ]] && continue
    mkdir -p "$r$(dirname "$lib")"; cp -L "$lib" "$r$lib"
  done
}

# busybox_rootfs DIR: upstream's busybox image layout: the busybox built by build_busybox
# (upstream 1.37.0, as the docker busybox:1.37.0 image the suite's busybox:1.37.0-2 mirrors)
# with a symlink per applet in /bin (sh is its ash), the image's /etc/passwd and /etc/group
busybox_rootfs() {
  local r=$1 a
  rm -rf "$r"; mkdir -p "$r"/{bin,sbin,usr/bin,usr/sbin,etc,tmp,root,home,var/spool/mail,var/www,proc,sys,dev}
  chmod 1777 "$r/tmp"; chmod 700 "$r/root"
  cp "$IMG/build/busybox-bin" "$r/bin/busybox"
  for a in $("$r/bin/busybox" --list); do [[ $a == busybox ]] || ln -sf busybox "$r/bin/$a"; done
  cat >"$r/etc/passwd" <<'PW'
root:x:0:0:root:/root:/bin/sh
daemon:x:1:1:daemon:/usr/sbin:/bin/false
bin:x:2:2:bin:/bin:/bin/false
sys:x:3:3:sys:/dev:/bin/false
sync:x:4:100:sync:/bin:/bin/sync
mail:x:8:8:mail:/var/spool/mail:/bin/false
www-data:x:33:33:www-data:/var/www:/bin/false
operator:x:37:37:Operator:/var:/bin/false
nobody:x:65534:65534:nobody:/home:/bin/false
PW
  cat >"$r/etc/group" <<'GR'
root:x:0:
daemon:x:1:
bin:x:2:
sys:x:3:
adm:x:4:
tty:x:5:
disk:x:6:
lp:x:7:
mail:x:8:
kmem:x:9:
wheel:x:10:root
cdrom:x:11:
dialout:x:18:
floppy:x:19:
video:x:28:
audio:x:29:
tape:x:32:
www-data:x:33:
operator:x:37:
utmp:x:43:
plugdev:x:46:
staff:x:50:
lock:x:54:
netdev:x:82:
users:x:100:
nogroup:x:65534:
GR
  printf 'hosts: files dns\n' >"$r/etc/nsswitch.conf"
}

# build_busybox: $IMG/build/busybox-bin, upstream busybox 1.37.0 built as the docker-library
# busybox image builds it (defconfig, static, their config changes). Not Debian's
# busybox-static: Debian reverts upstream's ash change that keeps environment variables
# whose names are not shell identifiers (envFrom keys such as data-1, which the ConfigMap /
# Secret / env specs read back with `sh -c env`), and its build lacks nmeter (the `%Nt` time
# stamps of the init/sidecar specs). The source is the upstream release tarball as Debian's
# source package ships it (busybox_1.37.0.orig.tar.bz2, checked against the release's
# sha256), fetched with `apt-get source` from the machine's own Debian mirror through a
# private sources list (trixie has 1.37.0; the machine's apt set-up is not touched). ≈2 min
# on 2 idle cores, cached.
BUSYBOX_VERSION=1.37.0
BUSYBOX_SHA256=3311dff32e746499f4df0d5df04d7eb396382d7e108bb9250e7b519b837043a4
BUSYBOX_SUITE=trixie
build_busybox() {
  local b=$IMG/build w mirror tarball stamp="$BUSYBOX_VERSION $BUSYBOX_SHA256 static-dl1" c
  [[ -x $b/busybox-bin && $(cat "$b/busybox-bin.stamp" 2>/dev/null) == "$stamp" ]] && return
  mkdir -p "$b"
  tarball=$b/busybox_$BUSYBOX_VERSION.orig.tar.bz2
  if [[ $(sha256sum "$tarball" 2>/dev/null | cut -d' ' -f1) != "$BUSYBOX_SHA256" ]]; then
    # the mirror serving the machine's own Debian suite (apt-cache policy names its URI)
    mirror=$(apt-cache policy | awk -v n="n=$(. /etc/os-release; echo "$VERSION_CODENAME")," '
      $1 ~ /^[0-9]+$/ && $2 ~ /:\/\// {uri = $2; next}
      /release / && index($0, "o=Debian,") && index($0, n) && !index($0, "Security") && uri {print uri; exit}')
    [[ -n $mirror ]] || die "no Debian mirror in the machine's apt sources (apt-cache policy)"
    w=$(mktemp -d "$b/.apt.XXXX"); mkdir -p "$w/lists/partial" "$w/cache/archives/partial"
    echo "deb-src [signed-by=/usr/share/keyrings/debian-archive-keyring.gpg] $mirror $BUSYBOX_SUITE main" >"$w/sources.list"
    local o=(-o "Dir::Etc::SourceList=$w/sources.list" -o Dir::Etc::SourceParts=/dev/null
      -o "Dir::State::Lists=$w/lists" -o "Dir::Cache=$w/cache" -o APT::Sandbox::User=root)
    log "fetching the busybox $BUSYBOX_VERSION source package ($BUSYBOX_SUITE, $mirror)"
    { apt-get "${o[@]}" update && (cd "$w" && apt-get "${o[@]}" source --download-only busybox); } >&2 ||
      die "apt-get source busybox ($BUSYBOX_SUITE) failed"
    [[ -f $w/busybox_$BUSYBOX_VERSION.orig.tar.bz2 ]] || die "the $BUSYBOX_SUITE source package is not busybox $BUSYBOX_VERSION: $(ls "$w")"
    mv "$w/busybox_$BUSYBOX_VERSION.orig.tar.bz2" "$tarball"; rm -rf "$w"
  fi
  [[ $(sha256sum "$tarball" | cut -d' ' -f1) == "$BUSYBOX_SHA256" ]] || die "$tarball: sha256 differs from the busybox $BUSYBOX_VERSION release"
  log "building busybox $BUSYBOX_VERSION (static, defconfig)"
  rm -rf "$b/busybox-src"; mkdir -p "$b/busybox-src"
  tar -xjf "$tarball" -C "$b/busybox-src" --strip-components=1
  (
    cd "$b/busybox-src"
    make defconfig >/dev/null
    # as docker-library/busybox's builder: static; ar that creates archives; no wide-char
    # input limit; no tc (does not build with current kernel headers); sync without -d/-f
    for c in CONFIG_STATIC CONFIG_AR CONFIG_FEATURE_AR_CREATE CONFIG_FEATURE_AR_LONG_FILENAMES; do
      sed -i "s/^# $c is not set\$/$c=y/; s/^$c=.*/$c=y/" .config
    done
    sed -i 's/^CONFIG_LAST_SUPPORTED_WCHAR=.*/CONFIG_LAST_SUPPORTED_WCHAR=0/' .config
    for c in CONFIG_TC CONFIG_FEATURE_TC_INGRESS CONFIG_FEATURE_SYNC_FANCY; do
      sed -i "s/^$c=y\$/# $c is not set/" .config
    done
    make oldconfig </dev/null >/dev/null
    grep -q '^CONFIG_STATIC=y' .config && grep -q '^CONFIG_ASH=y' .config && grep -q '^CONFIG_NMETER=y' .config
    make -j"$(nproc)" busybox >build.log 2>&1 || { tail -30 build.log >&2; exit 1; }
  ) || die "busybox $BUSYBOX_VERSION build failed (see $b/busybox-src/build.log)"
  strip -o "$b/busybox-bin" "$b/busybox-src/busybox"
  "$b/busybox-bin" --list | grep -qx nmeter || die "busybox built without nmeter"
  echo "$stamp" >"$b/busybox-bin.stamp"
}

build_helpers() { # busybox and pause, static C
  local b=$IMG/build
  mkdir -p "$b"
  build_busybox
  cat >"$b/pause.c" <<'C'
/* pause: exits 0 on TERM/INT, reaps zombies, otherwise sleeps forever (as upstream's) */
#include <signal.h>
#include <stdio.h>
#include <string.h>
#include <unistd.h>
#include <sys/wait.h>
static void down(int s) { (void)s; _exit(0); }
static void reap(int s) { (void)s; while (waitpid(-1, 0, WNOHANG) > 0) {} }
int main(int argc, char **argv) {
  if (argc > 1 && !strcmp(argv[1], "-v")) { puts("pause.c v3.10.2"); return 0; }
  struct sigaction a = {0}, r = {0};
  a.sa_handler = down; sigaction(SIGINT, &a, 0); sigaction(SIGTERM, &a, 0);
  r.sa_handler = reap; r.sa_flags = SA_NOCLDSTOP; sigaction(SIGCHLD, &r, 0);
  for (;;) pause();
}
C
  gcc -static -Os -o "$b/pause" "$b/pause.c" && strip "$b/pause"
}

images_ready() {
  local t
  [[ $(cat "$IMG/rev" 2>/dev/null) == "$IMAGES_REV" ]] || return 1
  for t in "${IMAGE_TARS[@]}"; do [[ -f $IMG/$t.tar ]] || return 1; done
}

images() {
  if images_ready; then log "images ready in $IMG"; return; fi
  BUILD_KUBELET=0 build # agnhost and nnp come from the module
  apt_install "${IMAGE_PKGS[@]}"
  local t r b=$IMG/build k8s
  t=$(now); mkdir -p "$IMG"; build_helpers
  k8s=$(go env GOMODCACHE)/k8s.io/kubernetes@v$K8S_VERSION

  # busybox:1.37.0-2 (upstream: the busybox:1.37.0 image as is)
  busybox_rootfs "$b/busybox"
  mkimage "$IMG/busybox.tar" "$b/busybox" '{"Cmd":["sh"]}' "$E2E/busybox:1.37.0-2"

  # pause:3.10.2: /pause as 65535:65535
  rm -rf "$b/pause-rootfs"; mkdir -p "$b/pause-rootfs"; cp "$b/pause" "$b/pause-rootfs/pause"
  mkimage "$IMG/pause.tar" "$b/pause-rootfs" '{"Entrypoint":["/pause"],"User":"65535:65535"}' "registry.k8s.io/pause:3.10.2"

  # nonroot:1.5: a base image whose USER is 1234
  busybox_rootfs "$b/nonroot"
  mkimage "$IMG/nonroot.tar" "$b/nonroot" '{"Cmd":["sh"],"User":"1234"}' "$E2E/nonroot:1.5"

  # nonewprivs:1.4: /usr/local/bin/nnp (prints its effective uid), setuid root
  busybox_rootfs "$b/nonewprivs"; mkdir -p "$b/nonewprivs/usr/local/bin"
  cp "$BIN/nnp" "$b/nonewprivs/usr/local/bin/nnp"; chmod 4755 "$b/nonewprivs/usr/local/bin/nnp"
  mkimage "$IMG/nonewprivs.tar" "$b/nonewprivs" '{"Cmd":["nnp"]}' "$E2E/nonewprivs:1.4"

  # agnhost:2.66.1 (also tagged 2.55, the suite's "previous" agnhost): upstream's alpine image
  # with curl, nc (openbsd), dig, ss, socat, bash, ipcs; /agnhost and the /agnhost-2 symlink,
  # /uploads, the porter certificate, user 1000 in group 50000
  r=$b/agnhost; busybox_rootfs "$r"
  for a in bash curl nc dig ss socat ipcs; do rm -f "$r/bin/$a"; done
  copy_bin "$r" /bin/bash /bin/bash
  copy_bin "$r" "$(command -v curl)" /usr/bin/curl
  copy_bin "$r" "$(readlink -f "$(command -v nc.openbsd)")" /usr/bin/nc
  copy_bin "$r" "$(command -v dig)" /usr/bin/dig
  copy_bin "$r" "$(command -v ss)" /usr/sbin/ss
  copy_bin "$r" "$(command -v socat)" /usr/bin/socat
  copy_bin "$r" "$(command -v ipcs)" /usr/bin/ipcs
  cp "$BIN/agnhost" "$r/agnhost"; ln -s agnhost "$r/agnhost-2"
  mkdir -p "$r/uploads"
  cp "$k8s/test/images/agnhost/porter/localhost.crt" "$k8s/test/images/agnhost/porter/localhost.key" "$r/"
  chmod 644 "$r/localhost.crt" "$r/localhost.key"
  echo 'user-defined-in-image:x:1000:1000::/home/user-defined-in-image:/bin/sh' >>"$r/etc/passwd"
  printf 'user-defined-in-image:x:1000:\ngroup-defined-in-image:x:50000:user-defined-in-image\n' >>"$r/etc/group"
  mkdir -p "$r/home/user-defined-in-image"
  # two tags, two images (same layer, a label apart): the runtime reports a container's
  # image by the first tag of its image ID, and specs compare it with the one they asked for
  local c='"Entrypoint":["/agnhost"],"Cmd":["pause"],"ExposedPorts":{"80/tcp":{},"8080/tcp":{},"8081/tcp":{},"9376/tcp":{},"5000/tcp":{}}'
  mkimage "$IMG/agnhost.tar" "$r" "{$c,\"Labels\":{\"version\":\"2.66.1\"}}" "$E2E/agnhost:2.66.1"
  mkimage "$IMG/agnhost-2.55.tar" "$r" "{$c,\"Labels\":{\"version\":\"2.55\"}}" "$E2E/agnhost:2.55"

  # nginx:1.27.0-2 / 1.28.0-2 (upstream: nginx:1.2x-alpine): nginx serving
  # /usr/share/nginx/html on :80, logs to stdout/stderr, workers as user nginx (101)
  r=$b/nginx; busybox_rootfs "$r"
  rm -rf "$b/nginx-deb"; mkdir -p "$b/nginx-deb"
  (cd "$b/nginx-deb" && apt-get download nginx nginx-common >&2 2>/dev/null) || die "apt-get download nginx failed"
  for d in "$b"/nginx-deb/*.deb; do dpkg-deb -x "$d" "$b/nginx-deb/x"; done
  copy_bin "$r" "$b/nginx-deb/x/usr/sbin/nginx" /usr/sbin/nginx
  mkdir -p "$r"/etc/nginx/conf.d "$r"/usr/share/nginx/html "$r"/var/log/nginx "$r"/var/lib/nginx "$r"/var/cache/nginx "$r"/run
  cp "$b/nginx-deb/x/etc/nginx/mime.types" "$r/etc/nginx/mime.types"
  ln -sf /dev/stdout "$r/var/log/nginx/access.log"; ln -sf /dev/stderr "$r/var/log/nginx/error.log"
  echo 'nginx:x:101:101:nginx:/var/cache/nginx:/sbin/nologin' >>"$r/etc/passwd"
  echo 'nginx:x:101:nginx' >>"$r/etc/group"
  cat >"$r/etc/nginx/nginx.conf" <<'NG'
user  nginx;
worker_processes  auto;
error_log  /var/log/nginx/error.log notice;
pid        /run/nginx.pid;
events {
    worker_connections  1024;
}
http {
    include       /etc/nginx/mime.types;
    default_type  application/octet-stream;
    access_log  /var/log/nginx/access.log;
    sendfile        on;
    keepalive_timeout  65;
    include /etc/nginx/conf.d/*.conf;
}
NG
  cat >"$r/etc/nginx/conf.d/default.conf" <<'NG'
server {
    listen       80;
    server_name  localhost;
    location / {
        root   /usr/share/nginx/html;
        index  index.html index.htm;
    }
    error_page   500 502 503 504  /50x.html;
    location = /50x.html {
        root   /usr/share/nginx/html;
    }
}
NG
  printf '<!DOCTYPE html>\n<html>\n<head>\n<title>Welcome to nginx!</title>\n</head>\n<body>\n<h1>Welcome to nginx!</h1>\n</body>\n</html>\n' >"$r/usr/share/nginx/html/index.html"
  printf '<!DOCTYPE html>\n<html>\n<head>\n<title>Error</title>\n</head>\n<body>\n<h1>An error occurred.</h1>\n</body>\n</html>\n' >"$r/usr/share/nginx/html/50x.html"
  printf '#!/bin/sh\nset -e\nexec "$@"\n' >"$r/docker-entrypoint.sh"; chmod 755 "$r/docker-entrypoint.sh"
  c='"Entrypoint":["/docker-entrypoint.sh"],"Cmd":["nginx","-g","daemon off;"],"StopSignal":"SIGQUIT","ExposedPorts":{"80/tcp":{}}'
  mkimage "$IMG/nginx.tar" "$r" "{$c,\"Labels\":{\"version\":\"1.27.0-2\"}}" "$E2E/nginx:1.27.0-2"
  mkimage "$IMG/nginx-1.28.tar" "$r" "{$c,\"Labels\":{\"version\":\"1.28.0-2\"}}" "$E2E/nginx:1.28.0-2"

  # glibc-dns-testing:2.1.1 (upstream: debian-base with dnsutils): glibc's hostname (the
  # hostname -f of the FQDN specs), dig, nslookup, host
  r=$b/glibc-dns-testing; busybox_rootfs "$r"
  for a in hostname dig nslookup host; do rm -f "$r/bin/$a"; done
  copy_bin "$r" "$(readlink -f /bin/hostname)" /bin/hostname
  copy_bin "$r" "$(command -v dig)" /usr/bin/dig
  copy_bin "$r" "$(command -v nslookup)" /usr/bin/nslookup
  copy_bin "$r" "$(command -v host)" /usr/bin/host
  mkimage "$IMG/glibc-dns-testing.tar" "$r" '{"Cmd":["sh"]}' "$E2E/glibc-dns-testing:2.1.1"

  echo "$IMAGES_REV" >"$IMG/rev"
  log "images built in $(($(now) - t))s: $IMG"
}

# import_images: into the node's containerd, when it lacks one of them or they changed
import_images() {
  local c=(ctr --address "$CRI_SOCK" -n k8s.io) have ref missing=0 t snap
  snap=$(cat "$NK_CRI_CACHE/cri/snapshotter" 2>/dev/null || echo overlayfs)
  have=$("${c[@]}" images ls -q) || die "containerd at $CRI_SOCK does not answer"
  for ref in "${IMAGE_REFS[@]}"; do grep -qxF "$ref" <<<"$have" || missing=1; done
  if ((missing == 0)) && [[ $(cat "$NK_CRI_CACHE/cri/conformance-images" 2>/dev/null) == "$IMAGES_REV $snap" ]]; then
    return
  fi
  t=$(now)
  for i in "${IMAGE_TARS[@]}"; do "${c[@]}" images import --snapshotter "$snap" "$IMG/$i.tar" >/dev/null; done
  echo "$IMAGES_REV $snap" >"$NK_CRI_CACHE/cri/conformance-images"
  log "imported ${#IMAGE_REFS[@]} test images into $CRI_SOCK in $(($(now) - t))s"
}

# ============================================================ 2b. a registry for PullAlways
# Specs with imagePullPolicy: Always make the runtime contact the registry even for an image
# it has. The node's containerd gets registry.k8s.io mirrored (NK_CRI_MIRRORS, hack/cri-up.sh)
# to a local registry — Debian's docker-registry, unpacked (not installed: its package would
# start a service) — listening on 127.0.0.1 inside the node's network namespace, holding the
# same test images. Other registries (invalid.registry.k8s.io, gcr.io) stay unreachable.
REGISTRY_PORT=${REGISTRY_PORT:-5000}
export NK_CRI_RUNTIME_HANDLERS=${NK_CRI_RUNTIME_HANDLERS-test-handler} # the RuntimeClass specs' handler
export NK_CRI_MIRRORS=${NK_CRI_MIRRORS-registry.k8s.io=http://127.0.0.1:$REGISTRY_PORT}
REGISTRY_DIR=$NK_CRI_CACHE/registry
REGISTRY_PID=$RUN/pids/registry.pid

registry_bin() {
  [[ -x $BIN/docker-registry ]] && return
  local d; d=$(mktemp -d "$CONF_DIR/.deb.XXXX")
  (cd "$d" && apt-get download docker-registry >&2 2>/dev/null) || die "apt-get download docker-registry failed"
  dpkg-deb -x "$d"/docker-registry_*.deb "$d/x"
  mkdir -p "$BIN"; mv "$d/x/usr/bin/docker-registry" "$BIN/docker-registry"; rm -rf "$d"
}

registry_up() {
  [[ -n $NK_CRI_MIRRORS ]] || return 0
  registry_bin
  mkdir -p "$REGISTRY_DIR" "$RUN/pids" "$RUN/logs"
  local in=(nsenter --net="/run/netns/$NK_NETNS") p
  if ! { p=$(cat "$REGISTRY_PID" 2>/dev/null) && kill -0 "$p" 2>/dev/null; }; then
    cat >"$RUN/registry.yml" <<EOF
version: 0.1
log: {level: warn}
storage:
  filesystem: {rootdirectory: $REGISTRY_DIR}
  delete: {enabled: true}
http: {addr: "127.0.0.1:$REGISTRY_PORT"}
EOF
    setsid "${in[@]}" "$BIN/docker-registry" serve "$RUN/registry.yml" </dev/null >"$RUN/logs/registry.log" 2>&1 &
    echo $! >"$REGISTRY_PID"
    for _ in $(seq 1 50); do "${in[@]}" curl -sf "http://127.0.0.1:$REGISTRY_PORT/v2/" >/dev/null && break; sleep 0.2; done
    "${in[@]}" curl -sf "http://127.0.0.1:$REGISTRY_PORT/v2/" >/dev/null || die "registry did not answer (see $RUN/logs/registry.log)"
    log "registry started in $NK_NETNS on 127.0.0.1:$REGISTRY_PORT (pid $(cat "$REGISTRY_PID"))"
  fi
  [[ $(cat "$REGISTRY_DIR/.pushed" 2>/dev/null) == "$IMAGES_REV" ]] && return
  local ref t; t=$(now)
  for ref in "${IMAGE_REFS[@]}"; do
    [[ $ref == registry.k8s.io/* ]] || continue
    "${in[@]}" ctr --address "$CRI_SOCK" -n k8s.io images push --plain-http \
      "127.0.0.1:$REGISTRY_PORT/${ref#registry.k8s.io/}" "$ref" >/dev/null
  done
  echo "$IMAGES_REV" >"$REGISTRY_DIR/.pushed"
  log "pushed the test images to the registry in $(($(now) - t))s"
}

registry_down() {
  local p
  p=$(cat "$REGISTRY_PID" 2>/dev/null) || return 0
  if kill -0 "$p" 2>/dev/null && [[ $(readlink -f "/proc/$p/exe") == */docker-registry ]]; then
    kill -TERM "$p"; for _ in $(seq 1 25); do kill -0 "$p" 2>/dev/null || break; sleep 0.2; done
    kill -KILL "$p" 2>/dev/null || true
    log "stopped the registry (pid $p)"
  fi
  rm -f "$REGISTRY_PID"
}

# ============================================================ 3. cluster
kubectl() { command "$K8S_CACHE/v$K8S_VERSION/bin/kubectl" --kubeconfig "$RUN/admin.kubeconfig" "$@"; }

up() {
  build
  images
  log "bringing up the cluster (node: $NODE, run dir $RUN)"
  "$ROOT/hack/run.sh" up >"$CONF_DIR/run-up-$NODE.log" || { tail -30 "$CONF_DIR/run-up-$NODE.log" >&2; die "hack/run.sh up failed"; }
  import_images
  registry_up
  # the suite authenticates with a bearer token and needs a superuser: a ServiceAccount
  # bound to cluster-admin (kube-controller-manager creates nothing for it: the token is
  # requested directly)
  kubectl apply -f - >/dev/null <<EOF
apiVersion: v1
kind: ServiceAccount
metadata: {name: conformance, namespace: kube-system}
---
apiVersion: rbac.authorization.k8s.io/v1
kind: ClusterRoleBinding
metadata: {name: "nodekeeper:conformance"}
roleRef: {apiGroup: rbac.authorization.k8s.io, kind: ClusterRole, name: cluster-admin}
subjects: [{kind: ServiceAccount, name: conformance, namespace: kube-system}]
EOF
  kubectl -n kube-system create token conformance --duration=24h >"$RUN/conformance.token"
  local n i
  for i in $(seq 1 120); do
    n=$(kubectl get nodes -o name | wc -l)
    [[ $n == 1 && $(kubectl get node "$NK_NODE_NAME" -o 'jsonpath={.status.conditions[?(@.type=="Ready")].status}' 2>/dev/null) == True ]] && break
    sleep 1
  done
  ((n == 1)) || die "the suite wants exactly one Node; the cluster has $n"
  [[ $(kubectl get node "$NK_NODE_NAME" -o 'jsonpath={.status.conditions[?(@.type=="Ready")].status}') == True ]] ||
    die "node $NK_NODE_NAME is not Ready after 120s"
  log "cluster up: node $NK_NODE_NAME ($NODE) Ready, API https://$NK_HOST_IP:$NK_APISERVER_PORT"
}

down() {
  registry_down
  "$ROOT/hack/run.sh" down
}

# ============================================================ 4. the suite
# suite_args: what every e2e_node.test invocation gets. The suite runs in the node's
# network namespace (nsenter --net, keeping the host's mounts): some specs call the node
# agent's healthz on 127.0.0.1:10248 from the test process, and the API server is reachable
# there through the veth. The suite is told the node's cluster domain (--dns-domain, which
# e2e_node.test defaults to "", the kubelet's default clusterDomain; nodekeeper's is
# cluster.local), as read from the node's configz: the hostname/FQDN specs expect it.
suite() {
  local domain
  domain=$(kubectl get --raw "/api/v1/nodes/$NK_NODE_NAME/proxy/configz" | jq -r '.kubeletconfig.clusterDomain // ""') ||
    die "reading the node's configz failed"
  nsenter --net="/run/netns/$NK_NETNS" "$BIN/e2e_node.test" --dns-domain="$domain" \
    --start-services=false --prepull-images=false \
    --host="https://$NK_HOST_IP:$NK_APISERVER_PORT" --bearer-token="$(cat "$RUN/conformance.token")" \
    --container-runtime-endpoint="unix://$CRI_SOCK" --image-service-endpoint="unix://$CRI_SOCK" \
    --container-runtime-process-name=containerd --container-runtime-pid-file="$NK_CRI_CACHE/cri/containerd.pid" \
    --kubectl-path="$K8S_CACHE/v$K8S_VERSION/bin/kubectl" \
    --ginkgo.no-color --ginkgo.timeout="$TIMEOUT" "$@"
}

# regex_quote: a literal for RE2 (only its metacharacters escaped)
regex_quote() { sed -e 's/[][\.|$^*+?(){}]/\\&/g'; }

# selected OUT.json: the names of the specs FOCUS/SKIP select (a ginkgo dry run; needs no
# cluster), one per line, as ginkgo matches them (container texts and the It text joined
# by spaces); with SPECS, only those also listed there
selected() {
  local d; d=$(mktemp -d "$CONF_DIR/.dry.XXXX")
  (cd "$d" && "$BIN/e2e_node.test" --ginkgo.dry-run --ginkgo.no-color --ginkgo.focus="$FOCUS" \
    --ginkgo.skip="$SKIP" --ginkgo.json-report="$d/dry.json" >/dev/null 2>&1) || true
  [[ -s $d/dry.json ]] || die "dry run of e2e_node.test produced no report (see $d)"
  jq -r '.[0].SpecReports[] | select(.LeafNodeType == "It" and .State == "passed") |
    [((.ContainerHierarchyTexts // []) + [.LeafNodeText])[] | select(. != "")] | join(" ")' "$d/dry.json" |
    sort -u >"$1.names"
  # the specs of an Ordered container must run in one process (they share its setup). The
  # report has each container's source location: a container is Ordered when its line in
  # the module's source says so; a spec's group is its outermost Ordered container, or itself
  local ordered modcache
  modcache=$(go env GOMODCACHE)
  ordered=$(jq -r '.[0].SpecReports[] | select(.LeafNodeType == "It") | (.ContainerHierarchyLocations // [])[] |
    "\(.FileName):\(.LineNumber)"' "$d/dry.json" | sort -u |
    while IFS=: read -r f l; do
      if sed -n "${l}p" "$modcache/$f" 2>/dev/null | grep -q 'Ordered'; then echo "$f:$l"; fi
    done | jq -R . | jq -cs .)
  jq -r --argjson ord "$ordered" '.[0].SpecReports[] | select(.LeafNodeType == "It" and .State == "passed") |
    [((.ContainerHierarchyTexts // []) + [.LeafNodeText])[] | select(. != "")] as $t |
    (.ContainerHierarchyTexts // []) as $c |
    ([(.ContainerHierarchyLocations // []) | to_entries[] |
      select(("\(.value.FileName):\(.value.LineNumber)") as $k | $ord | index([$k])) | .key] | first) as $i |
    [($t | join(" ")), (if $i == null then ($t | join(" ")) else "ordered: " + ($c[0:$i + 1] | join(" ")) end)] | @tsv' \
    "$d/dry.json" | sort -u >"$1.groups"
  if [[ -n $SPECS ]]; then
    [[ -f $SPECS ]] || die "SPECS=$SPECS: no such file"
    grep -v '^[[:space:]]*\(#\|$\)' "$SPECS" | sed 's/[[:space:]]*$//' | sort -u >"$d/want"
    comm -12 "$1.names" "$d/want" >"$1.names.tmp"; mv "$1.names.tmp" "$1.names"
    awk -F'\t' 'NR == FNR {w[$0] = 1; next} ($1 in w)' "$1.names" "$1.groups" >"$1.groups.tmp"; mv "$1.groups.tmp" "$1.groups"
    local missing; missing=$(comm -13 "$1.names" "$d/want" | wc -l)
    ((missing == 0)) || log "warning: $missing name(s) in $SPECS match no selected spec (see: comm -13 $1.names $d/want)"
  fi
  rm -rf "$d"
}

# shard GROUPS N: deal the groups (an Ordered container, or one spec) into N lists, the
# biggest group first into the list with the fewest specs
shard() {
  local groups=$1 n=$2
  awk -F'\t' '{c[$2]++; m[$2] = m[$2] $1 "\n"} END {for (g in c) printf "%d\t%s\n", c[g], g}' "$groups" |
    sort -t$'\t' -k1,1nr -k2 | cut -f2 >"$groups.order"
  awk -F'\t' -v n="$n" -v out="$groups" '
    NR == FNR {spec[$2] = spec[$2] $1 "\n"; cnt[$2]++; next}
    { best = 0; for (i = 1; i < n; i++) if (load[i] < load[best]) best = i
      load[best] += cnt[$0]; printf "%s", spec[$0] > (out ".shard" best) }' "$groups" "$groups.order"
}

run() {
  [[ -x $BIN/e2e_node.test ]] || die "no $BIN/e2e_node.test: run '$0 build' first"
  [[ -s $RUN/conformance.token ]] || die "no cluster token in $RUN: run '$0 up' first"
  local out i focus t pids=() rc=0
  out=$CONF_DIR/results/$NODE-$(date +%Y%m%d-%H%M%S)
  mkdir -p "$out"; ln -sfn "$out" "$LATEST"
  # namespaces an interrupted run left behind (the suite's own cleanup did not run)
  local stale; stale=$(kubectl get ns -o name | grep -v -E '^namespace/(default|kube-system|kube-public|kube-node-lease)$' || true)
  if [[ -n $stale ]]; then
    log "deleting $(wc -l <<<"$stale") namespace(s) left by an earlier run"
    kubectl delete $stale --wait=false >/dev/null
  fi
  # and the cluster-scoped objects specs create (the RuntimeClass specs' test-handler)
  kubectl delete runtimeclass --all --wait=false >/dev/null 2>&1 || true
  t=$(now)
  selected "$out/selected"
  if ((SHARDS > 1)) || [[ -n $SPECS ]]; then
    log "$(wc -l <"$out/selected.names") specs selected; $SHARDS shard(s)"
    shard "$out/selected.groups" "$SHARDS"
    for ((i = 0; i < SHARDS; i++)); do
      [[ -s $out/selected.groups.shard$i ]] || continue
      mkdir -p "$out/shard$i"
      focus="^E2eNode Suite ($(regex_quote <"$out/selected.groups.shard$i" | paste -sd'|'))\$"
      printf '%s\n' "$focus" >"$out/shard$i/focus.regex"
      (cd "$out/shard$i" && suite --report-dir="$out/shard$i" --ginkgo.focus="$focus" --ginkgo.skip="$SKIP" \
        --ginkgo.json-report="$out/shard$i/report.json" >"$out/shard$i/ginkgo.log" 2>&1) &
      pids+=($!)
      log "shard $i: $(wc -l <"$out/selected.groups.shard$i") specs (pid $!, log $out/shard$i/ginkgo.log)"
    done
  else
    mkdir -p "$out/shard0"
    (cd "$out/shard0" && suite --report-dir="$out/shard0" --ginkgo.focus="$FOCUS" --ginkgo.skip="$SKIP" \
      --ginkgo.json-report="$out/shard0/report.json" >"$out/shard0/ginkgo.log" 2>&1) &
    pids+=($!)
    log "running (pid $!, log $out/shard0/ginkgo.log)"
  fi
  watchdog "$out" "${pids[@]}" &
  local wd=$!
  for i in "${pids[@]}"; do wait "$i" || rc=1; done
  kill "$wd" 2>/dev/null || true
  log "suite finished in $(($(now) - t))s"
  summary ${MERGE:-} "$out"
  return 0
}

# watchdog OUT PID...: interrupt (SIGINT, so ginkgo still writes its reports) the
# e2e_node.test of a shard whose log has been silent for $STALL minutes: a spec can hang
# with no timeout of its own (seen: the suite's Prometheus text parser looping on a node's
# /metrics/cadvisor output)
watchdog() {
  local out=$1 p c log; shift
  while sleep 60; do
    for p in "$@"; do
      kill -0 "$p" 2>/dev/null || continue
      for c in $(pgrep -P "$p" 2>/dev/null); do
        log=$(readlink "/proc/$c/cwd" 2>/dev/null)/ginkgo.log
        [[ -f $log && -n $(find "$log" -mmin +"$STALL" 2>/dev/null) ]] || continue
        log "shard $(basename "$(dirname "$log")") printed nothing for $STALL min: interrupting pid $c"
        kill -INT "$c" 2>/dev/null || true
      done
    done
  done
}

# summary [DIR...]: counts and failing specs from the shards' ginkgo JSON reports of a
# results folder (default: the latest run). With several folders, a spec's result in a later
# one replaces the earlier one's (a rerun of the failures: `SPECS=<first>/failures.txt
# MERGE=<first> run`), and the merged summary is written into the last folder.
summary() {
  (($#)) || set -- "$LATEST"
  local dirs=() d out
  for d in "$@"; do dirs+=("$(readlink -f "$d")"); done
  out=${dirs[-1]}
  for d in "${dirs[@]}"; do
    local reports=("$d"/shard*/report.json)
    [[ -f ${reports[0]} ]] || die "no report.json under $d"
    # a spec the filters left out is reported as skipped with no message: not counted
    jq -r '.[0].SpecReports[]? | select(.LeafNodeType == "It") |
        select(.State != "skipped" or ((.Failure.Message // "") != "")) |
        [.State, ([((.ContainerHierarchyTexts // []) + [.LeafNodeText])[] | select(. != "")] | join(" ")),
         (.RunTime / 1e9 | floor | tostring),
         ((.Failure.Message // "") | gsub("[\n\t]+"; " ") | .[0:300])] | @tsv' "${reports[@]}"
  done | awk -F'\t' -v OFS='\t' '
    # not run because an earlier spec of its Ordered container failed: "blocked", not passed
    $1 == "skipped" && $4 ~ /earlier spec in an ordered container failed/ {$1 = "blocked"}
    {r[$2] = $0} END {for (k in r) print r[k]}' | sort -t$'\t' -k2 >"$out/results.tsv"
  ((${#dirs[@]} == 1)) || printf '%s\n' "${dirs[@]}" >"$out/merged-from.txt"
  awk -F'\t' '$1 != "passed" && $1 != "skipped" {print $2}' "$out/results.tsv" >"$out/failures.txt"
  awk -F'\t' '$1 == "passed" {print $2}' "$out/results.tsv" >"$out/passed.txt"
  # selected specs with no result (an interrupted shard's rest)
  : >"$out/notrun.txt"
  if [[ -f ${dirs[0]}/selected.names ]]; then
    cut -f2 "$out/results.tsv" | sort -u | comm -13 - <(sort -u "${dirs[0]}/selected.names") >"$out/notrun.txt"
  fi
  {
    echo "node conformance ($NODE, e2e_node.test v$K8S_VERSION), $(basename "$out")$( ((${#dirs[@]} == 1)) || echo " (merged over: $(for d in "${dirs[@]::${#dirs[@]}-1}"; do basename "$d"; done | paste -sd' '))")"
    awk -F'\t' '{n[$1 == "passed" || $1 == "skipped" || $1 == "blocked" ? $1 : "failed"]++; t++}
      END {printf "%d passed, %d failed, %d skipped (of %d with a result)%s\n", n["passed"], n["failed"] + n["blocked"], n["skipped"], t,
        n["blocked"] ? sprintf("; of the failed, %d did not run: an earlier spec of their Ordered container failed", n["blocked"]) : ""}' "$out/results.tsv"
    [[ ! -s $out/notrun.txt ]] || echo "$(wc -l <"$out/notrun.txt") selected specs have no result (interrupted shard): $out/notrun.txt"
    if [[ -s $out/failures.txt ]]; then
      echo "failed:"
      awk -F'\t' '$1 != "passed" && $1 != "skipped" {printf "  [%s %ss] %s\n", $1, $3, $2}' "$out/results.tsv"
    fi
    # against the committed list of specs the upstream kubelet fails here too
    if [[ -f $EXPECTED ]]; then
      sed -n 's/[[:space:]]*##.*$//p' "$EXPECTED" | sort -u >"$out/expected.names"
      sort -u "$out/failures.txt" | comm -23 - "$out/expected.names" >"$out/unexpected.txt"
      echo "$(wc -l <"$out/unexpected.txt") failed that are not in $(realpath --relative-to="$ROOT" "$EXPECTED")$([[ -s $out/unexpected.txt ]] && echo ":")"
      sed 's/^/  /' "$out/unexpected.txt"
    fi
  } | tee "$out/summary.txt"
  log "JUnit: $(ls "$out"/shard*/junit*.xml 2>/dev/null | paste -sd' '); failing names (usable as SPECS=): $out/failures.txt"
}

case ${1:-all} in
build) shift; build "$@" ;;
images) images ;;
import) # (re)build the images and load them into the running cluster's containerd and registry
  images; import_images; registry_up ;;
up) up ;;
run) run ;;
summary) shift; summary "$@" ;;
status) # progress of the latest run: specs finished (ginkgo's bullets) and failed, per shard
  for f in "$LATEST"/shard*/ginkgo.log; do
    printf '%s: %s finished, %s failed\n' "$(basename "$(dirname "$f")")" "$(grep -o '•' "$f" | wc -l)" \
      "$(grep -c '^• \[\(FAILED\|TIMEDOUT\|PANICKED\|INTERRUPTED\)\]' "$f")"
  done ;;
list) d=$(mktemp -d); selected "$d/s"; cat "$d/s.names"; rm -rf "$d" ;;
down) down ;;
all)
  up
  if [[ ${KEEP:-0} != 1 ]]; then trap down EXIT; fi
  run ;;
*) die "usage: $0 [all|build|images|up|run|summary|status|list|down]" ;;
esac
exit
}
