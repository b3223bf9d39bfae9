"""Delivering an external interrupt through the guest's IDT, as the CPU would.

Unicorn has no way to raise an interrupt into the guest, so the run loop does
what the CPU does in 32-bit protected mode: read the gate, push EFLAGS, CS and
EIP on the current stack, clear IF (interrupt gate) and jump to the handler.
"""

import struct

from unicorn.x86_const import (
    UC_X86_REG_CS,
    UC_X86_REG_EFLAGS,
    UC_X86_REG_EIP,
    UC_X86_REG_ESP,
    UC_X86_REG_IDTR,
)

from emu.machine.errors import GuestFault
from emu.machine.memory import GuestMemory, HostBusError
from emu.machine.registers import RegisterBatch, Registers

HLT_OPCODE = 0xF4
GATE_INTERRUPT_32 = 0xE
GATE_TRAP_32 = 0xF
EFLAGS_TF = 1 << 8
EFLAGS_IF = 1 << 9
EFLAGS_NT = 1 << 14
EFLAGS_RF = 1 << 16
_GATE = struct.Struct("<II")
_FRAME = struct.Struct("<III")  # EIP, CS, EFLAGS as pushed, lowest address first


class InterruptEntry:
    """Enters the guest's handlers of external interrupts. The registers the CPU reads
    and writes to do so go in one batch each way (see :class:`RegisterBatch`)."""

    def __init__(self, uc, regs: Registers, memory: GuestMemory) -> None:
        self._regs = regs
        self._memory = memory
        self._state = RegisterBatch(
            uc,
            (UC_X86_REG_EFLAGS, UC_X86_REG_ESP, UC_X86_REG_EIP, UC_X86_REG_CS),
            UC_X86_REG_IDTR,
        )
        self._entry = RegisterBatch(uc, (UC_X86_REG_ESP, UC_X86_REG_EFLAGS))

    def deliver(self, vector: int) -> None:
        """Enter the handler of ``vector``; GuestFault when the guest has no usable gate."""
        regs, memory = self._regs, self._memory
        eflags, esp, eip, cs, base, limit = self._state.read()
        if vector * 8 + 7 > limit:
            raise GuestFault(f"interrupt vector {vector} is past the IDT limit (triple fault)")
        try:
            low, high = _GATE.unpack_from(memory.view(base + vector * 8, 8))
        except HostBusError:
            raise GuestFault(f"IDT at 0x{base:x} is outside RAM (triple fault)") from None
        kind = (high >> 8) & 0x1F
        if not high & 0x8000 or kind not in (GATE_INTERRUPT_32, GATE_TRAP_32):
            raise GuestFault(f"interrupt vector {vector} has no present 32-bit gate (triple fault)")
        esp = (esp - 12) & 0xFFFFFFFF
        if eip < memory.size and memory.mem[eip] == HLT_OPCODE:
            # About to halt (as in "sti; hlt", whose HLT runs in STI's shadow): the CPU
            # would halt and wake at once, so the handler returns past the HLT.
            eip += 1
        try:
            _FRAME.pack_into(memory.view(esp, 12), 0, eip, cs, eflags)
        except HostBusError:
            raise GuestFault(
                f"stack at 0x{esp:x} is outside RAM during interrupt delivery"
            ) from None
        cleared = (
            EFLAGS_TF | EFLAGS_NT | EFLAGS_RF | (EFLAGS_IF if kind == GATE_INTERRUPT_32 else 0)
        )
        if low >> 16 != cs:  # (loading CS costs Unicorn a descriptor load; skip the same one)
            regs.write(UC_X86_REG_CS, low >> 16)
        self._entry.write(esp, eflags & ~cleared)
        # EIP on its own: only uc_reg_write makes a run in progress (delivery from a hook)
        # leave its block and go on at the new EIP; uc_reg_write_batch does not.
        regs.write(UC_X86_REG_EIP, (high & 0xFFFF0000) | (low & 0xFFFF))
