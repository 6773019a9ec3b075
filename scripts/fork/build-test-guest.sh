#!/bin/bash
# SPDX-License-Identifier: GPL-2.0-or-later
#
# build-test-guest.sh [--kernel=stable|backports] [--print-paths]
#
# Build the bundled Linux test guest from Debian packages only: a Debian
# kernel (stable: the release's linux-image-amd64; backports: the one from
# <release>-backports) and an initramfs holding busybox-static, the virtio
# and squashfs modules that kernel does not have built in, the in-guest
# tool bgt (tests/guest/bgt.c, linked statically) and an /init that runs a
# command loop on the serial console.
#
# Everything goes to $QEMU_FORK_CACHE (default ~/.cache/qemu-balloon-auto),
# under guest/<kernel-version>/, outside this repository, and is reused while
# the inputs (kernel and busybox package versions, bgt.c, this script, which
# holds /init, and the compiler) are unchanged.  Only resolving the packages
# needs apt's package lists; a rebuild needs the archive to download them.
#
# --print-paths prints KERNEL=<path> and INITRD=<path> on stdout, and nothing
# else there; all progress goes to stderr.
#
# Console protocol of the guest (kernel command line "console=ttyS0"; add
# "bgt.tty=hvc0" to run the loop on a virtio console port instead):
#   - after loading modules /init prints "BGT-READY" on a line of its own;
#     a module that fails to load gives "BGT-ERROR insmod NAME failed" first;
#   - each line received (echo is off) is run as sh -c "LINE" </dev/null with
#     stdout and stderr on the console, then "@@DONE <exit-code>@@" follows;
#   - background jobs ("bgt alloc 500 --hold 30 &") keep writing to the
#     console after their @@DONE; kernel messages are interleaved too.
# Boot it with -nodefaults: SeaBIOS spends ~30 s under TCG probing the
# default q35 AHCI CD-ROM otherwise.

set -eu

srcdir=$(cd "$(dirname "$0")/../.." && pwd)
. "$srcdir/scripts/fork/common.sh"

prog=build-test-guest
die() { echo "$prog: error: $*" >&2; exit 1; }
log() { echo "$prog: $*" >&2; }

usage() {
    echo "usage: $0 [--kernel=stable|backports] [--print-paths]" >&2
    exit 2
}

flavour=stable
print_paths=false
for arg in "$@"; do
    case $arg in
    --kernel=stable|--kernel=backports) flavour=${arg#--kernel=} ;;
    --print-paths) print_paths=true ;;
    -h|--help) usage ;;
    *) echo "$prog: unknown argument '$arg'" >&2; usage ;;
    esac
done

# Modules wanted, in load order.  Those built into the kernel are skipped;
# dependencies missing from this list are added ahead of their users.
# squashfs: the guest booted as a host mounts the fork it runs from a
# read-only image (build-v2-host.sh).
WANTED_MODULES="virtio_ring virtio virtio_pci_legacy_dev virtio_pci_modern_dev
virtio_pci virtio_balloon virtio_blk virtio_console squashfs"

missing=""
for cmd in apt-get apt-cache dpkg-deb tar xz cpio gzip gcc sha256sum; do
    command -v "$cmd" >/dev/null 2>&1 || missing="$missing $cmd"
done
[ -z "$missing" ] ||
    die "missing tools:$missing; run 'make setup' (scripts/fork/setup-host.sh)"

codename=$(. /etc/os-release 2>/dev/null && echo "${VERSION_CODENAME:-}")
codename=${codename:-bookworm}

# "package candidate-version" for each package $2... , with the apt-cache
# options in $1 (word-split); packages without a candidate are left out.
candidates() {
    opts=$1; shift
    # shellcheck disable=SC2086 # $opts is a list of options
    LC_ALL=C apt-cache $opts policy "$@" 2>/dev/null |
        awk '/^[^ ].*:$/ {pkg = substr($0, 1, length($0) - 1)}
             $1 == "Candidate:" && $2 != "(none)" {print pkg, $2}'
}

# The candidate version of $1 in the output of candidates() on stdin.
pick() {
    awk -v p="$1" '$1 == p {print $2}'
}

# Name of the linux-image-<abi> package the meta-package depends on.
resolve_kernel_pkg() {
    meta=linux-image-amd64
    case $flavour in
    stable)
        opts=""
        ver=$(candidates "$opts" $meta | pick $meta)
        [ -n "$ver" ] ||
            die "package $meta not found in apt's lists; run 'apt-get update'"
        case $ver in
        *bpo*) die "apt's candidate for $meta is the backports one ($ver);" \
                   "cannot pick the stable kernel: check apt pinning" ;;
        esac
        ;;
    backports)
        opts="-t $codename-backports"
        # shellcheck disable=SC2086 # $opts is a list of options
        out=$(LC_ALL=C apt-cache $opts policy $meta 2>&1) ||
            die "$codename-backports is not usable in apt's sources" \
                "($(echo "$out" | grep '^E:' | head -n 1));" \
                "run 'make setup' (scripts/fork/setup-host.sh)"
        ver=$(echo "$out" | awk '$1 == "Candidate:" {print $2}')
        case $ver in
        *bpo*) ;;
        *) die "package $meta has no version in $codename-backports" \
               "(candidate: ${ver:-none});" \
               "run 'make setup' (scripts/fork/setup-host.sh)" \
               "and 'apt-get update'" ;;
        esac
        ;;
    esac
    LC_ALL=C apt-cache depends "$meta=$ver" 2>/dev/null |
        awk '$1 == "Depends:" && $2 ~ /^linux-image-/ {print $2; exit}'
}

kpkg=$(resolve_kernel_pkg)
[ -n "$kpkg" ] ||
    die "cannot find the kernel package linux-image-amd64 ($flavour) depends on"
kver=${kpkg#linux-image-}
cands=$(candidates "" "$kpkg" busybox-static)
kpkg_ver=$(echo "$cands" | pick "$kpkg")
[ -n "$kpkg_ver" ] ||
    die "package $kpkg ($flavour kernel) has no installable version" \
        "in apt's lists"
bb_ver=$(echo "$cands" | pick busybox-static)
[ -n "$bb_ver" ] ||
    die "package busybox-static not found in apt's lists; run 'apt-get update'"

gdir="$(cache_dir)/guest/$kver"
mkdir -p "$gdir" || die "cannot create cache directory $gdir"

# One builder per kernel at a time; readers only see complete files.
if command -v flock >/dev/null 2>&1; then
    exec 9>"$gdir/.lock"
    flock 9
fi

tool_src="$srcdir/tests/guest/bgt.c"
[ -f "$tool_src" ] || die "missing $tool_src"
inputs=$(
    {
        echo "kernel $kpkg $kpkg_ver"
        echo "busybox busybox-static $bb_ver"
        echo "bgt $(sha256sum < "$tool_src")"
        echo "script $(sha256sum < "$0")"
        echo "gcc $(gcc -dumpfullversion 2>/dev/null || gcc -dumpversion)"
    } | sha256sum | cut -d' ' -f1
)

report() {
    if $print_paths; then
        echo "KERNEL=$gdir/vmlinuz"
        echo "INITRD=$gdir/initrd.img"
    else
        echo "test guest ($flavour): kernel $gdir/vmlinuz," \
             "initrd $gdir/initrd.img"
    fi
}

if [ -f "$gdir/vmlinuz" ] && [ -f "$gdir/initrd.img" ] &&
   [ "$(cat "$gdir/inputs" 2>/dev/null)" = "$inputs" ]; then
    log "up to date: $kpkg $kpkg_ver ($gdir)"
    report
    exit 0
fi

log "building the $flavour test guest: $kpkg $kpkg_ver, busybox-static $bb_ver"

work=$(mktemp -d "$gdir/.build.XXXXXX")
trap 'rm -rf "$work"' EXIT

# Print the path of package $1, version $2, in $gdir; download it if needed.
fetch_deb() {
    pkg=$1 ver=$2
    for f in "$gdir/${pkg}_"*.deb; do
        [ -f "$f" ] || continue
        if [ "$(dpkg-deb -f "$f" Version 2>/dev/null)" = "$ver" ]; then
            echo "$f"
            return 0
        fi
    done
    log "downloading $pkg $ver"
    dl="$work/dl-$pkg"
    mkdir -p "$dl"
    sandbox=""
    [ "$(id -u)" != 0 ] || sandbox="-o APT::Sandbox::User=root"
    # shellcheck disable=SC2086 # $sandbox is empty or an option pair
    if ! (cd "$dl" && apt-get -q $sandbox download "$pkg=$ver") \
            >"$dl.log" 2>&1; then
        sed 's/^/  /' "$dl.log" >&2
        die "could not download package $pkg ($ver) with apt-get download;" \
            "is the Debian archive reachable?"
    fi
    set -- "$dl"/*.deb
    [ -f "$1" ] || die "apt-get download left no .deb for package $pkg"
    rm -f "$gdir/${pkg}_"*.deb
    mv "$1" "$gdir/"
    echo "$gdir/$(basename "$1")"
}

kdeb=$(fetch_deb "$kpkg" "$kpkg_ver")
bbdeb=$(fetch_deb busybox-static "$bb_ver")

# Unpack the kernel image and its modules (not the firmware or headers).
log "unpacking $(basename "$kdeb")"
kx="$work/kernel"
mkdir -p "$kx"
dpkg-deb --fsys-tarfile "$kdeb" |
    tar -x -C "$kx" --wildcards "./boot/vmlinuz-$kver" \
        "./lib/modules/$kver/modules.builtin" "./lib/modules/$kver/kernel/*" ||
    die "cannot unpack vmlinuz-$kver and its modules from $kdeb"
mroot="$kx/lib/modules/$kver"
[ -f "$kx/boot/vmlinuz-$kver" ] || die "$kpkg has no /boot/vmlinuz-$kver"

bbx="$work/busybox"
mkdir -p "$bbx"
dpkg-deb -x "$bbdeb" "$bbx" || die "cannot unpack $bbdeb"
[ -x "$bbx/bin/busybox" ] || die "busybox-static has no /bin/busybox"

root="$work/root"
mkdir -p "$root"/bin "$root"/sbin "$root"/usr/bin "$root"/usr/sbin \
         "$root"/etc "$root"/proc "$root"/sys "$root"/dev "$root"/tmp \
         "$root"/root "$root"/lib/modules
cp "$bbx/bin/busybox" "$root/bin/busybox"
ln -s busybox "$root/bin/sh"

# Modules: name (with '_') -> file, and the set built into the kernel.
declare -A modfile=() builtin=() state=()
while IFS= read -r f; do
    n=${f##*/}
    n=${n%%.ko*}
    modfile[${n//-/_}]=$f
done < <(find "$mroot/kernel" -name '*.ko' -o -name '*.ko.xz' \
              -o -name '*.ko.zst' -o -name '*.ko.gz')
if [ -f "$mroot/modules.builtin" ]; then
    while IFS= read -r f; do
        n=${f##*/}
        n=${n%.ko}
        builtin[${n//-/_}]=1
    done < "$mroot/modules.builtin"
else
    log "warning: $kpkg has no modules.builtin"
fi

# Decompress module file $1 to $2.
unpack_module() {
    case $1 in
    *.ko.xz) xz -dc "$1" > "$2" ;;
    *.ko.zst) zstd -qdc "$1" > "$2" ||
        die "cannot decompress $1: is zstd installed?" ;;
    *.ko.gz) gzip -dc "$1" > "$2" ;;
    *) cp "$1" "$2" ;;
    esac
}

# The depends= field of the .modinfo section of module file $1.
module_depends() {
    if command -v objcopy >/dev/null 2>&1; then
        objcopy -O binary --only-section=.modinfo "$1" "$1.modinfo" 2>/dev/null
        tr '\0' '\n' < "$1.modinfo"
        rm -f "$1.modinfo"
    else
        tr '\0' '\n' < "$1"
    fi | sed -n 's/^depends=//p' | head -n 1
}

order=""
add_module() {
    local name=${1//-/_} why=$2 dep deps out
    case ${state[$name]:-} in
    loaded) return 0 ;;
    busy) die "module dependency loop at $name" ;;
    esac
    if [ -n "${builtin[$name]:-}" ]; then
        log "  $name: built into $kver"
        state[$name]=loaded
        return 0
    fi
    [ -n "${modfile[$name]:-}" ] ||
        die "module $name ($why) is neither built into nor shipped with $kpkg"
    state[$name]=busy
    out="$root/lib/modules/$name.ko"
    unpack_module "${modfile[$name]}" "$out"
    deps=$(module_depends "$out")
    for dep in ${deps//,/ }; do
        add_module "$dep" "needed by $name"
    done
    log "  $name: module${why:+ ($why)}"
    order="$order$name
"
    state[$name]=loaded
}
for m in $WANTED_MODULES; do
    add_module "$m" ""
done
printf '%s' "$order" > "$root/etc/bgt-modules"

log "compiling $tool_src"
gcc -static -O2 -s -Wall -Wextra -o "$root/bin/bgt" "$tool_src" ||
    die "cannot compile $tool_src statically (is libc6-dev installed?)"

cat > "$root/init" <<'INIT'
#!/bin/sh
# /init of the balloon test guest, written by build-test-guest.sh.
export PATH=/bin:/sbin:/usr/bin:/usr/sbin HOME=/root
/bin/busybox mount -t proc proc /proc
/bin/busybox --install -s
mount -t sysfs sysfs /sys
mount -t devtmpfs devtmpfs /dev
exec </dev/console >/dev/console 2>&1

tty=ttyS0
for arg in $(cat /proc/cmdline); do
    case $arg in
    bgt.tty=*) tty=${arg#bgt.tty=} ;;
    esac
done

while read -r mod; do
    [ -n "$mod" ] || continue
    insmod "/lib/modules/$mod.ko" || echo "BGT-ERROR insmod $mod failed"
done < /etc/bgt-modules

i=0
while [ ! -c "/dev/$tty" ] && [ $i -lt 50 ]; do
    sleep 0.1
    i=$((i + 1))
done
if [ -c "/dev/$tty" ]; then
    exec </dev/$tty >/dev/$tty 2>&1
else
    echo "BGT-ERROR no /dev/$tty, using /dev/console"
fi
stty -echo
cd /
echo BGT-READY
while IFS= read -r line; do
    sh -c "$line" </dev/null
    echo "@@DONE $?@@"
done
echo "BGT-ERROR console closed, powering off"
poweroff -f
INIT
chmod 755 "$root/init" "$root/bin/bgt"
chmod 1777 "$root/tmp"

# A newc cpio entry with no data, for nodes a non-root user cannot mknod.
cpio_node() { # NAME MODE(octal) RDEV-MAJOR RDEV-MINOR
    local name=$1 namesize=$((${#1} + 1)) pad
    printf '070701%08X%08X%08X%08X%08X%08X%08X%08X%08X%08X%08X%08X%08X' \
        0 $((8#$2)) 0 0 1 0 0 0 0 "$3" "$4" "$namesize" 0
    printf '%s\0' "$name"
    pad=$(( (4 - (110 + namesize) % 4) % 4 ))
    head -c "$pad" /dev/zero
}

log "writing initrd.img"
{
    cpio_node dev 040755 0 0
    cpio_node dev/console 020600 5 1
    cpio_node TRAILER!!! 0 0 0
    (cd "$root" && find . -mindepth 1 -printf '%P\n' | LC_ALL=C sort |
        cpio -o -H newc -R 0:0 --reproducible --quiet)
} | gzip -6 -n > "$work/initrd.img" || die "cannot write the initrd"
cp "$kx/boot/vmlinuz-$kver" "$work/vmlinuz"
{
    echo "flavour=$flavour"
    echo "kernel_package=$kpkg"
    echo "kernel_package_version=$kpkg_ver"
    echo "kernel_release=$kver"
    echo "busybox_version=$bb_ver"
    mods=${order//$'\n'/ }
    echo "modules=${mods% }"
} > "$work/manifest"

# Stale inputs go first so that a half-updated directory never looks fresh.
rm -f "$gdir/inputs"
mv -f "$work/vmlinuz" "$gdir/vmlinuz"
mv -f "$work/initrd.img" "$gdir/initrd.img"
mv -f "$work/manifest" "$gdir/manifest"
echo "$inputs" > "$work/inputs"
mv -f "$work/inputs" "$gdir/inputs"
log "done: $gdir"
report
