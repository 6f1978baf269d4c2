#!/usr/bin/env bash
# Fetches Debian 13 (trixie) iPXE - the QEMU NIC option ROMs (ipxe-qemu) and ipxe.lkrn/undionly
# (ipxe) - into $KIT_DIR/ipxe-trixie without installing anything: private apt sources/state/cache
# and `dpkg -x`. Debian 12's iPXE executes FXSAVE and hangs on 486/Pentium CPUs; trixie's works.
# QEMU use: -L $KIT_DIR/ipxe-trixie/usr/share/qemu (QEMU still searches its default firmware
# path after -L, so SeaBIOS and the VGA BIOS come from the system).
set -euo pipefail
source "$(dirname "$0")/common.sh"

"$REPO_ROOT/scripts/deps.sh" kit

kit_lock ipxe
out=$(ipxe_dir)
if [ -s "$out/usr/lib/ipxe/ipxe.lkrn" ] && [ -s "$out/usr/share/qemu/pxe-ne2k_pci.rom" ]; then
  log "ipxe: cached $out ($(cat "$out/VERSION" 2>/dev/null))"
  exit 0
fi
mkdir -p "$KIT_DIR"
aptdir=$KIT_DIR/apt-$IPXE_SUITE
private_apt "$aptdir" "deb $IPXE_SUITE main"
log "ipxe: fetching ipxe-qemu and ipxe from Debian $IPXE_SUITE (private apt dirs in $aptdir)"
run_logged "$aptdir/apt.log" "${APT[@]}" update
dl=$(mktemp -d "$KIT_DIR/.ipxe.XXXXXX")
(cd "$dl" && run_logged "$aptdir/apt.log" "${APT[@]}" download ipxe-qemu ipxe)
mkdir "$dl/root"
for deb in "$dl"/*.deb; do dpkg -x "$deb" "$dl/root"; done
dpkg-deb -f "$dl"/ipxe-qemu_*.deb Version > "$dl/root/VERSION"
[ -s "$dl/root/usr/lib/ipxe/ipxe.lkrn" ] || die "ipxe: ipxe.lkrn missing from the $IPXE_SUITE ipxe package"
rm -rf "$out"; mv "$dl/root" "$out"; rm -rf "$dl"
log "ipxe: $out (version $(cat "$out/VERSION")): $(find "$out/usr/share/qemu" -name 'pxe-*.rom' | wc -l) PXE ROMs, ipxe.lkrn, undionly.kpxe"
