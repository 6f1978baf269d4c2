#!/usr/bin/env bash
# Smoke test of the kit: boots the kit kernel on an emulated 486 (16 MB, no KVM) with a tiny
# root made of the kit busybox, once as a gzip'd newc cpio (/init) and once as a gzip'd ext2
# image in /dev/ram0 (/linuxrc, the 2.4 format). Prints the boot times; exit 1 on failure.
# Env: KIT_DIR, SMOKE_MEM (MB, default 16), SMOKE_CPU (default 486).
set -euo pipefail
source "$(dirname "$0")/common.sh"
"$REPO_ROOT/scripts/deps.sh" build

kernel=$(kernel_dir)/bzImage busybox=$(busybox_dir)/busybox
[ -s "$kernel" ] || die "no kit kernel at $kernel (make kit-kernel)"
[ -x "$busybox" ] || die "no kit busybox at $busybox (make kit-busybox)"
mem=${SMOKE_MEM:-16} cpu=${SMOKE_CPU:-486}
work=$(mktemp -d /tmp/mosboot-smoke.XXXXXX)
[ -n "${SMOKE_KEEP:-}" ] || trap 'rm -rf "$work"' EXIT

# A root with busybox, its applet links, /dev/console (the kernel opens it before init runs)
# and an init script that reports and powers off.
root=$work/root
busybox_root "$root" "$busybox"
cat > "$root/init" <<'INIT'
#!/bin/sh
mount -t proc proc /proc
echo "hello 486: $(uname -r), $(awk '/MemTotal/ {print $2 " kB"}' /proc/meminfo), root $(awk '$2=="/" {print $3}' /proc/mounts)"
poweroff -f
INIT
chmod 755 "$root/init"
ln -s init "$root/linuxrc"

pack_initrds "$root" "$work/initrd.cpio.gz" "$work/initrd.ext2.gz"

boot() {  # boot NAME INITRD APPEND
  local name=$1 initrd=$2 append=$3 start end
  start=$(date +%s.%N)
  timeout 120 qemu-system-i386 -M pc -cpu "$cpu" -m "$mem" -nographic -monitor none -serial stdio \
    -no-reboot -nic none -kernel "$kernel" -initrd "$initrd" -append "console=ttyS0 panic=1 $append" \
    > "$work/$name.log" 2>&1 || true
  end=$(date +%s.%N)
  if grep -q 'hello 486' "$work/$name.log"; then
    printf 'smoke: %-5s ok in %5.1f s (-cpu %s -m %s, initrd %s bytes): %s\n' "$name" \
      "$(awk -v a="$start" -v b="$end" 'BEGIN {print b - a}')" "$cpu" "$mem" "$(stat -c %s "$initrd")" \
      "$(grep -a 'hello 486' "$work/$name.log" | tr -d '\r')"
  else
    echo "---- $name console ----"; tail -n 30 "$work/$name.log"
    die "smoke: $name boot did not reach init"
  fi
}
boot cpio "$work/initrd.cpio.gz" ""
boot ext2 "$work/initrd.ext2.gz" "root=/dev/ram0 init=/linuxrc rw ramdisk_size=$ROOT_KB"
