#!/bin/sh
# SPDX-License-Identifier: GPL-2.0-or-later
#
# Install what building and testing the automatic-balloon QEMU fork needs,
# from Debian's archive only.  Idempotent; must run as root.
#
# The archive URI is taken from the machine's own apt configuration, so no
# host name is written anywhere by this project.

set -eu

srcdir=$(cd "$(dirname "$0")/../.." && pwd)
. "$srcdir/scripts/fork/common.sh"
die() { echo "setup-host: $*" >&2; exit 1; }

# The build dependencies of Debian's own qemu-system-x86 (debian/control of
# the qemu source package) that Debian 12 has: the fork is configured with
# the same features (see project_configure_args in common.sh).
PACKAGES_FEATURES="libcapstone-dev libaio-dev libjack-dev libpulse-dev
libasound2-dev libpipewire-0.3-dev libbpf-dev libbrlapi-dev libcap-ng-dev
libcurl4-gnutls-dev libfuse3-dev libgnutls28-dev libgtk-3-dev libvte-2.91-dev
libiscsi-dev libncurses-dev libvirglrenderer-dev libepoxy-dev libdrm-dev
libgbm-dev libnfs-dev libnuma-dev libcacard-dev librbd-dev libglusterfs-dev
libsasl2-dev libsdl2-dev libseccomp-dev libslirp-dev libspice-server-dev
librdmacm-dev libibverbs-dev libibumad-dev liburing-dev libusb-1.0-0-dev
libusbredirparser-dev libssh-dev libzstd-dev libvdeplug-dev nettle-dev
libudev-dev libjpeg-dev libpng-dev libpmem-dev"
PACKAGES_BASE="ninja-build libglib2.0-dev libpixman-1-dev libfdt-dev zlib1g-dev
flex bison dpkg-dev gcc-i686-linux-gnu seabios ccache git xz-utils cpio
squashfs-tools
busybox-static python3 python3-venv ipxe-qemu pkgconf
libvirt-daemon libvirt-daemon-driver-qemu libvirt-clients python3-matplotlib
python3-prometheus-client prometheus
$PACKAGES_FEATURES
python3-sphinx python3-sphinx-rtd-theme
debhelper fakeroot debootstrap
clang libclang-rt-14-dev"
PACKAGES_BACKPORTS="meson python3-pycotap"
LIST=/etc/apt/sources.list.d/qemu-balloon-auto-fork.sources
STAMP=/var/lib/qemu-balloon-auto-fork/setup.done

if [ "$(id -u)" != 0 ]; then
    die "must run as root: it adds deb-src (trixie) and bookworm-backports
entries to apt and installs: $PACKAGES_BASE $PACKAGES_BACKPORTS
(meson and python3-pycotap from bookworm-backports)"
fi

missing() {
    for p in $PACKAGES_BASE $PACKAGES_BACKPORTS; do
        dpkg-query -W -f='${Status}\n' "$p" 2>/dev/null |
            grep -q 'install ok installed' || { echo "$p"; return 0; }
    done
    meson_ok=$(meson --version 2>/dev/null | awk -F. '$1 > 1 || ($1 == 1 && $2 >= 5) {print "y"}')
    [ "$meson_ok" = y ] || echo meson
}

# libvirtd's QEMU driver refuses to start without the libvirt-qemu user
# and group, even when qemu.conf says user = "root"; libvirt-daemon-system
# (not installed: it would run a system libvirtd) normally creates them.
libvirt_user() {
    getent group libvirt-qemu >/dev/null || groupadd --system libvirt-qemu ||
        die "cannot create the libvirt-qemu system group"
    getent passwd libvirt-qemu >/dev/null ||
        useradd --system --no-create-home --home-dir /var/lib/libvirt \
            --shell /usr/sbin/nologin --gid libvirt-qemu libvirt-qemu ||
        die "cannot create the libvirt-qemu system user"
}

# Debian's prometheus package (its promtool, and the server the exporter
# test runs by itself on loopback) enables and starts a system Prometheus
# listening on every address (port 9090).  A host that did not run one
# before gets none: the start is refused through policy-rc.d (unless the
# host has its own policy) and the service is disabled again.
PROMETHEUS_POLICY='#!/bin/sh
# qemu-balloon-auto-fork setup-host.sh: no system Prometheus
case " $* " in *" prometheus "*|*" prometheus.service "*) exit 101;; esac
exit 0'
prometheus_was_installed() {
    dpkg-query -W -f='${Status}\n' prometheus 2>/dev/null |
        grep -q 'install ok installed'
}
no_system_prometheus() {
    # the init script's links and, through systemctl, the systemd unit's
    update-rc.d prometheus disable >/dev/null 2>&1 || :
}

if [ -f "$STAMP" ] && [ -z "$(missing)" ] && [ -f "$LIST" ]; then
    libvirt_user
    echo "setup-host: all dependencies present"
    exit 0
fi

uri=$(debian_uri)
[ -n "$uri" ] || die "no Debian 'bookworm' entry found in /etc/apt/sources.list*; cannot derive the archive URI"

keyring=/usr/share/keyrings/debian-archive-keyring.gpg
cat > "$LIST.tmp" <<SRC
# Added by qemu-balloon-auto-fork scripts/fork/setup-host.sh
Types: deb deb-src
URIs: $uri
Suites: bookworm-backports
Components: main
Signed-By: $keyring

Types: deb-src
URIs: $uri
Suites: trixie
Components: main
Signed-By: $keyring
SRC
mv "$LIST.tmp" "$LIST"

export DEBIAN_FRONTEND=noninteractive
apt-get update -q || die "apt-get update failed: is the Debian archive reachable?"
policy=
if ! prometheus_was_installed; then
    if [ ! -e /usr/sbin/policy-rc.d ]; then
        policy=/usr/sbin/policy-rc.d
        printf '%s\n' "$PROMETHEUS_POLICY" > "$policy"
        chmod 755 "$policy"
    fi
    new_prometheus=y
fi
apt-get install -y -q --no-install-recommends $PACKAGES_BASE ||
    { [ -z "$policy" ] || rm -f "$policy"; die "installing base packages failed"; }
[ -z "$policy" ] || rm -f "$policy"
[ -z "${new_prometheus:-}" ] || no_system_prometheus
apt-get install -y -q --no-install-recommends -t bookworm-backports $PACKAGES_BACKPORTS ||
    die "installing meson/python3-pycotap from bookworm-backports failed"
[ -z "$(missing)" ] || die "still missing after install: $(missing)"
libvirt_user
mkdir -p "$(dirname "$STAMP")"
touch "$STAMP"
echo "setup-host: done"
