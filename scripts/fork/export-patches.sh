#!/bin/sh
# SPDX-License-Identifier: GPL-2.0-or-later
#
# export-patches.sh TREE: turn the commits made on top of the pristine base
# in TREE (build/qemu) into patches/NNNN-*.patch and patches/series.
# Overlay files are git-ignored in TREE, so only upstream edits are exported.

set -eu
srcdir=$(cd "$(dirname "$0")/../.." && pwd)
. "$srcdir/scripts/fork/common.sh"
tree=${1:-$srcdir/build/qemu}
[ -d "$tree/.git" ] || die "$tree is not an assembled tree; run ./configure"
git -C "$tree" rev-parse -q --verify base >/dev/null ||
    die "$tree has no 'base' tag (the pristine commit)"
[ -z "$(git -C "$tree" status --porcelain --untracked-files=no)" ] ||
    die "$tree has uncommitted changes to upstream files: commit them first"

tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
git -C "$tree" format-patch -q --no-signature --zero-commit --no-stat \
    -o "$tmp" base..HEAD
rm -f "$srcdir"/patches/[0-9][0-9][0-9][0-9]-*.patch
: > "$srcdir/patches/series"
for p in "$tmp"/*.patch; do
    [ -e "$p" ] || continue
    cp "$p" "$srcdir/patches/"
    basename "$p" >> "$srcdir/patches/series"
done
echo "exported $(wc -l < "$srcdir/patches/series") patches to patches/"
