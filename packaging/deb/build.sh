#!/usr/bin/env bash
# Builds target/deb/mosboot_<version>_amd64.deb with dpkg-deb over a staged tree: the release
# binary, man pages, completions and the example config made by mosboot-gen from the program
# itself, the systemd unit, the maintainer scripts. Prints the path of the .deb.
set -euo pipefail
cd "$(dirname "$0")/../.."
src=packaging
work=target/deb
stage=$work/stage
CARGO=${CARGO:-cargo}

$CARGO build --release --locked -q -p mosboot --bin mosboot --bin mosboot-gen
bin=target/release/mosboot
version=$($bin --version | awk '{print $2}')

rm -rf "$stage" "$work/gen"
target/release/mosboot-gen "$work/gen"
install -d "$stage/DEBIAN"
install -D -m 755 "$bin" "$stage/usr/bin/mosboot"
strip --strip-unneeded --remove-section=.comment --remove-section=.note "$stage/usr/bin/mosboot"
for page in "$work"/gen/man/*.1; do
  install -D -m 644 "$page" "$stage/usr/share/man/man1/$(basename "$page")"
  gzip -9n "$stage/usr/share/man/man1/$(basename "$page")"
done
install -D -m 644 "$work/gen/completions/mosboot.bash" "$stage/usr/share/bash-completion/completions/mosboot"
install -D -m 644 "$work/gen/completions/_mosboot" "$stage/usr/share/zsh/vendor-completions/_mosboot"
install -D -m 644 "$work/gen/completions/mosboot.fish" "$stage/usr/share/fish/vendor_completions.d/mosboot.fish"
# lab.toml.example, not lab.toml: `mosboot init -c /etc/mosboot/lab.toml` writes the real one
# for this machine's lab NIC, and would refuse to overwrite a packaged file.
install -D -m 644 "$work/gen/lab.toml" "$stage/etc/mosboot/lab.toml.example"
install -D -m 644 "$src/systemd/mosboot@.service" "$stage/lib/systemd/system/mosboot@.service"
install -D -m 644 "$src/deb/copyright" "$stage/usr/share/doc/mosboot/copyright"

# A native package's changelog, dated by the last commit so the same tree gives the same .deb.
when=$(git log -1 --format=%ct 2>/dev/null || echo 0)
export SOURCE_DATE_EPOCH=$when
{
  printf 'mosboot (%s) unstable; urgency=medium\n\n' "$version"
  printf '  * Built from the mosboot workspace at %s.\n\n' "$(git rev-parse --short HEAD 2>/dev/null || echo unknown)"
  printf ' -- mosboot developers <maintainers@mosboot.invalid>  %s\n' "$(date -u -R -d "@$when")"
} > "$stage/usr/share/doc/mosboot/changelog"
gzip -9n "$stage/usr/share/doc/mosboot/changelog"

for s in postinst prerm postrm; do install -m 755 "$src/deb/$s" "$stage/DEBIAN/$s"; done
(cd "$stage" && find etc -type f | sed 's|^|/|' | sort) > "$stage/DEBIAN/conffiles"

# Shared-library dependencies the way Debian computes them (dpkg-shlibdeps wants a
# debian/control beside it).
mkdir -p "$work/shlibs/debian"
printf 'Source: mosboot\n\nPackage: mosboot\nArchitecture: amd64\n' > "$work/shlibs/debian/control"
shlibs=$(cd "$work/shlibs" && dpkg-shlibdeps -O -e"$OLDPWD/$stage/usr/bin/mosboot" 2>/dev/null | sed -n 's/^shlibs:Depends=//p')
[ -n "$shlibs" ] || { echo "build.sh: dpkg-shlibdeps found no libraries" >&2; exit 1; }

(cd "$stage" && find . -path ./DEBIAN -prune -o -type f -printf '%P\0' | sort -z | xargs -0 md5sum) > "$stage/DEBIAN/md5sums"
size=$(du -sk --exclude=DEBIAN "$stage" | cut -f1)
sed -e "s/@VERSION@/$version/" -e "s/@INSTALLED_SIZE@/$size/" -e "s/@SHLIBS@/$shlibs/" \
  "$src/deb/control.in" > "$stage/DEBIAN/control"
find "$stage" -exec touch -h -d "@$when" {} +

deb=$work/mosboot_${version}_amd64.deb
dpkg-deb --root-owner-group -Zxz --build "$stage" "$deb" >/dev/null
echo "$deb"
