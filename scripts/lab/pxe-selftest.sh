#!/usr/bin/env bash
# Lab self-test without mosboot: dnsmasq (inside the lab namespace only) serves pxelinux, the kit
# kernel and a tiny root of the kit busybox whose init asks DHCP and powers off. Proves the
# topology, the Debian 13 iPXE ROMs on old CPUs, pxelinux, the kernel's NIC drivers and both
# initrd formats (newc cpio; ext2 in /dev/ram0, the 2.4 format) before mosboot serve exists.
# Usage: scripts/lab/pxe-selftest.sh [lab.sh options...]   (default: four nodes, see below)
# Needs root, the kit (make kit) and dnsmasq-base, pxelinux, syslinux-common, cpio, e2fsprogs.
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
source "$here/../kit/common.sh"
"$REPO_ROOT/scripts/deps.sh" test

kernel=$(kernel_dir)/bzImage busybox=$(busybox_dir)/busybox
[ -s "$kernel" ] || die "no kit kernel at $kernel (make kit-kernel)"
[ -x "$busybox" ] || die "no kit busybox at $busybox (make kit-busybox)"
work=$(mktemp -d /tmp/mosboot-pxe-selftest.XXXXXX)
chmod 755 "$work"   # dnsmasq's TFTP runs as nobody
trap 'rm -rf "$work"' EXIT
tftp=$work/tftpboot
mkdir -p "$tftp/pxelinux.cfg"
cp /usr/lib/PXELINUX/pxelinux.0 /usr/lib/syslinux/modules/bios/ldlinux.c32 "$tftp/"
cp "$kernel" "$tftp/vmlinuz"

root=$work/root
busybox_root "$root" "$busybox"
cat > "$root/init" <<'INIT'
#!/bin/sh
mount -t proc proc /proc
mount -t sysfs sys /sys
echo "selftest: $(uname -r) on $(awk -F': ' '/^model name/ {print $2; exit}' /proc/cpuinfo), $(awk '/MemTotal/ {print $2 " kB"}' /proc/meminfo), root $(awk '$2=="/" {print $3}' /proc/mounts)"
ip link set lo up
ip link set eth0 up
if udhcpc -i eth0 -n -q -t 10 -T 1 -s /dhcp.sh; then
  echo "selftest: done $(cat /tmp/lease)"
else
  echo "selftest: no DHCP lease"
fi
poweroff -f
INIT
cat > "$root/dhcp.sh" <<'DHCP'
#!/bin/sh
[ "$1" = bound ] || exit 0
ifconfig "$interface" "$ip" netmask "$subnet" up
echo "$ip via $interface from ${serverid:-?}" > /tmp/lease
DHCP
chmod 755 "$root/init" "$root/dhcp.sh"
ln -s init "$root/linuxrc"
pack_initrds "$root" "$tftp/initrd.gz" "$tftp/initrd-ext2.gz"

# -nographic mirrors the screen to serial already, so no pxelinux SERIAL line.
cat > "$tftp/pxelinux.cfg/default" <<EOF
DEFAULT node
PROMPT 0
TIMEOUT 0
LABEL node
  KERNEL vmlinuz
  INITRD initrd.gz
  APPEND console=ttyS0 panic=1
EOF
ext2_mac=52:54:00:5e:00:04
cat > "$tftp/pxelinux.cfg/01-${ext2_mac//:/-}" <<EOF
DEFAULT node
PROMPT 0
TIMEOUT 0
LABEL node
  KERNEL vmlinuz
  INITRD initrd-ext2.gz
  APPEND console=ttyS0 panic=1 root=/dev/ram0 init=/linuxrc rw ramdisk_size=$ROOT_KB
EOF

# Only inside the lab namespace, on its bridge; --port=0 turns off DNS.
server="dnsmasq --no-daemon --conf-file=/dev/null --port=0 --interface=br0 --bind-interfaces \
  --dhcp-range=192.168.0.10,192.168.0.99,255.255.255.0,1h --dhcp-boot=pxelinux.0 --no-ping \
  --dhcp-leasefile=$work/leases --pid-file=$work/dnsmasq.pid --enable-tftp --tftp-root=$tftp \
  --log-dhcp --log-facility=-"

args=("$@")
if [ ${#args[@]} -eq 0 ]; then
  # shellcheck disable=SC2054 # commas belong to the node specs
  args=(--node cpu=486,nic=ne2k_pci,mem=16,mac=52:54:00:5e:00:01
        --node cpu=pentium,nic=rtl8139,mem=16,mac=52:54:00:5e:00:02
        --node cpu=pentium3,nic=pcnet,mem=32,mac=52:54:00:5e:00:03
        --node "cpu=486,nic=e1000,mem=16,mac=$ext2_mac"
        # An ISA NE2000 has no boot ROM: boot the same kernel and initrd directly.
        --node "cpu=486,nic=ne2k_isa,mem=16,mac=52:54:00:5e:00:05,kernel=$tftp/vmlinuz,initrd=$tftp/initrd.gz,append=console=ttyS0 panic=1")
fi
"$here/lab.sh" --server "$server" --server-ip 192.168.0.254/24 \
  --wait 'selftest: done [0-9.]+' --fail 'Kernel panic|selftest: no DHCP lease|No bootable device' \
  --timeout 180 "${args[@]}"
