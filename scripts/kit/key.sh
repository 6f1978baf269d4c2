#!/usr/bin/env bash
# Prints a kit artifact's cached path (for mk/kit.mk): key.sh NAME (see the usage line)
set -euo pipefail
source "$(dirname "$0")/common.sh"
case "${1:-}" in
  kernel)   echo "$(kernel_dir)/bzImage" ;;
  floppy-kernel) echo "$(KERNEL_FLAVOUR=floppy-i486 kernel_dir)/bzImage" ;;
  busybox)  echo "$(busybox_dir)/busybox" ;;
  busybox-lean) echo "$(BUSYBOX_FLAVOUR=lean busybox_dir)/busybox" ;;
  busybox-stage1) echo "$(BUSYBOX_FLAVOUR=stage1 busybox_dir)/busybox" ;;
  ipxe-dir) echo "$(ipxe_dir)" ;;
  lkrn)     echo "$(ipxe_dir)/usr/lib/ipxe/ipxe.lkrn" ;;
  qemu-dir) echo "$(ipxe_dir)/usr/share/qemu" ;;
  *) echo "usage: $0 kernel|floppy-kernel|busybox|busybox-lean|busybox-stage1|ipxe-dir|lkrn|qemu-dir" >&2; exit 2 ;;
esac
