# SPDX-License-Identifier: GPL-2.0-or-later
#
# Top-level Makefile of the automatic-balloon QEMU fork.
#
#   make setup           install build/test dependencies (root, idempotent)
#   make [build]         assemble + configure if needed, build
#                        qemu-system-x86_64 and the x86 option ROMs
#   make check           everything the project runs as tests
#   make demo            boot the bundled guest in a memory-limited cgroup
#   make docs            the manual and man pages (build/qemu/build-docs)
#   make deb             a Debian package of the fork (build/*.deb)
#   make sanitize        ASan+UBSan build of the device and its tests
#                        (the clang build the fuzz targets come from)
#   make fuzz            libFuzzer on the automatic balloon (FUZZ_TIME s)
#   make bench           benchmarks against upstream and peers (BENCH_ARGS)
#   make install         install into $(PREFIX) (default /usr/local)
#   make export-patches  turn the commits in build/qemu into patches/
#   make clean           remove build/ (the source cache is kept)

SRC := $(CURDIR)
# Debian's interpreter: meson, pycotap and QEMU's python/ are set up for it
PYTHON := /usr/bin/python3
# The Python programs outside scripts/ (tests, bench, demo) find the shared
# package scripts/qemu_balloon_auto through PYTHONPATH
PYENV := PYTHONPATH=$(SRC)/scripts
TREE := build/qemu
BLD := $(TREE)/build
PRISTINE := build/pristine
QEMU := $(BLD)/qemu-system-x86_64
# Test-only builds of the same tree: one clang build with ASan, UBSan and
# libFuzzer for the sanitizer runs and the fuzz targets
DOCS := $(TREE)/build-docs
FUZZ := $(TREE)/build-fuzz
FUZZ_TIME ?= 1800
BENCH_ARGS ?=
SAN_TARGETS := tests/unit/test-balloon-auto-policy \
	tests/qtest/virtio-balloon-auto-test tests/qtest/virtio-balloon-test \
	tests/qtest/qos-test
PREFIX ?= /usr/local
CONFIGURE_ARGS ?=

# ccache: one cache for every clone of this repo, whatever its path.
export CCACHE_BASEDIR := $(SRC)
export CCACHE_NOHASHDIR := true

.PHONY: all build setup check check-quick demo install export-patches clean \
	pristine guest bench sanitize fuzz fuzz-build docs deb v2host \
	check-clang-tree check-rest

# What the other builds of the tree need first: the main build, which also
# links the overlay in.  make check builds it once and then the rest with
# MAIN empty, so that none of them runs it again.
MAIN := build

all: build

setup:
	@if [ "$$(id -u)" = 0 ]; then scripts/fork/setup-host.sh; \
	elif command -v sudo >/dev/null; then sudo scripts/fork/setup-host.sh; \
	else scripts/fork/setup-host.sh; fi

$(BLD)/build.ninja:
	./configure $(CONFIGURE_ARGS)

$(PRISTINE)/build/build.ninja:
	./configure --pristine-only $(CONFIGURE_ARGS)

build: $(BLD)/build.ninja
	@scripts/fork/link-overlay.sh $(TREE)
	@scripts/fork/build-tree.sh $(BLD)

pristine: $(PRISTINE)/build/build.ninja
	@scripts/fork/build-tree.sh $(PRISTINE)/build

$(DOCS)/build.ninja: $(BLD)/build.ninja
	scripts/fork/configure-variant.sh $(TREE) docs

# The manual (HTML) and the man pages, with Debian's Sphinx
docs: $(DOCS)/build.ninja
	@scripts/fork/link-overlay.sh $(TREE)
	ninja -C $(DOCS) html man

# A Debian package of the fork (build/qemu-balloon-auto_*.deb)
deb: $(MAIN) docs
	scripts/fork/make-deb.sh $(TREE) build

# The cgroup v2 host test guest: the 6.12 guest with the fork's build on a
# read-only disk
v2host: $(MAIN) guest
	@scripts/fork/build-tree.sh $(BLD) tests/unit/test-balloon-pressure
	@scripts/fork/build-v2-host.sh $(BLD)

# ASan + UBSan build of the device and its tests (make check runs them)
sanitize: $(MAIN) $(FUZZ)/build.ninja
	@scripts/fork/build-tree.sh $(FUZZ) $(SAN_TARGETS)

$(FUZZ)/build.ninja: $(BLD)/build.ninja
	scripts/fork/configure-variant.sh $(TREE) fuzz

fuzz-build: $(MAIN) $(FUZZ)/build.ninja
	@scripts/fork/build-tree.sh $(FUZZ) qemu-fuzz-x86_64

# libFuzzer on the automatic balloon for FUZZ_TIME seconds per target
fuzz: fuzz-build
	$(PYENV) $(PYTHON) scripts/fork/fuzz.py --build $(FUZZ) --time $(FUZZ_TIME)

guest:
	@scripts/fork/build-test-guest.sh --kernel=stable --print-paths
	@scripts/fork/build-test-guest.sh --kernel=backports --print-paths

check: setup
	$(MAKE) build
	$(MAKE) -j2 -Oline MAIN= check-clang-tree check-rest pristine
	$(PYENV) $(PYTHON) scripts/fork/check.py --tree $(TREE) --pristine $(PRISTINE) \
	    --sanitized $(FUZZ) --fuzz $(FUZZ)

# make check's builds after the main one, in two lanes side by side that
# share no build directory: the clang tree, the longest compile, and the
# rest, which mostly waits on one core (configure, Sphinx, packaging), the
# disk or Debian's archive.  Each lane runs its targets in turn.  The
# pristine tree, almost all of it from the cache the main build filled,
# goes to the lane that ends first: the clang tree's in a warm run, the
# other one in a cold run.
check-clang-tree:
	$(MAKE) sanitize
	$(MAKE) fuzz-build

check-rest:
	$(MAKE) deb
	$(MAKE) v2host
	$(PYENV) $(PYTHON) scripts/fork/check.py --tree $(TREE) --build-only

check-quick: build
	$(PYENV) $(PYTHON) scripts/fork/check.py --tree $(TREE) --quick

demo: setup
	$(MAKE) build guest
	$(PYENV) $(PYTHON) scripts/fork/demo.py --qemu $(QEMU)

bench: build pristine guest v2host
	$(PYENV) $(PYTHON) bench/run.py --fork $(QEMU) --pristine $(PRISTINE)/build/qemu-system-x86_64 $(BENCH_ARGS)

install: build
	cd $(BLD) && meson configure -Dprefix=$(PREFIX) >/dev/null && \
	    $(MAKE) install DESTDIR=$(DESTDIR)
	install -d $(DESTDIR)$(PREFIX)/share/qemu
	install -m 0644 $(BLD)/pc-bios/optionrom/*.bin $(DESTDIR)$(PREFIX)/share/qemu/

export-patches:
	scripts/fork/export-patches.sh $(TREE)

clean:
	rm -rf build
