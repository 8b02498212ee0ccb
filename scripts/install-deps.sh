#!/usr/bin/env bash
# Installs the Debian 12 packages the test suite drives (real NBD peers, capture
# tools). Idempotent: does nothing when every package is already there.
set -euo pipefail

PACKAGES=(
  tshark tcpdump nbdkit qemu-utils libnbd-bin python3-libnbd nbd-server fio
  gnutls-bin iproute2 tmux python3-venv ethtool
  chromium  # renders the HTML report in its tests (tests/unit/test_html_render.py)
)

missing=()
for p in "${PACKAGES[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
[ ${#missing[@]} -eq 0 ] && exit 0

SUDO=""
[ "$(id -u)" -eq 0 ] || SUDO="sudo"
echo "installing: ${missing[*]}" >&2
# tshark asks whether non-root users may capture; answer for it
echo "wireshark-common wireshark-common/install-setuid boolean false" | $SUDO debconf-set-selections
$SUDO apt-get update -qq
DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
