#!/usr/bin/env bash
# Builds a kernel (Linux 6.1 from Debian's linux-source-6.1, tinyconfig plus a fragment from
# kernel-configs/) into $KIT_DIR/kernel-<key>/bzImage. Skips when cached.
# Env: KIT_DIR, KIT_JOBS (default 2), KERNEL_FLAVOUR (the fragment's name: i486-test, the
# default, or floppy-i486), KERNEL_FRAGMENT (a fragment's path, instead of the flavour).
set -euo pipefail
source "$(dirname "$0")/common.sh"

"$REPO_ROOT/scripts/deps.sh" kit
KERNEL_FRAGMENT=$(kernel_fragment)
[ -f "$KERNEL_FRAGMENT" ] || die "kernel fragment $KERNEL_FRAGMENT not found"

kit_lock kernel
out=$(kernel_dir)
if [ -s "$out/bzImage" ]; then
  log "kernel: cached $out/bzImage"
  exit 0
fi
[ -f "$LINUX_SOURCE_TAR" ] || die "$LINUX_SOURCE_TAR missing (package $LINUX_SOURCE_PKG)"
mkdir -p "$KIT_DIR"

# 1. Unpack the source once per source version (shared by every fragment's build).
src=$KIT_DIR/src/$LINUX_SOURCE_PKG-$(pkg_version $LINUX_SOURCE_PKG)
if [ ! -f "$src/Makefile" ]; then
  log "kernel: unpacking $LINUX_SOURCE_TAR (about a minute)"
  tmp=$(mktemp -d "$KIT_DIR/src/.unpack.XXXXXX" 2>/dev/null || { mkdir -p "$KIT_DIR/src"; mktemp -d "$KIT_DIR/src/.unpack.XXXXXX"; })
  tar -C "$tmp" -xJf "$LINUX_SOURCE_TAR"
  rm -rf "$src"
  mv "$tmp/$LINUX_SOURCE_PKG" "$src"
  rmdir "$tmp"
fi

# 2. Configure out of tree: tinyconfig, merge the fragment, resolve dependencies.
key=$(kernel_key)
build=$KIT_DIR/build/kernel-$key
if [ ! -d "$build" ]; then
  # Seed from the newest earlier build of the same source: kbuild tracks which objects depend
  # on which config symbols, so a changed fragment rebuilds minutes less than a clean tree.
  prev=$(ls -td "$KIT_DIR"/build/kernel-*/ 2>/dev/null | while read -r d; do
           [ -f "$d/.kit-source" ] && [ "$(cat "$d/.kit-source")" = "$src" ] && { echo "${d%/}"; break; }; done || true)
  if [ -n "$prev" ]; then
    log "kernel: starting from the objects of $prev"
    cp -a "$prev" "$build.tmp" && rm -f "$build.tmp/build.log" && mv "$build.tmp" "$build"
  fi
fi
mkdir -p "$build"
echo "$src" > "$build/.kit-source"
logfile=$build/build.log
: > "$logfile"
log "kernel: configuring in $build (tinyconfig + $(basename "$KERNEL_FRAGMENT")); log: $logfile"
mk=(make -C "$src" O="$build" ARCH=i386)
run_logged "$logfile" "${mk[@]}" tinyconfig
run_logged "$logfile" env ARCH=i386 "$src/scripts/kconfig/merge_config.sh" -m -O "$build" "$build/.config" "$KERNEL_FRAGMENT"
run_logged "$logfile" "${mk[@]}" olddefconfig

# 3. Every symbol the fragment asks for must have ended up as asked; Kconfig silently drops
#    values whose dependencies are missing, which would only show much later as a dead boot.
bad=()
while IFS= read -r line; do
  if [[ $line =~ ^(CONFIG_[A-Za-z0-9_]+)=(.*)$ ]]; then
    sym=${BASH_REMATCH[1]}
    grep -qxF "$line" "$build/.config" || bad+=("$sym: wanted ${BASH_REMATCH[2]}, got $(grep -E "^(# )?${sym}[= ]" "$build/.config" || echo 'absent (dependency missing?)')")
  elif [[ $line =~ ^#\ (CONFIG_[A-Za-z0-9_]+)\ is\ not\ set$ ]]; then
    sym=${BASH_REMATCH[1]}
    if got=$(grep -E "^$sym=" "$build/.config"); then bad+=("$sym: wanted not set, got $got"); fi
  fi
done < "$KERNEL_FRAGMENT"
if [ ${#bad[@]} -gt 0 ]; then
  printf 'kit: kernel config: %d symbol(s) not as %s asks:\n' ${#bad[@]} "$KERNEL_FRAGMENT" >&2
  printf '  %s\n' "${bad[@]}" >&2
  exit 1
fi
log "kernel: config verified ($(grep -c '^CONFIG_.*=' "$build/.config") symbols set)"

# 4. Build.
log "kernel: building bzImage with -j$KIT_JOBS (about 5 minutes on 2 cores)"
start=$(date +%s)
run_logged "$logfile" "${mk[@]}" -j"$KIT_JOBS" bzImage
log "kernel: built in $(( $(date +%s) - start )) s"

# 5. Publish atomically: a half-written cache entry would otherwise look valid.
tmp=$(mktemp -d "$KIT_DIR/.kernel.XXXXXX")
cp "$build/arch/x86/boot/bzImage" "$tmp/bzImage"
cp "$build/.config" "$tmp/config"
cp "$KERNEL_FRAGMENT" "$tmp/fragment"
rm -rf "$out"
mv "$tmp" "$out"
chmod 755 "$out"
log "kernel: $out/bzImage ($(stat -c %s "$out/bzImage") bytes)"
