#!/bin/sh
# SPDX-License-Identifier: GPL-2.0-or-later
#
# make-deb.sh TREE OUTDIR: package the built fork (TREE/build, and the
# manual in TREE/build-docs) as a Debian binary package with debhelper,
# into OUTDIR.  The package replaces Debian's qemu-system-x86 and
# companions (the pve-qemu-kvm model); its version is the base's with a
# fork suffix, e.g. 1:10.0.13+ds-0+deb13u1+balloonauto1.

set -eu
srcdir=$(cd "$(dirname "$0")/../.." && pwd)
. "$srcdir/scripts/fork/common.sh"

tree=$1; out=$2
bld="$tree/build"; docs="$tree/build-docs"
[ -x "$bld/qemu-system-x86_64" ] || die "$bld is not built; run make"
[ -f "$docs/docs/docs.stamp" ] || die "$docs has no manual; run make docs"

base=$(git -C "$tree" log -1 --format=%s base | sed 's/^Pristine QEMU base: //')
debver=$(echo "$base" | sed -n 's/^Debian //p')
[ -n "$debver" ] || die "the base ($base) is not a Debian version; packages name it"
version="$debver+balloonauto$(base_field package-revision)"

work=$(cd "$tree/.." && pwd)/deb
rm -rf "$work"
mkdir -p "$work/src/debian/staged" "$out"
stage="$work/src/debian/staged"
info "installing into $stage"
DESTDIR="$stage" ninja -C "$docs" install >"$work/install-docs.log"
# Build only what is installed: 'ninja install' would build every target
# first, all the qtests and plugins included, which the package does not
# ship (make check builds the tests it runs itself).
meson="$(cd "$bld" && pwd)/pyvenv/bin/meson"   # the one that configured it
installed=$(cd "$bld" && "$meson" introspect --targets |
    python3 -c 'import json, os, sys
print("\n".join(os.path.relpath(f) for t in json.load(sys.stdin)
                if t["installed"] for f in t["filename"]))')
# shellcheck disable=SC2086  # one target per line
ninja -C "$bld" $installed >"$work/ninja.log"
DESTDIR="$stage" "$meson" install -C "$bld" --no-rebuild --quiet \
    >"$work/install.log"
install -m 0644 "$bld"/pc-bios/optionrom/*.bin "$stage/usr/share/qemu/"
install -m 0755 "$srcdir/scripts/qemu-balloon-auto-pressure" "$stage/usr/bin/"
# the Prometheus exporter (its unit comes from debian/ through
# dh_installsystemd), its settings, the alerting rules and the dashboard
install -m 0755 "$srcdir/scripts/qemu-balloon-auto-exporter" "$stage/usr/bin/"
install -D -m 0644 \
    "$srcdir/scripts/fork/debian/qemu-balloon-auto.qemu-balloon-auto-exporter.default" \
    "$stage/etc/default/qemu-balloon-auto-exporter"
share="$stage/usr/share/qemu-balloon-auto"
install -d "$share"
install -m 0644 "$srcdir"/contrib/balloon-auto/qemu-balloon-auto.rules.yml \
    "$srcdir"/contrib/balloon-auto/qemu-balloon-auto.rules.test.yml \
    "$srcdir"/contrib/balloon-auto/qemu-balloon-auto-dashboard.json "$share/"
# the helper's Python package, where /usr/bin/python3 finds it (its
# 'testing' part is for the checkout's tests and bench only)
pydir="$stage/usr/lib/python3/dist-packages/qemu_balloon_auto"
install -d "$pydir"
install -m 0644 "$srcdir"/scripts/qemu_balloon_auto/*.py "$pydir/"

for f in rules qemu-balloon-auto.install qemu-balloon-auto.postinst \
         qemu-balloon-auto.prerm \
         qemu-balloon-auto.qemu-balloon-auto-exporter.service; do
    cp "$srcdir/scripts/fork/debian/$f" "$work/src/debian/"
done
sed "s|@BASE@|$base|" "$srcdir/scripts/fork/debian/control.in" \
    >"$work/src/debian/control"
cat >"$work/src/debian/changelog" <<EOC
qemu-balloon-auto ($version) unstable; urgency=medium

  * The automatic virtio-balloon on $base.
    Built from $(git -C "$srcdir" describe --always --dirty 2>/dev/null || echo "a source tree").

 -- qemu-balloon-auto authors <fork@localhost>  $(date -R)
EOC
info "building qemu-balloon-auto $version"
(cd "$work/src" && dpkg-buildpackage -b -uc -us -nc -d) >"$work/build.log" 2>&1 ||
    { tail -n 30 "$work/build.log" >&2; die "dpkg-buildpackage failed; log: $work/build.log"; }
deb=$(ls "$work"/qemu-balloon-auto_*.deb)
mv "$deb" "$out/"
info "$out/$(basename "$deb"): $(du -h "$out/$(basename "$deb")" | cut -f1)"
