"""The board's run loop: exits, faults, time budget, open bus, MMIO windows."""

import io
import struct

import pytest
from elfmaker import CLI_HLT, SPIN, STI_HLT, UD2, exit_with, putc

from emu.machine.board import Board, BoardConfig
from emu.machine.bus import MmioRegion
from emu.machine.errors import GuestFault, GuestTimeout, StrayAccess


def boot(path: str, strict: bool = False, memory_mib: int = 16):
    out = io.BytesIO()
    board = Board(BoardConfig(memory_mib=memory_mib, strict=strict, serial=out))
    board.load(path)
    return board, out


def test_guest_prints_and_exits_with_the_value_it_writes(make_guest):
    board, out = boot(make_guest(putc("o") + putc("k") + exit_with(42)))
    assert board.run(5) == 42
    assert out.getvalue() == b"ok"


def test_entry_registers_follow_multiboot(make_guest):
    # mov [0x200000], eax; mov [0x200004], ebx; exit
    code = b"\xa3\x00\x00\x20\x00" + b"\x89\x1d\x04\x00\x20\x00" + exit_with(0)
    board, _ = boot(make_guest(code))
    board.run(5)
    assert struct.unpack_from("<II", board.memory.mem, 0x200000) == (0x2BADB002, 0x9000)


def test_runaway_guest_is_stopped_at_its_budget(make_guest):
    board, _ = boot(make_guest(SPIN))
    with pytest.raises(GuestTimeout, match=r"0\.3 s budget") as info:
        board.run(0.3)
    assert info.value.exit_status == 124


def test_invalid_opcode_stops_with_vector_and_eip(make_guest):
    board, _ = boot(make_guest(UD2))
    with pytest.raises(GuestFault, match=r"vector 6 \(#UD\) at EIP=0x0010000c"):
        board.run(5)


def test_divide_error_names_the_vector(make_guest):
    board, _ = boot(make_guest(b"\x31\xc9\xf7\xf1"))  # xor ecx, ecx; div ecx
    with pytest.raises(GuestFault, match=r"vector 0 \(#DE\) at EIP=0x0010000e") as info:
        board.run(5)
    assert info.value.exit_status == 126


def test_halt_with_interrupts_disabled_ends_the_run(make_guest):
    board, _ = boot(make_guest(CLI_HLT))
    with pytest.raises(GuestFault, match="interrupts disabled at EIP=0x0010000d"):
        board.run(5)


def test_halt_with_interrupts_enabled_waits_for_the_budget(make_guest):
    board, _ = boot(make_guest(STI_HLT))
    with pytest.raises(GuestTimeout):
        board.run(0.2)


def test_unmapped_load_reads_all_ones_and_is_reported_once(make_guest, capsys):
    # mov eax, [0xC0000000]; mov [0x200000], eax; mov eax, [0xC0000000]; exit
    load = b"\xa1\x00\x00\x00\xc0"
    code = load + b"\xa3\x00\x00\x20\x00" + load + exit_with(0)
    board, _ = boot(make_guest(code))
    assert board.run(5) == 0
    assert struct.unpack_from("<I", board.memory.mem, 0x200000)[0] == 0xFFFFFFFF
    err = capsys.readouterr().err.splitlines()
    assert err == [
        "ahci-emu: warning: load from physical address 0xc0000000 decoded by nothing "
        "(EIP=0x0010000c); open bus"
    ]


def test_strict_stops_at_an_unmapped_store(make_guest):
    code = b"\xc7\x05\x00\x00\x00\xc0\x01\x00\x00\x00" + exit_with(0)  # mov dword [0xC0000000], 1
    board, _ = boot(make_guest(code), strict=True)
    with pytest.raises(StrayAccess, match="store to physical address 0xc0000000"):
        board.run(5)


def test_strict_stops_at_an_unclaimed_port(make_guest):
    code = b"\xe4\x80" + exit_with(0)  # in al, 0x80
    board, _ = boot(make_guest(code), strict=True)
    with pytest.raises(StrayAccess, match="I/O port read of 0x0080"):
        board.run(5)


def test_jump_to_nowhere_is_a_fault(make_guest):
    board, _ = boot(make_guest(b"\xb8\x00\x00\x00\xd0\xff\xe0"))  # mov eax, 0xD0000000; jmp eax
    with pytest.raises(GuestFault, match="0xd0000000"):
        board.run(5)


def test_mmio_region_follows_moves_and_open_bus_page_gives_way(make_guest):
    reads = []
    # mov eax, [0xE0000000]; mov [0x200000], eax; exit
    code = b"\xa1\x00\x00\x00\xe0" + b"\xa3\x00\x00\x20\x00" + exit_with(0)
    board, _ = boot(make_guest(code))
    region = MmioRegion(
        "test", 0x1000, lambda off, size: reads.append(off) or 0x1234, lambda off, size, value: None
    )
    board.mmio.add(region, None)
    board.mmio.open_bus(0xE0000000, False)  # the page is open bus first
    board.mmio.move(region, 0xE0000000)
    assert board.run(5) == 0
    assert reads == [0]
    assert struct.unpack_from("<I", board.memory.mem, 0x200000)[0] == 0x1234


def test_mmio_region_over_ram_is_not_decoded(make_guest):
    board, _ = boot(make_guest(exit_with(0)))
    region = MmioRegion("test", 0x1000, lambda off, size: 0, lambda off, size, value: None)
    board.mmio.add(region, 0x100000)
    assert region.base is None


def test_paging_guest_is_translated_through_its_page_tables(make_guest):
    # Page directory at 0x300000 with one 4 MiB PSE page mapping 0x40000000 -> 0x000000,
    # plus identity for the first 4 MiB so the code keeps running.
    code = (
        b"\x0f\x20\xe0\x83\xc8\x10\x0f\x22\xe0"  # mov eax, cr4; or eax, 0x10 (PSE); mov cr4, eax
        b"\xb8\x00\x00\x30\x00\x0f\x22\xd8"  # mov eax, 0x300000; mov cr3, eax
        b"\x0f\x20\xc0\x0d\x00\x00\x00\x80\x0f\x22\xc0"  # mov eax, cr0; or eax, PG; mov cr0, eax
        b"\xa1\x00\x00\x20\x40"  # mov eax, [0x40200000]  (phys 0x200000)
        b"\xa3\x04\x00\x20\x00" + exit_with(0)  # mov [0x200004], eax
    )
    board, _ = boot(make_guest(code))
    struct.pack_into("<I", board.memory.mem, 0x300000, 0x00000083)
    struct.pack_into("<I", board.memory.mem, 0x300000 + (0x40000000 >> 22) * 4, 0x00000083)
    struct.pack_into("<I", board.memory.mem, 0x200000, 0xCAFEF00D)
    assert board.run(5) == 0
    assert struct.unpack_from("<I", board.memory.mem, 0x200004)[0] == 0xCAFEF00D


def test_a_device_that_raises_stops_the_run_with_an_internal_error(make_guest):
    def broken(offset, size):
        raise RuntimeError("boom")

    code = b"\xa1\x00\x00\x00\xe0" + exit_with(0)  # mov eax, [0xE0000000]
    board, _ = boot(make_guest(code))
    board.mmio.add(MmioRegion("broken", 0x1000, broken, lambda o, s, v: None), 0xE0000000)
    with pytest.raises(GuestFault, match="internal error: broken read at \\+0x0 failed"):
        board.run(5)
