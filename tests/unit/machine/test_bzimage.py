"""The bzImage loader: header checks, host-side unpacking, zero page, e820, initrd placement."""

import struct

import pytest
from bzimages import ENTRY_OFFSET, KERNEL_ADDRESS, make_bzimage, make_vmlinux

from emu.guests import guest_kind
from emu.machine import bzimage
from emu.machine.errors import LoadError
from emu.machine.memory import GuestMemory

TEXT = bytes(range(256)) * 16


@pytest.fixture
def memory():
    return GuestMemory(64 << 20)


def write(tmp_path, name: str, data: bytes) -> str:
    path = tmp_path / name
    path.write_bytes(data)
    return str(path)


def zero_page(memory: GuestMemory) -> bytes:
    return memory.read(bzimage.ZERO_PAGE, 4096)


@pytest.mark.parametrize("compress", ["xz", "gzip", "none"])
def test_the_vmlinux_lands_at_its_physical_address_with_bss_zeroed(tmp_path, memory, compress):
    kernel = write(tmp_path, "k", make_bzimage(make_vmlinux(TEXT, bss=0x3000), compress=compress))
    memory.write(KERNEL_ADDRESS + len(TEXT), b"\xff" * 0x3000)  # the bss must be cleared
    boot = bzimage.load_linux(memory, kernel, None, "console=ttyS0")
    assert memory.read(KERNEL_ADDRESS, len(TEXT)) == TEXT
    assert memory.read(KERNEL_ADDRESS + len(TEXT), 0x3000) == bytes(0x3000)
    assert boot.entry == KERNEL_ADDRESS + ENTRY_OFFSET
    assert boot.zero_page == bzimage.ZERO_PAGE


def test_zero_page_holds_the_header_loader_id_and_command_line(tmp_path, memory):
    image = make_bzimage(make_vmlinux(TEXT))
    kernel = write(tmp_path, "k", image)
    bzimage.load_linux(memory, kernel, None, "console=ttyS0 quiet")
    page = zero_page(memory)
    assert page[0x202:0x206] == b"HdrS"
    assert page[0x1F1:0x26C][:0x10] == image[0x1F1:0x201]  # setup header copied
    assert page[0x210] == 0xFF  # type_of_loader: undefined
    assert page[0x211] & 0x01  # LOADED_HIGH
    cmd_ptr = struct.unpack_from("<I", page, 0x228)[0]
    assert memory.read(cmd_ptr, 20) == b"console=ttyS0 quiet\0"
    assert struct.unpack_from("<II", page, 0x218) == (0, 0)  # no initrd


def test_e820_map_reserves_the_ebda_and_bios_area_and_covers_the_rest(tmp_path, memory):
    bzimage.load_linux(memory, write(tmp_path, "k", make_bzimage(make_vmlinux(TEXT))), None, "")
    page = zero_page(memory)
    entries = [struct.unpack_from("<QQI", page, 0x2D0 + 20 * i) for i in range(page[0x1E8])]
    assert entries == [
        (0, 0x9FC00, 1),
        (0x9FC00, 0x400, 2),
        (0xE0000, 0x20000, 2),
        (0x100000, memory.size - 0x100000, 1),
    ]


def test_initrd_is_placed_page_aligned_at_the_top_below_initrd_addr_max(tmp_path, memory):
    ramdisk = b"070701" + bytes(range(200)) * 100
    kernel = write(tmp_path, "k", make_bzimage(make_vmlinux(TEXT), initrd_addr_max=0x2FFFFFF))
    bzimage.load_linux(memory, kernel, write(tmp_path, "rd", ramdisk), "")
    address, size = struct.unpack_from("<II", zero_page(memory), 0x218)
    assert size == len(ramdisk)
    assert address % 4096 == 0 and address + size <= 0x3000000
    assert address + size > 0x3000000 - 4096
    assert memory.read(address, size) == ramdisk


def test_boot_page_tables_identity_map_the_first_4_gib(tmp_path, memory):
    bzimage.load_linux(memory, write(tmp_path, "k", make_bzimage(make_vmlinux(TEXT))), None, "")
    pml4 = struct.unpack_from("<Q", memory.mem, bzimage.PAGE_TABLES)[0]
    pdpt = pml4 & ~0xFFF
    directory = struct.unpack_from("<Q", memory.mem, pdpt + 8 * 3)[0] & ~0xFFF
    last = struct.unpack_from("<Q", memory.mem, directory + 8 * 511)[0]
    assert last == (0xFFE00000 | 0x83)  # 2 MiB page, present, writable


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"version": 0x020B}, "boot protocol 2.11 is too old"),
        ({"xloadflags": 0}, "no 64-bit entry"),
        ({"compress": "zstd"}, "compressed with zstd"),
    ],
)
def test_kernels_this_loader_cannot_boot_are_refused(tmp_path, memory, kwargs, message):
    kernel = write(tmp_path, "k", make_bzimage(make_vmlinux(TEXT), **kwargs))
    with pytest.raises(LoadError, match=message):
        bzimage.load_linux(memory, kernel, None, "")
    assert memory.read(KERNEL_ADDRESS, 16) == bytes(16)


def test_an_initrd_larger_than_ram_is_refused_before_anything_is_written(tmp_path, memory):
    kernel = write(tmp_path, "k", make_bzimage(make_vmlinux(TEXT)))
    ramdisk = write(tmp_path, "rd", b"\x01" * (60 << 20))
    with pytest.raises(LoadError, match="does not fit in guest RAM"):
        bzimage.load_linux(memory, kernel, ramdisk, "")
    assert memory.read(KERNEL_ADDRESS, 16) == bytes(16)
    assert memory.read(bzimage.ZERO_PAGE, 4096) == bytes(4096)


def test_a_kernel_needing_more_ram_than_the_guest_has_is_refused(tmp_path, memory):
    kernel = write(tmp_path, "k", make_bzimage(make_vmlinux(TEXT), init_size=80 << 20))
    with pytest.raises(LoadError, match="raise --memory"):
        bzimage.load_linux(memory, kernel, None, "")


def test_a_command_line_longer_than_the_kernel_takes_is_refused(tmp_path, memory):
    kernel = write(tmp_path, "k", make_bzimage(make_vmlinux(TEXT), cmdline_size=16))
    with pytest.raises(LoadError, match="at most 16"):
        bzimage.load_linux(memory, kernel, None, "x" * 17)


def test_a_corrupt_payload_is_refused(tmp_path, memory):
    image = bytearray(make_bzimage(make_vmlinux(TEXT)))
    image[-40:-20] = bytes(20)
    with pytest.raises(LoadError, match="corrupt xz kernel payload"):
        bzimage.load_linux(memory, write(tmp_path, "k", bytes(image)), None, "")


def test_guest_kind_tells_bzimage_from_elf_and_refuses_the_rest(tmp_path):
    from emu.errors import EmuError

    assert guest_kind(write(tmp_path, "k", make_bzimage(make_vmlinux(TEXT)))) == "linux"
    assert guest_kind(write(tmp_path, "e", b"\x7fELF" + bytes(60))) == "multiboot"
    with pytest.raises(EmuError, match="neither a multiboot ELF nor a Linux bzImage"):
        guest_kind(write(tmp_path, "x", b"MZ" + bytes(2000)))
