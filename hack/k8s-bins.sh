#!/usr/bin/env bash
# k8s-bins.sh: build the binaries that sigs.k8s.io/controller-runtime/pkg/envtest
# needs (kube-apiserver, etcd, and kubectl), plus any extra Kubernetes components named in
# K8S_EXTRA_BINS (e.g. "kube-controller-manager kube-scheduler" for `make run`), from
# source fetched through the Go module proxy. No other network access is used.
# Adapted from ../shared/recipes/envtest-bins.sh.
#
# Idempotent: a binary that already exists and reports the requested version is not
# rebuilt. When all three are present the script exits in well under a second and
# never calls `go`.
#
# Usage:   export KUBEBUILDER_ASSETS="$(hack/k8s-bins.sh)"
#
# Environment (all optional):
#   ENVTEST_CACHE_DIR     root for everything the script keeps
#                         (default ${XDG_CACHE_HOME:-$HOME/.cache}/envtest-bins)
#   ENVTEST_BIN_DIR       where the binaries go; use it as KUBEBUILDER_ASSETS
#                         (default $ENVTEST_CACHE_DIR/bin/k8s-v$ENVTEST_K8S_VERSION)
#   ENVTEST_K8S_VERSION   kube-apiserver/kubectl version, from module k8s.io/kubernetes
#                         (default 1.37.2; staging modules are used at v0.<minor>.<patch>)
#   ENVTEST_ETCD_VERSION  etcd version, from module go.etcd.io/etcd/server/v3 (default 3.7.3)
#   ENVTEST_KUBECTL       1 (default) to build kubectl as well, 0 to skip it (envtest runs without it)
#   ENVTEST_ETCD_SOURCE   go (default) | debian (unpacks Debian's etcd-server .deb, 3.4.23 on
#                         bookworm; it works, but kube-apiserver turns off RequestWatchProgress)
#   ENVTEST_GOCACHE       GOCACHE for these builds (default $ENVTEST_CACHE_DIR/go-build; about
#                         4 GiB after a full build, and the project's own builds never reuse it)
#   GOMODCACHE            inherited from the caller, so module downloads are shared with the project
set -euo pipefail

K8S_VERSION="${ENVTEST_K8S_VERSION:-1.37.2}";  K8S_VERSION="${K8S_VERSION#v}"
ETCD_VERSION="${ENVTEST_ETCD_VERSION:-3.7.3}"; ETCD_VERSION="${ETCD_VERSION#v}"
CACHE_DIR="${ENVTEST_CACHE_DIR:-${NK_CACHE:-$HOME/.cache/nodekeeper}/k8s}"
BIN_DIR="${ENVTEST_BIN_DIR:-$CACHE_DIR/v$K8S_VERSION/bin}"
EXTRA_BINS="${K8S_EXTRA_BINS:-}"
WITH_KUBECTL="${ENVTEST_KUBECTL:-1}"
ETCD_SOURCE="${ENVTEST_ETCD_SOURCE:-go}"
[[ "$CACHE_DIR" == /* ]] || CACHE_DIR="$PWD/$CACHE_DIR"
[[ "$BIN_DIR" == /* ]] || BIN_DIR="$PWD/$BIN_DIR"

log() { echo "[k8s-bins] $*" >&2; }
die() { log "ERROR: $*"; exit 1; }

case "$K8S_VERSION" in 1.*.*) ;; *) die "ENVTEST_K8S_VERSION must look like 1.37.2, got '$K8S_VERSION'";; esac
case "$ETCD_SOURCE" in go|debian) ;; *) die "ENVTEST_ETCD_SOURCE must be go or debian";; esac
K8S_MINOR="${K8S_VERSION#1.}"; K8S_MINOR="${K8S_MINOR%%.*}"
STAGING_VERSION="v0.${K8S_VERSION#1.}"          # 1.37.2 -> v0.37.2

etcd_want() {
  if [[ "$ETCD_SOURCE" == go ]]; then echo "$ETCD_VERSION"; return; fi
  local cand
  cand="$(apt-cache policy etcd-server 2>/dev/null | awk '/Candidate:/{print $2}')"
  if [[ -z "$cand" || "$cand" == "(none)" ]] && [[ "$(id -u)" == 0 ]]; then
    apt-get update >&2
    cand="$(apt-cache policy etcd-server 2>/dev/null | awk '/Candidate:/{print $2}')"
  fi
  [[ -n "$cand" && "$cand" != "(none)" ]] || die "apt has no etcd-server candidate (run apt-get update)"
  cand="${cand#*:}"; echo "${cand%%-*}"          # 3.4.23-4+b4 -> 3.4.23
}

have_apiserver() {
  [[ -x "$BIN_DIR/kube-apiserver" ]] &&
    [[ "$("$BIN_DIR/kube-apiserver" --version 2>/dev/null)" == "Kubernetes v$K8S_VERSION" ]]
}
have_kubectl() {
  [[ "$WITH_KUBECTL" != 1 ]] && return 0
  [[ -x "$BIN_DIR/kubectl" ]] || return 1
  # capture first, then match: `... | grep -q` under pipefail fails on SIGPIPE
  local out; out="$("$BIN_DIR/kubectl" version --client 2>/dev/null)" || return 1
  [[ $'\n'"$out"$'\n' == *$'\n'"Client Version: v$K8S_VERSION"$'\n'* ]]
}
have_extra() { # $1 = binary; all kube components print "Kubernetes vX.Y.Z" for --version
  [[ -x "$BIN_DIR/$1" ]] || return 1
  local out; out="$("$BIN_DIR/$1" --version 2>/dev/null)" || return 1
  [[ "$out" == "Kubernetes v$K8S_VERSION" ]]
}
have_extras() { local b; for b in $EXTRA_BINS; do have_extra "$b" || return 1; done; }
have_etcd() {
  [[ -x "$BIN_DIR/etcd" ]] || return 1
  local out; out="$("$BIN_DIR/etcd" --version 2>/dev/null)" || return 1
  [[ "${out%%$'\n'*}" == "etcd Version: $1" ]]
}

# Go module download path -> "<GoMod file>", using our own throwaway module as context.
gomod_of() { # $1=module@version
  go mod download -json "$1" | sed -n 's/^[[:space:]]*"GoMod": "\(.*\)",\{0,1\}$/\1/p'
}

build_k8s() { # $@ = binaries to build (kube-apiserver, kubectl)
  local src="$CACHE_DIR/src/kubernetes-v$K8S_VERSION" gomod goline date ld p b pkgs=()
  mkdir -p "$src"; cd "$src"
  printf 'module envtest-bins/kubernetes\n' > go.mod; rm -f go.sum
  gomod="$(gomod_of "k8s.io/kubernetes@v$K8S_VERSION")"
  [[ -f "$gomod" ]] || die "could not download k8s.io/kubernetes@v$K8S_VERSION"
  goline="$(awk '$1=="go"{print $2; exit}' "$gomod")"
  date="$(sed -n 's/.*"Time":"\([^"]*\)".*/\1/p' "${gomod%.mod}.info")"; date="${date:-1970-01-01T00:00:00Z}"
  {
    printf 'module envtest-bins/kubernetes\n\ngo %s\n' "$goline"
    # keep kubernetes' own GODEBUG defaults (godebug lines only count in the main module)
    awk '/^godebug[[:space:]]*\(/{blk=1} blk{print; if ($0 ~ /^\)/) blk=0; next} /^godebug[[:space:]]/{print}' "$gomod"
    printf '\nrequire k8s.io/kubernetes v%s\n\n// k8s.io/kubernetes requires its staging repos as v0.0.0 + replace => ./staging/...;\n// map each to its published tag instead.\nreplace (\n' "$K8S_VERSION"
    awk -v v="$STAGING_VERSION" '$2=="=>" && $3 ~ /^\.\/staging\// {print "\t" $1 " => " $1 " " v}' "$gomod"
    printf ')\n'
  } > go.mod
  for b in "$@"; do pkgs+=("k8s.io/kubernetes/cmd/$b@v$K8S_VERSION"); done
  log "resolving modules for k8s.io/kubernetes v$K8S_VERSION (staging $STAGING_VERSION)"
  go get "${pkgs[@]}" >&2
  # same flags as kubernetes' hack/lib/golang.sh release builds (static, trimmed, stamped)
  ld="-s -w"
  for p in k8s.io/component-base/version k8s.io/client-go/pkg/version; do
    ld+=" -X $p.gitVersion=v$K8S_VERSION -X $p.gitMajor=1 -X $p.gitMinor=$K8S_MINOR"
    ld+=" -X $p.gitTreeState=clean -X $p.buildDate=$date"
  done
  for b in "$@"; do
    log "building $b v$K8S_VERSION (2 cores, cold cache: kube-apiserver 6-8.5 min, then kubectl under 1 min)"
    go build -trimpath -tags selinux,notest,grpcnotrace -ldflags "all=$ld" \
      -o "$BIN_DIR/.$b.tmp" "k8s.io/kubernetes/cmd/$b"
    mv -f "$BIN_DIR/.$b.tmp" "$BIN_DIR/$b"
  done
}

build_etcd_go() {
  local src="$CACHE_DIR/src/etcd-v$ETCD_VERSION" gomod goline
  mkdir -p "$src"; cd "$src"
  printf 'module envtest-bins/etcd\n' > go.mod; rm -f go.sum
  gomod="$(gomod_of "go.etcd.io/etcd/server/v3@v$ETCD_VERSION")"
  [[ -f "$gomod" ]] || die "could not download go.etcd.io/etcd/server/v3@v$ETCD_VERSION"
  goline="$(awk '$1=="go"{print $2; exit}' "$gomod")"
  # server/v3's go.mod has replace => ../api etc.; as a dependency those are ignored and
  # MVS picks the published api/client/pkg modules at the same version.
  printf 'module envtest-bins/etcd\n\ngo %s\n\nrequire go.etcd.io/etcd/server/v3 v%s\n' "$goline" "$ETCD_VERSION" > go.mod
  log "resolving modules for go.etcd.io/etcd/server/v3 v$ETCD_VERSION"
  go get "go.etcd.io/etcd/server/v3@v$ETCD_VERSION" >&2
  log "building etcd v$ETCD_VERSION (cold: ~1.5 min on 2 cores)"
  # the module root package of server/v3 is etcd's main (main.go -> etcdmain.Main)
  go build -trimpath -ldflags "-s -w -X go.etcd.io/etcd/api/v3/version.GitSHA=v$ETCD_VERSION" \
    -o "$BIN_DIR/.etcd.tmp" go.etcd.io/etcd/server/v3
  mv -f "$BIN_DIR/.etcd.tmp" "$BIN_DIR/etcd"
}

fetch_etcd_debian() {
  local tmp
  tmp="$(mktemp -d "$CACHE_DIR/deb.XXXXXX")"
  log "unpacking Debian etcd-server into $BIN_DIR (no dpkg install)"
  (cd "$tmp" && apt-get download etcd-server >&2)
  dpkg-deb -x "$tmp"/etcd-server_*.deb "$tmp/root"
  mv -f "$tmp/root/usr/bin/etcd" "$BIN_DIR/etcd"
  rm -rf "$tmp"
}

ETCD_WANT="$(etcd_want)"
all_present() { have_apiserver && have_kubectl && have_extras && have_etcd "$ETCD_WANT"; }

if ! all_present; then
  mkdir -p "$CACHE_DIR" "$BIN_DIR"
  if command -v flock >/dev/null; then exec 9>"$CACHE_DIR/.lock"; flock 9; fi  # serialize parallel runs
  # isolate from the caller's Go settings: no go.work, no -mod=vendor etc., static binaries
  export GOWORK=off GOFLAGS=-buildvcs=false CGO_ENABLED=0 GOCACHE="${ENVTEST_GOCACHE:-$CACHE_DIR/go-build}"
  unset GOOS GOARCH GOEXPERIMENT
  k8s_todo=()
  have_apiserver || k8s_todo+=(kube-apiserver)
  have_kubectl   || k8s_todo+=(kubectl)
  for b in $EXTRA_BINS; do have_extra "$b" || k8s_todo+=("$b"); done
  if ! have_etcd "$ETCD_WANT"; then
    if [[ "$ETCD_SOURCE" == go ]]; then build_etcd_go; else fetch_etcd_debian; fi
  fi
  (( ${#k8s_todo[@]} == 0 )) || build_k8s "${k8s_todo[@]}"
  all_present || die "binaries in $BIN_DIR do not report the expected versions after building"
fi

log "ready: $BIN_DIR (kube-apiserver v$K8S_VERSION, etcd $ETCD_WANT$([[ "$WITH_KUBECTL" == 1 ]] && echo ", kubectl v$K8S_VERSION"))"
echo "$BIN_DIR"
