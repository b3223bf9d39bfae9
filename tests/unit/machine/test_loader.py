"""The multiboot v1 loader: what it accepts, what it refuses, and the state it leaves."""

import struct

import pytest
from elfmaker import exit_with, make_elf, multiboot_header

from emu.machine.errors import LoadError
from emu.machine.loader import BOOTLOADER_MAGIC, INFO_ADDRESS, load_multiboot
from emu.machine.memory import GuestMemory


@pytest.fixture
def memory():
    return GuestMemory(16 << 20)


def test_good_elf_loads_segment_at_its_physical_address(memory, make_guest):
    code = exit_with(0)
    boot = load_multiboot(memory, make_guest(code), "")
    assert boot.entry == 0x100000 + 12
    assert boot.eax == BOOTLOADER_MAGIC
    assert memory.read(0x100000 + 12, len(code)) == code


def test_bss_is_zeroed(memory, make_guest):
    memory.write(0x100000, b"\xaa" * 0x3000)
    load_multiboot(memory, make_guest(b"\x90" * 4, bss=0x2000), "")
    assert memory.read(0x100010, 0x2000) == bytes(0x2000)


def test_info_block_reports_memory_and_command_line_as_qemu_does(memory, make_guest):
    path = make_guest(b"\x90")
    boot = load_multiboot(memory, path, "alpha=1 beta")
    flags, mem_lower, mem_upper, _, cmdline = struct.unpack_from("<5I", memory.mem, INFO_ADDRESS)
    assert boot.info_address == INFO_ADDRESS
    assert flags & 0x1 and flags & 0x4 and flags & 0x40
    assert (mem_lower, mem_upper) == (639, (16 << 10) - 1024 - 128)  # as QEMU + SeaBIOS
    end = memory.mem.obj.find(b"\0", cmdline)
    assert memory.read(cmdline, end - cmdline) == f"{path} alpha=1 beta".encode()


def test_memory_map_covers_ram_above_1mib(memory, make_guest):
    load_multiboot(memory, make_guest(b"\x90"), "")
    mmap_length, mmap_addr = struct.unpack_from("<II", memory.mem, INFO_ADDRESS + 44)
    entries = [
        struct.unpack_from("<IQQI", memory.mem, mmap_addr + off)
        for off in range(0, mmap_length, 24)
    ]
    assert (20, 0x100000, (16 << 20) - 0x100000 - 0x20000, 1) in entries
    assert (20, (16 << 20) - 0x20000, 0x20000, 2) in entries


def _big_endian(elf: bytes) -> bytes:
    return elf[:5] + b"\x02" + elf[6:]  # EI_DATA: ELFDATA2MSB


def _patched(elf: bytes, offset: int, value: int, fmt: str = "<I") -> bytes:
    field = struct.pack(fmt, value)
    return elf[:offset] + field + elf[offset + len(field) :]


@pytest.mark.parametrize(
    ("raw", "message"),
    [
        (b"MZ" + bytes(100), "not an ELF file"),
        (make_elf(b"\x90", header=struct.pack("<III", 0x1BADB002, 3, 0)), "bad checksum"),
        (make_elf(b"\x90", header=multiboot_header(flags=0x10003)), "a.out kludge"),
        (make_elf(b"\x90", header=multiboot_header(flags=0x8003)), "unsupported features"),
        (make_elf(b"\x90", header=b"\0" * 12), "no multiboot header"),
        (make_elf(b"\x90" * 64)[:100], "truncated"),
        (make_elf(b"\x90", paddr=0x2000000), "outside guest RAM"),
        (make_elf(b"\x90", paddr=0x8000), "loader's area"),
        (make_elf(b"\x90", machine=62), "not an ELF32 i386"),
        (make_elf(b"\x90", elf_class=2), "not an ELF32 i386"),
        (_big_endian(make_elf(b"\x90")), "not an ELF32 i386"),
        (_patched(make_elf(b"\x90"), 28, 1 << 20), "program headers"),  # e_phoff
        (_patched(make_elf(b"\x90"), 42, 16, "<H"), "program headers"),  # e_phentsize
        (_patched(make_elf(b"\x90"), 52, 4), "no loadable segments"),  # p_type PT_NOTE
    ],
    ids=[
        "not-elf",
        "bad-checksum",
        "aout-kludge",
        "unsupported-flag",
        "no-header",
        "truncated",
        "outside-ram",
        "low-area",
        "wrong-machine",
        "elf64",
        "big-endian",
        "program-headers-cut",
        "program-header-too-small",
        "no-load-segment",
    ],
)
def test_bad_guest_files_are_refused_with_a_reason(memory, make_guest, raw, message):
    with pytest.raises(LoadError, match=message):
        load_multiboot(memory, make_guest(raw=raw), "")


def test_missing_file_is_a_load_error(memory, tmp_path):
    with pytest.raises(LoadError, match="No such file"):
        load_multiboot(memory, str(tmp_path / "nope.elf"), "")
