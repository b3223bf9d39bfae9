"""Linux bzImage loading by the x86 boot protocol (2.12 or later), 64-bit entry.

The kernel is not left to decompress itself: the compressed payload the setup
header points to (payload_offset/payload_length) is unpacked here, on the host
(and kept for the next boot of the same kernel), and the resulting vmlinux ELF's
segments are copied to their physical addresses (the kernel's own link address,
CONFIG_PHYSICAL_START; no KASLR for the kernel image, as when a boot loader enters
vmlinux directly). The kernel then starts at its 64-bit entry (the ELF entry,
``startup_64``) with RSI pointing at the zero page: the setup header copied from
the file, the e820 map, the command line and the initrd, as a boot loader leaves them.

Guest-physical layout the loader writes (all below 1 MiB except the initrd):

==============  ================================================
0x6000          boot GDT: 0x10 64-bit code, 0x18 data
0x7000          zero page (struct boot_params)
0x8000          command line (up to the kernel's cmdline_size)
0x10000         identity page tables: the first 4 GiB in 2 MiB pages
top of RAM      initrd, page aligned, below initrd_addr_max
==============  ================================================
"""

import bz2
import gzip
import lzma
import struct
import zlib
from dataclasses import dataclass
from pathlib import Path

from emu.machine import vmlinux_cache
from emu.machine.bzimage_magic import is_bzimage
from emu.machine.errors import LoadError
from emu.machine.memory import PAGE_SIZE, GuestMemory

MIN_PROTOCOL = 0x020C  # 2.12: xloadflags, 64-bit entry, payload fields
SECTOR = 512
DEFAULT_SETUP_SECTS = 4  # setup_sects 0 means 4

# Offsets in struct boot_params (the zero page), Documentation/arch/x86/zero-page.rst
# and boot.rst's setup header.
BP_E820_ENTRIES = 0x1E8
BP_SETUP_SECTS = 0x1F1
BP_JUMP = 0x200
BP_VERSION = 0x206
BP_TYPE_OF_LOADER = 0x210
BP_LOADFLAGS = 0x211
BP_RAMDISK_IMAGE = 0x218
BP_RAMDISK_SIZE = 0x21C
BP_CMD_LINE_PTR = 0x228
BP_INITRD_ADDR_MAX = 0x22C
BP_XLOADFLAGS = 0x236
BP_CMDLINE_SIZE = 0x238
BP_PAYLOAD_OFFSET = 0x248
BP_PAYLOAD_LENGTH = 0x24C
BP_PREF_ADDRESS = 0x258
BP_INIT_SIZE = 0x260
BP_E820_TABLE = 0x2D0
E820_MAX_ENTRIES = 128
E820_RAM = 1
E820_RESERVED = 2

LOADED_HIGH = 0x01
XLF_KERNEL_64 = 0x01
LOADER_UNDEFINED = 0xFF  # type_of_loader: a boot loader with no assigned id

GDT_ADDRESS = 0x6000
ZERO_PAGE = 0x7000
CMDLINE_ADDRESS = 0x8000
CMDLINE_LIMIT = 0x8000  # room up to the page tables
PAGE_TABLES = 0x10000  # PML4, PDPT, then 4 page directories
IDENTITY_GIB = 4
STACK_TOP = ZERO_PAGE  # startup_64 sets its own stack at once
CODE_SELECTOR = 0x10
DATA_SELECTOR = 0x18
LOW_MEMORY_END = 0x9FC00  # 639 KiB: the EBDA above it is reserved, as on a PC
BIOS_AREA = 0xE0000  # reserved up to 1 MiB: the MP table lives here
HIGH_MEMORY = 0x100000

_ELF64_HEADER = struct.Struct("<16sHHIQQQIHHHHHH")
_ELF64_PHDR = struct.Struct("<IIQQQQQQ")
PT_LOAD = 1

# Payload formats by their magic bytes (the decompressors the kernel can be built with).
_FORMATS = (
    (b"\xfd7zXZ\x00", "xz"),
    (b"\x1f\x8b", "gzip"),
    (b"BZh", "bzip2"),
    (b"\x5d\x00\x00", "lzma"),
    (b"\x28\xb5\x2f\xfd", "zstd"),
    (b"\x02\x21\x4c\x18", "lz4"),
    (b"\x89LZO", "lzo"),
    (b"\x7fELF", "none"),
)


@dataclass(frozen=True)
class SetupHeader:
    """The fields of a bzImage's setup header the loader acts on."""

    version: int
    setup_sects: int
    xloadflags: int
    initrd_addr_max: int
    cmdline_size: int
    payload_offset: int
    payload_length: int
    pref_address: int
    init_size: int
    header_end: int  # the header runs from 0x1F1 to here (exclusive)

    @property
    def protected_mode_offset(self) -> int:
        """Where the 32/64-bit kernel (the payload's container) starts in the file."""
        return (self.setup_sects + 1) * SECTOR


@dataclass(frozen=True)
class LinuxBoot:
    """Where the loader put things; the registers the kernel starts with."""

    entry: int
    zero_page: int


def parse_header(path: str, data: bytes) -> SetupHeader:
    """The setup header of bzImage ``data``; LoadError for what this loader cannot boot."""
    if not is_bzimage(data):
        raise LoadError(f"{path}: not a Linux bzImage (no HdrS setup header)")
    version = struct.unpack_from("<H", data, BP_VERSION)[0]
    if version < MIN_PROTOCOL:
        raise LoadError(
            f"{path}: boot protocol {version >> 8}.{version & 0xFF:02d} is too old "
            f"(64-bit entry needs {MIN_PROTOCOL >> 8}.{MIN_PROTOCOL & 0xFF} or later)"
        )
    header_end = BP_JUMP + 2 + data[BP_JUMP + 1]
    if len(data) < BP_INIT_SIZE + 4 or header_end > len(data):
        raise LoadError(f"{path}: truncated bzImage setup header")
    header = SetupHeader(
        version=version,
        setup_sects=data[BP_SETUP_SECTS] or DEFAULT_SETUP_SECTS,
        xloadflags=struct.unpack_from("<H", data, BP_XLOADFLAGS)[0],
        initrd_addr_max=struct.unpack_from("<I", data, BP_INITRD_ADDR_MAX)[0],
        cmdline_size=struct.unpack_from("<I", data, BP_CMDLINE_SIZE)[0],
        payload_offset=struct.unpack_from("<I", data, BP_PAYLOAD_OFFSET)[0],
        payload_length=struct.unpack_from("<I", data, BP_PAYLOAD_LENGTH)[0],
        pref_address=struct.unpack_from("<Q", data, BP_PREF_ADDRESS)[0],
        init_size=struct.unpack_from("<I", data, BP_INIT_SIZE)[0],
        header_end=header_end,
    )
    if not header.xloadflags & XLF_KERNEL_64:
        raise LoadError(f"{path}: the kernel has no 64-bit entry (xloadflags bit 0 clear)")
    start = header.protected_mode_offset + header.payload_offset
    if header.payload_length == 0 or start + header.payload_length > len(data):
        raise LoadError(f"{path}: the compressed kernel lies outside the file")
    return header


def payload_format(payload: bytes) -> str:
    for magic, name in _FORMATS:
        if payload.startswith(magic):
            return name
    return "unknown"


def unpack_payload(path: str, payload: bytes) -> bytes:
    """The vmlinux ELF inside ``payload``, decompressed on the host (once: see
    :mod:`emu.machine.vmlinux_cache`)."""
    return vmlinux_cache.unpacked(payload, lambda data: _decompress(path, data))


def _decompress(path: str, payload: bytes) -> bytes:
    kind = payload_format(payload)
    try:
        if kind == "xz":
            vmlinux = lzma.LZMADecompressor(lzma.FORMAT_XZ).decompress(payload)
        elif kind == "lzma":
            vmlinux = lzma.LZMADecompressor(lzma.FORMAT_ALONE).decompress(payload)
        elif kind == "gzip":
            vmlinux = gzip.GzipFile(fileobj=_Reader(payload)).read()
        elif kind == "bzip2":
            vmlinux = bz2.BZ2Decompressor().decompress(payload)
        elif kind == "none":
            vmlinux = payload
        else:
            raise LoadError(
                f"{path}: the kernel is compressed with {kind}, which this loader cannot unpack "
                "(xz, lzma, gzip, bzip2 or uncompressed kernels boot)"
            )
    except (lzma.LZMAError, OSError, EOFError, zlib.error, ValueError) as exc:
        raise LoadError(f"{path}: corrupt {kind} kernel payload: {exc}") from exc
    if not vmlinux.startswith(b"\x7fELF"):
        raise LoadError(f"{path}: the unpacked kernel is not an ELF file")
    return vmlinux


class _Reader:
    """A minimal file object over bytes (gzip needs read())."""

    def __init__(self, data: bytes) -> None:
        self._data = memoryview(data)
        self._pos = 0

    def read(self, size: int = -1) -> bytes:
        end = len(self._data) if size < 0 else self._pos + size
        chunk = bytes(self._data[self._pos : end])
        self._pos += len(chunk)
        return chunk


def elf_segments(path: str, vmlinux: bytes) -> tuple[int, list[tuple[int, memoryview, int]]]:
    """(physical entry, [(paddr, file bytes, memsz)]) of a vmlinux ELF64."""
    try:
        ident, _type, machine, _v, entry, phoff, _sh, _f, _eh, phentsize, phnum, *_ = (
            _ELF64_HEADER.unpack_from(vmlinux, 0)
        )
    except struct.error:
        raise LoadError(f"{path}: the unpacked kernel has a truncated ELF header") from None
    if ident[4] != 2 or machine != 62:  # ELFCLASS64, EM_X86_64
        raise LoadError(f"{path}: the unpacked kernel is not an x86-64 ELF")
    segments = []
    view = memoryview(vmlinux)
    for i in range(phnum):
        try:
            p_type, _fl, offset, _va, paddr, filesz, memsz, _al = _ELF64_PHDR.unpack_from(
                vmlinux, phoff + i * phentsize
            )
        except struct.error:
            raise LoadError(f"{path}: the unpacked kernel's program headers are cut") from None
        if p_type != PT_LOAD or memsz == 0:
            continue
        if filesz > memsz or offset + filesz > len(vmlinux):
            raise LoadError(f"{path}: a kernel segment runs past the end of the vmlinux")
        segments.append((paddr, view[offset : offset + filesz], memsz))
    if not segments:
        raise LoadError(f"{path}: the unpacked kernel has no loadable segments")
    return entry, segments


def e820_map(ram_size: int) -> list[tuple[int, int, int]]:
    """(base, length, type): low RAM, the EBDA and BIOS area reserved, RAM above 1 MiB."""
    return [
        (0, LOW_MEMORY_END, E820_RAM),
        (LOW_MEMORY_END, 0xA0000 - LOW_MEMORY_END, E820_RESERVED),
        (BIOS_AREA, HIGH_MEMORY - BIOS_AREA, E820_RESERVED),
        (HIGH_MEMORY, ram_size - HIGH_MEMORY, E820_RAM),
    ]


def load_linux(memory: GuestMemory, path: str, initrd_path: str | None, cmdline: str) -> LinuxBoot:
    """Load bzImage ``path`` (and the initrd) into ``memory``; nothing is written to
    guest RAM before every check has passed."""
    data = _read(path)
    header = parse_header(path, data)
    start = header.protected_mode_offset + header.payload_offset
    vmlinux = unpack_payload(path, data[start : start + header.payload_length])
    entry, segments = elf_segments(path, vmlinux)
    kernel_start = min(paddr for paddr, _, _ in segments)
    kernel_end = max(paddr + memsz for paddr, _, memsz in segments)
    # The kernel's own figure for the memory it needs from its load address (init_size
    # counts its decompressor, which runs nowhere here, so the ELF extent is a floor).
    needed_end = max(kernel_end, header.pref_address + header.init_size)
    if kernel_start < HIGH_MEMORY or needed_end > memory.size:
        raise LoadError(
            f"{path}: the kernel needs RAM up to {_mib(needed_end)} MiB; "
            f"the guest has {_mib(memory.size)} MiB (raise --memory)"
        )
    cmd = cmdline.encode() + b"\0"
    if len(cmd) > min(header.cmdline_size + 1, CMDLINE_LIMIT):
        raise LoadError(
            f"kernel command line is {len(cmd) - 1} bytes; this kernel takes at most "
            f"{min(header.cmdline_size, CMDLINE_LIMIT - 1)}"
        )
    initrd = None
    rd = b""
    if initrd_path is not None:
        rd = _read(initrd_path)
        top = min(memory.size, header.initrd_addr_max + 1)
        address = (top - len(rd)) & ~(PAGE_SIZE - 1)
        if address < needed_end:
            raise LoadError(
                f"{initrd_path}: an initrd of {len(rd)} bytes does not fit in guest RAM "
                f"between the kernel (up to {_mib(needed_end)} MiB) and "
                f"{_mib(top)} MiB (raise --memory)"
            )
        initrd = (address, len(rd)) if rd else None

    for paddr, file_bytes, memsz in segments:
        memory.write(paddr, file_bytes)
        memory.view(paddr + len(file_bytes), memsz - len(file_bytes))[:] = bytes(
            memsz - len(file_bytes)
        )
    if initrd is not None:
        memory.write(initrd[0], rd)
    memory.write(CMDLINE_ADDRESS, cmd)
    memory.write(ZERO_PAGE, zero_page(data, header, memory.size, initrd, CMDLINE_ADDRESS))
    write_boot_paging(memory)
    return LinuxBoot(entry=entry, zero_page=ZERO_PAGE)


def zero_page(
    data: bytes,
    header: SetupHeader,
    ram_size: int,
    initrd: tuple[int, int] | None,
    cmdline_address: int,
) -> bytes:
    """struct boot_params as a 64-bit boot loader hands it over."""
    page = bytearray(PAGE_SIZE)
    page[BP_SETUP_SECTS : header.header_end] = data[BP_SETUP_SECTS : header.header_end]
    page[BP_TYPE_OF_LOADER] = LOADER_UNDEFINED
    page[BP_LOADFLAGS] |= LOADED_HIGH
    struct.pack_into("<I", page, BP_CMD_LINE_PTR, cmdline_address)
    if initrd is not None:
        struct.pack_into("<II", page, BP_RAMDISK_IMAGE, *initrd)
    entries = e820_map(ram_size)
    page[BP_E820_ENTRIES] = len(entries)
    for i, (base, length, kind) in enumerate(entries):
        struct.pack_into("<QQI", page, BP_E820_TABLE + 20 * i, base, length, kind)
    return bytes(page)


def write_boot_paging(memory: GuestMemory) -> None:
    """The boot GDT and identity page tables for the first 4 GiB (2 MiB pages)."""
    memory.write(GDT_ADDRESS, struct.pack("<4Q", 0, 0, 0x00AF9A000000FFFF, 0x00CF92000000FFFF))
    pdpt = PAGE_TABLES + PAGE_SIZE
    directories = pdpt + PAGE_SIZE
    memory.write(PAGE_TABLES, struct.pack("<Q", pdpt | 0x3).ljust(PAGE_SIZE, b"\0"))
    memory.write(
        pdpt,
        b"".join(
            struct.pack("<Q", (directories + PAGE_SIZE * i) | 0x3) for i in range(IDENTITY_GIB)
        ).ljust(PAGE_SIZE, b"\0"),
    )
    memory.write(
        directories,
        b"".join(struct.pack("<Q", (i << 21) | 0x83) for i in range(512 * IDENTITY_GIB)),
    )


def _read(path: str) -> bytes:
    try:
        return Path(path).read_bytes()
    except OSError as exc:
        raise LoadError(f"{path}: {exc.strerror}") from exc


def _mib(size: int) -> int:
    return (size + (1 << 20) - 1) >> 20
