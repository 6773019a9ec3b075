# SPDX-License-Identifier: GPL-2.0-or-later
#
# Shared helpers of ./configure and the fork's Makefile scripts.
# Sourced with $srcdir set to the top of this repository.

die()  { echo "configure: error: $*" >&2; exit 1; }
warn() { echo "configure: warning: $*" >&2; }
info() { echo "configure: $*"; }

FORK_NAME="qemu-balloon-auto"
OVERLAY_DIRS="hw include qapi stubs tests docs scripts configs"

base_field() {
    sed -n "s/^$1=//p" "$srcdir/patches/base"
}

cache_dir() {
    echo "${QEMU_FORK_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/$FORK_NAME}"
}

# The Debian mirror URI already used for "bookworm" main.
debian_uri() {
    {
        [ -f /etc/apt/sources.list ] && awk '$1 == "deb" && $3 == "bookworm" {print $2}' /etc/apt/sources.list
        for f in /etc/apt/sources.list.d/*.sources; do
            [ -f "$f" ] || continue
            awk 'BEGIN{RS=""} /Suites:[^\n]*bookworm( |\n|$)/ && /Types:[^\n]*deb/ {
                     if (match($0, /URIs:[ \t]*[^ \t\n]+/)) {
                         s = substr($0, RSTART, RLENGTH); sub(/URIs:[ \t]*/, "", s); print s } }' "$f"
        done
        for f in /etc/apt/sources.list.d/*.list; do
            [ -f "$f" ] || continue
            awk '$1 == "deb" && $3 == "bookworm" {print $2}' "$f"
        done
    } | grep -v security | head -n 1
}

# Non-comment, non-empty lines of patches/series.
series_list() {
    [ -f "$srcdir/patches/series" ] || return 0
    sed -e 's/#.*//' -e '/^[[:space:]]*$/d' "$srcdir/patches/series"
}

# The configuration we test and ship: Debian's qemu-system-x86 build
# (debian/rules and the configure options in debian/control of the qemu
# source package), limited to the x86_64 system emulator and its tools.
# Differences from Debian, and why:
#   --target-list=x86_64-softmmu  the fork serves x86_64 KVM hosts
#   no --enable-modules           one self-contained binary and package (the
#                                 pve-qemu-kvm model); modules would also
#                                 stamp every object with the version and
#                                 keep ccache from sharing the fork's and the
#                                 pristine build's objects
#   no --enable-blkio             Debian 12 has no libblkio
#   --disable-guest-agent         a guest tool, not part of qemu-system-x86
#   --disable-docs                the manual is built on its own (make docs)
project_configure_args() {
    cat <<EOF
--target-list=x86_64-softmmu
--prefix=/usr
--sysconfdir=/etc
--libdir=/usr/lib/x86_64-linux-gnu
--libexecdir=/usr/lib/qemu
--localstatedir=/var
--mandir=/usr/share/man
--firmwarepath=/usr/share/qemu:/usr/share/seabios:/usr/lib/ipxe/qemu
--disable-install-blobs
--disable-strip
--disable-download
--disable-containers
--disable-relocatable
--disable-docs
--disable-xkbcommon
--disable-user
--disable-linux-user
--enable-tools
--disable-xen
--disable-guest-agent
$(debian_feature_args)
--enable-fdt=system
--python=/usr/bin/python3
--cc=/usr/lib/ccache/cc
--cxx=/usr/lib/ccache/c++
EOF
}

# debian/control's "# --enable-X [archs]" comments for linux-amd64 (what
# Debian's extract-config-opts prints), minus what Debian 12 cannot build.
debian_feature_args() {
    cat <<EOF
--enable-capstone
--enable-linux-aio
--disable-sndio
--audio-drv-list=pipewire,pa,alsa,jack,oss,sdl
--enable-attr
--enable-bpf
--enable-brlapi
--enable-virtfs
--enable-cap-ng
--enable-curl
--enable-fuse
--enable-gnutls
--enable-gtk
--enable-vte
--enable-libiscsi
--enable-curses
--enable-virglrenderer
--enable-opengl
--enable-libnfs
--enable-numa
--enable-smartcard
--enable-pixman
--enable-rbd
--enable-glusterfs
--enable-vnc-sasl
--enable-sdl
--enable-seccomp
--enable-slirp
--enable-spice
--enable-rdma
--enable-linux-io-uring
--enable-libusb
--enable-usb-redir
--enable-libssh
--enable-zstd
--enable-vde
--enable-nettle
--enable-libudev
--enable-vnc
--enable-vnc-jpeg
--enable-png
--enable-libpmem
--enable-kvm
--enable-vhost-net
EOF
}

check_build_deps() {
    missing=""
    for cmd in git ninja meson gcc i686-linux-gnu-gcc dpkg-source ccache /usr/lib/ccache/cc; do
        command -v "$cmd" >/dev/null 2>&1 || missing="$missing $cmd"
    done
    if command -v meson >/dev/null 2>&1; then
        mv=$(meson --version)
        case "$mv" in
        0.*|1.[0-4].*) missing="$missing meson>=1.5(have:$mv)" ;;
        esac
    fi
    [ -f /usr/share/seabios/bios-256k.bin ] || missing="$missing seabios"
    [ -d /usr/lib/ipxe/qemu ] || missing="$missing ipxe-qemu"
    [ -z "$missing" ] ||
        die "missing build dependencies:$missing
  run 'sudo scripts/fork/setup-host.sh' (or 'make setup') to install them"
}

# Validate a user-given source tree; print its absolute path.
check_qemu_source() {
    dir=$1
    [ -d "$dir" ] || die "--qemu-source=$dir: no such directory"
    [ -f "$dir/VERSION" ] && [ -f "$dir/meson.build" ] &&
        [ -f "$dir/hw/virtio/virtio-balloon.c" ] ||
        die "--qemu-source=$dir: not a QEMU source tree (no VERSION, meson.build or hw/virtio/virtio-balloon.c)"
    ver=$(cat "$dir/VERSION")
    case "$ver" in
    10.0.*) ;;
    *) die "--qemu-source=$dir: QEMU $ver is not a 10.0.x base; the patch series is for $(base_field series).x" ;;
    esac
    cd "$dir" && pwd
}

# Newest qemu source version of the series that apt offers, or nothing.
newest_offered_version() {
    apt-cache showsrc qemu 2>/dev/null |
        sed -n 's/^Version: //p' |
        grep "^1:$(base_field series | sed 's/\./\\./g')\." |
        while read -r v; do echo "$v"; done |
        sort_debian_versions | tail -n 1
}

sort_debian_versions() {
    # insertion sort with dpkg's comparison; lists are short
    sorted=""
    while read -r v; do
        out=""; placed=no
        for s in $sorted; do
            if [ $placed = no ] && dpkg --compare-versions "$v" lt "$s"; then
                out="$out $v"; placed=yes
            fi
            out="$out $s"
        done
        [ $placed = no ] && out="$out $v"
        sorted=$out
    done
    for s in $sorted; do echo "$s"; done
}

# Fetch (once) and extract Debian's qemu source package into the cache.
# Sets source_tree and base_version.
fetch_debian_source() {
    want=$(base_field version)
    cache=$(cache_dir)
    mkdir -p "$cache/dl"
    version=$want
    if [ ! -d "$cache/src-$version" ]; then
        upstream_ver=$(echo "$version" | sed -e 's/^[0-9]*://' -e 's/-[^-]*$//')
        if ! ls "$cache/dl/qemu_${upstream_ver}"*.dsc >/dev/null 2>&1; then
            info "fetching Debian source package qemu=$version"
            if ! (cd "$cache/dl" && apt-get source --download-only "qemu=$version" >"$cache/dl/fetch.log" 2>&1); then
                offered=$(newest_offered_version)
                if [ -z "$offered" ]; then
                    die "cannot fetch Debian source package qemu=$version and the archive offers no qemu $(base_field series).x source
  (no deb-src entry for trixie, or no network to the archive?)
  run 'sudo scripts/fork/setup-host.sh', or pass --qemu-source=DIR; log: $cache/dl/fetch.log"
                fi
                warn "the archive no longer offers qemu=$version; using the newest $(base_field series).x it offers: $offered"
                version=$offered
                upstream_ver=$(echo "$version" | sed -e 's/^[0-9]*://' -e 's/-[^-]*$//')
                (cd "$cache/dl" && apt-get source --download-only "qemu=$version" >"$cache/dl/fetch.log" 2>&1) ||
                    die "cannot fetch Debian source package qemu=$version; log: $cache/dl/fetch.log"
            fi
        fi
        orig="$cache/dl/qemu_${upstream_ver}.orig.tar.xz"
        [ -f "$orig" ] || die "fetched source package has no $orig"
        if [ "$version" = "$want" ]; then
            sum=$(sha256sum "$orig" | cut -d' ' -f1)
            [ "$sum" = "$(base_field orig-sha256)" ] ||
                die "checksum mismatch for $orig: got $sum, patches/base records $(base_field orig-sha256)"
        fi
        dsc=$(ls "$cache/dl/qemu_$(echo "$version" | sed 's/^[0-9]*://')".dsc)
        rm -rf "$cache/src-$version.tmp"
        info "extracting $dsc (applies Debian's patches)"
        dpkg-source --no-check -x "$dsc" "$cache/src-$version.tmp" >"$cache/dl/extract.log" 2>&1 ||
            die "dpkg-source failed to extract $dsc; log: $cache/dl/extract.log"
        mv "$cache/src-$version.tmp" "$cache/src-$version"
    fi
    source_tree="$cache/src-$version"
    base_version="Debian $version"
}

# Refuse to throw away commits made in build/qemu that are not in patches/.
guard_unexported() {
    tree=$1; force=$2
    [ -d "$tree/.git" ] || return 0
    root=$(git -C "$tree" rev-list --max-parents=0 HEAD 2>/dev/null | tail -n 1) || return 0
    made=$(git -C "$tree" rev-list --count "$root"..HEAD 2>/dev/null || echo 0)
    dirty=$(git -C "$tree" status --porcelain --untracked-files=no 2>/dev/null | head -n 1)
    if [ "$made" -gt "$(series_list | wc -l)" ] || [ -n "$dirty" ]; then
        [ "$force" = yes ] && { warn "discarding unexported work in $tree (--force)"; return 0; }
        die "$tree holds commits or edits not exported to patches/
  run 'make export-patches' first, or re-run with --force to discard them"
    fi
}

git_quiet() {
    git -c user.name="$FORK_NAME configure" -c user.email="fork@localhost" \
        -c commit.gpgsign=false "$@"
}

# assemble_tree SOURCE DEST WITH_SERIES BASE_VERSION
assemble_tree() {
    src=$1; dest=$2; with_series=$3; base=$4
    tmp="$dest.tmp"
    rm -rf "$tmp"
    info "assembling $(basename "$dest") from $src"
    mkdir -p "$tmp"
    (cd "$src" && tar --exclude=./debian --exclude=./.pc --exclude=./.git -cf - .) |
        (cd "$tmp" && tar -xf -) || die "copying $src failed"
    git_quiet -C "$tmp" init -q -b upstream
    git_quiet -C "$tmp" add -A -f
    GIT_AUTHOR_DATE="2000-01-01T00:00:00Z" GIT_COMMITTER_DATE="2000-01-01T00:00:00Z" \
        git_quiet -C "$tmp" commit -q -m "Pristine QEMU base: $base" ||
        die "committing the pristine tree failed"
    git_quiet -C "$tmp" tag base
    git_quiet -C "$tmp" checkout -q -b fork
    if [ "$with_series" = yes ]; then
        for p in $(series_list); do
            [ -f "$srcdir/patches/$p" ] || { rm -rf "$tmp"; die "patches/series names $p but patches/$p does not exist"; }
            if ! out=$(git_quiet -C "$tmp" am -q --keep-cr "$srcdir/patches/$p" 2>&1); then
                files=$(echo "$out" | sed -n 's/^error: \(patch failed\|.*does not exist in index\|.*already exists\).*: *\(.*\)/\2/p;s/^error: patch failed: \([^:]*\):.*/\1/p' | sort -u | tr '\n' ' ')
                rm -rf "$tmp"
                die "patch $p does not apply to base $base${files:+ (failing: $files)}
$out"
            fi
        done
        "$srcdir/scripts/fork/link-overlay.sh" "$tmp" ||
            { rm -rf "$tmp"; die "linking the overlay into $tmp failed"; }
    fi
    rm -rf "$dest"
    mv "$tmp" "$dest"
}

# configure_tree TREE BASE_VERSION UPSTREAM_ARGS_FILE
configure_tree() {
    tree=$1; base=$2; argsfile=$3
    # Kept stable across commits: it lands in config-host.h, and a changing
    # value would defeat ccache for every object.
    if [ "$(basename "$tree")" = pristine ]; then
        pkg="pristine QEMU, $base"
    else
        pkg="$FORK_NAME fork, $base"
    fi
    mkdir -p "$tree/build"
    info "running upstream configure in $tree/build"
    # One argument per line in both lists, so values may contain spaces.
    set --
    while IFS= read -r a; do set -- "$@" "$a"; done <<EOF
$(project_configure_args)
EOF
    while IFS= read -r a; do [ -n "$a" ] && set -- "$@" "$a"; done < "$argsfile"
    if ! (cd "$tree/build" && ../configure "$@" "--with-pkgversion=$pkg" >config.out 2>&1); then
        tail -n 30 "$tree/build/config.out" >&2
        rm -f "$tree/build/build.ninja"
        die "upstream configure failed in $tree/build; full log: $tree/build/config.out"
    fi
}

# Extra build directories of the assembled fork: the manual, and the same
# tree built small for tests only (never shipped), with clang, sanitizers
# and libFuzzer (the sanitizer runs and the fuzz targets).
variant_configure_args() {
    if [ "$1" = docs ]; then
        # only the manual and the man pages, with Debian's Sphinx; paths as
        # in the build we ship, so that 'ninja install' puts them in place
        cat <<EOF2
--without-default-features
--disable-system
--disable-user
--disable-tools
--enable-docs
--prefix=/usr
--mandir=/usr/share/man
--disable-install-blobs
--disable-download
--python=/usr/bin/python3
EOF2
        return
    fi
    cat <<EOF2
--target-list=x86_64-softmmu
--without-default-features
--enable-tcg
--enable-fdt=system
--disable-docs
--disable-download
--disable-install-blobs
--python=/usr/bin/python3
--firmwarepath=/usr/share/qemu:/usr/share/seabios:/usr/lib/ipxe/qemu
--without-default-devices
--with-devices-x86_64=balloon-tests
EOF2
    case "$1" in
    fuzz)
        # libFuzzer needs clang; ASan and UBSan find what the fuzzer
        # provokes, and the same build runs the tests under them
        printf '%s\n' --enable-fuzzing --enable-asan --enable-ubsan \
            --cc=/usr/lib/ccache/clang --cxx=/usr/lib/ccache/clang++ ;;
    *)
        die "unknown build variant '$1'" ;;
    esac
}

# configure_variant TREE NAME: configure TREE/build-NAME.
configure_variant() {
    tree=$1; name=$2
    bld="$tree/build-$name"
    mkdir -p "$bld"
    set --
    while IFS= read -r a; do set -- "$@" "$a"; done <<EOF2
$(variant_configure_args "$name")
EOF2
    # the manual names what is shipped; test builds say what they are
    if [ "$name" = docs ]; then
        pkg="$FORK_NAME fork, $(git -C "$tree" log -1 --format=%s base |
                                sed 's/^Pristine QEMU base: //')"
    else
        pkg="$FORK_NAME fork, $name build"
    fi
    info "running upstream configure in $bld ($name)"
    if ! (cd "$bld" && ../configure "$@" \
            "--with-pkgversion=$pkg" >config.out 2>&1); then
        tail -n 30 "$bld/config.out" >&2
        rm -f "$bld/build.ninja"
        die "upstream configure failed in $bld; full log: $bld/config.out"
    fi
}
