#!/bin/sh
# SPDX-License-Identifier: GPL-2.0-or-later
#
# Fresh Debian 12 roots for tests that must not trust this machine: a
# package installed for real, the README's commands on a machine that has
# nothing but the repository.  Run as root.
#
#   debian-root.sh new DIR [PACKAGE...]   a fresh root in DIR (a copy of a
#                                         cached debootstrap minbase), with
#                                         PACKAGEs (or ./file.deb) installed
#   debian-root.sh run [--bind=PATH]... DIR COMMAND...
#                                         run COMMAND chrooted in DIR, with
#                                         /proc, /sys and /dev of this host,
#                                         and PATHs bound at the same place
#                                         (all gone when COMMAND ends)
#
# The minbase root and the packages downloaded into roots are cached under
# ~/.cache/qemu-balloon-auto/roots; the archive is the one this machine's
# apt already uses, with bookworm-backports added.

set -eu
srcdir=$(cd "$(dirname "$0")/../.." && pwd)
. "$srcdir/scripts/fork/common.sh"

[ "$(id -u)" = 0 ] || die "debian-root.sh must run as root"
roots="$(cache_dir)/roots"
base="$roots/bookworm-minbase"
archives="$roots/archives"

# The cached minbase root, made once.
ensure_base() {
    [ -f "$base/.complete" ] && return 0
    uri=$(debian_uri)
    [ -n "$uri" ] || die "no Debian 'bookworm' entry in /etc/apt/sources.list*"
    command -v debootstrap >/dev/null || die "debootstrap is not installed (make setup)"
    rm -rf "$base.tmp"
    mkdir -p "$roots" "$archives/partial"
    info "debootstrap bookworm (minbase) into $base"
    debootstrap --variant=minbase --cache-dir="$archives" bookworm \
        "$base.tmp" "$uri" >"$roots/debootstrap.log" 2>&1 ||
        die "debootstrap failed; log: $roots/debootstrap.log"
    cat >"$base.tmp/etc/apt/sources.list" <<EOF
deb $uri bookworm main
deb $uri bookworm-updates main
deb $uri bookworm-backports main
EOF
    touch "$base.tmp/.complete"
    rm -rf "$base"
    mv "$base.tmp" "$base"
}

# run DIR COMMAND...: in a private mount namespace, so the mounts go with it;
# $binds: paths to bind at the same place inside
binds=""
run() {
    dir=$1; shift
    for b in $binds; do
        mkdir -p "$dir$b"
    done
    BINDS=$binds unshare --mount --propagation private sh -c '
        root=$1; shift
        # a mount point, so that unshare and pivot_root work inside too
        mount --bind "$root" "$root"
        mount -t proc proc "$root/proc"
        mount --rbind /sys "$root/sys"
        mount --rbind /dev "$root/dev"
        mount --bind "$0" "$root/var/cache/apt/archives"
        for b in $BINDS; do
            mount --bind "$b" "$root$b"
        done
        cp /etc/resolv.conf "$root/etc/resolv.conf" 2>/dev/null || :
        exec chroot "$root" env -i PATH=/usr/sbin:/usr/bin:/sbin:/bin \
            HOME=/root LANG=C.UTF-8 DEBIAN_FRONTEND=noninteractive "$@"
    ' "$archives" "$dir" "$@"
}

case "${1:-}" in
new)
    [ $# -ge 2 ] || die "usage: debian-root.sh new DIR [PACKAGE...]"
    dir=$2; shift 2
    ensure_base
    rm -rf "$dir"
    mkdir -p "$(dirname "$dir")"
    cp -a "$base" "$dir"
    run "$dir" apt-get update -q >"$dir.apt.log" 2>&1 ||
        die "apt-get update in $dir failed; log: $dir.apt.log"
    if [ $# -gt 0 ]; then
        # a .deb given by path is copied in and installed with its deps
        set -- $(for p in "$@"; do
            case "$p" in
            *.deb) cp "$p" "$dir/tmp/" && echo "/tmp/$(basename "$p")" ;;
            *) echo "$p" ;;
            esac
        done)
        run "$dir" apt-get install -y -q --no-install-recommends "$@" \
            >>"$dir.apt.log" 2>&1 ||
            die "apt-get install $* in $dir failed; log: $dir.apt.log"
    fi
    ;;
run)
    shift
    while [ $# -gt 0 ]; do
        case "$1" in
        --bind=*) binds="$binds ${1#--bind=}"; shift ;;
        *) break ;;
        esac
    done
    [ $# -ge 2 ] || die "usage: debian-root.sh run [--bind=PATH]... DIR COMMAND..."
    dir=$1; shift
    run "$dir" "$@"
    ;;
*)
    die "usage: debian-root.sh new DIR [PACKAGE...] | run DIR COMMAND..."
    ;;
esac
