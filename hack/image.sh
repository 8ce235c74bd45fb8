#!/usr/bin/env bash
# image.sh: the nodekeeper container image as a tarball, without a Docker daemon or a
# registry (make image). Prints the tarball's path on stdout.
#
# Two layers, assembled by hack/mkimage (go-containerregistry, internal/ociimage):
#   1. the kernel-rule tools of Debian's packages, as installed on this machine
#      (hack/net-deps.sh): iptables (xtables-nft-multi and xtables-legacy-multi with every
#      iptables/ip6tables[-nft|-legacy][-save|-restore] name, and the xtables extensions),
#      nft, ipset, conntrack, with the shared libraries `ldd` names (glibc included), the
#      packages' copyright files, and netbase's /etc/protocols and /etc/services. Laid out
#      merged-/usr as Debian's (/lib, /lib64, /bin, /sbin link into /usr). `iptables` is
#      iptables-nft, Debian's default; set the agent's iptablesVariant (legacy, nft) to choose.
#   2. the static agent binary /usr/local/bin/nodekeeper (the entrypoint).
# The nftables mode programs the kernel over netlink and needs none of layer 1; the
# iptables mode needs iptables, the ipvs mode ipset and iptables.
#
# The tarball is an OCI image layout that is also a `docker save` archive:
#   ctr -n k8s.io images import bin/nodekeeper-image.tar     (containerd; make load-image)
#   docker load -i bin/nodekeeper-image.tar | podman load -i ...
# Layers are reproducible: entries sorted, root-owned, mtime SOURCE_DATE_EPOCH (default:
# the commit's time), so the same binary and packages give the same digests.
#
# Environment: IMAGE_NAME (default docker.io/nodekeeper/nodekeeper), VERSION (the tag,
# default v0.1.0-dev), IMAGE_TAR (default bin/nodekeeper-image.tar), NK_BIN (the agent
# binary; default: make build's bin/nodekeeper).
set -euo pipefail

ROOT=$(cd "$(dirname "$0")/.." && pwd)
VERSION=${VERSION:-v0.1.0-dev}
IMAGE_NAME=${IMAGE_NAME:-docker.io/nodekeeper/nodekeeper}
IMAGE_TAR=${IMAGE_TAR:-$ROOT/bin/nodekeeper-image.tar}
NK_BIN=${NK_BIN:-$ROOT/bin/nodekeeper}
export PATH=/usr/local/go/bin:/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin

log() { echo "[image] $*" >&2; }
die() { log "ERROR: $*"; exit 1; }

"$ROOT/hack/net-deps.sh"
[[ -x $NK_BIN ]] || die "no agent binary at $NK_BIN (make build)"
if file "$NK_BIN" 2>/dev/null | grep -q 'dynamically linked'; then die "$NK_BIN is not static (CGO_ENABLED=0)"; fi

BINS=(/usr/sbin/xtables-nft-multi /usr/sbin/xtables-legacy-multi /usr/sbin/nft /usr/sbin/ipset /usr/sbin/conntrack)
XT=/usr/lib/x86_64-linux-gnu/xtables
[[ $(uname -m) == x86_64 ]] || XT=/usr/lib/$(gcc -print-multiarch 2>/dev/null || echo "$(uname -m)-linux-gnu")/xtables
for b in "${BINS[@]}"; do [[ -x $b ]] || die "$b is missing (hack/net-deps.sh installs iptables nftables ipset conntrack)"; done

# usr-merged path: where a file lives in the image (Debian bookworm merges /usr)
canon() {
  case $1 in
  /lib/* | /lib64/* | /bin/* | /sbin/*) echo "/usr$1" ;;
  *) echo "$1" ;;
  esac
}

SPEC=$(mktemp); trap 'rm -f "$SPEC"' EXIT
declare -A seen=()
addfile() { # HOSTPATH: the file (symlinks followed) at its usr-merged path
  local dst; dst=$(canon "$1")
  [[ -n ${seen[$dst]:-} ]] && return
  seen[$dst]=1
  echo "file $1 $dst" >>"$SPEC"
}

{
  echo "# layer 1: Debian's kernel-rule tools"
  echo "layer"
  for d in lib lib64 bin sbin; do echo "link /$d usr/$d"; done
  echo "dir /run"; echo "dir /tmp"; echo "dir /var/run"; echo "dir /etc/nodekeeper"
} >"$SPEC"

# the binaries and the xtables extensions, then every library ldd names for them
objs=("${BINS[@]}" "$XT"/*.so)
for o in "${objs[@]}"; do addfile "$o"; done
libs=$(for o in "${objs[@]}"; do ldd "$o" 2>/dev/null | awk '$2 == "=>" && $3 ~ /^\// {print $3} $1 ~ /^\// {print $1}'; done | sort -u)
for l in $libs; do addfile "$l"; done
# the dynamic loader must also be found at the path the binaries name (/lib64/...), which
# the /lib64 -> usr/lib64 link gives once it is under /usr/lib64
for f in /etc/protocols /etc/services /etc/ethertypes; do [[ -f $f ]] && addfile "$f"; done

# every iptables name Debian's alternatives and packages provide
for fam in iptables ip6tables; do
  for v in nft legacy; do
    for t in "" -save -restore; do echo "link /usr/sbin/$fam-$v$t xtables-$v-multi"; done
  done
  for t in "" -save -restore; do echo "link /usr/sbin/$fam$t $fam-nft$t"; done
done >>"$SPEC"
echo "link /usr/sbin/iptables-restore-translate xtables-nft-multi" >>"$SPEC"

# the packages those files come from: their copyright files, and a label with versions
pkgs=$(for f in "${objs[@]}" $libs; do dpkg -S "$(readlink -f "$f")" 2>/dev/null || dpkg -S "$f" 2>/dev/null; done |
  cut -d: -f1 | sort -u)
pkgs="$pkgs netbase"
versions=""
for p in $pkgs; do
  v=$(dpkg-query -W -f='${Version}' "$p" 2>/dev/null) || continue
  versions+="${versions:+,}$p=$v"
  c=/usr/share/doc/$p/copyright
  [[ -f $c ]] && echo "file $c" >>"$SPEC"
done

{
  echo "# layer 2: the agent"
  echo "layer"
  echo "file $NK_BIN /usr/local/bin/nodekeeper"
} >>"$SPEC"

commit=$(git -C "$ROOT" rev-parse HEAD 2>/dev/null || echo unknown)
created=${SOURCE_DATE_EPOCH:-$(git -C "$ROOT" log -1 --format=%ct 2>/dev/null || echo 0)}
mkdir -p "$(dirname "$IMAGE_TAR")"
log "assembling $IMAGE_NAME:$VERSION from $(grep -c '^file' "$SPEC") files ($(echo $pkgs | wc -w) Debian packages)"
(cd "$ROOT" && go run ./hack/mkimage --spec "$SPEC" --ref "$IMAGE_NAME:$VERSION" --out "$IMAGE_TAR" \
  --entrypoint /usr/local/bin/nodekeeper --created "$created" \
  --env PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin \
  --label org.opencontainers.image.title=nodekeeper \
  --label org.opencontainers.image.version="$VERSION" \
  --label org.opencontainers.image.revision="$commit" \
  --label org.opencontainers.image.source=https://github.com/nodekeeper/nodekeeper \
  --label io.nodekeeper.debian-packages="$versions")
log "wrote $IMAGE_TAR ($(du -h "$IMAGE_TAR" | cut -f1))"
echo "$IMAGE_TAR"
