#!/usr/bin/env bash
# make test-package: the .deb on a fresh Debian with systemd as PID 1. Builds the package,
# checks it with lintian, installs it with dpkg into a minimal bookworm root (mmdebstrap,
# cached), boots that root with systemd-nspawn inside a network namespace this script makes,
# and there does what the README tells an admin: `mosboot init`, `mosboot build`,
# `systemctl enable --now mosboot@lab`. A client namespace on a veth then gets a lease with
# udhcpc and fetches initrd.gz with curl over TFTP. Also checked: the service runs as a
# non-root user with only CAP_NET_BIND_SERVICE, `systemd-analyze security` rates it <= 2.0,
# a rebuild and `systemctl reload` give new pinned nodes their addresses without a restart,
# `systemctl stop` ends it cleanly, `dpkg --purge` cleans up.
# Needs root; never skips. Env: KIT_KERNEL, KIT_BUSYBOX (make test-package sets them).
set -euo pipefail
cd "$(dirname "$0")/../.."
t0=$SECONDS
say() { echo "test-package: $*" >&2; }
fail() { say "FAIL: $*"; exit 1; }
[ "$(id -u)" = 0 ] || fail "needs root (namespaces, chroot, systemd-nspawn)"
: "${KIT_KERNEL:?set KIT_KERNEL (make test-package does)}" "${KIT_BUSYBOX:?set KIT_BUSYBOX}"

scripts/deps.sh build package

deb=$(packaging/deb/build.sh)
say "built $deb"
lintian --fail-on error --suppress-tags-from-file /dev/null "$deb" >&2 || fail "lintian reports errors on $deb"

# The root: minbase + systemd + what the package Depends on, cached by that list.
depends=$(dpkg-deb -f "$deb" Depends | tr ',' '\n' | sed 's/(.*)//; s/ //g' | grep -v '^$' | sort -u | paste -sd, -)
include="systemd,systemd-sysv,dbus,iproute2,$depends"
cache=${KIT_DIR:-/var/cache/mosboot-kit}
key=$(printf 'bookworm minbase %s\n' "$include" | sha256sum | cut -c1-16)
tarball=$cache/package-root-$key.tar
mkdir -p "$cache"
(
  flock 9
  if [ ! -s "$tarball" ]; then
    say "making the Debian root ($include)"
    mmdebstrap -q --format=tar --variant=minbase --include="$include" bookworm "$tarball.tmp" >&2
    mv "$tarball.tmp" "$tarball"
  fi
) 9>"$tarball.lock"

work=$(mktemp -d /var/tmp/mosboot-package.XXXXXX)
root=$work/root
srv=mbpkg-s-$$
cli=mbpkg-c-$$
nspawn_pid=
sd=
cleanup() {
  set +e
  if [ -n "$sd" ]; then nsenter -t "$sd" -a systemctl poweroff --no-block >/dev/null 2>&1; fi
  if [ -n "$nspawn_pid" ]; then
    for _ in $(seq 100); do kill -0 "$nspawn_pid" 2>/dev/null || break; sleep 0.2; done
    kill -9 "$nspawn_pid" 2>/dev/null
    wait "$nspawn_pid" 2>/dev/null
  fi
  ip netns del "$srv" 2>/dev/null
  ip netns del "$cli" 2>/dev/null
  rm -rf "$work"
}
trap cleanup EXIT
mkdir "$root"
tar -C "$root" -xf "$tarball"
cp "$deb" "$root/tmp/"
chroot "$root" dpkg -i "/tmp/$(basename "$deb")" >&2 || fail "dpkg -i failed"
chroot "$root" getent passwd mosboot >/dev/null || fail "postinst made no user mosboot"

# The lab: the container's network namespace and a client namespace, one veth between them.
ip netns add "$srv"
ip netns add "$cli"
ip link add lab0 netns "$srv" type veth peer name cli0 netns "$cli"
ip -n "$srv" link set lo up
ip -n "$srv" addr add 10.77.0.254/24 dev lab0
ip -n "$srv" link set lab0 up
ip -n "$cli" link set lo up
ip -n "$cli" link set cli0 up

systemd-nspawn -q --register=no --keep-unit -D "$root" -b --console=passive \
  --network-namespace-path="/run/netns/$srv" >"$work/nspawn.log" 2>&1 &
nspawn_pid=$!
# The container's PID 1 is the systemd among nspawn's descendants.
for _ in $(seq 100); do
  for child in $(pgrep -P "$nspawn_pid"); do
    for p in "$child" $(pgrep -P "$child"); do
      [ "$(cat "/proc/$p/comm" 2>/dev/null)" = systemd ] && sd=$p
    done
  done
  [ -n "$sd" ] && break
  sleep 0.1
done
[ -n "$sd" ] || { cat "$work/nspawn.log" >&2; fail "systemd did not start in the container"; }
ct() { nsenter -t "$sd" -a "$@"; }
# systemctl fails until PID 1 has its private socket; --wait then waits for the boot to end.
state=
for _ in $(seq 100); do
  state=$(timeout 60 nsenter -t "$sd" -a systemctl is-system-running --wait 2>/dev/null || true)
  [ -n "$state" ] && break
  sleep 0.2
done
say "container systemd (pid $sd) is $state"
case "$state" in running|degraded) ;; *) fail "container did not boot: $state" ;; esac

# What the README's "Install on a server" says, plus the kernel and busybox it asks for.
ct mosboot init --interface lab0 -c /etc/mosboot/lab.toml >&2
mkdir -p "$root/srv/mosboot/kit"
cp "$KIT_KERNEL" "$root/srv/mosboot/kit/bzImage"
cp "$KIT_BUSYBOX" "$root/srv/mosboot/kit/busybox"
ct mosboot -c /etc/mosboot/lab.toml build >&2
journal() { ct journalctl -u mosboot@lab --no-pager -o cat >&2 || true; }
timeout 60 nsenter -t "$sd" -a systemctl enable --now mosboot@lab >&2 || { journal; fail "enable --now failed"; }
[ "$(ct systemctl is-active mosboot@lab)" = active ] || { journal; fail "mosboot@lab is not active"; }

# A client on the lab gets a lease with a hostname, then fetches the initrd by TFTP.
script=$work/udhcpc.sh
printf '#!/bin/sh\n[ "$1" = bound ] && env > %s/lease\nexit 0\n' "$work" > "$script"
chmod +x "$script"
ip netns exec "$cli" udhcpc -f -q -n -t 5 -T 2 -i cli0 -s "$script" >&2 || { journal; fail "udhcpc got no lease"; }
lease_ip=$(sed -n 's/^ip=//p' "$work/lease")
lease_host=$(sed -n 's/^hostname=//p' "$work/lease")
[ "$lease_ip" = 10.77.0.1 ] || fail "lease is '$lease_ip', not the pool's first address 10.77.0.1"
[ "$lease_host" = ws001 ] || fail "hostname is '$lease_host', not ws001 (the LTSP rule for .1)"
ip -n "$cli" addr add "$lease_ip/24" dev cli0
ip netns exec "$cli" curl -sS --max-time 30 -o "$work/initrd.gz" tftp://10.77.0.254/initrd.gz || fail "TFTP fetch failed"
cmp "$work/initrd.gz" "$root/srv/mosboot/out/lab/tftpboot/initrd.gz" || fail "TFTP gave other bytes than the built initrd.gz"
say "lease $lease_ip ($lease_host), initrd.gz $(stat -c %s "$work/initrd.gz") bytes by TFTP"

# Least privilege, as the kernel sees the running process.
pid=$(ct systemctl show -P MainPID mosboot@lab)
status=$(ct cat "/proc/$pid/status")
field() { awk -v k="$1:" '$1 == k { $1 = ""; sub(/^ /, ""); print }' <<<"$status"; }
say "service pid $pid: Uid $(field Uid), CapEff $(field CapEff), CapPrm $(field CapPrm), CapBnd $(field CapBnd), CapAmb $(field CapAmb)"
for u in $(field Uid); do [ "$u" != 0 ] || fail "the service runs with a uid 0 (Uid: $(field Uid))"; done
[ "$(ct id -u mosboot)" = "$(field Uid | awk '{print $1}')" ] || fail "the service does not run as user mosboot"
# The unit grants CAP_NET_BIND_SERVICE (bit 10) only, and serve drops it once its sockets are
# bound: nothing effective, permitted or ambient is left. The bounding set stays as systemd set it
# (emptying it needs CAP_SETPCAP, which the service never had).
for c in CapEff CapPrm CapAmb; do
  [ "$(field $c)" = 0000000000000000 ] || fail "$c is $(field $c), not 0 after binding"
done
[ "$(field CapBnd)" = 0000000000000400 ] || fail "CapBnd is $(field CapBnd), not 0000000000000400 (CAP_NET_BIND_SERVICE)"
[ "$(field NoNewPrivs)" = 1 ] || fail "NoNewPrivs is not set"
[ "$(field Seccomp)" = 2 ] || fail "no seccomp filter"

exposure=$(ct systemd-analyze security --no-pager mosboot@lab.service | sed -n 's/.*Overall exposure level for mosboot@lab.service: \([0-9.]*\) \(.*\)/\1 \2/p')
say "systemd-analyze security mosboot@lab: $exposure"
awk -v e="${exposure%% *}" 'BEGIN { exit !(e != "" && e <= 2.0) }' || fail "exposure '$exposure' is above 2.0"

# Reload. pin MAC IP NAME adds a pinned node to the config; lease_as MAC gets a lease from the
# client with that MAC; reloads N waits until serve has logged N reloads.
pin() { printf '\n[[node]]\nmac = "%s"\nip = "%s"\nhostname = "%s"\n' "$1" "$2" "$3" >>"$root/etc/mosboot/lab.toml"; }
lease_as() {
  ip -n "$cli" addr flush dev cli0
  ip -n "$cli" link set cli0 down
  ip -n "$cli" link set cli0 address "$1"
  ip -n "$cli" link set cli0 up
  rm -f "$work/lease"
  ip netns exec "$cli" udhcpc -f -q -n -t 5 -T 2 -i cli0 -s "$script" >&2 || { journal; fail "udhcpc as $1 got no lease"; }
  sed -n 's/^ip=//p' "$work/lease"
}
reloads() {
  for _ in $(seq 100); do
    [ "$(ct journalctl -u mosboot@lab -o cat --no-pager | grep -c ' reloaded: ')" -ge "$1" ] && return 0
    sleep 0.1
  done
  journal; fail "serve did not reload ($2)"
}
# The automatic path: a rebuild with a new pinned node, no signal.
pin 02:77:00:00:00:02 10.77.0.200 pinned1
ct mosboot -c /etc/mosboot/lab.toml build >&2
reloads 1 "after a rebuild"
got=$(lease_as 02:77:00:00:00:02)
[ "$got" = 10.77.0.200 ] || { journal; fail "after the rebuild the pinned MAC got '$got', not 10.77.0.200"; }
# systemctl reload (SIGHUP): an edited config, no rebuild.
pin 02:77:00:00:00:03 10.77.0.201 pinned2
ct systemctl reload mosboot@lab
reloads 2 "on systemctl reload"
[ "$(ct systemctl is-active mosboot@lab)" = active ] || { journal; fail "reload ended the service"; }
[ "$(ct systemctl show -P MainPID mosboot@lab)" = "$pid" ] || fail "reload restarted the service"
got=$(lease_as 02:77:00:00:00:03)
[ "$got" = 10.77.0.201 ] || { journal; fail "after systemctl reload the pinned MAC got '$got', not 10.77.0.201"; }
say "reload: pinned nodes got 10.77.0.200 (rebuild) and 10.77.0.201 (systemctl reload) without a restart"

# A clean stop: exit status 0, not failed.
ct systemctl stop mosboot@lab
result=$(ct systemctl show -P Result mosboot@lab)
code=$(ct systemctl show -P ExecMainStatus mosboot@lab)
active=$(ct systemctl show -P ActiveState mosboot@lab)
[ "$result/$code/$active" = success/0/inactive ] || { journal; fail "stop: Result=$result ExecMainStatus=$code ActiveState=$active"; }
# Purge under a running systemd: the maintainer scripts remove the user and the state.
ct dpkg --purge mosboot >&2 || fail "dpkg --purge failed"
if ct getent passwd mosboot >/dev/null; then fail "purge left the user mosboot"; fi
[ ! -e "$root/var/lib/mosboot" ] || fail "purge left /var/lib/mosboot"
[ -d "$root/srv/mosboot/out/lab" ] || fail "purge removed the admin's built tree"
say "PASS in $((SECONDS - t0)) s"
