#!/usr/bin/env bash
# make demo: vusb-stub exports an emulated Gadget Zero on the host; a Linux guest (Debian's kernel
# under QEMU) attaches it with Debian's usbip over vhci-hcd and runs a few of the kernel's usbtest
# cases, then the demo says in plain words what happened.
# Usage: tests/e2e/demo.sh [BUILD_DIR]
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"
BUILD="$(cd "${1:-$ROOT/build}" && pwd)"
exec /usr/bin/python3 "$ROOT/tests/e2e/test_stub_usbtest.py" --build "$BUILD" \
  --stub "$BUILD/bin/vusb-stub" --demo --name demo
