#!/bin/sh
# SPDX-License-Identifier: GPL-2.0-or-later
#
# configure-variant.sh TREE NAME: configure the test-only build TREE/build-NAME
# of an assembled tree (NAME: docs for the manual, fuzz for clang with
# ASan, UBSan and libFuzzer: the sanitizer runs and the fuzz targets).
set -eu
srcdir=$(cd "$(dirname "$0")/../.." && pwd)
. "$srcdir/scripts/fork/common.sh"
[ -d "$1/build" ] || die "$1 is not an assembled tree; run ./configure"
configure_variant "$1" "$2"
