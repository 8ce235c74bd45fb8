#!/usr/bin/env bash
# net-deps.sh: install the kernel-rule tools the netns tests and the agent use
# (iptables legacy+nft, nftables, conntrack, iproute2). Idempotent; no-op when present.
set -euo pipefail
need=()
for p in iptables nftables conntrack ipset iproute2 util-linux; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q 'install ok installed' || need+=("$p")
done
(( ${#need[@]} == 0 )) && exit 0
if [[ $(id -u) != 0 ]]; then echo "[net-deps] not root: cannot install ${need[*]}" >&2; exit 0; fi
echo "[net-deps] installing ${need[*]}" >&2
DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends "${need[@]}" >&2 || {
  apt-get update >&2
  DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends "${need[@]}" >&2
}
