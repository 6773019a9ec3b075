#!/bin/sh
# SPDX-License-Identifier: GPL-2.0-or-later
#
# link-overlay.sh TREE: symlink this project's new files into the assembled
# QEMU tree at the same paths, and drop links whose file has gone.  The links
# are git-ignored in TREE so that exporting patches never picks them up.
# Idempotent and cheap: the Makefile runs it before every build.

set -eu
srcdir=$(cd "$(dirname "$0")/../.." && pwd)
. "$srcdir/scripts/fork/common.sh"
tree=$1
[ -d "$tree/.git" ] || die "$tree is not an assembled tree; run ./configure"

exclude="$tree/.git/info/exclude"
mkdir -p "$(dirname "$exclude")"
: > "$exclude.new"

# Dangling links into this repo: the overlay file was removed or renamed.
find "$tree" -path "$tree/build" -prune -o -type l -print |
while read -r l; do
    case "$(readlink "$l")" in
    "$srcdir"/*) [ -e "$l" ] || rm -f "$l" ;;
    esac
done

cd "$srcdir"
for f in $( (git ls-files --cached --others --exclude-standard -- $OVERLAY_DIRS 2>/dev/null ||
             find $OVERLAY_DIRS -type f) | sort -u); do
    [ -f "$f" ] || continue
    dst="$tree/$f"
    if [ -e "$dst" ] && [ ! -L "$dst" ]; then
        die "overlay file $f also exists upstream: change upstream files with a patch in patches/, not a copy"
    fi
    mkdir -p "$(dirname "$dst")"
    ln -sfn "$srcdir/$f" "$dst"
    echo "/$f" >> "$exclude.new"
done
mv "$exclude.new" "$exclude"
