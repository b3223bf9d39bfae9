"""Build tiny multiboot ELF32 guests from raw machine code, for loader and board tests."""

import struct

LOAD_ADDRESS = 0x100000
MB_MAGIC = 0x1BADB002


def multiboot_header(flags: int = 0x3, checksum: int | None = None) -> bytes:
    if checksum is None:
        checksum = (-(MB_MAGIC + flags)) & 0xFFFFFFFF
    return struct.pack("<III", MB_MAGIC, flags, checksum)


def make_elf(
    code: bytes,
    *,
    header: bytes | None = None,
    paddr: int = LOAD_ADDRESS,
    bss: int = 0,
    machine: int = 3,
    elf_class: int = 1,
) -> bytes:
    """One PT_LOAD segment holding [multiboot header][code]; entry is the first code byte."""
    header = multiboot_header() if header is None else header
    body = header + code
    ehsize, phentsize = 52, 32
    offset = ehsize + phentsize
    entry = paddr + len(header)
    ident = b"\x7fELF" + bytes([elf_class, 1, 1, 0]) + bytes(8)
    ehdr = ident + struct.pack(
        "<HHIIIIIHHHHHH", 2, machine, 1, entry, ehsize, 0, 0, ehsize, phentsize, 1, 40, 0, 0
    )
    phdr = struct.pack("<IIIIIIII", 1, offset, paddr, paddr, len(body), len(body) + bss, 7, 0x1000)
    return ehdr + phdr + body


# Machine code snippets (32-bit).
def out_dx(port: int, value: int) -> bytes:
    """mov dx, port; mov eax, value; out dx, eax"""
    return b"\x66\xba" + struct.pack("<H", port) + b"\xb8" + struct.pack("<I", value) + b"\xef"


def exit_with(code: int) -> bytes:
    return out_dx(0xF4, code)


def putc(char: str) -> bytes:
    """mov dx, 0x3f8; mov al, c; out dx, al"""
    return b"\x66\xba\xf8\x03\xb0" + char.encode() + b"\xee"


SPIN = b"\xeb\xfe"  # jmp $
CLI_HLT = b"\xfa\xf4"
STI_HLT = b"\xfb\xf4"
UD2 = b"\x0f\x0b"
