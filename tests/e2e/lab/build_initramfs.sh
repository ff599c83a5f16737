#!/usr/bin/env bash
# Builds the guest lab's base initramfs (gzip'd newc cpio) once and caches it; rebuilt only when an
# input changes (kernel, module list, busybox, usbip tools, lsusb, usbredirect, stunnel4, usbtest-ioctl, guest scripts,
# this file).
# Per-run files (the test script) go into a second small cpio appended by lab.py.
#
# Usage: tests/e2e/lab/build_initramfs.sh [--cache DIR] [--usbtest-ioctl PATH] [--v4l2-capture PATH]
#   Prints the path of the initramfs on stdout. --usbtest-ioctl defaults to $USBTEST_IOCTL, else
#   the program is compiled here from usbtest_ioctl.c (gcc -static) into the cache; likewise
#   --v4l2-capture ($V4L2_CAPTURE, else v4l2_capture.c).
#   Extra modules: VUSB_LAB_EXTRA_MODULES="name ...".
set -euo pipefail

HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
CACHE="${VUSB_LAB_CACHE:-$HOME/.cache/vusb-lab}"
UTI="${USBTEST_IOCTL:-}"
V4C="${V4L2_CAPTURE:-}"
while [ $# -gt 0 ]; do
  case "$1" in
    --cache) CACHE="$2"; shift 2 ;;
    --usbtest-ioctl) UTI="$2"; shift 2 ;;
    --v4l2-capture) V4C="$2"; shift 2 ;;
    *) echo "build_initramfs: unknown argument $1" >&2; exit 2 ;;
  esac
done
die() { echo "build_initramfs: $*" >&2; exit 1; }

"$HERE/fetch_kernel.sh" "$CACHE"
KDIR="$CACHE/kernel"
VER="$(cat "$KDIR/VERSION")"
MODDIR="$KDIR/lib/modules/$VER"

# The modules the lab needs (dependencies are added from modules.dep).
MODULES=(
  usb-common usbcore usbip-core vhci-hcd usbip-host usbip-vudc usbtest usbmon
  e1000 configfs libcomposite dummy_hcd usb_f_ss_lb
  xhci-hcd xhci-pci ehci-hcd ehci-pci usb-storage sd_mod usbhid hid-generic
  uvcvideo hid-sensor-hub hid-sensor-accel-3d hid-sensor-gyro-3d hid-sensor-magn-3d hid-sensor-als
  uinput evdev hid-multitouch
)
# shellcheck disable=SC2206
MODULES+=(${VUSB_LAB_EXTRA_MODULES:-})

BUSYBOX="$(command -v busybox || true)"
[ -n "$BUSYBOX" ] || die "busybox not found (install busybox-static)"
file -L "$BUSYBOX" 2>/dev/null | grep -q 'statically linked' ||
  ldd "$BUSYBOX" 2>&1 | grep -q 'not a dynamic' || die "$BUSYBOX is not static (install busybox-static)"
USBIP=/usr/sbin/usbip
USBIPD=/usr/sbin/usbipd
[ -x "$USBIP" ] && [ -x "$USBIPD" ] || die "$USBIP / $USBIPD missing (install usbip)"
USBIDS=/usr/share/misc/usb.ids
LSUSB=/usr/bin/lsusb
[ -x "$LSUSB" ] || die "$LSUSB missing (install usbutils)"
USBREDIRECT=/usr/bin/usbredirect  # a usbredir usb-host inside a guest (vusbd's usbredir:// source)
[ -x "$USBREDIRECT" ] || die "$USBREDIRECT missing (install usbredirect)"
STUNNEL=/usr/bin/stunnel4  # a TLS tunnel in front of the stock usbip client (e2e.vusb_tls)
[ -x "$STUNNEL" ] || die "$STUNNEL missing (install stunnel4)"
command -v cpio >/dev/null || die "cpio not found (install cpio)"
command -v depmod >/dev/null || [ -x /usr/sbin/depmod ] || die "depmod not found (install kmod)"
DEPMOD="$(command -v depmod || echo /usr/sbin/depmod)"

mkdir -p "$CACHE"
if [ -z "$UTI" ]; then
  UTI="$CACHE/usbtest-ioctl"
  if [ ! -x "$UTI" ] || [ "$HERE/usbtest_ioctl.c" -nt "$UTI" ]; then
    gcc -static -O2 -Wall -o "$UTI.tmp" "$HERE/usbtest_ioctl.c" && mv "$UTI.tmp" "$UTI"
  fi
fi
[ -x "$UTI" ] || die "usbtest-ioctl not found at $UTI"
if [ -z "$V4C" ]; then
  V4C="$CACHE/v4l2-capture"
  if [ ! -x "$V4C" ] || [ "$HERE/v4l2_capture.c" -nt "$V4C" ]; then
    gcc -static -O2 -Wall -o "$V4C.tmp" "$HERE/v4l2_capture.c" && mv "$V4C.tmp" "$V4C"
  fi
fi
[ -x "$V4C" ] || die "v4l2-capture not found at $V4C"

# --- Resolve the module closure in load order (dependencies first) from modules.dep.
declare -A DEPS=() PATHOF=() SEEN=()
while IFS= read -r line; do
  path="${line%%:*}"
  name="${path##*/}"; name="${name%.ko*}"; name="${name//-/_}"
  PATHOF[$name]="$path"
  DEPS[$name]="${line#*:}"
done <"$MODDIR/modules.dep"
ORDER=()
visit() {
  local n="${1//-/_}" d dn
  [ -n "${SEEN[$n]:-}" ] && return 0
  SEEN[$n]=1
  if [ -z "${PATHOF[$n]:-}" ]; then
    grep -q "/${1}.ko" "$MODDIR/modules.builtin" 2>/dev/null ||
      grep -q "/${n}.ko" "$MODDIR/modules.builtin" 2>/dev/null ||
      die "module $1 is neither in modules.dep nor built in"
    return 0
  fi
  for d in ${DEPS[$n]}; do
    dn="${d##*/}"; visit "${dn%.ko*}"
  done
  ORDER+=("$n")
}
for m in "${MODULES[@]}"; do visit "$m"; done

# --- Cache key over every input.
KEY="$(
  {
    echo "$VER"; cat "$KDIR/PACKAGE" 2>/dev/null || true
    printf '%s\n' "${ORDER[@]}"
    sha256sum "$BUSYBOX" "$USBIP" "$USBIPD" "$LSUSB" "$USBREDIRECT" "$STUNNEL" "$UTI" "$V4C" "$HERE/guest/init" "$HERE/guest/lib.sh" \
      "${BASH_SOURCE[0]}" | cut -d' ' -f1
    ls -lL "$USBIDS" 2>/dev/null || true
  } | sha256sum | cut -c1-16
)"
# Content-addressed output, so build trees with different inputs can share the cache.
OUT="$CACHE/initramfs-base-$KEY.cpio.gz"
if [ -f "$OUT" ]; then
  echo "$OUT"
  exit 0
fi
exec 9>"$CACHE/.initramfs.lock"
flock 9
if [ -f "$OUT" ]; then
  echo "$OUT"
  exit 0
fi

echo "build_initramfs: building $OUT (${#ORDER[@]} modules, kernel $VER)" >&2
STAGE="$(mktemp -d "$CACHE/.initramfs.XXXXXX")"
trap 'rm -rf "$STAGE"' EXIT
R="$STAGE/root"
mkdir -p "$R"/{bin,sbin,usr/bin,usr/sbin,usr/share/misc,lib,lib64,etc,proc,sys,dev,run,tmp,root,lab,var/log}
ln -s ../run "$R/var/run"

# busybox and its applets
cp "$BUSYBOX" "$R/bin/busybox"
for a in $("$BUSYBOX" --list); do
  [ "$a" = busybox ] || ln -sf busybox "$R/bin/$a"
done

# usbip tools and their shared libraries (ldd), kept at the paths the loader expects
copy_with_libs() {
  local bin="$1" dest="$2" lib
  cp "$bin" "$R$dest"
  for lib in $(ldd "$bin" | grep -o '/[^ ]*'); do
    [ -e "$R$lib" ] && continue
    mkdir -p "$R$(dirname "$lib")"
    cp -L "$lib" "$R$lib"
  done
}
copy_with_libs "$USBIP" /usr/sbin/usbip
copy_with_libs "$USBIPD" /usr/sbin/usbipd
copy_with_libs "$LSUSB" /usr/bin/lsusb
copy_with_libs "$USBREDIRECT" /usr/bin/usbredirect
copy_with_libs "$STUNNEL" /usr/bin/stunnel4
# glibc loads libgcc_s at run time (pthread_exit's unwinder; stunnel's threads): not in ldd's list
for lib in /lib/x86_64-linux-gnu/libgcc_s.so.1; do
  mkdir -p "$R$(dirname "$lib")" && cp -L "$lib" "$R$lib"
done
[ -e "$USBIDS" ] && cp -L "$USBIDS" "$R/usr/share/misc/usb.ids"
cp "$UTI" "$R/usr/bin/usbtest-ioctl"
cp "$V4C" "$R/usr/bin/v4l2-capture"

# modules (same layout as the package) plus a depmod run over just this subset
KM="$R/lib/modules/$VER"
mkdir -p "$KM"
for n in "${ORDER[@]}"; do
  p="${PATHOF[$n]}"
  mkdir -p "$KM/${p%/*}"
  cp "$MODDIR/$p" "$KM/$p"
done
cp "$MODDIR/modules.builtin" "$MODDIR/modules.builtin.modinfo" "$MODDIR/modules.order" "$KM/" 2>/dev/null || true
"$DEPMOD" -b "$R" "$VER"
printf '%s\n' "${ORDER[@]}" >"$KM/lab-modules"

# guest scripts
cp "$HERE/guest/init" "$R/init"
chmod 0755 "$R/init"
cp "$HERE/guest/lib.sh" "$R/lab/lib.sh"
echo "root:x:0:0:root:/root:/bin/sh" >"$R/etc/passwd"
echo "root:x:0:" >"$R/etc/group"
printf '127.0.0.1 localhost\n10.0.2.2 host\n' >"$R/etc/hosts"
echo "vusb-lab" >"$R/etc/hostname"

(cd "$R" && find . -print | LC_ALL=C sort | cpio -o -H newc -R 0:0 --quiet) | gzip -6 -n >"$STAGE/out.gz"
mv "$STAGE/out.gz" "$OUT"
# Keep the four newest bases.
ls -t "$CACHE"/initramfs-base-*.cpio.gz 2>/dev/null | tail -n +5 | xargs -r rm -f
echo "build_initramfs: $(du -h "$OUT" | cut -f1) initramfs ready" >&2
echo "$OUT"
