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
may land on a CPU. Two block hooks stay installed from the first use on:

- an anchor, a no-op in C (libunicorn's own ``uc_errno``, which ignores the
  extra arguments), so that all code is translated with block-hook calls;
- the watch, which Unicorn calls only for blocks within its address bounds.
  Arming and disarming set those bounds (all addresses, or none) in Unicorn's
  hook record, so nothing is ever retranslated. The record's layout is checked
  when the watch is added; if it is not the expected one, the watch is added
  and deleted instead (correct, and slow).

While armed the watch runs at every block, and a guest that issues commands
with interrupts disabled runs thousands of blocks (its memsets) before it sets
IF again: a Python callback costs about 1 us each time. So on x86-64 hosts the
watch is 60 bytes of machine code (:func:`_native_watch`): read EFLAGS through
uc_reg_read, and if IF is set, raise a flag and call the window's ``on_open``.
Where an executable page cannot be had, the same check runs in Python.

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

from unicorn import UC_HOOK_BLOCK
from unicorn.unicorn_py3.unicorn import uclib
from unicorn.x86_const import UC_X86_REG_EFLAGS

from emu.machine import rawhooks

EFLAGS_IF = 1 << 9

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


def _native_watch(flag: int, on_open: int) -> tuple[mmap.mmap, int] | None:
    """The watch as x86-64 System V machine code: ``(page, entry)``, or None where it
    cannot run. When EFLAGS.IF is set it sets the byte at ``flag`` and calls the C
    function ``on_open(uc)``::

        push rbx; mov rbx, rdi; sub rsp, 16; mov qword [rsp], 0
        mov esi, UC_X86_REG_EFLAGS; mov rdx, rsp; mov rax, uc_reg_read; call rax
        test dword [rsp], 0x200; jz out
        mov rax, flag; mov byte [rax], 1; mov rdi, rbx; mov rax, on_open; call rax
        out: add rsp, 16; pop rbx; ret
    """
    if sys.platform == "win32" or os.uname().machine.lower() not in ("x86_64", "amd64"):
        return None  # (os.uname, not the platform module: that one costs start-up time)
    reg_read = ctypes.cast(uclib.uc_reg_read, ctypes.c_void_p).value
    code = (
        b"\x53\x48\x89\xfb\x48\x83\xec\x10\x48\xc7\x04\x24\x00\x00\x00\x00"
        + b"\xbe"
        + struct.pack("<I", UC_X86_REG_EFLAGS)
        + b"\x48\x89\xe2\x48\xb8"
        + struct.pack("<Q", reg_read)
        + b"\xff\xd0\xf7\x04\x24\x00\x02\x00\x00\x74\x1c\x48\xb8"
        + struct.pack("<Q", flag)
        + b"\xc6\x00\x01\x48\x89\xdf\x48\xb8"
        + struct.pack("<Q", on_open)
        + b"\xff\xd0\x48\x83\xc4\x10\x5b\xc3"
    )
    try:
        page = mmap.mmap(-1, mmap.PAGESIZE, prot=mmap.PROT_READ | mmap.PROT_WRITE | mmap.PROT_EXEC)
    except (OSError, AttributeError, ValueError):  # no executable pages here (W^X policy)
        return None
    page.write(code)
    return page, ctypes.addressof(ctypes.c_char.from_buffer(page))


class InterruptWindow:
    """Calls ``on_open`` at the first block that starts with IF=1 while armed (inside
    the emulation); :attr:`opened` then says so until the next :meth:`disarm` or
    :meth:`arm`. ``on_open`` must not raise: it stops the CPU instead."""

    def __init__(self, uc, on_open: Callable[[], None]) -> None:
        self._uc = uc
        # Arming works now (translated code calls block hooks), from inside a callback too.
        self.ready = False
        self._armed = False
        self._watch: ctypes.c_size_t | None = None
        self._record: _HookRecord | None = None  # None: add and delete the watch
        self._opened = ctypes.c_uint8()
        self._eflags = ctypes.c_uint32()
        self._open = on_open
        self._on_open = OPEN(on_open)
        self._python_watch = rawhooks.BLOCK(self._check)
        native = _native_watch(
            ctypes.addressof(self._opened), rawhooks.function_pointer(self._on_open).value
        )
        self._native_page = native[0] if native else None  # kept alive with the hook
        self._function = (
            ctypes.c_void_p(native[1]) if native else rawhooks.function_pointer(self._python_watch)
        )

    @property
    def opened(self) -> bool:
        return bool(self._opened.value)

    def anchor(self) -> None:
        """Install the hooks and flush translated code, once; only while the guest is stopped."""
        if self.ready:
            return
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
        self._uc.ctl_flush_tb()
        self.ready = True

    def arm(self) -> None:
        self._opened.value = 0
        if self._armed:
            return
        if self._record is not None:
            self._record.begin, self._record.end = _EVERYWHERE
        else:
            self._watch = rawhooks.hook_add(self._uc, UC_HOOK_BLOCK, self._function)
        self._armed = True

    def disarm(self) -> None:
        self._opened.value = 0
        if not self._armed:
            return
        if self._record is not None:
            self._record.begin, self._record.end = _NOWHERE
        elif self._watch is not None:
            rawhooks.hook_del(self._uc, self._watch)
            self._watch = None
        self._armed = False

    def _check(self, uch, _address, _size, _ud) -> None:
        """The watch in Python, where the machine code cannot run."""
        uclib.uc_reg_read(uch, UC_X86_REG_EFLAGS, ctypes.byref(self._eflags))
        if self._eflags.value & EFLAGS_IF:
            self._opened.value = 1
            self._open()
