"""Delivering an external interrupt through the guest's IDT, as the CPU would.

Unicorn has no way to raise an interrupt into the guest, so the run loop does
what the CPU does in 32-bit protected mode: read the gate, push EFLAGS, CS and
EIP on the current stack, clear IF (interrupt gate) and jump to the handler.
"""

import ctypes
import struct

from unicorn.x86_const import (
    UC_X86_REG_CS,
    UC_X86_REG_EFLAGS,
    UC_X86_REG_EIP,
    UC_X86_REG_ESP,
    UC_X86_REG_IDTR,
)

from emu.machine.errors import GuestFault
from emu.machine.memory import GuestMemory
from emu.machine.registers import RegisterBatch, Registers

HLT_OPCODE = 0xF4
GATE_INTERRUPT_32 = 0xE
GATE_TRAP_32 = 0xF
EFLAGS_TF = 1 << 8
EFLAGS_IF = 1 << 9
EFLAGS_NT = 1 << 14
EFLAGS_RF = 1 << 16
# What entering a handler clears in EFLAGS: an interrupt gate also clears IF.
_CLEARED_TRAP = EFLAGS_TF | EFLAGS_NT | EFLAGS_RF
_CLEARED_INTERRUPT = _CLEARED_TRAP | EFLAGS_IF
_GATE = struct.Struct("<II")
_FRAME = struct.Struct("<III")  # EIP, CS, EFLAGS as pushed, lowest address first


class InterruptEntry:
    """Enters the guest's handlers of external interrupts. The registers the CPU reads
    and writes to do so go in one batch each way (see :class:`RegisterBatch`), and EIP
    alone.

    Inside the interrupt window the window's machine code makes those calls itself
    (:mod:`emu.machine.irqwindow`): it reads :attr:`state` before calling the board,
    which then calls :meth:`deliver_staged`, and when :attr:`staged` is set it writes
    :attr:`entry` and :attr:`handler` (EIP) after the board returns. The Python side then
    pays for no libunicorn call (three cost about 6 us per interrupt inside a run)."""

    def __init__(self, uc, regs: Registers, memory: GuestMemory) -> None:
        self._regs = regs
        self._memory = memory
        self.state = RegisterBatch(
            uc,
            (UC_X86_REG_EFLAGS, UC_X86_REG_ESP, UC_X86_REG_EIP, UC_X86_REG_CS),
            UC_X86_REG_IDTR,
        )
        self.entry = RegisterBatch(uc, (UC_X86_REG_ESP, UC_X86_REG_EFLAGS))
        self.handler = ctypes.c_uint64()  # EIP, staged
        self.staged = ctypes.c_uint8()  # set: entry and handler wait to be written

    def deliver(self, vector: int) -> None:
        """Enter the handler of ``vector``; GuestFault when the guest has no usable gate."""
        esp, eflags, eip = self._frame(vector, self.state.read())
        self.entry.write(esp, eflags)
        # EIP on its own: only uc_reg_write makes a run in progress (delivery from a hook)
        # leave its block and go on at the new EIP; uc_reg_write_batch does not.
        self._regs.write(UC_X86_REG_EIP, eip)

    def deliver_staged(self, vector: int) -> None:
        """:meth:`deliver` with :attr:`state` already read, and the register writes
        staged for the caller to make."""
        esp, eflags, eip = self._frame(vector, self.state.values())
        self.entry.stage(esp, eflags)
        self.handler.value = eip
        self.staged.value = 1

    def _frame(self, vector: int, state: list[int]) -> tuple[int, int, int]:
        """Push the interrupt frame for ``vector`` (and load CS if the gate's differs);
        the ESP, EFLAGS and EIP to enter the handler with."""
        eflags, esp, eip, cs, base, limit = state
        memory = self._memory
        mem, size = memory.mem, memory.size
        if vector * 8 + 7 > limit:
            raise GuestFault(f"interrupt vector {vector} is past the IDT limit (triple fault)")
        gate = base + vector * 8
        if gate + 8 > size:
            raise GuestFault(f"IDT at 0x{base:x} is outside RAM (triple fault)")
        low, high = _GATE.unpack_from(mem, gate)
        kind = (high >> 8) & 0x1F
        if not high & 0x8000 or kind not in (GATE_INTERRUPT_32, GATE_TRAP_32):
            raise GuestFault(f"interrupt vector {vector} has no present 32-bit gate (triple fault)")
        esp = (esp - 12) & 0xFFFFFFFF
        if eip < size and mem[eip] == HLT_OPCODE:
            # About to halt (as in "sti; hlt", whose HLT runs in STI's shadow): the CPU
            # would halt and wake at once, so the handler returns past the HLT.
            eip += 1
        if esp + 12 > size:
            raise GuestFault(f"stack at 0x{esp:x} is outside RAM during interrupt delivery")
        _FRAME.pack_into(mem, esp, eip, cs, eflags)
        cleared = _CLEARED_INTERRUPT if kind == GATE_INTERRUPT_32 else _CLEARED_TRAP
        if low >> 16 != cs:  # (loading CS costs Unicorn a descriptor load; skip the same one)
            self._regs.write(UC_X86_REG_CS, low >> 16)
        return esp, eflags & ~cleared, (high & 0xFFFF0000) | (low & 0xFFFF)
