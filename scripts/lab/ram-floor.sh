#!/usr/bin/env bash
# Measures the RAM floor: boots the demo image on emulated 486s (ne2k_pci) with 6..12 MB at once
# and reports which sizes reach "mosboot: ... node N of M". Needs `make demo` to have run once
# (it uses demo-lab/cluster.toml and its output tree). Usage: scripts/lab/ram-floor.sh [MB...]
set -euo pipefail
root=$(cd "$(dirname "$0")/../.." && pwd)
mosboot=${MOSBOOT_BIN:-$root/target/debug/mosboot}
cfg=${DEMO_DIR:-$root/demo-lab}/cluster.toml
[ -f "$cfg" ] || { echo "ram-floor: run make demo first (no $cfg)" >&2; exit 2; }
sizes=("$@")
[ ${#sizes[@]} -gt 0 ] || sizes=(6 7 8 9 10 11 12)
state=$(mktemp -d /tmp/mosboot-ramfloor.XXXXXX)
args=()
for mb in "${sizes[@]}"; do
  args+=(--node "name=${mb}MB,cpu=486,nic=ne2k_pci,mem=$mb,mac=$(printf '52:54:00:f1:00:%02x' "$mb")")
done
set +e
"$root/scripts/lab/lab.sh" --ns-prefix mosboot-ram --timeout 180 --logdir "$state/logs" \
  --server "$mosboot -c $cfg serve --state $state/state" "${args[@]}" | grep -E 'done in|FAILED'
set -e
echo "ram-floor: consoles in $state/logs"
