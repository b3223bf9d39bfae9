"""Stopping the guest at the first translated block that runs with EFLAGS.IF set.

An external interrupt is taken between instructions once IF allows it. The run
loop delivers it whenever the guest is stopped; this module makes the guest stop
when it should, without Unicorn's costly ways of doing so:

- Stopping inside the device access that raised the interrupt makes Unicorn run
  that access again on resume, and stepping over it counts instructions with a
  hook whose removal flushes every translated block (one flush per interrupt).
- A hook added after code was translated is not called from that code, and a
  deleted code or block hook invalidates every block translated while it
  existed: a watch added and deleted per interrupt retranslates the guest's
  code each time (460 us per command of the bench_msi guest, measured).

Instead a block hook checks IF when each translated block starts. That sees
every point where IF became 1: QEMU's translator ends a block after STI, POPF
and IRET, and runs the instruction in STI's shadow as a block of its own. The
interrupt then lands within the block that raised it, as soon as a posted MSI
may land on a CPU. The watch is one block hook for all addresses, installed at
the first use and kept, so that all code is translated calling it:

- On x86-64 hosts it is machine code (:func:`_native_watch`). While the window
  is disarmed it returns at once (it tests a byte that arming sets); armed, it
  tests IF, and if IF is set, raises a flag and calls the window's ``on_open``.
  It tests IF where the CPU keeps it (env->eflags, found and checked by
  :func:`~emu.machine.unicorn_internals.eflags_address`), a load of a few
  nanoseconds; where that field is not known, it asks uc_reg_read, which
  computes all of EFLAGS (about 60 ns a block). The difference is most of the
  CPU time of a driver that builds commands with interrupts disabled while a
  completion waits: the bench_msi guest's NCQ memsets run as many blocks as
  they store words (QEMU runs each iteration of a REP string instruction as a
  block of its own). One hook matters: in a bare loop under Unicorn 2.1.4
  one block hook added 1.5 ns a block and two added 12 ns (the list walk in
  helper_uc_tracecode), and a guest runs hundreds of blocks per command. A lone
  hook's callback also looks fixed into the code as it is translated: swapping
  it in the hook record did not reach blocks translated before.
- Where an executable page cannot be had, the watch runs in Python, at about
  1 us a call, so it must not run while disarmed. There are then two hooks: an
  anchor, a no-op in C (libunicorn's own ``uc_errno``, which ignores the extra
  arguments), so that all code is translated with block-hook calls, and the
  watch, which Unicorn calls only for blocks within its address bounds. Arming
  and disarming set those bounds (all addresses, or none) in Unicorn's hook
  record, so nothing is ever retranslated. The record's layout is checked when
  the watch is added; if it is not the expected one, the watch is added and
  deleted instead (correct, and slow).

While armed the watch runs at every block, and a guest that issues commands
with interrupts disabled runs thousands of blocks (its memsets) before it sets
IF again: that is why the native watch exists.

``on_open`` runs inside the emulation, at the start of the block, before any of
its instructions. It may enter the interrupt handler right there: a register
write of EIP from a hook makes Unicorn leave the block and go on at the new EIP
without returning from uc_emu_start. Or it may stop the CPU, so that the run
loop acts between runs (what it does where it cannot deliver).
"""

import ctypes
import mmap
import os
import struct
import sys
from collections.abc import Callable
from typing import TYPE_CHECKING

from unicorn import UC_HOOK_BLOCK
from unicorn.unicorn_py3.unicorn import uclib
from unicorn.x86_const import UC_X86_REG_EFLAGS, UC_X86_REG_EIP

from emu.machine import rawhooks
from emu.machine.interrupts import EFLAGS_IF
from emu.machine.registers import Registers
from emu.machine.unicorn_internals import eflags_address

if TYPE_CHECKING:
    from emu.machine.interrupts import InterruptEntry

# Hook bounds as Unicorn reads them: begin > end means every address; begin = end =
# 2**64 - 1 no address a 32-bit guest runs at.
_EVERYWHERE = (1, 0)
_NOWHERE = (2**64 - 1, 2**64 - 1)


class _HookRecord(ctypes.Structure):
    """The head of Unicorn 2's ``struct hook`` (uc_priv.h): a uc_hook handle points at it."""

    _fields_ = [
        ("type", ctypes.c_int),
        ("insn", ctypes.c_int),
        ("refs", ctypes.c_int),
        ("op", ctypes.c_int),
        ("op_flags", ctypes.c_int),
        ("to_delete", ctypes.c_bool),
        ("begin", ctypes.c_uint64),
        ("end", ctypes.c_uint64),
        ("callback", ctypes.c_void_p),
    ]


# on_open as C calls it. The watch passes the uc handle, which the callback does not
# take (a System V callee may ignore its arguments): no Python wrapper to drop it.
OPEN = ctypes.CFUNCTYPE(None)
# The libunicorn functions the native watch calls, as plain addresses.
_UC_REG_READ, _UC_REG_WRITE, _UC_REG_READ_BATCH, _UC_REG_WRITE_BATCH = (
    rawhooks.function_pointer(function).value
    for function in (
        uclib.uc_reg_read,
        uclib.uc_reg_write,
        uclib.uc_reg_read_batch,
        uclib.uc_reg_write_batch,
    )
)


def _call(function: int) -> bytes:
    """mov rax, function; call rax"""
    return b"\x48\xb8" + struct.pack("<Q", function) + b"\xff\xd0"


def _batch_call(function: int, arguments: tuple[int, int, int]) -> bytes:
    """function(uc, ids, pointers, count): mov rdi, rbx; mov rsi, ids; mov rdx, pointers;
    mov ecx, count; then the call."""
    ids, pointers, count = arguments
    return (
        b"\x48\x89\xdf\x48\xbe"
        + struct.pack("<Q", ids)
        + b"\x48\xba"
        + struct.pack("<Q", pointers)
        + b"\xb9"
        + struct.pack("<I", count)
        + _call(function)
    )


def _native_watch(
    armed: int, flag: int, on_open: int, entry: "InterruptEntry", eflags: int | None
) -> tuple[mmap.mmap, int] | None:
    """The watch as x86-64 System V machine code: ``(page, entry point)``, or None where
    it cannot run. It returns at once while the byte at ``armed`` is zero. When EFLAGS.IF
    is set (in the CPU's field at ``eflags``; None: as uc_reg_read gives it) it reads
    ``entry.state``, sets the byte at ``flag``, calls the C function ``on_open``, and
    then, if ``on_open`` staged an entry (``entry.staged``), clears that and writes
    ``entry.entry`` and EIP::

        mov rax, armed; cmp byte [rax], 0; jne watch; ret
        watch: push rbx; mov rbx, rdi; sub rsp, 16
        mov rax, eflags; test dword [rax], 0x200; jz out
        (eflags None: mov qword [rsp], 0; mov esi, UC_X86_REG_EFLAGS; mov rdx, rsp;
        call uc_reg_read; test dword [rsp], 0x200; jz out)
        uc_reg_read_batch(rbx, state...)
        mov rax, flag; mov byte [rax], 1; mov rdi, rbx; call on_open
        mov rax, staged; cmp byte [rax], 0; je out; mov byte [rax], 0
        uc_reg_write_batch(rbx, entry...)
        mov rdi, rbx; mov esi, UC_X86_REG_EIP; mov rdx, handler; call uc_reg_write
        out: add rsp, 16; pop rbx; ret

    (Each call is its ``mov rax, function; call rax``; the values libunicorn returns are
    not looked at: the registers are always there to read and write.)
    """
    if sys.platform == "win32" or os.uname().machine.lower() not in ("x86_64", "amd64"):
        return None  # (os.uname, not the platform module: that one costs start-up time)
    if_armed = b"\x48\xb8" + struct.pack("<Q", armed) + b"\x80\x38\x00\x75\x01\xc3"
    frame = b"\x53\x48\x89\xfb\x48\x83\xec\x10"
    test_if = struct.pack("<I", EFLAGS_IF)  # test dword [...], imm32
    if eflags is not None:
        read_if = frame + b"\x48\xb8" + struct.pack("<Q", eflags) + b"\xf7\x00" + test_if
    else:
        read_if = (
            frame
            + b"\x48\xc7\x04\x24\x00\x00\x00\x00\xbe"
            + struct.pack("<I", UC_X86_REG_EFLAGS)
            + b"\x48\x89\xe2"
            + _call(_UC_REG_READ)
            + b"\xf7\x04\x24"
            + test_if
        )
    opened = (
        _batch_call(_UC_REG_READ_BATCH, entry.state.call_arguments)
        + b"\x48\xb8"
        + struct.pack("<Q", flag)
        + b"\xc6\x00\x01\x48\x89\xdf"
        + _call(on_open)
        + b"\x48\xb8"
        + struct.pack("<Q", ctypes.addressof(entry.staged))
        + b"\x80\x38\x00"
    )
    commit = (
        b"\xc6\x00\x00"
        + _batch_call(_UC_REG_WRITE_BATCH, entry.entry.call_arguments)
        + b"\x48\x89\xdf\xbe"
        + struct.pack("<I", UC_X86_REG_EIP)
        + b"\x48\xba"
        + struct.pack("<Q", ctypes.addressof(entry.handler))
        + _call(_UC_REG_WRITE)
    )
    out = b"\x48\x83\xc4\x10\x5b\xc3"
    # jz/je rel32 to out: 0f 84 followed by the distance from the end of the jump
    skip_open = b"\x0f\x84" + struct.pack("<i", len(opened) + 6 + len(commit))
    skip_commit = b"\x0f\x84" + struct.pack("<i", len(commit))
    code = if_armed + read_if + skip_open + opened + skip_commit + commit + out
    try:
        page = mmap.mmap(-1, mmap.PAGESIZE, prot=mmap.PROT_READ | mmap.PROT_WRITE | mmap.PROT_EXEC)
    except (OSError, AttributeError, ValueError):  # no executable pages here (W^X policy)
        return None
    page.write(code)
    return page, ctypes.addressof(ctypes.c_char.from_buffer(page))


class InterruptWindow:
    """Calls ``on_open`` at the first block that starts with IF=1 while armed (inside
    the emulation); :attr:`opened` then says so until the next :meth:`disarm` or
    :meth:`arm`. ``on_open`` must not raise: it stops the CPU instead. Around it the
    watch reads ``entry.state`` and writes what ``on_open`` staged in ``entry`` (see
    :class:`~emu.machine.interrupts.InterruptEntry`)."""

    def __init__(self, uc, on_open: Callable[[], None], entry: "InterruptEntry") -> None:
        self._uc = uc
        self._entry = entry
        self._regs = Registers(uc)
        # Arming works now (translated code calls block hooks), from inside a callback too.
        self.ready = False
        self._armed = False
        self._watch: ctypes.c_size_t | None = None
        self._record: _HookRecord | None = None  # None: add and delete the watch
        self._opened = ctypes.c_uint8()
        self._armed_flag = ctypes.c_uint8()  # what the native watch tests first
        self._open = on_open
        self._on_open = OPEN(on_open)
        self._python_watch = rawhooks.BLOCK(self._check)
        self._native_page: mmap.mmap | None = None  # kept alive with the hook
        self._native: ctypes.c_void_p | None = None
        self._function = rawhooks.function_pointer(self._python_watch)

    @property
    def opened(self) -> bool:
        return bool(self._opened.value)

    def anchor(self) -> None:
        """Install the hooks and flush translated code, once; only while the guest is stopped."""
        if self.ready:
            return
        native = _native_watch(
            ctypes.addressof(self._armed_flag),
            ctypes.addressof(self._opened),
            rawhooks.function_pointer(self._on_open).value,
            self._entry,
            eflags_address(self._uc),
        )
        if native is not None:
            self._native_page, self._native = native[0], ctypes.c_void_p(native[1])
            rawhooks.hook_add(self._uc, UC_HOOK_BLOCK, self._native)
        else:
            self._anchor_python_watch()
        self._uc.ctl_flush_tb()
        self.ready = True

    def _anchor_python_watch(self) -> None:
        """The no-op anchor, and the Python watch bounded to no address (module notes)."""
        rawhooks.hook_add(self._uc, UC_HOOK_BLOCK, rawhooks.function_pointer(uclib.uc_errno))
        handle = rawhooks.hook_add(self._uc, UC_HOOK_BLOCK, self._function, *_NOWHERE)
        record = _HookRecord.from_address(handle.value)
        if (record.type, record.begin, record.end, record.callback) == (
            UC_HOOK_BLOCK,
            *_NOWHERE,
            self._function.value,
        ):
            self._record = record
        else:
            rawhooks.hook_del(self._uc, handle)

    def arm(self) -> None:
        """Watch for IF from the next block on; only once :meth:`anchor` has run."""
        self._opened.value = 0
        if self._armed or not self.ready:
            return
        if self._native is not None:
            self._armed_flag.value = 1
        elif self._record is not None:
            self._record.begin, self._record.end = _EVERYWHERE
        else:
            self._watch = rawhooks.hook_add(self._uc, UC_HOOK_BLOCK, self._function)
        self._armed = True

    def disarm(self) -> None:
        self._opened.value = 0
        if not self._armed:
            return
        if self._native is not None:
            self._armed_flag.value = 0
        elif self._record is not None:
            self._record.begin, self._record.end = _NOWHERE
        elif self._watch is not None:
            rawhooks.hook_del(self._uc, self._watch)
            self._watch = None
        self._armed = False

    def _check(self, _uch, _address, _size, _ud) -> None:
        """The watch in Python, where the machine code cannot run (the same steps)."""
        if not self._regs.read(UC_X86_REG_EFLAGS) & EFLAGS_IF:
            return
        entry = self._entry
        entry.state.read()
        self._opened.value = 1
        self._open()
        if entry.staged.value:
            entry.staged.value = 0
            entry.entry.write(*entry.entry.values())
            self._regs.write(UC_X86_REG_EIP, entry.handler.value)
