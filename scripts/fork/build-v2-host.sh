#!/bin/bash
# SPDX-License-Identifier: GPL-2.0-or-later
#
# build-v2-host.sh BUILDDIR [--print-paths]
#
# A test guest that is a cgroup v2 host: the bundled backports (6.12) test
# guest, plus an initramfs layer holding the stable test guest to run
# nested and Python with the fork's management helper
# qemu-balloon-auto-pressure and its package qemu_balloon_auto, and a
# read-only squashfs image holding the fork built in BUILDDIR (its
# qemu-system-x86_64 and its test-balloon-pressure unit test, stripped,
# with the shared libraries they need, and the firmware for -kernel
# boots).  The image is a disk rather than part of the initramfs because
# the build we ship links some 190 libraries (135 MiB): in the initramfs
# they would take the host's RAM for good, on a disk they are page cache
# like any host's binaries, and the host runs the build that ships, with
# no build of its own to compile.  The machines here bind the memory
# controller to cgroup v1; booted with cgroup_no_v1=all this guest has it
# on v2, so the v2 code runs against a real kernel.
#
# Boot it with the kernel command line extras V2_APPEND prints, the image
# FORK_IMAGE as a read-only virtio disk, and -m of 3 GiB or more.  Inside,
# once the image is mounted at /opt/fork:
# /opt/qemu/bin/qemu-system-x86_64 (firmware with -L /opt/fork/share),
# /opt/tests/test-balloon-pressure, /opt/nested/vmlinux (the stable kernel
# as an ELF booted through its PVH entry: pvh-vmlinux.py) and
# /opt/nested/initrd.img.  Cached under $QEMU_FORK_CACHE/guest/v2host,
# rebuilt when an input changes.
#
# --print-paths prints KERNEL=, INITRD=, V2_APPEND=, V1_KERNEL=,
# V1_INITRD= and FORK_IMAGE= on stdout, and NESTED_KERNEL=,
# NESTED_INITRD= and FIRMWARE= (a directory for -L): the nested guest and
# the firmware it boots with, outside the host, so that this machine can
# boot the nested guest in the same machine and hand it over to a nested
# QEMU as a migration stream.

set -eu
srcdir=$(cd "$(dirname "$0")/../.." && pwd)
. "$srcdir/scripts/fork/common.sh"
prog=build-v2-host
log() { echo "$prog: $*" >&2; }

bld=${1:?usage: build-v2-host.sh BUILDDIR [--print-paths]}
print_paths=false
[ "${2:-}" = --print-paths ] && print_paths=true
qemu="$bld/qemu-system-x86_64"
unit="$bld/tests/unit/test-balloon-pressure"
[ -x "$qemu" ] && [ -x "$unit" ] ||
    die "$bld has no qemu-system-x86_64 or test-balloon-pressure; run make v2host"
command -v mksquashfs >/dev/null ||
    die "no mksquashfs; run 'make setup' (scripts/fork/setup-host.sh)"

# The KERNEL= and INITRD= lines of a test guest, one run per kernel: even
# an up-to-date guest takes seconds to check.  value NAME LINES picks one.
guest_paths() {
    "$srcdir/scripts/fork/build-test-guest.sh" --kernel="$1" --print-paths
}
value() { sed -n "s/^$1=//p" <<<"$2"; }
paths=$(guest_paths backports)
outer_kernel=$(value KERNEL "$paths")
outer_initrd=$(value INITRD "$paths")
paths=$(guest_paths stable)
nested_kernel=$(value KERNEL "$paths")
nested_initrd=$(value INITRD "$paths")
roms="$bld/pc-bios/optionrom"
bios=/usr/share/seabios/bios-256k.bin
[ -f "$bios" ] || die "no $bios (seabios)"

out="$(cache_dir)/guest/v2host"
mkdir -p "$out"
inputs=$(
    for f in "$qemu" "$unit" "$outer_initrd" "$nested_kernel" "$nested_initrd" \
             "$bios" "$roms"/*.bin "$0" "$srcdir/scripts/fork/pvh-vmlinux.py" \
             "$srcdir/scripts/qemu-balloon-auto-pressure" \
             "$srcdir"/scripts/qemu_balloon_auto/*.py /usr/bin/python3.11; do
        sha256sum < "$f"
    done | sha256sum | cut -d' ' -f1
)
report() {
    if $print_paths; then
        echo "KERNEL=$outer_kernel"
        echo "INITRD=$out/initrd.img"
        # cgroup v2 only, memory controller there, PSI on
        echo "V2_APPEND=cgroup_no_v1=all systemd.unified_cgroup_hierarchy=1 psi=1"
        echo "V1_KERNEL=$nested_kernel"
        echo "V1_INITRD=$out/initrd-v1.img"
        echo "FORK_IMAGE=$out/fork.squashfs"
        echo "NESTED_KERNEL=$out/nested-vmlinux"
        echo "NESTED_INITRD=$nested_initrd"
        echo "FIRMWARE=$out/firmware"
    fi
}
if [ -f "$out/initrd.img" ] && [ -f "$out/initrd-v1.img" ] &&
   [ -f "$out/fork.squashfs" ] && [ -f "$out/nested-vmlinux" ] &&
   [ -d "$out/firmware" ] &&
   [ "$(cat "$out/inputs" 2>/dev/null)" = "$inputs" ]; then
    log "up to date: $out"
    report
    exit 0
fi

log "building the cgroup v2 host layer"
work=$(mktemp -d "$out/.build.XXXXXX")
trap 'rm -rf "$work"' EXIT
root="$work/root"
fork="$work/fork"
mkdir -p "$root/opt/qemu/bin" "$root/opt/tests" "$root/opt/nested" \
         "$root/opt/fork" "$fork/bin" "$fork/lib" "$fork/share"
# ship BINARY DIR: BINARY stripped into the image, and in DIR of the
# initramfs a script of its name that runs it with the image's libraries
# (exec: the pid stays the binary's)
ship() {
    name=$(basename "$1")
    strip -o "$fork/bin/$name" "$1"
    printf '#!/bin/sh\nexport LD_LIBRARY_PATH=/opt/fork/lib\n%s\n' \
        "exec /opt/fork/bin/$name \"\$@\"" > "$2/$name"
    chmod 755 "$2/$name"
}
ship "$qemu" "$root/opt/qemu/bin"
ship "$unit" "$root/opt/tests"
cp "$bios" "$roms"/*.bin "$fork/share/"
# The libraries of both, found through LD_LIBRARY_PATH: the initramfs
# keeps its own copies of those Python needs at their usual paths.
for lib in $( (ldd "$qemu"; ldd "$unit") |
              awk '$2 == "=>" && $3 ~ /^\// {print $3}' | sort -u); do
    cp -L "$lib" "$fork/lib/"
done
mksquashfs "$fork" "$work/fork.squashfs" -noappend -quiet -no-progress \
    -all-root -mkfs-time 0 -all-time 0 >/dev/null ||
    die "cannot write the image of the fork"
/usr/bin/python3 "$srcdir/scripts/fork/pvh-vmlinux.py" "$nested_kernel" \
    "$root/opt/nested/vmlinux" || die "cannot unpack $nested_kernel"
cp "$nested_initrd" "$root/opt/nested/initrd.img"
cp "$root/opt/nested/vmlinux" "$work/nested-vmlinux"
cp -r "$fork/share" "$work/firmware"

# Python and the management helper, to hand descriptors over as root to an
# unprivileged QEMU (the standard library without what the helper never
# imports)
python=/usr/bin/python3.11
[ -x "$python" ] || die "no $python"
mkdir -p "$root/usr/bin" "$root/usr/lib"
cp "$python" "$root/usr/bin/python3"
(cd /usr/lib && tar -cf - --exclude=__pycache__ --exclude=test \
    --exclude=idlelib --exclude=tkinter --exclude=lib2to3 --exclude=ensurepip \
    --exclude=pydoc_data --exclude=dist-packages --exclude=site-packages \
    --exclude='config-3.11-*' --exclude=distutils --exclude=turtledemo \
    --exclude=sqlite3 python3.11) | tar -xf - -C "$root/usr/lib"
cp "$srcdir/scripts/qemu-balloon-auto-pressure" "$root/usr/bin/"
# its package (not 'testing') in the standard library's directory, which
# is on the path of the copied interpreter
mkdir -p "$root/usr/lib/python3.11/qemu_balloon_auto"
cp "$srcdir"/scripts/qemu_balloon_auto/*.py \
    "$root/usr/lib/python3.11/qemu_balloon_auto/"

# Python's shared libraries (and the loader) at the paths it expects.
for lib in $(ldd "$python" |
              awk '$2 == "=>" && $3 ~ /^\// {print $3} $1 ~ /^\// {print $1}' |
              sort -u); do
    mkdir -p "$root$(dirname "$lib")"
    cp -L "$lib" "$root$lib"
done

(cd "$root" && find . -mindepth 1 -printf '%P\n' | LC_ALL=C sort |
    cpio -o -H newc -R 0:0 --reproducible --quiet) | gzip -1 -n > "$work/layer.img" ||
    die "cannot write the v2 host layer"
# Linux unpacks concatenated initramfs archives one after the other.
cat "$outer_initrd" "$work/layer.img" > "$work/initrd.img"
# The same host on the stable (6.1) kernel, whose memory controller can
# be on cgroup v1 (the 6.12 kernel is built without CONFIG_MEMCG_V1).
cat "$nested_initrd" "$work/layer.img" > "$work/initrd-v1.img"
mv -f "$work/fork.squashfs" "$out/fork.squashfs"
mv -f "$work/nested-vmlinux" "$out/nested-vmlinux"
rm -rf "$out/firmware"
mv -f "$work/firmware" "$out/firmware"
mv -f "$work/initrd-v1.img" "$out/initrd-v1.img"
mv -f "$work/initrd.img" "$out/initrd.img"
echo "$inputs" > "$out/inputs"
size() { du -h "$1" | cut -f1; }
log "done: $out/initrd.img ($(size "$out/initrd.img")), $out/fork.squashfs" \
    "($(size "$out/fork.squashfs"))"
report
