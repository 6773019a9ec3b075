#!/bin/sh
# SPDX-License-Identifier: GPL-2.0-or-later
#
# fresh-machine.sh [demo] [check]: what a new user gets.  A fresh Debian 12
# root (debootstrap minbase plus git, make, gcc, python3, sudo and procps,
# nothing else), this repository cloned into it (its committed HEAD), and
# the README's commands run there: 'make demo', then 'make check' (both by
# default).  Everything the project needs must come from its own files.
# Logs go to the root's /src/build/fresh-*.log; the exit status is the
# first command's that failed.  Run as root; takes about an hour.

set -eu
srcdir=$(cd "$(dirname "$0")/../.." && pwd)
. "$srcdir/scripts/fork/common.sh"

commands=${*:-demo check}
root="$(cache_dir)/roots/work-fresh-machine"
tool="$srcdir/scripts/fork/debian-root.sh"

info "fresh root in $root"
"$tool" new "$root" git make gcc python3 sudo procps ca-certificates
git clone --quiet "$srcdir" "$root/src"
mkdir -p "$root/src/build"
status=0
for c in $commands; do
    log="$root/src/build/fresh-$c.log"
    info "make $c in the fresh root (log: $log)"
    start=$(date +%s)
    if "$tool" run "$root" env CI=true sh -c "cd /src && make $c" >"$log" 2>&1
    then
        info "make $c: passed in $(( $(date +%s) - start )) s; last line: $(tail -n 1 "$log")"
    else
        info "make $c: FAILED after $(( $(date +%s) - start )) s; last lines:"
        tail -n 20 "$log"
        [ $status = 0 ] && status=1
    fi
done
exit $status
