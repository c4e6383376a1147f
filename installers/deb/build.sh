#!/bin/sh
# Build the .deb from the single executable: installers/deb/build.sh BINARY OUTDIR VERSION
# (scripts/release.mjs calls it). Needs dpkg-deb only; file ownership is root:root through
# --root-owner-group, so no fakeroot. Prints the package path last.
#
# Contents: /usr/bin/lightagent (+ lightagent-svm link), every unit of installers/systemd in
# /lib/systemd/system (ExecStart pointing at /usr/bin), the tray autostart entry, install.sh in
# /usr/share/lightagent (postinst applies pre-seeded settings with it), docs, maintainer scripts.
set -eu
BINARY=${1:?usage: build.sh BINARY OUTDIR VERSION}
OUT=${2:?usage: build.sh BINARY OUTDIR VERSION}
VERSION=${3:?usage: build.sh BINARY OUTDIR VERSION}
HERE=$(cd "$(dirname "$0")" && pwd)
REPO=$(cd "$HERE/../.." && pwd)
case "$VERSION" in [0-9]*) ;; *) echo "build.sh: bad version $VERSION" >&2; exit 2 ;; esac
[ -x "$BINARY" ] || { echo "build.sh: $BINARY is not an executable" >&2; exit 2; }

umask 022
STAGE=$(mktemp -d "${TMPDIR:-/tmp}/lightagent-deb.XXXXXX")
trap 'rm -rf "$STAGE"' EXIT INT TERM
P=$STAGE/pkg
mkdir -p "$P/DEBIAN" "$P/usr/bin" "$P/lib/systemd/system" "$P/etc/xdg/autostart" "$P/usr/share/lightagent" "$P/usr/share/doc/lightagent"

cp "$BINARY" "$P/usr/bin/lightagent"
chmod 0755 "$P/usr/bin/lightagent"
ln -s lightagent "$P/usr/bin/lightagent-svm"

for unit in "$REPO"/installers/systemd/*.service "$REPO"/installers/systemd/*.timer; do
  [ -f "$unit" ] || continue
  sed 's#/usr/local/bin/lightagent#/usr/bin/lightagent#g' "$unit" >"$P/lib/systemd/system/$(basename "$unit")"
  chmod 0644 "$P/lib/systemd/system/$(basename "$unit")"
done

cat >"$P/etc/xdg/autostart/lightagent-tray.desktop" <<'DESKTOP'
[Desktop Entry]
Type=Application
Name=lightagent
Comment=lightagent protection status
Exec=/usr/bin/lightagent tray
Icon=security-high
Terminal=false
NoDisplay=true
X-GNOME-Autostart-enabled=true
DESKTOP

install -m 0755 "$REPO/installers/linux/install.sh" "$P/usr/share/lightagent/install.sh"
install -m 0644 "$HERE/preseed.example" "$P/usr/share/lightagent/preseed.example"
[ ! -f "$REPO/docs/install.md" ] || install -m 0644 "$REPO/docs/install.md" "$P/usr/share/doc/lightagent/install.md"
cat >"$P/usr/share/doc/lightagent/copyright" <<'COPYRIGHT'
Format: https://www.debian.org/doc/packaging-manuals/copyright-format/1.0/
Upstream-Name: lightagent
License: Apache-2.0
Comment: The binary embeds Node.js (MIT and others, see https://github.com/nodejs/node/blob/main/LICENSE)
 and koffi (MIT).
COPYRIGHT

for s in postinst prerm postrm; do install -m 0755 "$HERE/$s" "$P/DEBIAN/$s"; done
# The tray entry is a conffile: a local edit survives upgrades.
printf '/etc/xdg/autostart/lightagent-tray.desktop\n' >"$P/DEBIAN/conffiles"

SIZE=$(du -sk "$P" | cut -f1)
sed -e "s/@VERSION@/$VERSION/" -e "s/@SIZE@/$SIZE/" "$HERE/control.in" >"$P/DEBIAN/control"

mkdir -p "$OUT"
DEB=$OUT/lightagent_${VERSION}_amd64.deb
# gzip: every dpkg can read it (zstd needs dpkg >= 1.21.18, xz takes a minute for 100 MiB).
# LIGHTAGENT_DEB_GZIP_LEVEL (1-9, default 6): the tests use 1 for speed.
LEVEL=${LIGHTAGENT_DEB_GZIP_LEVEL:-6}
case "$LEVEL" in [1-9]) ;; *) echo "build.sh: LIGHTAGENT_DEB_GZIP_LEVEL must be 1-9" >&2; exit 2 ;; esac
dpkg-deb --root-owner-group -Zgzip "-z$LEVEL" --build "$P" "$DEB" >/dev/null
echo "$DEB"
