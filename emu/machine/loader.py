"""Multiboot v1 loader for ELF32 guests, entering them as QEMU's -kernel does.

The guest's PT_LOAD segments go to their physical addresses (``.bss`` zeroed).
The info block, command line and memory map go to low memory below 0x10000,
and the boot GDT to 0x500. QEMU passes "KERNEL_PATH ARGS" as the command line;
so do we, so a guest reads the same arguments under both.
"""

import os
import struct
from dataclasses import dataclass
from pathlib import Path

from emu.machine.errors import LoadError
from emu.machine.memory import GuestMemory

MULTIBOOT_MAGIC = 0x1BADB002
BOOTLOADER_MAGIC = 0x2BADB002
HEADER_SEARCH = 8192

FLAG_PAGE_ALIGN = 1 << 0
FLAG_MEMORY_INFO = 1 << 1
FLAG_VIDEO_MODE = 1 << 2  # accepted, as QEMU does; no video information is given
FLAG_AOUT_KLUDGE = 1 << 16
SUPPORTED_FLAGS = FLAG_PAGE_ALIGN | FLAG_MEMORY_INFO | FLAG_VIDEO_MODE

INFO_MEMORY = 1 << 0
INFO_CMDLINE = 1 << 2
INFO_MEM_MAP = 1 << 6
INFO_LOADER_NAME = 1 << 9

BOOT_GDT = 0x500  # null, flat code (0x08), flat data (0x10)
INFO_ADDRESS = 0x9000
LOADER_AREA_END = 0x10000  # boot GDT, info block, command line, memory map
LOW_MEMORY_END = 0x9FC00  # 639 KiB of conventional memory, as a PC reports it
# SeaBIOS keeps its tables in the top 128 KiB of RAM and reports them reserved; QEMU's
# multiboot info follows that e820 map, so mem_upper is 128 KiB short of the RAM size.
FIRMWARE_RESERVED_TOP = 0x20000
LOADER_NAME = b"ahci-emu\0"
CODE_SELECTOR = 0x08
DATA_SELECTOR = 0x10

# ELF32 (System V ABI, i386 supplement): what a loader reads of the file header and of
# each program header. Parsed with struct: a multiboot guest needs nothing more.
_ELF_IDENT = b"\x7fELF\x01\x01"  # magic, ELFCLASS32, ELFDATA2LSB
_ELF_HEADER = struct.Struct("<16sHHIIIIIHHHHHH")  # e_ident .. e_shstrndx (52 bytes)
_PROGRAM_HEADER = struct.Struct("<8I")  # p_type, p_offset, p_vaddr, p_paddr, p_filesz, ...
EM_386 = 3
PT_LOAD = 1

_INFO = struct.Struct("<13I")  # flags .. mmap_addr (offsets 0x00..0x30)
_MMAP_ENTRY = struct.Struct("<IQQI")  # size (of the rest), base, length, type


@dataclass
class BootState:
    """Registers and descriptor tables the guest starts with."""

    entry: int
    info_address: int
    gdt_address: int = BOOT_GDT
    gdt_limit: int = 23
    code_selector: int = CODE_SELECTOR
    data_selector: int = DATA_SELECTOR
    eax: int = BOOTLOADER_MAGIC


def find_multiboot_header(head: bytes) -> tuple[int, int]:
    """Return (offset, flags) of a valid multiboot header in the first 8 KiB."""
    for offset in range(0, min(len(head), HEADER_SEARCH) - 11, 4):
        magic, flags, checksum = struct.unpack_from("<III", head, offset)
        if magic != MULTIBOOT_MAGIC:
            continue
        if (magic + flags + checksum) & 0xFFFFFFFF:
            raise LoadError(f"multiboot header at offset {offset}: bad checksum")
        return offset, flags
    raise LoadError("no multiboot header in the first 8 KiB (not a multiboot kernel)")


def load_multiboot(memory: GuestMemory, path: str, cmdline: str = "") -> BootState:
    """Load a multiboot v1 ELF32 file into ``memory`` and return its boot state."""
    try:
        data = Path(path).read_bytes()
    except OSError as exc:
        raise LoadError(f"{path}: {exc.strerror}") from exc
    if data[:4] != b"\x7fELF":
        raise LoadError(f"{path}: not an ELF file")
    _check_header(path, data)
    entry, segments = _elf_segments(path, data, memory.size)
    for paddr, file_bytes, memsz in segments:
        memory.write(paddr, file_bytes)
        memory.view(paddr + len(file_bytes), memsz - len(file_bytes))[:] = bytes(
            memsz - len(file_bytes)
        )
    _write_boot_gdt(memory)
    info = _write_info(memory, f"{path} {cmdline}".rstrip() if cmdline else path)
    return BootState(entry=entry, info_address=info)


def _check_header(path: str, data: bytes) -> None:
    _, flags = find_multiboot_header(data)
    if flags & FLAG_AOUT_KLUDGE:
        raise LoadError(
            f"{path}: multiboot header asks for the a.out kludge (flags bit 16); "
            "build an ELF whose header leaves bit 16 clear"
        )
    unsupported = flags & 0xFFFF & ~SUPPORTED_FLAGS
    if unsupported:
        raise LoadError(f"{path}: multiboot header requires unsupported features 0x{unsupported:x}")


def _elf_segments(
    path: str, data: bytes, ram_size: int
) -> tuple[int, list[tuple[int, bytes, int]]]:
    """(physical entry, [(paddr, file bytes, memsz)]) of an ELF32 i386 file's PT_LOAD segments."""
    if len(data) < _ELF_HEADER.size:
        raise LoadError(f"{path}: truncated or malformed ELF")
    ident, _, machine, _, entry, phoff, _, _, _, phentsize, phnum, *_ = _ELF_HEADER.unpack_from(
        data
    )
    if not ident.startswith(_ELF_IDENT) or machine != EM_386:
        raise LoadError(f"{path}: not an ELF32 i386 file")
    if phnum and (phentsize < _PROGRAM_HEADER.size or phoff + phnum * phentsize > len(data)):
        raise LoadError(f"{path}: truncated or malformed ELF (program headers)")
    segments = []
    physical_entry = None
    for index in range(phnum):
        p_type, file_offset, vaddr, paddr, filesz, memsz, _, _ = _PROGRAM_HEADER.unpack_from(
            data, phoff + index * phentsize
        )
        if p_type != PT_LOAD or memsz == 0:
            continue
        if filesz > memsz or file_offset + filesz > len(data):
            raise LoadError(f"{path}: truncated ELF (segment at 0x{paddr:x} runs past the file)")
        if paddr + memsz > ram_size:
            raise LoadError(
                f"{path}: segment 0x{paddr:x}-0x{paddr + memsz:x} lies outside guest RAM "
                f"({ram_size >> 20} MiB)"
            )
        if paddr < LOADER_AREA_END:
            raise LoadError(
                f"{path}: segment at 0x{paddr:x} overlaps the loader's area below "
                f"0x{LOADER_AREA_END:x}"
            )
        segments.append((paddr, data[file_offset : file_offset + filesz], memsz))
        if vaddr <= entry < vaddr + memsz:
            physical_entry = entry - vaddr + paddr
    if not segments:
        raise LoadError(f"{path}: ELF has no loadable segments")
    if physical_entry is None:
        raise LoadError(f"{path}: entry point 0x{entry:x} is not inside a loaded segment")
    return physical_entry, segments


def _write_boot_gdt(memory: GuestMemory) -> None:
    memory.write(BOOT_GDT, struct.pack("<QQQ", 0, 0x00CF9A000000FFFF, 0x00CF92000000FFFF))


def _write_info(memory: GuestMemory, cmdline: str) -> int:
    cmdline_bytes = os.fsencode(cmdline) + b"\0"  # arguments as given, UTF-8 or not
    cmdline_address = INFO_ADDRESS + 0x100
    loader_address = INFO_ADDRESS + 0x80
    if len(cmdline_bytes) > 0x1000:
        raise LoadError("guest command line is longer than 4095 bytes")
    mmap_address = INFO_ADDRESS + 0x1100
    entries = [
        (0, LOW_MEMORY_END, 1),
        (LOW_MEMORY_END, 0xA0000 - LOW_MEMORY_END, 2),
        (0xF0000, 0x10000, 2),
        (0x100000, memory.size - FIRMWARE_RESERVED_TOP - 0x100000, 1),
        (memory.size - FIRMWARE_RESERVED_TOP, FIRMWARE_RESERVED_TOP, 2),
        (0xFFFC0000, 0x40000, 2),
    ]
    mmap = b"".join(_MMAP_ENTRY.pack(20, base, length, kind) for base, length, kind in entries)
    flags = INFO_MEMORY | INFO_CMDLINE | INFO_MEM_MAP | INFO_LOADER_NAME
    mem_lower = LOW_MEMORY_END >> 10
    mem_upper = (memory.size - FIRMWARE_RESERVED_TOP - 0x100000) >> 10
    info = _INFO.pack(
        flags, mem_lower, mem_upper, 0, cmdline_address, 0, 0, 0, 0, 0, 0, len(mmap), mmap_address
    )
    memory.write(INFO_ADDRESS, info + bytes(0x58 - len(info)))
    struct.pack_into("<I", memory.mem, INFO_ADDRESS + 0x40, loader_address)
    memory.write(loader_address, LOADER_NAME)
    memory.write(cmdline_address, cmdline_bytes)
    memory.write(mmap_address, mmap)
    return INFO_ADDRESS
