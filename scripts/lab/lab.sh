#!/usr/bin/env bash
# The virtual lab: emulated old PCs network-boot from a server inside a private network
# namespace. Makes a namespace with a bridge (the server's address sits on the bridge) and one
# tap per node, runs the server command and one QEMU per node in it, each node's console to a log
# file, waits until every node prints its success line, and tears down exactly what it made
# (its own PIDs and its namespace) on any exit.
#
# Usage: scripts/lab/lab.sh [options] --server 'CMD' --node SPEC [--node SPEC ...]
#   --server CMD     server command, run by bash inside the namespace (e.g. 'mosboot -c lab.toml serve')
#   --node SPEC      comma-separated key=value: cpu=486|pentium|pentium2|pentium3 (QEMU -cpu),
#                    nic=ne2k_pci|rtl8139|pcnet|e1000|i82557b|ne2k_isa, mem=MB, mac=52:54:00:..,
#                    optional name=, rom=off (no NIC boot ROM), fda=FILE (boot that floppy),
#                    io=0x300 irq=9 (the ne2k_isa card's port and IRQ; these are the defaults),
#                    kernel=FILE initrd=FILE append='...' (direct kernel boot; no commas in append)
#   --server-ip CIDR address of the server on the bridge (default 192.168.0.254/24)
#   --bridge NAME    bridge name inside the namespace (default br0)
#   --ns-prefix P    namespace name prefix (default mosboot-lab); the name is P-<pid>
#   --wait REGEX     a node is done when its console matches (default: mosboot joined/standalone)
#   --fail REGEX     a node has failed when its console matches (default: kernel panic)
#   --timeout SEC    for all nodes together (default 240)
#   --logdir DIR     node-<name>.log, server.log (default: a new /tmp/mosboot-lab.XXXXXX)
#   --qemu-dir DIR   -L directory with iPXE ROMs (default: the kit's Debian 13 ROMs)
#   --after CMD      run inside the namespace once all nodes are done (e.g. 'mosboot nodes')
#   --stagger SEC    delay between node starts (default 0)
#   --keep           after success, keep everything running until Ctrl-C
#   --capture DIR    tcpdump every tap and the bridge into DIR/<dev>.pcap (also: env LAB_CAPTURE)
# Exit: 0 every node matched --wait; 1 a node failed, died or timed out; 2 setup failed.
# Needs root (namespaces, taps).
set -euo pipefail
# The whole script is one brace group: bash then parses it completely before running it, so
# children started in the background cannot disturb bash's reading of this file.
{
here=$(cd "$(dirname "$0")" && pwd)
source "$here/../kit/common.sh"

server_cmd="" server_ip=192.168.0.254/24 bridge=br0 ns_prefix=mosboot-lab
wait_re='mosboot: (joined .* as node [0-9]+ of [0-9]+|no openMosix in this kernel; node [0-9]+ of [0-9]+ runs standalone)'
fail_re='Kernel panic|end Kernel panic|No bootable device|PXE-E|No more network devices|mosboot: floppy stage-1 failed'
timeout=240 logdir="" qemu_dir="" after_cmd="" stagger=0 keep=0 capture=${LAB_CAPTURE:-}
nodes=()
while [ $# -gt 0 ]; do
  case "$1" in
    --server) server_cmd=$2; shift ;;
    --node) nodes+=("$2"); shift ;;
    --server-ip) server_ip=$2; shift ;;
    --bridge) bridge=$2; shift ;;
    --ns-prefix) ns_prefix=$2; shift ;;
    --wait) wait_re=$2; shift ;;
    --fail) fail_re=$2; shift ;;
    --timeout) timeout=$2; shift ;;
    --logdir) logdir=$2; shift ;;
    --qemu-dir) qemu_dir=$2; shift ;;
    --after) after_cmd=$2; shift ;;
    --stagger) stagger=$2; shift ;;
    --keep) keep=1 ;;
    --capture) capture=$2; shift ;;
    -h|--help) sed -n '2,/^set -euo/p' "$0" | sed '$d; s/^# \{0,1\}//'; exit 0 ;;
    *) echo "lab: unknown option '$1' (see --help)" >&2; exit 2 ;;
  esac
  shift
done
[ ${#nodes[@]} -gt 0 ] || { echo "lab: no --node given (see --help)" >&2; exit 2; }
[ "$(id -u)" = 0 ] || { echo "lab: needs root (network namespace, tap devices)" >&2; exit 2; }
command -v qemu-system-i386 >/dev/null || { echo "lab: qemu-system-i386 missing (scripts/deps.sh kit)" >&2; exit 2; }
[ -n "$qemu_dir" ] || qemu_dir=$(ipxe_dir)/usr/share/qemu
[ -d "$qemu_dir" ] || { echo "lab: no iPXE ROM directory $qemu_dir (make kit-ipxe)" >&2; exit 2; }
[ -n "$logdir" ] || logdir=$(mktemp -d /tmp/mosboot-lab.XXXXXX)
mkdir -p "$logdir"

ns=$ns_prefix-$$
pids=()        # every process we started, server first
made_ns=0
lab_t0=$(date +%s.%N)
elapsed() { awk -v a="$lab_t0" -v b="$(date +%s.%N)" 'BEGIN {printf "%.1f", b - a}'; }
say() { printf '[lab %6ss] %s\n' "$(elapsed)" "$*"; }

teardown() {
  local rc=$? pid
  trap - EXIT INT TERM
  # Nodes and server: TERM, a short grace period, then KILL; only our own PIDs.
  for pid in "${pids[@]}"; do kill -TERM "$pid" 2>/dev/null || true; done
  for _ in 1 2 3 4 5 6 7 8 9 10; do
    local alive=0
    for pid in "${pids[@]}"; do kill -0 "$pid" 2>/dev/null && alive=1; done
    [ $alive = 0 ] && break
    sleep 0.3
  done
  for pid in "${pids[@]}"; do kill -KILL "$pid" 2>/dev/null || true; done
  for pid in "${pids[@]}"; do wait "$pid" 2>/dev/null || true; done
  # Deleting the namespace deletes its bridge and taps with it.
  [ $made_ns = 1 ] && ip netns del "$ns" 2>/dev/null || true
  [ $made_ns = 1 ] && say "torn down: namespace $ns and ${#pids[@]} process(es); logs in $logdir"
  exit "$rc"
}
trap teardown EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

# --- topology ---------------------------------------------------------------------------
ip netns add "$ns"; made_ns=1
ip -n "$ns" link set lo up
# No IGMP snooping: iPXE never sends IGMP reports, so a snooping bridge (Linux's default, like
# many managed switches) would starve its nodes of multicast as soon as anything else on the
# segment joins a group; the lab stands for a hub or a switch that floods multicast.
ip -n "$ns" link add "$bridge" type bridge stp_state 0 forward_delay 0 mcast_snooping 0
ip -n "$ns" addr add "$server_ip" dev "$bridge"
ip -n "$ns" link set "$bridge" up
for i in "${!nodes[@]}"; do
  ip -n "$ns" tuntap add dev "tap$i" mode tap
  ip -n "$ns" link set "tap$i" master "$bridge" up
done
say "namespace $ns: bridge $bridge ($server_ip), taps tap0..tap$(( ${#nodes[@]} - 1 ))"

# --- server -----------------------------------------------------------------------------
if [ -n "$server_cmd" ]; then
  ip netns exec "$ns" bash -c "exec $server_cmd" > "$logdir/server.log" 2>&1 < /dev/null &
  pids+=($!)
  say "server (pid $!): $server_cmd; log $logdir/server.log"
  sleep 1
  kill -0 "${pids[0]}" 2>/dev/null || { tail -n 20 "$logdir/server.log" >&2; echo "lab: server exited at once" >&2; exit 2; }
fi

# (after the server: pids[0] is the server)
if [ -n "$capture" ]; then
  mkdir -p "$capture"
  for dev in "$bridge" $(for i in "${!nodes[@]}"; do echo "tap$i"; done); do
    ip netns exec "$ns" tcpdump -q -n -s 96 -U -i "$dev" -w "$capture/$dev.pcap" 2>/dev/null &
    pids+=($!)
  done
  sleep 0.5
  say "capturing $bridge and the taps into $capture/"
fi

# --- nodes ------------------------------------------------------------------------------
declare -a names logs nodepids starts descr
for i in "${!nodes[@]}"; do
  cpu=486 nic=ne2k_pci mem=16 mac=$(printf '52:54:00:6c:%02x:%02x' $(( $$ % 256 )) $(( i + 1 )))
  name=n$(( i + 1 )) rom=on fda="" kernel="" initrd="" append="" io=0x300 irq=9
  IFS=',' read -r -a kvs <<<"${nodes[$i]}"
  for kv in "${kvs[@]}"; do
    case "$kv" in
      cpu=*) cpu=${kv#*=} ;; nic=*) nic=${kv#*=} ;; mem=*) mem=${kv#*=} ;; mac=*) mac=${kv#*=} ;;
      name=*) name=${kv#*=} ;; rom=*) rom=${kv#*=} ;; fda=*) fda=${kv#*=} ;;
      kernel=*) kernel=${kv#*=} ;; initrd=*) initrd=${kv#*=} ;; append=*) append=${kv#*=} ;;
      io=*) io=${kv#*=} ;; irq=*) irq=${kv#*=} ;;
      *) echo "lab: node $((i + 1)): unknown key in '$kv' (cpu nic mem mac name rom fda io irq kernel initrd append)" >&2; exit 2 ;;
    esac
  done
  log=$logdir/node-$name.log
  netdev="tap,ifname=tap$i,script=no,downscript=no"
  q=(qemu-system-i386 -M pc -cpu "$cpu" -m "$mem" -nographic -monitor none -serial stdio -no-reboot
     -L "$qemu_dir" -name "$name")
  if [ "$nic" = ne2k_isa ]; then
    # ISA cards have no boot ROM; such a node boots from a floppy or a given kernel. -M pc
    # still has its PCI bus, but with -netdev/-device and no -nic there is no PCI NIC on it.
    q+=(-netdev "$netdev,id=net0" -device "ne2k_isa,netdev=net0,mac=$mac,iobase=$io,irq=$irq")
  elif [ "$rom" = off ]; then
    # -nic takes no romfile=; the long form does.
    q+=(-netdev "$netdev,id=net0" -device "$nic,netdev=net0,mac=$mac,romfile=")
  else
    q+=(-nic "$netdev,model=$nic,mac=$mac")
  fi
  if [ -n "$fda" ]; then q+=(-drive "file=$fda,if=floppy,format=raw,readonly=on" -boot a)
  elif [ -n "$kernel" ]; then q+=(-kernel "$kernel"); [ -n "$initrd" ] && q+=(-initrd "$initrd"); q+=(-append "$append")
  else q+=(-boot n)
  fi
  ip netns exec "$ns" "${q[@]}" > "$log" 2>&1 < /dev/null &
  pids+=($!); nodepids[$i]=$!; names[$i]=$name; logs[$i]=$log; starts[$i]=$(date +%s.%N)
  descr[$i]="cpu=$cpu nic=$nic mem=${mem}M mac=$mac"
  [ "$nic" = ne2k_isa ] && descr[$i]+=" io=$io irq=$irq"
  say "node $name (pid $!): ${descr[$i]}; console $log"
  [ "$stagger" = 0 ] || sleep "$stagger"
done

# --- wait -------------------------------------------------------------------------------
declare -a state took
declare -A seen   # "<node>:<milestone>" -> seconds since that node's start
milestones=("ipxe:iPXE initialising" "pxelinux:PXELINUX [0-9]|SYSLINUX [0-9]" "kernel:Linux version [0-9]" "init:Run /init|Run /linuxrc|Freeing unused kernel" "stage1:mosboot: floppy: starting the node image" "up:mosboot: up ")
for i in "${!nodes[@]}"; do state[$i]="wait"; done
node_elapsed() { awk -v a="${starts[$1]}" -v b="$(date +%s.%N)" 'BEGIN {printf "%.1f", b - a}'; }
# Poll-based (every 0.5 s), so each time is accurate to about half a second.
mark_milestones() {
  local i=$1 m key
  for m in "${milestones[@]}"; do
    key="$i:${m%%:*}"
    [ -n "${seen[$key]:-}" ] && continue
    grep -aEq "${m#*:}" "${logs[$i]}" && seen[$key]=$(node_elapsed "$i")
  done
  return 0
}
milestone_summary() {
  local i=$1 m out=""
  for m in "${milestones[@]}"; do
    [ -n "${seen[$i:${m%%:*}]:-}" ] && out+="${m%%:*} ${seen[$i:${m%%:*}]}s, "
  done
  echo "${out%, }"
}
deadline=$(( $(date +%s) + timeout ))
while :; do
  pending=0
  for i in "${!nodes[@]}"; do
    [ "${state[$i]}" = wait ] || continue
    log=${logs[$i]}
    mark_milestones "$i"
    if grep -aEq "$wait_re" "$log"; then
      state[$i]=ok
      took[$i]=$(node_elapsed "$i")
      grep -aE 'mosboot: up ' "$log" | tr -d '\r' | sed "s/^/[${names[$i]}] /" || true
      grep -aEo "$wait_re" "$log" | head -n1 | sed "s/^/[${names[$i]}] /"
      say "node ${names[$i]} done in ${took[$i]} s ($(milestone_summary "$i"))"
    elif grep -aEq "$fail_re" "$log"; then
      state[$i]=failed; say "node ${names[$i]} FAILED: $(grep -aEo "$fail_re" "$log" | head -n1)"
    elif ! kill -0 "${nodepids[$i]}" 2>/dev/null; then
      state[$i]=died; say "node ${names[$i]} FAILED: QEMU exited before the node was done"
    else
      pending=1
    fi
  done
  [ $pending = 1 ] || break
  if [ "$(date +%s)" -ge $deadline ]; then
    for i in "${!nodes[@]}"; do [ "${state[$i]}" = wait ] && { state[$i]=timeout; say "node ${names[$i]} FAILED: timed out after $timeout s"; }; done
    break
  fi
  if [ -n "$server_cmd" ] && ! kill -0 "${pids[0]}" 2>/dev/null; then
    tail -n 20 "$logdir/server.log"; say "server exited while nodes were booting"
    for i in "${!nodes[@]}"; do [ "${state[$i]}" = wait ] && state[$i]=server-died; done
    break
  fi
  sleep 0.5
done

[ -z "$capture" ] || ip -n "$ns" -d link show "$bridge" > "$capture/bridge.txt" 2>&1 || true
[ -z "$capture" ] || bridge -n "$ns" mdb show >> "$capture/bridge.txt" 2>&1 || true
failed=0
for i in "${!nodes[@]}"; do
  if [ "${state[$i]}" != ok ]; then
    failed=1
    echo "---- node ${names[$i]} (${descr[$i]}): ${state[$i]}; last console lines ----"
    tail -n 25 "${logs[$i]}" | tr -d '\r'
  fi
done
[ -z "$after_cmd" ] || ip netns exec "$ns" bash -c "$after_cmd" || failed=1
printf 'lab: %d of %d node(s) done in %s s\n' "$(printf '%s\n' "${state[@]}" | grep -cx ok)" "${#nodes[@]}" "$(elapsed)"
if [ $keep = 1 ] && [ $failed = 0 ]; then
  say "running; Ctrl-C ends the lab (consoles: $logdir)"
  while :; do sleep 1; done
fi
exit $failed
}
