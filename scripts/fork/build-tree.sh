#!/bin/sh
# SPDX-License-Identifier: GPL-2.0-or-later
#
# build-tree.sh BUILDDIR [NINJA-TARGET...]: build qemu-system-x86_64, the
# x86 option ROMs and any extra targets in a configured build directory of
# an assembled tree (TREE/build, or a test variant such as TREE/build-fuzz),
# and make the uninstalled binary find its firmware: run from the build
# directory it relocates every firmware path into qemu-bundle/, so the ROMs
# are linked into the bundle's data dir and the host's firmware dirs
# (seabios, ipxe) into the bundle at their relocated paths.

set -eu
bld=$1; shift
[ -f "$bld/build.ninja" ] || { echo "build-tree: $bld is not configured; run ./configure" >&2; exit 1; }

ninja -C "$bld" qemu-system-x86_64 "$@"
# the option ROMs: a few small files, built on their own (not in the
# jobserver of a make that runs this script, which does not lend it)
MAKEFLAGS= make -s -C "$bld" recurse-all

datadir=$(cd "$bld" && find qemu-bundle -type d -path '*/share/qemu' | head -n 1)
[ -n "$datadir" ] || { echo "build-tree: no qemu-bundle data dir in $bld" >&2; exit 1; }
for rom in "$bld"/pc-bios/optionrom/*.bin; do
    ln -sf "$(cd "$(dirname "$rom")" && pwd)/$(basename "$rom")" "$bld/$datadir/"
done

bundle="$(cd "$bld" && pwd)/qemu-bundle"
"$bld/qemu-system-x86_64" -L help | while read -r dir; do
    case "$dir" in
    "$bundle"/*)
        host=${dir#"$bundle"}
        if [ ! -e "$dir" ] && [ -d "$host" ]; then
            mkdir -p "$(dirname "$dir")"
            ln -sfn "$host" "$dir"
        fi ;;
    esac
done
