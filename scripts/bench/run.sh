#!/usr/bin/env bash
# `make bench`: mosboot side by side with Kea, dnsmasq and tftpd-hpa, in one run (≤ 20 minutes).
# Prepares the inputs (node kit, delay forwarder, cluster files, a built output tree with a 3 MB
# test file), runs scripts/bench/bench.py (every server and client inside network namespaces it
# creates and deletes) and writes BENCHMARKS.md from the results with scripts/bench/report.py.
#
# Benchmarks measure; they do not fail the build: exit 0 even when mosboot misses a target, and
# non-zero only when the harness itself cannot run.
#
# Environment: MOSBOOT_RELEASE (binary; default $CARGO_TARGET_DIR/release/mosboot),
#   BENCH_SERIES (default dhcp,avalanche,dhcp-disk,loss,tftp,multicast,http,build,boot,floppy,status), BENCH_ARGS (extra bench.py flags),
#   BENCH_OUT (default BENCHMARKS.md in the repo), BENCH_KEEP=1 (keep the work dir with all logs).
set -euo pipefail
root=$(cd "$(dirname "$0")/../.." && pwd)
here=$root/scripts/bench
[ "$(id -u)" = 0 ] || { echo "bench: needs root (network namespaces, taps, nftables, tc)" >&2; exit 2; }

target=${CARGO_TARGET_DIR:-$root/target}
mosboot=${MOSBOOT_RELEASE:-$target/release/mosboot}
[ -x "$mosboot" ] || { echo "bench: no release binary at $mosboot (cargo build --release -p mosboot)" >&2; exit 2; }

# The delay forwarder (tests/bin/delayfwd.rs); without it the delay series is skipped, not failed.
delayfwd=$target/release/mosboot-delayfwd
if ! (cd "$root" && cargo build --release -q -p mosboot-tests --bin mosboot-delayfwd) >&2; then
  echo "bench: could not build the delay forwarder; the delay series will be skipped" >&2
  delayfwd=""
fi

kernel=$("$root/scripts/kit/key.sh" kernel)
busybox=$("$root/scripts/kit/key.sh" busybox)
qemu_dir=$("$root/scripts/kit/key.sh" qemu-dir)
if [ ! -f "$kernel" ] || [ ! -f "$busybox" ]; then
  echo "bench: building the node kit first (kernel, busybox; ~10 minutes once)" >&2
  make -C "$root" -s kit >&2 || echo "bench: the kit build failed; trying an older cached kit" >&2
fi
# A kit cached under an older key still boots the same way; better than no Build/Boot series.
newest() { ls -t "${KIT_DIR:-/var/cache/mosboot-kit}"/$1-*/"$2" 2>/dev/null | head -n1; }
[ -f "$kernel" ] || kernel=$(newest kernel bzImage)
[ -f "$busybox" ] || busybox=$(newest busybox busybox)
if [ ! -f "$kernel" ] || [ ! -f "$busybox" ]; then
  echo "bench: no node kernel/busybox (make kit); cannot build the output tree" >&2; exit 2
fi
echo "bench: kernel $kernel, busybox $busybox" >&2

work=$(mktemp -d /tmp/mosboot-bench-run.XXXXXX)
chmod 755 "$work"
cleanup() { [ "${BENCH_KEEP:-0}" = 1 ] && echo "bench: kept $work" >&2 || rm -rf "$work"; }
trap cleanup EXIT

# The demo-like cluster: what the Build and Boot series build and boot.
sed -e 's|^name = .*|name = "bench"|' -e 's|^interface = .*|interface = "br0"|' \
  -e 's|^lease_time = .*|lease_time = "1h"|' -e "s|^kernel = .*|kernel = \"$kernel\"|" \
  -e "s|^busybox = .*|busybox = \"$busybox\"|" "$root/tests/fixtures/cluster.toml" > "$work/demo.toml"
printf 'cmdline = "panic=5"\nout = "%s"\n' "$work/demo-out" >> "$work/demo.toml"

# The DHCP series: a /16 with 8188 pool addresses (32 map lines), hostnames mosix<N>.
cat > "$work/dhcp.toml" <<TOML
[cluster]
name = "bench-dhcp"
interface = "vs"
server = "10.50.255.254/16"
pool = "10.50.0.1-10.50.31.254"
hostname = "mosix"
lease_time = "12h"

[openmosix]
version = "2.4.26"

[image]
kernel = "$kernel"
busybox = "$busybox"
out = "$work/demo-out"
TOML
sed -e 's/^name = "bench-dhcp"/name = "bench-tftp"/' -e 's/^lease_time = "12h"/lease_time = "12h"\ndhcp = "off"/' \
  "$work/dhcp.toml" > "$work/tftp.toml"

# The http series: the TFTP cluster with mosboot's HTTP server on.
sed -e 's/^name = "bench-tftp"/name = "bench-http"/' "$work/tftp.toml" > "$work/http.toml"
printf '\n[serve]\nhttp = "0.0.0.0:8080"\n' >> "$work/http.toml"

for t in demo dhcp tftp http; do
  "$mosboot" -c "$work/$t.toml" check >&2 || { echo "bench: mosboot check failed for $t.toml" >&2; exit 2; }
done
"$mosboot" -c "$work/demo.toml" build >&2 || { echo "bench: mosboot build failed" >&2; exit 2; }
head -c $((3 * 1024 * 1024)) /dev/urandom > "$work/demo-out/tftpboot/bench3m.bin"
chmod -R a+rX "$work/demo-out"

# The floppy series: a `mosboot floppy` of the kit's floppy kernel and stage-1 busybox.
floppy_img=""
fkernel=$("$root/scripts/kit/key.sh" floppy-kernel) fbusybox=$("$root/scripts/kit/key.sh" busybox-stage1)
if [ -f "$fkernel" ] && [ -f "$fbusybox" ] \
   && "$mosboot" floppy --out "$work/floppy.img" --kernel "$fkernel" --busybox "$fbusybox" >&2; then
  floppy_img=$work/floppy.img
fi

# perfdhcp's receive buffers (scripts/bench/rcvbuf.c): without gcc the DHCP series runs without it.
shim=""
if gcc -O2 -shared -fPIC -o "$work/rcvbuf.so" "$here/rcvbuf.c" -ldl >&2; then
  shim=$work/rcvbuf.so
else
  echo "bench: could not build rcvbuf.so; perfdhcp keeps its default socket buffers" >&2
fi

series=${BENCH_SERIES:-dhcp,avalanche,dhcp-disk,loss,tftp,multicast,http,build,boot,floppy,status}
keep=()
[ "${BENCH_KEEP:-0}" = 1 ] && keep=(--keep)
rc=0
# shellcheck disable=SC2086
python3 "$here/bench.py" --mosboot "$mosboot" --delayfwd "$delayfwd" \
  --dhcp-toml "$work/dhcp.toml" --tftp-toml "$work/tftp.toml" --http-toml "$work/http.toml" --demo-toml "$work/demo.toml" \
  --demo-out "$work/demo-out" --outtree "$work/demo-out" --tftproot "$work/demo-out/tftpboot" \
  --qemu-dir "$qemu_dir" --floppy-img "$floppy_img" --client-rcvbuf-shim "$shim" --out "$work/results.json" --series "$series" \
  "${keep[@]}" ${BENCH_ARGS:-} || rc=$?
[ -f "$work/results.json" ] || { echo "bench: the harness produced no results (exit $rc)" >&2; exit 2; }
mkdir -p "$root/scripts/bench/last"
cp "$work/results.json" "$root/scripts/bench/last/results.json"
python3 "$here/report.py" "$work/results.json" "${BENCH_OUT:-$root/BENCHMARKS.md}"
# The status page's cost (issue 13): 254 simulated nodes reporting every 5 s; one line appended.
if [[ ",$series," == *",status,"* ]]; then
  if line=$(python3 "$here/status_cost.py" --mosboot "$mosboot" --json "$work/status.json" | tail -n1); then
    printf '\n## Status page cost\n\n| what | load | extra cost of serve | goal |\n| --- | --- | --- | --- |\n%s\n' "$line" \
      >> "${BENCH_OUT:-$root/BENCHMARKS.md}"
    cp "$work/status.json" "$root/scripts/bench/last/status.json"
  else
    echo "bench: the status cost series failed" >&2
  fi
fi
echo "bench: wrote ${BENCH_OUT:-$root/BENCHMARKS.md}" >&2
[ $rc = 0 ] || echo "bench: the harness reported a problem (exit $rc); see above" >&2
exit $rc
