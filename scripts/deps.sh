#!/usr/bin/env bash
# Installs the Debian packages a make target needs, once. Idempotent and quiet when all is present.
# Usage: scripts/deps.sh GROUP...   (groups: build test kit package bench)
set -euo pipefail

want=()
for group in "$@"; do
  case "$group" in
    build) want+=(pxelinux syslinux-common syslinux mtools dosfstools cpio e2fsprogs) ;;
    test)  want+=(pxelinux syslinux-common syslinux mtools dosfstools cpio e2fsprogs
                  iproute2 bridge-utils nftables isc-dhcp-client udhcpc busybox
                  tftp-hpa atftp curl dnsmasq-base isc-dhcp-server chromium nginx-light) ;;
    kit)   want+=(linux-source-6.1 build-essential bc flex bison libelf-dev xz-utils
                  dpkg-dev python3-pip qemu-user binutils file) ;;
    package) want+=(dpkg-dev binutils lintian mmdebstrap systemd-container udhcpc curl iproute2) ;;
    bench) want+=(kea-dhcp4-server kea-admin tftpd-hpa atftp dnsmasq-base hyperfine gcc libc6-dev) ;;
    *) echo "deps.sh: unknown group '$group' (build, test, kit, package, bench)" >&2; exit 2 ;;
  esac
done

missing=()
for p in "${want[@]}"; do
  dpkg-query -W -f='${Status}\n' "$p" 2>/dev/null | grep -q '^install ok installed' || missing+=("$p")
done
need_qemu=0
if [[ " $* " == *" kit "* || " $* " == *" test "* ]]; then
  command -v qemu-system-i386 >/dev/null || need_qemu=1
fi
[ ${#missing[@]} -eq 0 ] && [ $need_qemu -eq 0 ] && exit 0

if [ "$(id -u)" != 0 ]; then
  echo "deps.sh: missing Debian packages (${missing[*]}); run as root or install them" >&2
  exit 1
fi
export DEBIAN_FRONTEND=noninteractive
# Daemons that come with packages (tftpd-hpa, kea) must not start and grab ports: we run them
# ourselves, inside namespaces, only when a benchmark asks for them.
policy=/usr/sbin/policy-rc.d
made_policy=0
if [ ! -e "$policy" ]; then
  printf '#!/bin/sh\nexit 101\n' > "$policy"; chmod +x "$policy"; made_policy=1
fi
trap '[ $made_policy = 1 ] && rm -f "$policy"' EXIT

if [ $need_qemu -eq 1 ] && ! grep -rqs bookworm-backports /etc/apt/sources.list /etc/apt/sources.list.d/; then
  # The image's qemu-utils comes from bookworm-backports; qemu-system must match it.
  printf 'Types: deb\nURIs: http://deb.debian.org/debian\nSuites: bookworm-backports\nComponents: main\nSigned-By: /usr/share/keyrings/debian-archive-keyring.gpg\n' \
    > /etc/apt/sources.list.d/mosboot-backports.sources
fi
echo "deps.sh: installing ${missing[*]} $( [ $need_qemu = 1 ] && echo qemu-system-x86)" >&2
apt-get update -qq || true
if [ ${#missing[@]} -gt 0 ]; then
  apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
fi
if [ $need_qemu -eq 1 ]; then
  apt-get install -y -qq --no-install-recommends -t bookworm-backports qemu-system-x86 >/dev/null
fi
