#!/usr/bin/env bash
# containerd2.sh: build containerd v2.4.2 and its runc shim from the Go module proxy
# (cached, ~70-140 s once) and print the folder holding them, for
# NK_CONTAINERD_DIR=$(hack/containerd2.sh) hack/cri-up.sh. containerd 2.x serves CRI's
# GetContainerEvents (the agent's evented PLEG) where Debian's 1.6 answers Unimplemented.
set -euo pipefail
NK_CACHE="${NK_CACHE:-$HOME/.cache/nodekeeper}"
VERSION="${NK_CONTAINERD2_VERSION:-v2.4.2}"
dir="$NK_CACHE/containerd2/$VERSION"
if [[ -x $dir/bin/containerd && -x $dir/bin/containerd-shim-runc-v2 ]]; then
  echo "$dir/bin"
  exit 0
fi
mkdir -p "$dir"
cd "$dir"
[[ -f go.mod ]] || go mod init nodekeeper-containerd2 >/dev/null 2>&1
echo "containerd2.sh: building containerd $VERSION (once)" >&2
GOFLAGS=-mod=mod go get "github.com/containerd/containerd/v2/cmd/containerd@$VERSION" >&2
go build -tags "no_btrfs no_devmapper no_zfs" -o bin/containerd github.com/containerd/containerd/v2/cmd/containerd
go build -o bin/containerd-shim-runc-v2 github.com/containerd/containerd/v2/cmd/containerd-shim-runc-v2
echo "$dir/bin"
