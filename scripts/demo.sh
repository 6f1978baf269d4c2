#!/usr/bin/env bash
# `make demo`: the main job on a built-in demo. Writes a demo cluster.toml, builds the output tree
# with the node kit's kernel and busybox, then runs `mosboot serve` in a private network namespace
# and PXE-boots three emulated PCs (a 486 with ne2k_pci and 16 MB, a Pentium with rtl8139, a
# Pentium III with pcnet) that join, prints their console lines and `mosboot nodes`, and tears
# down only what it made. Called by the Makefile with KIT_KERNEL, KIT_BUSYBOX and KIT_QEMU_DIR set.
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
mosboot=${MOSBOOT_BIN:-$root/target/debug/mosboot}
: "${KIT_KERNEL:?run through make demo}" "${KIT_BUSYBOX:?run through make demo}"
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
printf 'cmdline = "panic=5"\nout = "out"\n' >> cluster.toml

echo "== mosboot check"
"$mosboot" -c cluster.toml check
echo "== mosboot build"
"$mosboot" -c cluster.toml build
echo "== mosboot map"
"$mosboot" -c cluster.toml map
echo "== booting three emulated PCs from mosboot serve (first boot takes ~30 s under emulation)"
logs=$work/logs
rm -rf "$logs"
set +e
"$root/scripts/lab/lab.sh" \
  --ns-prefix mosboot-demo --server-ip 192.168.0.254/24 --bridge br0 --logdir "$logs" --timeout 300 \
  ${KIT_QEMU_DIR:+--qemu-dir "$KIT_QEMU_DIR"} \
  --server "$mosboot -c $work/cluster.toml serve --state $work/state -v" \
  --node "name=486,cpu=486,nic=ne2k_pci,mem=16,mac=52:54:00:de:00:01" \
  --node "name=pentium,cpu=pentium,nic=rtl8139,mem=32,mac=52:54:00:de:00:02" \
  --node "name=p3,cpu=pentium3,nic=pcnet,mem=64,mac=52:54:00:de:00:03" \
  --after "sleep 2; echo; echo '== mosboot nodes'; $mosboot -c $work/cluster.toml nodes --state $work/state"
rc=$?
set -e
echo
echo "== server log (boot stages)"
# "<time> INFO <event>": keep the event, drop the timestamp.
grep -E 'INFO (offered|acked|at=)' "$logs/server.log" | sed -E 's/^[^ ]+ +INFO //; s/^at=[0-9]+ //' | tail -n 30 || true
echo
if [ $rc = 0 ]; then
  echo "demo: all three nodes joined. Consoles and server log: $logs"
else
  echo "demo: FAILED (see $logs)" >&2
fi
exit $rc
