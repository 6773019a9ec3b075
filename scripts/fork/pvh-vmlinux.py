#!/usr/bin/env python3
# SPDX-License-Identifier: GPL-2.0-or-later
"""
pvh-vmlinux.py BZIMAGE OUT

Writes the kernel inside the bzImage BZIMAGE to OUT as an ELF that QEMU
boots through its PVH entry point (-kernel with an ELF carrying the Xen
PVH note, which CONFIG_PVH kernels have), for the guest nested in the
cgroup v2 test host (build-v2-host.sh).  A bzImage first decompresses
itself, and Debian's kernels are XZ-compressed: under TCG inside TCG that
took about 25 of the 85 s the nested guest needed to boot.

The loader zero-fills a segment beyond its file size, so the trailing
zeroes of the last segment (.bss and the like) are left out of OUT, and
with them the section headers after it, which no loader reads: 40 MiB
instead of 66 for Debian's 6.1 kernel.
"""

import lzma
import struct
import sys
import zlib

ELF_MAGIC = b'\x7fELF'
PT_LOAD, PT_NOTE = 1, 4
XEN_ELFNOTE_PHYS32_ENTRY = 18


def die(msg):
    sys.exit('pvh-vmlinux: ' + msg)


def payload(image):
    """The compressed kernel of a bzImage (boot protocol 2.08 or later)."""
    if image[0x202:0x206] != b'HdrS':
        die('not a bzImage (no HdrS header)')
    version, = struct.unpack_from('<H', image, 0x206)
    if version < 0x208:
        die('boot protocol %x.%02x has no payload fields' %
            (version >> 8, version & 0xff))
    setup_sects = image[0x1f1] or 4
    offset, length = struct.unpack_from('<II', image, 0x248)
    start = (setup_sects + 1) * 512 + offset
    return image[start:start + length]


def decompress(data):
    if data.startswith(b'\xfd7zXZ\x00'):
        # the build appends the uncompressed size after the stream
        return lzma.LZMADecompressor(format=lzma.FORMAT_XZ).decompress(data)
    if data.startswith(b'\x1f\x8b'):
        return zlib.decompressobj(wbits=31).decompress(data)
    die('payload compressed with something other than XZ or gzip')


def program_headers(elf):
    phoff, = struct.unpack_from('<Q', elf, 0x20)
    phentsize, phnum = struct.unpack_from('<HH', elf, 0x36)
    for i in range(phnum):
        at = phoff + i * phentsize
        yield (at,) + struct.unpack_from('<IIQQQQQQ', elf, at)


def has_pvh_note(elf):
    for _, ptype, _, offset, _, _, filesz, _, _ in program_headers(elf):
        if ptype != PT_NOTE:
            continue
        pos, end = offset, offset + filesz
        while pos + 12 <= end:
            namesz, descsz, ntype = struct.unpack_from('<III', elf, pos)
            name = elf[pos + 12:pos + 12 + namesz].rstrip(b'\0')
            if name == b'Xen' and ntype == XEN_ELFNOTE_PHYS32_ENTRY:
                return True
            pos += 12 + (namesz + 3) // 4 * 4 + (descsz + 3) // 4 * 4
    return False


def trimmed(elf):
    """@elf without the zeroes that end its last segment in the file, and
    without section headers."""
    elf = bytearray(elf)
    loads = [p for p in program_headers(elf) if p[1] == PT_LOAD]
    at, _, _, offset, _, _, filesz, _, _ = max(loads,
                                               key=lambda p: p[3] + p[6])
    kept = len(elf[offset:offset + filesz].rstrip(b'\0'))
    kept = (kept + 4095) // 4096 * 4096
    end = offset + kept
    for p in program_headers(elf):
        if p[1] != PT_LOAD and p[6] and p[3] + p[6] > end:
            die('a program header reaches past the data kept')
    struct.pack_into('<Q', elf, at + 0x20, kept)
    struct.pack_into('<Q', elf, 0x28, 0)            # e_shoff
    struct.pack_into('<HHH', elf, 0x3a, 0, 0, 0)    # e_shentsize .. shstrndx
    return bytes(elf[:end])


def main():
    if len(sys.argv) != 3:
        die('usage: pvh-vmlinux.py BZIMAGE OUT')
    with open(sys.argv[1], 'rb') as f:
        elf = decompress(payload(f.read()))
    if not elf.startswith(ELF_MAGIC) or elf[4] != 2:
        die('the payload is not a 64-bit ELF')
    if not has_pvh_note(elf):
        die('the kernel has no PVH entry point (CONFIG_PVH)')
    with open(sys.argv[2], 'wb') as f:
        f.write(trimmed(elf))


if __name__ == '__main__':
    main()
