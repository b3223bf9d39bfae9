"""Synthetic Linux bzImages for loader tests: a setup header and a compressed vmlinux."""

import gzip
import lzma
import struct

KERNEL_ADDRESS = 0x1000000
ENTRY_OFFSET = 0x40


def make_vmlinux(text: bytes, bss: int = 0x2000, paddr: int = KERNEL_ADDRESS) -> bytes:
    """An ELF64 x86-64 vmlinux: one PT_LOAD of ``text`` (+ ``bss`` zeroed) at ``paddr``."""
    phoff, data_offset = 64, 0x1000
    header = struct.pack(
        "<16sHHIQQQIHHHHHH",
        b"\x7fELF\x02\x01\x01" + bytes(9),
        2,  # ET_EXEC
        62,  # EM_X86_64
        1,
        paddr + ENTRY_OFFSET,
        phoff,
        0,
        0,
        64,
        56,
        1,
        64,
        0,
        0,
    )
    phdr = struct.pack(
        "<IIQQQQQQ", 1, 7, data_offset, 0xFFFFFFFF80000000 + paddr, paddr, len(text),
        len(text) + bss, 0x200000,
    )  # fmt: skip
    return (header + phdr).ljust(data_offset, b"\0") + text


def make_bzimage(
    vmlinux: bytes,
    *,
    version: int = 0x020F,
    xloadflags: int = 0x7F,
    compress: str = "xz",
    init_size: int = 0x400000,
    initrd_addr_max: int = 0x7FFFFFFF,
    cmdline_size: int = 2047,
    setup_sects: int = 4,
) -> bytes:
    """A bzImage whose protected-mode part holds ``vmlinux`` compressed with ``compress``."""
    if compress == "xz":
        payload = lzma.compress(vmlinux, format=lzma.FORMAT_XZ, check=lzma.CHECK_CRC32)
    elif compress == "gzip":
        payload = gzip.compress(vmlinux)
    elif compress == "zstd":
        payload = b"\x28\xb5\x2f\xfd" + bytes(32)
    else:
        payload = vmlinux
    setup = bytearray((setup_sects + 1) * 512)
    setup[0x1F1] = setup_sects
    struct.pack_into("<H", setup, 0x1FE, 0xAA55)
    setup[0x200] = 0xEB  # jmp over the header
    setup[0x201] = 0x6A  # header ends at 0x26C
    setup[0x202:0x206] = b"HdrS"
    struct.pack_into("<H", setup, 0x206, version)
    struct.pack_into("<I", setup, 0x22C, initrd_addr_max)
    struct.pack_into("<I", setup, 0x230, 0x200000)
    setup[0x234] = 1
    struct.pack_into("<H", setup, 0x236, xloadflags)
    struct.pack_into("<I", setup, 0x238, cmdline_size)
    payload_offset = 0x100  # a decompressor stub would come first
    struct.pack_into("<II", setup, 0x248, payload_offset, len(payload))
    struct.pack_into("<Q", setup, 0x258, KERNEL_ADDRESS)
    struct.pack_into("<I", setup, 0x260, init_size)
    return bytes(setup) + bytes(payload_offset) + payload
