# shellcheck shell=bash disable=SC2034
# Shared helpers for the node-kit scripts (sourced, not run; the variables are theirs).
# The kit lives outside the work tree so `git clean` and fresh clones reuse it; every artifact
# sits in a directory named by the hash of its inputs, so changed inputs never reuse stale output.

KIT_DIR=${KIT_DIR:-/var/cache/mosboot-kit}
KIT_JOBS=${KIT_JOBS:-2}
REPO_ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)

# Bump a recipe number when its script changes how the artifact is made (not for comments),
# so the cache key changes with the recipe without rebuilding on every edit.
KERNEL_RECIPE=1
BUSYBOX_RECIPE=2
IPXE_RECIPE=1

# KERNEL_FLAVOUR names the fragment: i486-test (the lab's node kernel) or floppy-i486 (the
# kernel of `mosboot floppy`). One recipe; the fragment is its parameter and part of its key.
# KERNEL_FRAGMENT (a path) overrides the flavour's fragment.
KERNEL_FLAVOUR=${KERNEL_FLAVOUR:-i486-test}
kernel_fragment() { echo "${KERNEL_FRAGMENT:-$REPO_ROOT/kernel-configs/$KERNEL_FLAVOUR}"; }
LINUX_SOURCE_PKG=linux-source-6.1
LINUX_SOURCE_TAR=/usr/src/linux-source-6.1.tar.xz
ZIGLANG_VERSION=${ZIGLANG_VERSION:-0.13.0}
# Pinned so the cache key is known without asking the network; override when bookworm moves on.
BUSYBOX_SRC_VERSION=${BUSYBOX_SRC_VERSION:-1:1.35.0-4+deb12u1}
IPXE_SUITE=trixie

_t0=$(date +%s)
log() { printf '[kit %4ss] %s\n' "$(( $(date +%s) - _t0 ))" "$*" >&2; }
die() { printf 'kit: error: %s\n' "$*" >&2; exit 1; }

sha256_of() { sha256sum | cut -c1-16; }

pkg_version() { dpkg-query -W -f='${Version}' "$1" 2>/dev/null || echo missing; }

kernel_key() {
  { echo "recipe $KERNEL_RECIPE"; echo "source $LINUX_SOURCE_PKG $(pkg_version "$LINUX_SOURCE_PKG")"
    echo "gcc $(pkg_version gcc-12)"; cat "$(kernel_fragment)"; } | sha256_of
}
# BUSYBOX_FLAVOUR: "full" (Debian's static applet set) or a name with a list of applets to
# keep in scripts/kit/busybox-<name>.applets: "lean" (the node's), "stage1" (the floppy's).
BUSYBOX_FLAVOUR=${BUSYBOX_FLAVOUR:-full}
busybox_key() {
  { echo "recipe $BUSYBOX_RECIPE"; echo "busybox $BUSYBOX_SRC_VERSION"; echo "zig $ZIGLANG_VERSION"
    cat "$REPO_ROOT/scripts/kit/busybox.config"
    [ "$BUSYBOX_FLAVOUR" = full ] || { echo "flavour $BUSYBOX_FLAVOUR"; cat "$(busybox_applets)"; }
  } | sha256_of
}

busybox_applets() { echo "$REPO_ROOT/scripts/kit/busybox-$BUSYBOX_FLAVOUR.applets"; }

kernel_dir()  { echo "$KIT_DIR/kernel-$(kernel_key)"; }
busybox_dir() {
  if [ "$BUSYBOX_FLAVOUR" = full ]; then echo "$KIT_DIR/busybox-$(busybox_key)"
  else echo "$KIT_DIR/busybox-$BUSYBOX_FLAVOUR-$(busybox_key)"; fi
}
ipxe_dir()    { echo "$KIT_DIR/ipxe-$IPXE_SUITE"; }

# The tiny busybox root the kit's self-tests boot (smoke.sh, scripts/lab/pxe-selftest.sh):
# busybox with its applet links and /dev/console (the kernel opens it before init runs); the
# caller writes /init (and links /linuxrc to it). mknod needs root.
busybox_root() {  # busybox_root ROOT BUSYBOX
  local root=$1 busybox=$2 a
  mkdir -p "$root"/{bin,dev,proc,sys,tmp}
  cp "$busybox" "$root/bin/busybox"
  for a in $(qemu-i386 -cpu 486 "$busybox" --list); do [ "$a" = busybox ] || ln -s busybox "$root/bin/$a"; done
  mknod "$root/dev/console" c 5 1
}

# Packs ROOT as both initrd formats the nodes boot: a gzip'd newc cpio and a gzip'd ext2 image
# (for /dev/ram0, the 2.4 format). Sets ROOT_KB, the ext2 size for ramdisk_size=.
pack_initrds() {  # pack_initrds ROOT CPIO_GZ EXT2_GZ
  local root=$1 raw=$3.raw
  (cd "$root" && find . | LC_ALL=C sort | cpio -o -H newc --quiet) | gzip -9n > "$2"
  ROOT_KB=$(( $(du -sk "$root" | cut -f1) + 256 ))
  mke2fs -q -t ext2 -b 1024 -I 128 -m 0 -N $(( $(find "$root" | wc -l) + 64 )) -d "$root" "$raw" "$ROOT_KB" \
    >"$raw.log" 2>&1 || die "mke2fs failed: $(cat "$raw.log")"
  gzip -9n < "$raw" > "$3"
  rm -f "$raw" "$raw.log"
}

# One build of a kit part at a time per KIT_DIR: a second caller (make kit in another shell, a
# test) waits here and then finds the cache filled. The lock is held until the script exits.
kit_lock() {
  mkdir -p "$KIT_DIR"
  exec 9>"$KIT_DIR/.lock-$1"
  if ! flock -n 9; then
    log "$1: another build is running in $KIT_DIR; waiting for it"
    flock 9
  fi
}

# Runs a long command with its output in LOGFILE; on failure shows the tail and stops.
run_logged() {
  local logfile=$1; shift
  if ! "$@" >>"$logfile" 2>&1; then
    echo "---- last lines of $logfile ----" >&2
    tail -n 40 "$logfile" >&2
    die "failed: $* (full log: $logfile)"
  fi
}

# Private apt configuration: own sources list, lists and archive cache, so nothing system-wide
# changes. Usage: private_apt DIR "deb[-src] SUITE COMPONENT"; then "${APT[@]}" ARGS.
private_apt() {
  local dir=$1 type suite comp
  read -r type suite comp <<<"$2"
  mkdir -p "$dir/lists/partial" "$dir/archives/partial" "$dir/etc"
  printf '%s [signed-by=/usr/share/keyrings/debian-archive-keyring.gpg] %s %s %s\n' \
    "$type" "$(debian_mirror)" "$suite" "$comp" > "$dir/etc/sources.list"
  APT=(apt-get -q -o Dir::Etc::sourcelist="$dir/etc/sources.list" -o Dir::Etc::sourceparts=-
       -o Dir::State::lists="$dir/lists" -o Dir::Cache::archives="$dir/archives"
       -o APT::Get::List-Cleanup=0)
}

# The Debian mirror this machine already uses (first URIs line of its deb822 sources).
debian_mirror() {
  local m
  m=$(grep -hs '^URIs:' /etc/apt/sources.list.d/debian.sources 2>/dev/null | awk '{print $2}' | grep -v security | head -n1)
  [ -n "$m" ] || m=$(awk '$1=="deb" && $0 !~ /security/ {print $2; exit}' /etc/apt/sources.list 2>/dev/null)
  echo "${m:-http://deb.debian.org/debian}"
}
