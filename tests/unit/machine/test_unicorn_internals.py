"""The one module that reaches into libunicorn: its self-check and its refusals."""

import contextlib
import ctypes
import dataclasses
import struct
import subprocess
import sys
import threading

import pytest
from bzimages import make_bzimage, make_vmlinux
from unicorn import UC_ARCH_X86, UC_HOOK_CODE, UC_MODE_32, UC_MODE_64, Uc
from unicorn.x86_const import (
    UC_X86_REG_CS,
    UC_X86_REG_EFLAGS,
    UC_X86_REG_ESP,
    UC_X86_REG_GDTR,
)

from emu.machine import unicorn_internals
from emu.machine.interrupts import EFLAGS_IF
from emu.machine.unicorn_internals import LAYOUTS, UnicornInternalsError, library_version


def test_the_installed_libunicorn_passes_its_self_check():
    layout = unicorn_internals.self_check()
    assert layout == LAYOUTS[library_version()]


def test_the_probe_sees_a_page_fault_delivered_with_error_code_and_cr2():
    assert unicorn_internals._run_probe(LAYOUTS[library_version()]) is None


@pytest.mark.parametrize("field", ["cpu_halted", "env_error_code", "env_tsc_offset"])
def test_a_wrong_offset_is_caught_by_the_probe(field):
    layout = LAYOUTS[library_version()]
    wrong = dataclasses.replace(layout, **{field: getattr(layout, field) + 8})
    assert unicorn_internals._run_probe(wrong) is not None


def test_a_wrong_cpu_pointer_is_refused_before_anything_runs():
    layout = LAYOUTS[library_version()]
    wrong = dataclasses.replace(layout, cpu_env=layout.cpu_env + 0x40)
    with pytest.raises(UnicornInternalsError, match="Linux guests are refused"):
        unicorn_internals._run_probe(wrong)


def test_an_unknown_libunicorn_version_is_refused_with_one_line(monkeypatch):
    monkeypatch.setattr(unicorn_internals, "library_version", lambda: (2, 9, 9))
    with pytest.raises(UnicornInternalsError) as info:
        unicorn_internals._layout()
    assert "2.9.9" in str(info.value) and "\n" not in str(info.value)


@pytest.mark.parametrize("mode", [UC_MODE_32, UC_MODE_64])
def test_eflags_address_is_where_if_is_kept(mode):
    uc = Uc(UC_ARCH_X86, mode)
    uc.reg_write(UC_X86_REG_EFLAGS, 0x8C3)  # OF SF CF and bit 1 set, IF clear
    address = unicorn_internals.eflags_address(uc)
    assert address is not None
    assert uc.reg_read(UC_X86_REG_EFLAGS) == 0x8C3  # the check left EFLAGS as it was
    field = ctypes.c_uint32.from_address(address)
    for value in (0x202, 0x002, 0x246):  # IF set, clear, set with arithmetic flags
        uc.reg_write(UC_X86_REG_EFLAGS, value)
        assert field.value & EFLAGS_IF == value & EFLAGS_IF


def test_the_field_follows_if_as_guest_code_changes_it():
    """STI, CLI, POPF and IRET in guest code, the field read at every instruction against
    what uc_reg_read says."""
    code = bytes.fromhex(
        "fb"  # sti
        "fa"  # cli
        "9c 810c2400020000 9d"  # pushfd; or dword [esp], 0x200; popfd
        "9c 81242400fdffff 9d"  # pushfd; and dword [esp], 0xfffffd00 (IF clear); popfd
        "9c 810c2400020000 6a08 68 00000000 cf"  # an IRET frame with IF set, to the end
    )
    end = 0x1000 + len(code)
    code = code.replace(bytes.fromhex("6800000000"), b"\x68" + end.to_bytes(4, "little"))
    uc = Uc(UC_ARCH_X86, UC_MODE_32)
    uc.mem_map(0, 0x10000)
    uc.mem_write(0x1000, code + b"\x90")
    gdt = b"\0" * 8 + bytes.fromhex("ffff0000009acf00")  # a flat 32-bit code segment
    uc.mem_write(0x3000, gdt)
    uc.reg_write(UC_X86_REG_GDTR, (0, 0x3000, 15, 0))
    uc.reg_write(UC_X86_REG_CS, 0x08)
    uc.reg_write(UC_X86_REG_ESP, 0x8000)
    uc.reg_write(UC_X86_REG_EFLAGS, 0x2)
    field = ctypes.c_uint32.from_address(unicorn_internals.eflags_address(uc))
    seen = []

    def on_code(uc, _address, _size, _ud):
        seen.append((field.value & EFLAGS_IF, uc.reg_read(UC_X86_REG_EFLAGS) & EFLAGS_IF))

    uc.hook_add(UC_HOOK_CODE, on_code)
    uc.emu_start(0x1000, end + 1)
    assert len(seen) == 14  # every instruction, the NOP after IRET included
    assert all(direct == api for direct, api in seen)
    assert [direct for direct, _ in seen] == [0, 512, 0, 0, 0, 512, 512, 512, 0, 0, 0, 0, 0, 512]


@pytest.mark.parametrize("other", ["system library", "another host"])
def test_a_libunicorn_other_than_the_wheels_is_not_trusted(monkeypatch, other):
    uc = Uc(UC_ARCH_X86, UC_MODE_32)
    assert unicorn_internals.bundled()
    if other == "system library":
        monkeypatch.setattr(unicorn_internals, "library_path", lambda: "/usr/lib/libunicorn.so.2")
    else:
        monkeypatch.setattr(unicorn_internals.sys, "platform", "darwin")
    assert not unicorn_internals.bundled()
    assert unicorn_internals.eflags_address(uc) is None
    with pytest.raises(UnicornInternalsError) as info:
        unicorn_internals._layout()
    assert "wheel bundles for x86_64 Linux" in str(info.value) and "\n" not in str(info.value)


def test_eflags_address_is_none_where_the_field_cannot_be_trusted(monkeypatch):
    uc = Uc(UC_ARCH_X86, UC_MODE_32)
    uc.reg_write(UC_X86_REG_EFLAGS, 0x2C3)
    monkeypatch.setattr(unicorn_internals, "library_version", lambda: (2, 9, 9))
    assert unicorn_internals.eflags_address(uc) is None  # an unknown layout
    monkeypatch.setattr(unicorn_internals, "library_version", lambda: (2, 1, 4))
    wrong = dataclasses.replace(LAYOUTS[(2, 1, 4)], env_eflags=LAYOUTS[(2, 1, 4)].env_eip)
    monkeypatch.setitem(unicorn_internals.LAYOUTS, (2, 1, 4), wrong)
    assert unicorn_internals.eflags_address(uc) is None  # a field that does not follow IF
    assert uc.reg_read(UC_X86_REG_EFLAGS) == 0x2C3


def test_the_cli_refuses_a_linux_guest_on_an_unknown_libunicorn(tmp_path):
    """The refusal path end to end: one line, status 1, while multiboot guests still run."""
    kernel = tmp_path / "vmlinuz"
    kernel.write_bytes(make_bzimage(make_vmlinux(b"\xf4" * 64)))
    script = (
        "import sys; import emu.machine.unicorn_internals as u;"
        "u.library_version = lambda: (2, 0, 0);"
        "from emu.cli import main; sys.exit(main(sys.argv[1:]))"
    )
    linux = subprocess.run(
        [sys.executable, "-c", script, "run", str(kernel), "--timeout", "20"],
        capture_output=True,
        text=True,
        check=False,
    )
    assert linux.returncode == 1
    assert linux.stderr.splitlines() == [
        "ahci-emu: error: Linux guests need libunicorn 2.1.4 (its internal layout is known); "
        "this is 2.0.0"
    ]
    multiboot = subprocess.run(
        [sys.executable, "-c", script, "run", "hello", "--timeout", "20"],
        capture_output=True,
        text=True,
        check=False,
    )
    assert multiboot.returncode == 0, multiboot.stderr


@contextlib.contextmanager
def _stopped_every(uc, seconds: float):
    """A thread that calls ``uc.emu_stop()`` every ``seconds`` while the block runs."""
    done = threading.Event()

    def stopper():
        while not done.wait(seconds):
            uc.emu_stop()

    thread = threading.Thread(target=stopper)
    thread.start()
    try:
        yield
    finally:
        done.set()
        thread.join()


def test_exact_stops_never_replay_a_guest_store():
    """Stopped from another thread thousands of times, ``inc rax; inc qword [m]`` keeps
    [m] equal to RAX: no stop lands after the store with RIP still on it."""
    from unicorn import UC_ARCH_X86, UC_MODE_64, Uc
    from unicorn.x86_const import UC_X86_REG_RAX, UC_X86_REG_RIP

    uc = Uc(UC_ARCH_X86, UC_MODE_64)
    uc.mem_map(0, 0x10000)
    uc.mem_write(0x1000, b"\x48\xff\xc0\x48\xff\x04\x25\x00\x80\x00\x00\xeb\xf3")
    uc.ctl_exits_enabled(True)
    uc.ctl_set_exits([])
    unicorn_internals.CpuInternals(uc, unicorn_internals.self_check()).exact_stops()
    rip = 0x1000
    with _stopped_every(uc, 0.0002):
        for _ in range(2000):
            uc.emu_start(rip, 0)
            rip = uc.reg_read(UC_X86_REG_RIP)
            assert rip == 0x1000  # the loop is one translated block: stops land at its start
    assert struct.unpack("<Q", uc.mem_read(0x8000, 8))[0] == uc.reg_read(UC_X86_REG_RAX)


# The injection test's guest (64-bit, at _CODE): 500 rounds of
#   rsi = 0x100000 + (r8 & 0xff); rdi = 0x140000; rcx = 4096; rep movsb
#   mov [MMIO], r8d                  (the board's device: asks for a stop)
#   rsi = 0x140000; rdi = 0x160000; rcx = 512; rep movsq
#   rax = [0x160000 + (r8 & 0x1f8)]; add [0x8008], rax; rol qword [0x8008], 3
#   movdqu xmm0, [0x160000]; paddq xmm1, xmm0; pshufd xmm1, xmm1, 0x39
#   cli; inc qword [0x8010]; sti; inc r8
# then movdqu [0x8020], xmm1; hlt. Its results: [0x8008], [0x8010], [0x8020], R8.
_ROUNDS_GUEST = bytes.fromhex(
    "fb4d31c0660fefc948c7c6000010004c01c64881e6ff00100048c7c70000140048c7c100100000f3a4"
    "448904250000003048c7c60000140048c7c70000160048c7c100020000f348a54c89c04825f8010000"
    "488b8000001600480104250880000048c104250880000003f30f6f042500001600660fd4c8660f70c9"
    "39fa48ff042510800000fb49ffc04981f8f40100000f8572fffffff30f7f0c2520800000f4"
)
# Its interrupt handler: push rax, rcx, rsi, rdi; rep movsb 64 bytes to 0x180000;
# rax = 0x12345678 + rcx (flags change); inc qword [0x8000]; pop them; iretq.
_HANDLER_GUEST = bytes.fromhex(
    "5051565748c7c14000000048c7c60000100048c7c700001800f3a448c7c0785634124801c848ff04"
    "25008000005f5e595848cf"
)


def _rounds_machine():
    from unicorn import UC_ARCH_X86, UC_MODE_64, UC_TLB_CPU, Uc
    from unicorn.x86_const import UC_X86_REG_CR4, UC_X86_REG_IDTR, UC_X86_REG_RIP

    from emu.machine.unicorn_internals import _CODE, _IDT, _probe_machine

    uc = Uc(UC_ARCH_X86, UC_MODE_64)
    uc.ctl_set_tlb_mode(UC_TLB_CPU)
    cpu = unicorn_internals.CpuInternals(uc, unicorn_internals.self_check())
    _probe_machine(uc)
    uc.mem_map(0x100000, 0x100000)
    uc.mem_write(0x100000, bytes((i * 7 + 3) & 0xFF for i in range(0x2000)))
    uc.reg_write(UC_X86_REG_CR4, 0x620)  # PAE, OSFXSR, OSXMMEXCPT: SSE on
    handler = 0x7800
    gate = struct.pack("<HHBBHII", handler, 0x08, 0, 0x8E, 0, 0, 0)
    uc.mem_write(_IDT + 0x20 * 16, gate)
    uc.reg_write(UC_X86_REG_IDTR, (0, _IDT, 16 * 256 - 1, 0))
    uc.mem_write(_CODE, _ROUNDS_GUEST)
    uc.mem_write(handler, _HANDLER_GUEST)
    uc.reg_write(UC_X86_REG_RIP, _CODE)
    uc.ctl_exits_enabled(True)
    uc.ctl_set_exits([])
    cpu.exact_stops()
    return uc, cpu


def _results(uc):
    from unicorn.x86_const import UC_X86_REG_R8

    return (
        bytes(uc.mem_read(0x8008, 16)),
        bytes(uc.mem_read(0x8020, 16)),
        uc.reg_read(UC_X86_REG_R8),
    )


def test_interrupts_injected_at_every_stop_leave_the_guests_results_unchanged():
    """The board's way of taking an interrupt: stop (a device asks, or the timer thread
    does, at any moment: mid-REP included), then enter the handler through QEMU's
    hard-IRQ delivery if IF=1 and no STI shadow. Thousands of interrupts later the
    guest's copies, read-modify-writes and SSE sums equal an undisturbed run's, and
    the handler ran once per interrupt."""
    from unicorn.x86_const import UC_X86_REG_RFLAGS, UC_X86_REG_RIP

    calm, _ = _rounds_machine()
    calm.mmio_map(0x30000000, 0x1000, lambda *_: 0, None, lambda *_: None, None)
    calm.emu_start(calm.reg_read(UC_X86_REG_RIP), 0)
    expected = _results(calm)
    assert expected[2] == 500

    uc, cpu = _rounds_machine()
    stops_asked = []
    uc.mmio_map(
        0x30000000, 0x1000, lambda *_: 0, None, lambda *_: stops_asked.append(uc.emu_stop()), None
    )
    injected = 0
    with _stopped_every(uc, 0.0001):
        while not cpu.halted and len(stops_asked) <= 500:  # (a replayed store asks again)
            if uc.reg_read(UC_X86_REG_RFLAGS) & 0x200 and not cpu.interrupt_shadow:
                cpu.deliver_interrupt(0x20)
                injected += 1
            uc.emu_start(uc.reg_read(UC_X86_REG_RIP), 0)
    assert _results(uc) == expected
    assert struct.unpack("<Q", uc.mem_read(0x8000, 8))[0] == injected
    assert len(stops_asked) == 500 and injected >= 500  # every device stop came back IF=1
