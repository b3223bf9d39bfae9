"""External interrupts: an MSI-accepted vector reaches the guest's IDT handler."""

import io
import struct

import pytest
from elfmaker import LOAD_ADDRESS, exit_with

from emu.machine import apic, irqwindow
from emu.machine.board import Board, BoardConfig
from emu.machine.bus import MmioRegion
from emu.machine.errors import GuestFault

IDTR = 0x300000
IDT = 0x301000
VECTOR = 0x40
CODE = LOAD_ADDRESS + 12  # after the multiboot header


def lidt() -> bytes:
    """lidt [IDTR]; mov esp, 0x280000"""
    return b"\x0f\x01\x1d" + struct.pack("<I", IDTR) + b"\xbc\x00\x00\x28\x00"


def boot(make_guest, body: bytes, handler: bytes) -> tuple[Board, int]:
    code = body + handler
    board = Board(BoardConfig(memory_mib=16, serial=io.BytesIO()))
    board.load(make_guest(code))
    handler_address = CODE + len(body)
    struct.pack_into("<HI", board.memory.mem, IDTR, 256 * 8 - 1, IDT)
    gate = struct.pack("<HHBBH", handler_address & 0xFFFF, 0x08, 0, 0x8E, handler_address >> 16)
    board.memory.write(IDT + VECTOR * 8, gate)
    board.apic.write(apic.SVR, 4, 0x1FF)
    return board, handler_address


def test_pending_interrupt_wakes_hlt_and_runs_the_handler(make_guest):
    body = lidt() + b"\xfb\xf4" + exit_with(1)  # sti; hlt
    board, _ = boot(make_guest, body, exit_with(0x42))
    board.apic.accept(VECTOR)
    assert board.run(5) == 0x42
    assert board.apic.isr == 1 << VECTOR and board.apic.irr == 0


def test_masked_interrupt_waits_for_sti(make_guest):
    # cli; mov ecx, 5000; loop $; sti; jmp $
    body = lidt() + b"\xfa\xb9\x88\x13\x00\x00\xe2\xfe\xfb\xeb\xfe"
    board, _ = boot(make_guest, body, exit_with(0x43))
    board.apic.accept(VECTOR)
    assert board.run(5) == 0x43


def test_interrupt_raised_while_masked_is_taken_at_sti_in_code_already_translated(make_guest):
    # cli; lidt; call LOOP (translates it); store to a device that raises the interrupt
    # with IF=0; call LOOP again (sti inside, already translated); jmp $ (never reached).
    body = (
        b"\xfa"
        + lidt()
        + b"\xe8"
        + struct.pack("<i", 17)
        + b"\xc7\x05\x00\x00\x00\xe0\x01\x00\x00\x00"
        + b"\xe8"
        + struct.pack("<i", 2)
        + b"\xeb\xfe"
        + b"\xb9\xe8\x03\x00\x00"  # LOOP: mov ecx, 1000
        + b"\xfb\x90\xfa\x49\x75\xfa"  # L: sti; nop; cli; dec ecx; jnz L
        + b"\xc3"
    )
    board, _ = boot(make_guest, body, exit_with(0x44))
    raise_it = MmioRegion(
        "raiser", 0x1000, lambda o, s: 0, lambda o, s, v: board._accept_interrupt(VECTOR, False)
    )
    board.mmio.add(raise_it, 0xE0000000)
    assert board.run(5) == 0x44


def test_handler_sees_the_interrupt_frame(make_guest):
    # handler: pop eax (EIP); mov [0x200000], eax; pop eax (CS); mov [0x200004], eax; exit
    handler = b"\x58\xa3\x00\x00\x20\x00\x58\xa3\x04\x00\x20\x00" + exit_with(0)
    body = lidt() + b"\xfb\xf4" + exit_with(1)  # sti; hlt
    board, _ = boot(make_guest, body, handler)
    board.apic.accept(VECTOR)
    assert board.run(5) == 0
    eip, cs = struct.unpack_from("<II", board.memory.mem, 0x200000)
    assert eip == CODE + len(lidt()) + 2  # right after the hlt
    assert cs == 0x08


def test_missing_gate_is_a_fault(make_guest):
    body = lidt() + b"\xfb\xf4" + exit_with(1)
    board, _ = boot(make_guest, body, b"")
    board.apic.accept(VECTOR + 1)
    with pytest.raises(GuestFault, match="no present 32-bit gate"):
        board.run(5)


def test_apic_priority_eoi_and_disabled_apic():
    lapic = apic.LocalApic()
    lapic.accept(0x50)
    assert lapic.irr == 0  # software-disabled APIC drops interrupts
    lapic.write(apic.SVR, 4, 0x1FF)
    lapic.accept(0x50)
    lapic.accept(0x61)
    assert lapic.deliverable() == 0x61
    lapic.acknowledge(0x61)
    assert lapic.deliverable() is None  # 0x50 is in a lower class than in-service 0x61
    lapic.write(apic.EOI, 4, 0)
    assert lapic.deliverable() == 0x50
    lapic.write(apic.TPR, 4, 0x50)
    assert lapic.deliverable() is None
    assert lapic.read(apic.IRR_BASE + 0x20, 4) == 1 << (0x50 - 64)


# Interrupts raised while the guest runs, once the interrupt window is in use (from the
# second interrupt on): they are entered inside the run, at the first block with IF=1.
FLAG, COUNT, BAD, LAST_EIP, LAST_EFLAGS = 0x200000, 0x200004, 0x200008, 0x20000C, 0x200010
RAISER = 0xE0000000

# handler: BAD |= FLAG (set while the guest runs with IF=0); COUNT += 1; record the
# frame's EIP and EFLAGS; EOI to the local APIC; iret.
COUNTING_HANDLER = bytes.fromhex(
    "a100002000 090508002000 ff0504002000 8b0424 a30c002000 8b442408 a310002000"
    "c705b000e0fe00000000 cf"
)


def boot_with_raiser(make_guest, body: bytes) -> Board:
    """A board whose device at RAISER raises the vector the guest stores there (an MSI)."""
    board, _ = boot(make_guest, body, COUNTING_HANDLER)
    raiser = MmioRegion(
        "raiser", 0x1000, lambda o, s: 0, lambda o, s, v: board._accept_interrupt(v, False)
    )
    board.mmio.add(raiser, RAISER)
    return board


def counters(board: Board) -> tuple[int, int, int, int]:
    return struct.unpack_from("<IIII", board.memory.mem, COUNT)


@pytest.fixture(params=["native", "native-reg-read", "python"])
def watch(request, monkeypatch):
    """The window's watch as machine code (testing IF in the CPU's field, or through
    uc_reg_read where that field is not known), and as its Python fallback."""
    if request.param == "native-reg-read":
        monkeypatch.setattr(irqwindow, "eflags_address", lambda _uc: None)
    elif request.param == "python":
        monkeypatch.setattr(irqwindow, "_native_watch", lambda *_: None)
    return request.param


def test_interrupts_raised_with_if_clear_are_taken_once_each_at_sti_hlt(make_guest, watch):
    # cli; lidt; mov esp; mov ebx, 50
    # L: FLAG = 1; raise 0x40; spin 200 with IF=0; FLAG = 0; sti; hlt; cli; dec ebx; jnz L
    body = bytes.fromhex(
        "fa 0f011d00003000 bc00002800 bb32000000"
        "c70500002000 01000000 c7050000 00e0 40000000 b9c8000000 49 75fd"
        "c70500002000 00000000 fb f4 fa 4b 75d4"
    ) + exit_with(0)
    after_hlt = CODE + 0x3A
    board = boot_with_raiser(make_guest, body)
    assert board.run(20) == 0
    count, bad, last_eip, last_eflags = counters(board)
    assert count == 50  # each exactly once
    assert bad == 0  # never while IF=0
    assert last_eip == after_hlt  # the hlt woke, the handler returns past it
    assert last_eflags & (1 << 9)
    assert board.apic.isr == 0 and board.apic.irr == 0  # every one EOI'd


def test_interrupts_raised_with_if_set_are_taken_at_once(make_guest, watch):
    # cli; lidt; mov esp; xor esi, esi; sti
    # L: raise 0x40; inc esi; spin 100; cli; BAD |= COUNT - esi; sti; cmp esi, 50; jne L
    body = bytes.fromhex(
        "fa 0f011d00003000 bc00002800 31f6 fb"
        "c7050000 00e0 40000000 46 b964000000 49 75fd"
        "fa a104002000 29f0 090508002000 fb 83fe32 75d9"
    ) + exit_with(0)
    board = boot_with_raiser(make_guest, body)
    assert board.run(20) == 0
    count, bad, last_eip, _ = counters(board)
    assert count == 50
    assert bad == 0  # each handled before the guest's spin ended, none twice
    assert CODE <= last_eip < CODE + len(body)  # it interrupted the guest's own loop


def test_missing_gate_raised_inside_the_run_is_a_fault(make_guest):
    # cli; lidt; mov esp; sti; raise 0x40 (has a gate); spin 100; raise 0x41 (none); jmp $
    body = bytes.fromhex(
        "fa 0f011d00003000 bc00002800 fb"
        "c7050000 00e0 40000000 b964000000 49 75fd"
        "c7050000 00e0 41000000 ebfe"
    )
    board = boot_with_raiser(make_guest, body)
    with pytest.raises(GuestFault, match="vector 65 has no present 32-bit gate"):
        board.run(20)
    assert counters(board)[0] == 1
