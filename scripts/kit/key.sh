#!/usr/bin/env bash
# Prints a kit artifact's cached path (for mk/kit.mk): key.sh kernel|busybox|busybox-lean|ipxe-dir|lkrn|qemu-dir
set -euo pipefail
source "$(dirname "$0")/common.sh"
case "${1:-}" in
  kernel)   echo "$(kernel_dir)/bzImage" ;;
  busybox)  echo "$(busybox_dir)/busybox" ;;
  busybox-lean) echo "$(BUSYBOX_FLAVOUR=lean busybox_dir)/busybox" ;;
  ipxe-dir) echo "$(ipxe_dir)" ;;
  lkrn)     echo "$(ipxe_dir)/usr/lib/ipxe/ipxe.lkrn" ;;
  qemu-dir) echo "$(ipxe_dir)/usr/share/qemu" ;;
  *) echo "usage: $0 kernel|busybox|busybox-lean|ipxe-dir|lkrn|qemu-dir" >&2; exit 2 ;;
esac
