"""Telling a Linux boot image from other guest files by its setup header (boot.rst:
boot_flag 0xAA55 at 0x1FE, "HdrS" at 0x202), without loading the loader itself
(emu.machine.bzimage, with its decompressors): every run asks, few boot Linux."""

import struct

HEADER_MAGIC = b"HdrS"
BOOT_FLAG = 0xAA55
BP_BOOT_FLAG = 0x1FE  # offsets in struct boot_params, as in emu.machine.bzimage
BP_HEADER = 0x202


def is_bzimage(head: bytes) -> bool:
    """True when ``head`` (the file's first KiB or more) starts a Linux boot image."""
    return (
        len(head) > BP_HEADER + 4
        and head[BP_HEADER : BP_HEADER + 4] == HEADER_MAGIC
        and struct.unpack_from("<H", head, BP_BOOT_FLAG)[0] == BOOT_FLAG
    )
