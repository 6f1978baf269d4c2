#!/usr/bin/env bash
# `make demo`: the main job on a built-in demo. Writes a demo cluster.toml, builds the output tree
# with the node kit's kernel and busybox, then runs `mosboot serve` in a private network namespace
# and boots four emulated PCs: three PXE-boot (a 486 with ne2k_pci and 16 MB, a Pentium with
# rtl8139, a Pentium III with pcnet), the fourth is a 486 with an ISA NE2000 (no boot ROM, no PCI
# NIC) that boots from `mosboot floppy`. All join; it prints their console lines and `mosboot
# nodes`, and tears down only what it made. The status page is on (127.0.0.1:8067 in the
# namespace); with DEMO_KEEP=1 the lab stays up until Ctrl-C and the page is forwarded to this
# machine's 127.0.0.1:8067, so a person can look. Called by the Makefile with KIT_KERNEL,
# KIT_BUSYBOX, KIT_FLOPPY_KERNEL, KIT_BUSYBOX_STAGE1 and KIT_QEMU_DIR set.
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
mosboot=${MOSBOOT_BIN:-$root/target/debug/mosboot}
: "${KIT_KERNEL:?run through make demo}" "${KIT_BUSYBOX:?run through make demo}"
: "${KIT_FLOPPY_KERNEL:?run through make demo}" "${KIT_BUSYBOX_STAGE1:?run through make demo}"
[ "$(id -u)" = 0 ] || { echo "demo: needs root (network namespace, tap devices)" >&2; exit 2; }

work=${DEMO_DIR:-$root/demo-lab}
mkdir -p "$work"
cd "$work"
rm -rf state
# The shared sample cluster (tests/fixtures/cluster.toml) on the demo's private bridge, with the
# kit's kernel and busybox: a LAN that exists only inside the demo's network namespace.
sed -e 's|^name = .*|name = "demo"|' -e 's|^interface = .*|interface = "br0"|' \
  -e 's|^lease_time = .*|lease_time = "1h"|' -e "s|^kernel = .*|kernel = \"$KIT_KERNEL\"|" \
  -e "s|^busybox = .*|busybox = \"$KIT_BUSYBOX\"|" "$root/tests/fixtures/cluster.toml" > cluster.toml
printf 'cmdline = "panic=5"\nout = "out"\n\n[serve]\nstatus = "127.0.0.1:8067"\n' >> cluster.toml

echo "== mosboot check"
"$mosboot" -c cluster.toml check
echo "== mosboot build"
"$mosboot" -c cluster.toml build
echo "== mosboot map"
"$mosboot" -c cluster.toml map
echo "== mosboot floppy (for the ISA 486: SYSLINUX + floppy kernel + stage-1; it fetches out/ at boot)"
"$mosboot" floppy --out floppy.img --kernel "$KIT_FLOPPY_KERNEL" --busybox "$KIT_BUSYBOX_STAGE1"
echo "== booting four emulated PCs from mosboot serve (first boot takes ~30 s under emulation)"
logs=$work/logs
rm -rf "$logs"
keep=() after_keep=""
if [ "${DEMO_KEEP:-0}" = 1 ]; then
  keep=(--keep)
  after_keep="; python3 $root/scripts/lab/statusfwd.py \$(ip netns identify) 8067 /proc/$$/ns/net & sleep 0.5; \
echo 'status page: http://127.0.0.1:8067/ (from your desktop: ssh -L 8067:127.0.0.1:8067 this-machine)'"
fi
set +e
"$root/scripts/lab/lab.sh" "${keep[@]}" \
  --ns-prefix mosboot-demo --server-ip 192.168.0.254/24 --bridge br0 --logdir "$logs" --timeout 300 \
  ${KIT_QEMU_DIR:+--qemu-dir "$KIT_QEMU_DIR"} \
  --server "$mosboot -c $work/cluster.toml serve --state $work/state -v" \
  --node "name=486,cpu=486,nic=ne2k_pci,mem=16,mac=52:54:00:de:00:01" \
  --node "name=pentium,cpu=pentium,nic=rtl8139,mem=32,mac=52:54:00:de:00:02" \
  --node "name=p3,cpu=pentium3,nic=pcnet,mem=64,mac=52:54:00:de:00:03" \
  --node "name=isa-floppy,cpu=486,nic=ne2k_isa,io=0x300,irq=9,mem=16,mac=52:54:00:de:00:04,fda=$work/floppy.img" \
  --after "sleep 2; echo; echo '== mosboot nodes'; $mosboot -c $work/cluster.toml nodes --state $work/state; echo; echo 'status page (inside the lab namespace): http://127.0.0.1:8067/'$after_keep"
rc=$?
set -e
echo
echo "== server log (boot stages)"
# "<time> INFO <event>": keep the event, drop the timestamp.
grep -E 'INFO (offered|acked|at=)' "$logs/server.log" | sed -E 's/^[^ ]+ +INFO //; s/^at=[0-9.]+ //' | tail -n 30 || true
echo
if [ $rc = 0 ]; then
  echo "demo: all four nodes joined (three by PXE, one ISA 486 from the floppy). Consoles and server log: $logs"
else
  echo "demo: FAILED (see $logs)" >&2
fi
exit $rc
