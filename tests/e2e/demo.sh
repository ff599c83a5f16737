#!/usr/bin/env bash
# make demo: the webcam scenario. vusb-stub exports an emulated UVC camera on the host; vusbd
# imports it once and shares it with two VMs; two Linux guests (Debian's kernel under QEMU) attach
# it with Debian's usbip, and uvcvideo streams it into both at once. The demo prints the control
# API's address while it runs and each guest's frame count and frame rate at the end.
# Usage: tests/e2e/demo.sh [BUILD_DIR]
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"
BUILD="$(cd "${1:-$ROOT/build}" && pwd)"
exec /usr/bin/python3 "$ROOT/tests/e2e/test_vusbd_camera.py" --build "$BUILD" --demo --name demo
