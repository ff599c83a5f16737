# Shell helpers for guest lab test scripts (busybox sh). Sourced by /init; test scripts may
# source it again (". /lab/lib.sh"). Every helper prints LAB-* marker lines on failure.

# lab_modprobe NAME [PARAM=VALUE...]: loads a module and its dependencies (modules.dep of the
# initramfs). Succeeds when the module is already loaded or built in.
lab_modprobe() {
  _m="$1"
  _n="$(echo "$_m" | tr - _)"
  [ -d "/sys/module/$_n" ] && [ $# -eq 1 ] && return 0
  modprobe "$@" 2>/tmp/modprobe.err && return 0
  [ -d "/sys/module/$_n" ] && return 0
  echo "LAB-WARN modprobe $*: $(cat /tmp/modprobe.err)"
  return 1
}

# lab_wait_for PATH [SECONDS]: waits until PATH exists (default 10 s).
lab_wait_for() {
  _t=$(( ${2:-10} * 10 ))
  while [ ! -e "$1" ] && [ "$_t" -gt 0 ]; do sleep 0.1; _t=$((_t - 1)); done
  [ -e "$1" ]
}

# lab_usbtest_bound [SECONDS]: waits until some interface is bound to usbtest; prints its sysfs
# name (e.g. 3-1:1.0). Default 15 s.
lab_usbtest_bound() {
  _t=$(( ${1:-15} * 10 ))
  while [ "$_t" -gt 0 ]; do
    for _i in /sys/bus/usb/drivers/usbtest/*:*; do
      [ -e "$_i" ] && { basename "$_i"; return 0; }
    done
    sleep 0.1; _t=$((_t - 1))
  done
  return 1
}

# lab_gadget_zero [UDC]: builds a kernel Gadget Zero (0525:a4a0, SourceSink in config 1) through
# configfs on dummy_hcd's UDC (default dummy_udc.0). Extra SourceSink attributes may be given in
# LAB_SS_ATTRS as "name=value ..." (e.g. "bulk_buflen=4096 isoc_interval=4").
lab_gadget_zero() {
  _udc="${1:-dummy_udc.0}"
  lab_modprobe dummy_hcd || return 1
  lab_modprobe libcomposite || return 1
  lab_modprobe usb_f_ss_lb || return 1
  grep -q ' /sys/kernel/config ' /proc/mounts || mount -t configfs none /sys/kernel/config || return 1
  _g=/sys/kernel/config/usb_gadget/gzero
  mkdir -p $_g || return 1
  echo 0x0525 >$_g/idVendor
  echo 0xa4a0 >$_g/idProduct
  echo 0x0200 >$_g/bcdUSB
  mkdir -p $_g/strings/0x409
  echo "vusb-lab" >$_g/strings/0x409/manufacturer
  echo "Gadget Zero" >$_g/strings/0x409/product
  echo "0123456789" >$_g/strings/0x409/serialnumber
  mkdir -p $_g/configs/c.1/strings/0x409
  echo "source/sink" >$_g/configs/c.1/strings/0x409/configuration
  echo 120 >$_g/configs/c.1/MaxPower
  mkdir -p $_g/functions/SourceSink.0 || return 1
  for _kv in $LAB_SS_ATTRS; do
    echo "${_kv#*=}" >"$_g/functions/SourceSink.0/${_kv%%=*}"
  done
  ln -s $_g/functions/SourceSink.0 $_g/configs/c.1/ 2>/dev/null
  lab_wait_for /sys/class/udc/$_udc 5 || { echo "LAB-WARN no UDC $_udc"; return 1; }
  echo "$_udc" >$_g/UDC || return 1
}

# lab_usbtest_rebind PARAM=VALUE...: reloads usbtest with module parameters (e.g. alt=1) and waits
# until it binds again; prints the bound interface.
lab_usbtest_rebind() {
  rmmod usbtest 2>/dev/null
  lab_modprobe usbtest "$@" || return 1
  if ! _b="$(lab_usbtest_bound 5)"; then
    # Not probed automatically: ask the bus to probe every unbound interface again.
    for _i in /sys/bus/usb/devices/*:*; do
      [ -e "$_i/driver" ] || echo "$(basename "$_i")" >/sys/bus/usb/drivers_probe 2>/dev/null
    done
    _b="$(lab_usbtest_bound 10)" || return 1
  fi
  echo "$_b"
}

# lab_usb_tree: one line per USB device (LAB-USB bus-port vid:pid driver-of-interface-0).
lab_usb_tree() {
  for _d in /sys/bus/usb/devices/*; do
    _b="$(basename "$_d")"
    case "$_b" in *:*) continue ;; esac
    [ -f "$_d/idVendor" ] || continue
    _drv=""
    for _i in "$_d"/"$_b":*; do
      [ -e "$_i/driver" ] && _drv="$_drv $(basename "$(readlink "$_i/driver")")"
    done
    echo "LAB-USB $_b $(cat "$_d/idVendor"):$(cat "$_d/idProduct") speed=$(cat "$_d/speed") drivers=${_drv# }"
  done
}

# lab_find_usb VID PID [SECONDS]: waits for a USB device with that idVendor/idProduct (hex, no 0x)
# and prints its bus id (e.g. 3-1). Default 10 s.
lab_find_usb() {
  _t=$(( ${3:-10} * 10 ))
  while [ "$_t" -gt 0 ]; do
    for _d in /sys/bus/usb/devices/*; do
      [ -f "$_d/idVendor" ] || continue
      if [ "$(cat "$_d/idVendor")" = "$1" ] && [ "$(cat "$_d/idProduct")" = "$2" ]; then
        basename "$_d"; return 0
      fi
    done
    sleep 0.1; _t=$((_t - 1))
  done
  return 1
}
