#!/usr/bin/env bash
# helm.sh: build the helm CLI from the Go module proxy (helm.sh/helm/v3, no other network
# access) into $NK_CACHE/tools/helm, and print its path.
#
# Idempotent, like hack/k8s-bins.sh: when the binary exists and reports the requested
# version the script exits in well under a second and never calls `go`. A cold build
# takes 3-6 minutes on 2 cores. Parallel runs are serialized with flock.
#
# Usage:   HELM="$(hack/helm.sh)"; "$HELM" lint charts/nodekeeper
#
# Environment (all optional):
#   NK_CACHE        cache root (default $HOME/.cache/nodekeeper); the binary is $NK_CACHE/tools/helm
#   HELM_VERSION    version of module helm.sh/helm/v3 (default 3.22.0)
#   HELM_GOCACHE    GOCACHE for the build (default: the caller's)
#   GOMODCACHE      inherited from the caller, so module downloads are shared with the project
set -euo pipefail

HELM_VERSION="${HELM_VERSION:-3.22.0}"; HELM_VERSION="${HELM_VERSION#v}"
TOOLS_DIR="${NK_CACHE:-$HOME/.cache/nodekeeper}/tools"
[[ "$TOOLS_DIR" == /* ]] || TOOLS_DIR="$PWD/$TOOLS_DIR"
HELM_BIN="$TOOLS_DIR/helm"

log() { echo "[helm] $*" >&2; }
die() { log "ERROR: $*"; exit 1; }

case "$HELM_VERSION" in 3.*.*) ;; *) die "HELM_VERSION must look like 3.22.0 (module helm.sh/helm/v3), got '$HELM_VERSION'";; esac

have_helm() {
  [[ -x "$HELM_BIN" ]] || return 1
  local out; out="$("$HELM_BIN" version --template '{{.Version}}' 2>/dev/null)" || return 1
  [[ "$out" == "v$HELM_VERSION" ]]
}

build_helm() {
  local src="$TOOLS_DIR/src/helm-v$HELM_VERSION" gomod goline cgv major minor ld
  mkdir -p "$src"; cd "$src"
  # a throwaway module as context for `go mod download` / `go build`
  printf 'module nodekeeper-tools/helm\n' > go.mod; rm -f go.sum
  gomod="$(go mod download -json "helm.sh/helm/v3@v$HELM_VERSION" | sed -n 's/^[[:space:]]*"GoMod": "\(.*\)",\{0,1\}$/\1/p')"
  [[ -f "$gomod" ]] || die "could not download helm.sh/helm/v3@v$HELM_VERSION"
  goline="$(awk '$1=="go"{print $2; exit}' "$gomod")"
  printf 'module nodekeeper-tools/helm\n\ngo %s\n\nrequire helm.sh/helm/v3 v%s\n' "$goline" "$HELM_VERSION" > go.mod
  log "resolving modules for helm.sh/helm/v3 v$HELM_VERSION"
  go get "helm.sh/helm/v3/cmd/helm@v$HELM_VERSION" >&2
  # the Kubernetes version helm assumes for lint/template (Capabilities.KubeVersion) is
  # derived from its client-go, as helm's own Makefile does: v0.37.x -> 1.37
  cgv="$(go list -m -f '{{.Version}}' k8s.io/client-go)"; cgv="${cgv#v0.}"
  major=1; minor="${cgv%%.*}"
  ld="-s -w -X helm.sh/helm/v3/internal/version.version=v$HELM_VERSION -X helm.sh/helm/v3/internal/version.metadata="
  ld+=" -X helm.sh/helm/v3/internal/version.gitTreeState=clean"
  for p in helm.sh/helm/v3/pkg/lint/rules helm.sh/helm/v3/pkg/chartutil; do
    ld+=" -X $p.k8sVersionMajor=$major -X $p.k8sVersionMinor=$minor"
  done
  log "building helm v$HELM_VERSION (cold cache on 2 cores: 3-6 min)"
  go build -trimpath -ldflags "$ld" -o "$TOOLS_DIR/.helm.tmp" helm.sh/helm/v3/cmd/helm
  mv -f "$TOOLS_DIR/.helm.tmp" "$HELM_BIN"
}

if ! have_helm; then
  mkdir -p "$TOOLS_DIR"
  if command -v flock >/dev/null; then exec 9>"$TOOLS_DIR/.helm.lock"; flock 9; fi  # serialize parallel runs
  if ! have_helm; then  # another run may have built it while we waited
    # isolate from the caller's Go settings: no go.work, no -mod=vendor etc., a static binary
    export GOWORK=off GOFLAGS=-buildvcs=false CGO_ENABLED=0
    [[ -z "${HELM_GOCACHE:-}" ]] || export GOCACHE="$HELM_GOCACHE"
    unset GOOS GOARCH GOEXPERIMENT
    build_helm
    have_helm || die "$HELM_BIN does not report v$HELM_VERSION after building"
  fi
fi

log "ready: $HELM_BIN (v$HELM_VERSION)"
echo "$HELM_BIN"
