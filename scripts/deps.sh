#!/usr/bin/env bash
# Installs the Debian 12 packages vusb needs, only those missing. Silent when nothing is missing.
# Usage: scripts/deps.sh            (as root, or with sudo available)
set -euo pipefail

PKGS=(
  # toolchain
  g++ cmake ninja-build ccache pkg-config make git python3
  clang-16 libclang-rt-16-dev
  # libraries
  libusb-1.0-0-dev libevdev-dev libboost1.74-dev nlohmann-json3-dev libtoml11-dev
  libspdlog-dev libfmt-dev libcli11-dev libssl-dev libbluetooth-dev
  libgtest-dev libgmock-dev libbenchmark-dev libjpeg62-turbo-dev libseccomp-dev
  libusbredirparser-dev
  # real peers and the guest lab
  usbip usbutils qemu-system-x86 tshark bluez-test-tools busybox-static cpio kmod usbredirect
  libvirt-daemon-system libvirt-clients stunnel4 openssl
)

missing=()
for p in "${PKGS[@]}"; do
  if ! dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "ok installed"; then
    missing+=("$p")
  fi
done
[ ${#missing[@]} -eq 0 ] && exit 0

SUDO=""
[ "$(id -u)" -ne 0 ] && SUDO="sudo"
echo "deps: installing ${missing[*]}" >&2
export DEBIAN_FRONTEND=noninteractive
echo "wireshark-common wireshark-common/install-setuid boolean false" | $SUDO debconf-set-selections
$SUDO apt-get update -qq
$SUDO apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
