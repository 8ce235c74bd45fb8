#!/usr/bin/env bash
# metrics-server.sh: build metrics-server (what `kubectl top` reads through the API server's
# aggregation layer) from the Go module proxy (sigs.k8s.io/metrics-server, no other network
# access) into $NK_CACHE/tools/metrics-server, and print its path.
#
# Idempotent, like hack/k8s-bins.sh and hack/helm.sh: when the binary exists and reports
# the requested version the script exits in well under a second and never calls `go`.
# A cold build (empty module and build caches) took 5m24s on the shared 2-core machine
# (load average 3-4 from other work; 5m20s user): +345 MB of modules, +1.5 GiB build cache.
# Parallel runs are serialized with flock.
#
# Usage:   MS="$(hack/metrics-server.sh)"; "$MS" --version
#
# Environment (all optional):
#   NK_CACHE                cache root (default $HOME/.cache/nodekeeper); the binary is
#                           $NK_CACHE/tools/metrics-server
#   METRICS_SERVER_VERSION  version of module sigs.k8s.io/metrics-server (default 0.8.0)
#   METRICS_SERVER_GOCACHE  GOCACHE for the build (default: the caller's)
#   GOMODCACHE              inherited from the caller, so module downloads are shared
set -euo pipefail

MS_VERSION="${METRICS_SERVER_VERSION:-0.8.0}"; MS_VERSION="${MS_VERSION#v}"
TOOLS_DIR="${NK_CACHE:-$HOME/.cache/nodekeeper}/tools"
[[ "$TOOLS_DIR" == /* ]] || TOOLS_DIR="$PWD/$TOOLS_DIR"
MS_BIN="$TOOLS_DIR/metrics-server"

log() { echo "[metrics-server] $*" >&2; }
die() { log "ERROR: $*"; exit 1; }

case "$MS_VERSION" in 0.*.*) ;; *) die "METRICS_SERVER_VERSION must look like 0.8.0, got '$MS_VERSION'";; esac

have_ms() {
  [[ -x "$MS_BIN" ]] || return 1
  # metrics-server prints client-go's gitVersion, which the build stamps (as its Makefile does)
  local out; out="$("$MS_BIN" --version 2>/dev/null)" || return 1
  [[ "$out" == "v$MS_VERSION" ]]
}

build_ms() {
  local src="$TOOLS_DIR/src/metrics-server-v$MS_VERSION" gomod goline date ld p
  mkdir -p "$src"; cd "$src"
  # a throwaway module as context for `go mod download` / `go build`
  printf 'module nodekeeper-tools/metrics-server\n' > go.mod; rm -f go.sum
  gomod="$(go mod download -json "sigs.k8s.io/metrics-server@v$MS_VERSION" | sed -n 's/^[[:space:]]*"GoMod": "\(.*\)",\{0,1\}$/\1/p')"
  [[ -f "$gomod" ]] || die "could not download sigs.k8s.io/metrics-server@v$MS_VERSION"
  # metrics-server's go.mod has no replace directives, so requiring it pins every
  # dependency at the version its own go.mod says (MVS)
  goline="$(awk '$1=="go"{print $2; exit}' "$gomod")"
  date="$(sed -n 's/.*"Time":"\([^"]*\)".*/\1/p' "${gomod%.mod}.info")"; date="${date:-1970-01-01T00:00:00Z}"
  printf 'module nodekeeper-tools/metrics-server\n\ngo %s\n\nrequire sigs.k8s.io/metrics-server v%s\n' "$goline" "$MS_VERSION" > go.mod
  log "resolving modules for sigs.k8s.io/metrics-server v$MS_VERSION"
  go get "sigs.k8s.io/metrics-server/cmd/metrics-server@v$MS_VERSION" >&2
  # the version stamp of metrics-server's own Makefile (it reports client-go's version)
  p=k8s.io/client-go/pkg/version
  ld="-s -w -X $p.gitVersion=v$MS_VERSION -X $p.gitTreeState=clean -X $p.buildDate=$date"
  log "building metrics-server v$MS_VERSION (cold caches on 2 shared cores: about 5 min)"
  go build -trimpath -ldflags "$ld" -o "$TOOLS_DIR/.metrics-server.tmp" sigs.k8s.io/metrics-server/cmd/metrics-server
  mv -f "$TOOLS_DIR/.metrics-server.tmp" "$MS_BIN"
}

if ! have_ms; then
  mkdir -p "$TOOLS_DIR"
  if command -v flock >/dev/null; then exec 9>"$TOOLS_DIR/.metrics-server.lock"; flock 9; fi  # serialize parallel runs
  if ! have_ms; then  # another run may have built it while we waited
    # isolate from the caller's Go settings: no go.work, no -mod=vendor etc., a static binary
    export GOWORK=off GOFLAGS=-buildvcs=false CGO_ENABLED=0
    [[ -z "${METRICS_SERVER_GOCACHE:-}" ]] || export GOCACHE="$METRICS_SERVER_GOCACHE"
    unset GOOS GOARCH GOEXPERIMENT
    build_ms
    have_ms || die "$MS_BIN does not report v$MS_VERSION after building"
  fi
fi

log "ready: $MS_BIN (v$MS_VERSION)"
echo "$MS_BIN"
