#!/usr/bin/env bash
# Builds a static busybox that runs on a 486 into $KIT_DIR/busybox-<key>/busybox: Debian
# bookworm's busybox source (fetched with a private deb-src list), Debian's static config plus
# scripts/kit/busybox.config, compiled by zig cc (PyPI ziglang) for i486 + musl.
# Debian's own i386 busybox and glibc use CMOV and trap on 486/Pentium, hence this build.
# Env: KIT_DIR, KIT_JOBS, BUSYBOX_SRC_VERSION, ZIGLANG_VERSION, BUSYBOX_FLAVOUR (full, or the
# name of an applet list scripts/kit/busybox-<name>.applets: lean, stage1).
set -euo pipefail
source "$(dirname "$0")/common.sh"

"$REPO_ROOT/scripts/deps.sh" kit

kit_lock busybox
out=$(busybox_dir)
if [ -x "$out/busybox" ]; then
  log "busybox ($BUSYBOX_FLAVOUR): cached $out/busybox"
  exit 0
fi
mkdir -p "$KIT_DIR/tools" "$KIT_DIR/build" "$KIT_DIR/src"

# 1. zig from PyPI, in a private --target dir (no system or user site-packages touched).
zigdir=$KIT_DIR/tools/ziglang-$ZIGLANG_VERSION
zig=$zigdir/ziglang/zig
if [ ! -x "$zig" ]; then
  log "busybox: installing ziglang==$ZIGLANG_VERSION from PyPI into $zigdir"
  tmp=$(mktemp -d "$KIT_DIR/tools/.ziglang.XXXXXX")
  PIP_ROOT_USER_ACTION=ignore python3 -m pip install -q --disable-pip-version-check --no-warn-script-location \
    --target "$tmp" "ziglang==$ZIGLANG_VERSION" || die "pip install ziglang==$ZIGLANG_VERSION failed"
  rm -rf "$zigdir"; mv "$tmp" "$zigdir"
fi
export ZIG_GLOBAL_CACHE_DIR=$KIT_DIR/tools/zig-cache ZIG_LOCAL_CACHE_DIR=$KIT_DIR/tools/zig-cache

# 2. Debian's source, through a private apt state so the system's sources stay untouched.
srcdir=$KIT_DIR/src/busybox-${BUSYBOX_SRC_VERSION#*:}
if [ ! -f "$srcdir/Makefile" ]; then
  aptdir=$KIT_DIR/apt-bookworm-src
  private_apt "$aptdir" "deb-src bookworm main"
  log "busybox: fetching Debian source busybox=$BUSYBOX_SRC_VERSION (private apt dirs in $aptdir)"
  run_logged "$aptdir/apt.log" "${APT[@]}" update
  dl=$(mktemp -d "$KIT_DIR/src/.busybox.XXXXXX")
  if ! (cd "$dl" && "${APT[@]}" --download-only source "busybox=$BUSYBOX_SRC_VERSION" >>"$aptdir/apt.log" 2>&1); then
    echo "kit: bookworm no longer offers busybox $BUSYBOX_SRC_VERSION; building the current one" >&2
    echo "     (set BUSYBOX_SRC_VERSION to it to key the cache right: apt-cache showsrc busybox)" >&2
    (cd "$dl" && run_logged "$aptdir/apt.log" "${APT[@]}" --download-only source busybox)
  fi
  (cd "$dl" && run_logged "$aptdir/apt.log" dpkg-source -x ./*.dsc tree)
  rm -rf "$srcdir"; mv "$dl/tree" "$srcdir"; rm -rf "$dl"
fi

# clang keeps a value it loaded from a "*const" pointer across busybox's one-time assignment of
# ptr_to_globals (awk crashed on NULL). libbb.h lets BB_GLOBAL_CONST (set empty by our config)
# drop that const for other globals; this declaration lacks it in 1.35, so add it (idempotent).
sed -i 's/^extern struct globals \*const ptr_to_globals;/extern struct globals *BB_GLOBAL_CONST ptr_to_globals;/' \
  "$srcdir/include/libbb.h"
grep -q '^extern struct globals \*BB_GLOBAL_CONST ptr_to_globals;' "$srcdir/include/libbb.h" \
  || die "busybox: could not make ptr_to_globals non-const in $srcdir/include/libbb.h"

# 3. A toolchain directory: CROSS_COMPILE=$bin/i486-linux-musl- gives busybox's Makefile zig's
#    compiler and archiver and binutils' strip/nm/objcopy (they read i386 ELF). The compiler
#    wrapper drops the GNU-ld-only flags that lld rejects and rewrites -Wp,-MD for zig.
build=$KIT_DIR/build/busybox-$(busybox_key)
rm -rf "${build:?}/bin"; mkdir -p "$build/bin"
bin=$build/bin
cat > "$bin/i486-linux-musl-gcc" <<WRAP
#!/usr/bin/env bash
args=()
for a in "\$@"; do
  case "\$a" in
    -Wl,--warn-common|-Wl,--sort-common|-Wl,--sort-section,*|-Wl,--sort-section=*) ;;
    # trylink's final link asks for a map file and a verbose trace, which lld does not offer.
    -Wl,-Map,*|-Wl,--verbose) ;;
    # zig cc manages its own dependency files and fails on kbuild's preprocessor form.
    -Wp,-MD,*) args+=(-MD -MF "\${a#-Wp,-MD,}") ;;
    -Wp,-MMD,*) args+=(-MMD -MF "\${a#-Wp,-MMD,}") ;;
    *) args+=("\$a") ;;
  esac
done
exec "$zig" cc -target x86-linux-musl -mcpu=i486 -fno-sanitize=all -Wno-ignored-attributes "\${args[@]}"
WRAP
printf '#!/bin/sh\nexec "%s" ar "$@"\n' "$zig" > "$bin/i486-linux-musl-ar"
for t in nm strip objcopy; do ln -s "$(command -v $t)" "$bin/i486-linux-musl-$t"; done
chmod +x "$bin"/i486-linux-musl-*

# 4. Configure: Debian's static flavour + our overlay, then resolve with oldconfig.
logfile=$build/build.log
log "busybox: configuring in $build; log: $logfile"
mkb=(make -C "$srcdir" O="$build/obj" CROSS_COMPILE="$bin/i486-linux-musl-" HOSTCC=gcc)
mkdir -p "$build/obj"
# busybox's kconfig ignores a second assignment of a symbol, so the overlay's symbols are
# removed from Debian's config before the overlay is appended.
overlay=$REPO_ROOT/scripts/kit/busybox.config
syms=$(grep -oE 'CONFIG_[A-Za-z0-9_]+' "$overlay" | sort -u | sed 's/.*/&[= ]/')
cat "$srcdir/debian/config/os/linux" "$srcdir/debian/config/pkg/static" \
  | grep -vE "^(# )?($(echo "$syms" | paste -sd'|'))" > "$build/obj/.config" || true
grep -E '^(CONFIG_|# CONFIG_)' "$overlay" >> "$build/obj/.config"
dropped=" "
case "$BUSYBOX_FLAVOUR" in
  full) ;;
  *)
    [ -f "$(busybox_applets)" ] || die "BUSYBOX_FLAVOUR must be full or have $(busybox_applets)"
    # Applet symbols are the IF_<SYMBOL>(APPLET...) markers in the sources; turn off each one
    # that is not on the keep list (the overlay's own symbols stay as the overlay says).
    # A list with a "# strict" line turns off the overlay's applets too (the floppy's stage-1
    # needs none of the node's toolbox).
    keep=" $(grep -v '^#' "$(busybox_applets)" | tr -s ' \n' '  ') "
    strict=0; grep -qx '# strict' "$(busybox_applets)" && strict=1
    for sym in $(grep -rhoE '^//applet:IF_[A-Z0-9_]+\(' --include='*.c' "$srcdir" | sed 's|^//applet:IF_||; s|($||' | sort -u); do
      [[ $keep == *" $sym "* ]] && continue
      if grep -qE "^(# )?CONFIG_${sym}[= ]" "$overlay"; then
        [ $strict = 1 ] || continue
        dropped+=" $sym "
      fi
      sed -i "/^CONFIG_$sym=/d; /^# CONFIG_$sym is not set/d" "$build/obj/.config"
      echo "# CONFIG_$sym is not set" >> "$build/obj/.config"
    done
    # "-SYMBOL" in the list turns off a feature of a kept applet (e.g. -UNICODE_SUPPORT).
    for sym in $keep; do
      [[ $sym == -* ]] || continue
      sym=${sym#-}
      sed -i "/^CONFIG_$sym=/d; /^# CONFIG_$sym is not set/d" "$build/obj/.config"
      echo "# CONFIG_$sym is not set" >> "$build/obj/.config"
    done ;;
esac
run_logged "$logfile" bash -c 'yes "" | "$@" oldconfig' _ "${mkb[@]}"
bad=()
while IFS= read -r line; do
  if [[ $line =~ ^(CONFIG_[A-Za-z0-9_]+)=(.*)$ ]]; then
    # A strict flavour's dropped applets (and their FEATURE_ options) are off on purpose.
    sym=${BASH_REMATCH[1]#CONFIG_} off=0
    for a in $dropped; do [[ $sym == "$a" || $sym == "FEATURE_${a}_"* ]] && off=1; done
    [ $off = 1 ] && continue
    grep -qxF "$line" "$build/obj/.config" || bad+=("${BASH_REMATCH[1]}: wanted ${BASH_REMATCH[2]}")
  elif [[ $line =~ ^#\ (CONFIG_[A-Za-z0-9_]+)\ is\ not\ set$ ]]; then
    ! grep -qE "^${BASH_REMATCH[1]}=" "$build/obj/.config" || bad+=("${BASH_REMATCH[1]}: wanted not set")
  fi
done < "$REPO_ROOT/scripts/kit/busybox.config"
[ ${#bad[@]} -eq 0 ] || { printf '  %s\n' "${bad[@]}" >&2; die "busybox config: ${#bad[@]} symbol(s) not as asked"; }

# 5. Build and check: it must run on a 486 and contain no instruction a 486 lacks.
log "busybox: compiling with zig cc -target x86-linux-musl -mcpu=i486, -j$KIT_JOBS (about 1.5 minutes)"
start=$(date +%s)
run_logged "$logfile" "${mkb[@]}" -j"$KIT_JOBS" busybox
log "busybox: built in $(( $(date +%s) - start )) s"
bb=$build/obj/busybox
file "$bb" | grep -q 'ELF 32-bit LSB executable, Intel 80386.*statically linked' \
  || die "busybox: not a static i386 ELF: $(file "$bb")"
ok=$(qemu-i386 -cpu 486 "$bb" echo ok 2>&1) || true
[ "$ok" = ok ] || die "busybox: qemu-i386 -cpu 486 ./busybox echo ok printed '$ok'"
# A few applets the node's scripts lean on, each through its own code path.
bbrun() { qemu-i386 -cpu 486 "$bb" "$@" 2>&1 || true; }
checks=(
  "awk|$(echo 'a b' | bbrun awk '{print $2}')|b"
  "sed|$(echo 'a b' | bbrun sed 's/a/x/')|x b"
  "sh|$(bbrun sh -c 'x=$(echo 6); echo $((x * 7))')|42"
  "grep|$(printf 'p\nq\n' | bbrun grep -c q)|1"
  "sha256sum|$(printf abc | bbrun sha256sum | cut -c1-16)|ba7816bf8f01cfea"
)
applets=" $(bbrun --list | tr '\n' ' ') "
for c in "${checks[@]}"; do
  IFS='|' read -r name got want <<<"$c"
  [[ $applets == *" $name "* ]] || continue   # not in this flavour
  [ "$got" = "$want" ] || die "busybox: $name under qemu-i386 -cpu 486 gave '$got', expected '$want'"
done
counts=$(objdump -d "$bb" | awk '
  $0 ~ /\tcmov/ {c["cmov"]++} $0 ~ /\tfxsave|\tfxrstor/ {c["fxsave"]++}
  $0 ~ /\tcpuid/ {c["cpuid"]++} $0 ~ /\trdtsc/ {c["rdtsc"]++}
  END {printf "cmov=%d fxsave=%d cpuid=%d rdtsc=%d", c["cmov"], c["fxsave"], c["cpuid"], c["rdtsc"]}')
log "busybox: qemu-i386 -cpu 486 runs echo, awk, sed, sh, grep, sha256sum; instruction check: $counts"
[ "$counts" = "cmov=0 fxsave=0 cpuid=0 rdtsc=0" ] || die "busybox uses instructions a 486 lacks: $counts"

qemu-i386 -cpu 486 "$bb" --list > "$build/applets" || die "busybox: --list failed"
tmp=$(mktemp -d "$KIT_DIR/.busybox.XXXXXX")
cp "$bb" "$tmp/busybox"
cp "$build/obj/.config" "$tmp/config"
cp "$build/applets" "$tmp/applets"
rm -rf "$out"; mv "$tmp" "$out"; chmod 755 "$out"
log "busybox: $out/busybox ($(stat -c %s "$out/busybox") bytes, $(wc -l < "$out/applets") applets)"
