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

from emu.ahci.dma import HostBusError
from emu.machine.errors import GuestFault
from emu.machine.memory import GuestMemory
from emu.machine.registers import Registers

HLT_OPCODE = 0xF4
GATE_INTERRUPT_32 = 0xE
GATE_TRAP_32 = 0xF
EFLAGS_TF = 1 << 8
EFLAGS_IF = 1 << 9
EFLAGS_NT = 1 << 14
EFLAGS_RF = 1 << 16


def deliver(uc, regs: Registers, memory: GuestMemory, vector: int) -> None:
    """Enter the handler of ``vector``; GuestFault when the guest has no usable gate."""
    _, base, limit, _ = uc.reg_read(UC_X86_REG_IDTR)
    if vector * 8 + 7 > limit:
        raise GuestFault(f"interrupt vector {vector} is past the IDT limit (triple fault)")
    try:
        low, high = struct.unpack("<II", memory.view(base + vector * 8, 8))
    except HostBusError:
        raise GuestFault(f"IDT at 0x{base:x} is outside RAM (triple fault)") from None
    kind = (high >> 8) & 0x1F
    if not high & 0x8000 or kind not in (GATE_INTERRUPT_32, GATE_TRAP_32):
        raise GuestFault(f"interrupt vector {vector} has no present 32-bit gate (triple fault)")
    eflags = regs.read(UC_X86_REG_EFLAGS)
    esp = (regs.read(UC_X86_REG_ESP) - 12) & 0xFFFFFFFF
    eip = regs.read(UC_X86_REG_EIP)
    cs = regs.read(UC_X86_REG_CS)
    if eip < memory.size and memory.mem[eip] == HLT_OPCODE:
        # About to halt (as in "sti; hlt", whose HLT runs in STI's shadow): the CPU would
        # halt and wake at once, so the handler returns past the HLT.
        eip += 1
    frame = struct.pack("<III", eip, cs, eflags)
    try:
        memory.view(esp, 12)[:] = frame
    except HostBusError:
        raise GuestFault(f"stack at 0x{esp:x} is outside RAM during interrupt delivery") from None
    cleared = EFLAGS_TF | EFLAGS_NT | EFLAGS_RF | (EFLAGS_IF if kind == GATE_INTERRUPT_32 else 0)
    regs.write(UC_X86_REG_ESP, esp)
    regs.write(UC_X86_REG_EFLAGS, eflags & ~cleared)
    if low >> 16 != cs:  # (loading CS costs Unicorn a descriptor load; skip the same one)
        regs.write(UC_X86_REG_CS, low >> 16)
    regs.write(UC_X86_REG_EIP, (high & 0xFFFF0000) | (low & 0xFFFF))
