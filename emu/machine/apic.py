"""The local APIC, as far as MSI delivery needs it (Intel SDM vol. 3, chapter 11).

MSI writes and I/O APIC messages land here as fixed interrupts: the vector goes
into IRR; the board delivers the highest one whose priority class beats the
processor priority while EFLAGS.IF is set; EOI retires the highest in-service
vector (and tells the I/O APIC when it was level-triggered). No timer, no IPIs,
no LINT: the test guests need none of them.
"""

from collections.abc import Callable

BASE = 0xFEE00000
SIZE = 0x1000

ID = 0x20
VERSION = 0x30
TPR = 0x80
APR = 0x90
PPR = 0xA0
EOI = 0xB0
LDR = 0xD0
DFR = 0xE0
SVR = 0xF0
ISR_BASE = 0x100
TMR_BASE = 0x180
IRR_BASE = 0x200
ESR = 0x280
LVT_CMCI = 0x2F0
LVT_TIMER = 0x320
LVT_ERROR = 0x370

SVR_ENABLE = 1 << 8
VERSION_VALUE = 0x00050014  # version 14h (xAPIC), 6 LVT entries
LVT_MASKED = 1 << 16


class LocalApic:
    def __init__(self, on_eoi: Callable[[int], None] | None = None) -> None:
        """``on_eoi(vector)`` is told when a level-triggered vector is retired (the
        EOI broadcast an I/O APIC needs)."""
        self._on_eoi = on_eoi
        self.tmr = 0  # trigger mode: level-triggered vectors
        self.tpr = 0
        self.svr = 0xFF  # reset: software-disabled, spurious vector FFh
        self.ldr = 0
        self.dfr = 0xFFFFFFFF
        self.irr = 0  # 256-bit masks, bit n = vector n
        self.isr = 0
        self.lvt = {offset: LVT_MASKED for offset in range(LVT_CMCI, LVT_ERROR + 0x10, 0x10)}

    def accept(self, vector: int, level: bool = False) -> None:
        """A fixed interrupt arrives (an MSI, or from the I/O APIC); vectors 0-15 are
        illegal and dropped."""
        if self.svr & SVR_ENABLE and vector >= 16:
            self.irr |= 1 << vector
            self.tmr = self.tmr | 1 << vector if level else self.tmr & ~(1 << vector)

    def _ppr(self) -> int:
        isr_class = (self.isr.bit_length() - 1) & 0xF0 if self.isr else 0
        return max(self.tpr & 0xF0, isr_class)

    def deliverable(self) -> int | None:
        """The vector the CPU would take now (if IF=1), or None."""
        if not self.irr:
            return None
        vector = self.irr.bit_length() - 1
        ppr = self._ppr() if self.isr or self.tpr else 0  # (most often nothing in service)
        return vector if vector & 0xF0 > ppr else None

    def acknowledge(self, vector: int) -> None:
        """The CPU takes ``vector``: IRR -> ISR."""
        self.irr &= ~(1 << vector)
        self.isr |= 1 << vector

    def read(self, offset: int, size: int) -> int:
        value = self._read32(offset & ~3) >> (8 * (offset & 3))
        return value & ((1 << (8 * size)) - 1)

    def _read32(self, offset: int) -> int:
        if ISR_BASE <= offset < TMR_BASE:
            return (self.isr >> (32 * ((offset - ISR_BASE) >> 4))) & 0xFFFFFFFF
        if TMR_BASE <= offset < IRR_BASE:
            return (self.tmr >> (32 * ((offset - TMR_BASE) >> 4))) & 0xFFFFFFFF
        if IRR_BASE <= offset < ESR:
            return (self.irr >> (32 * ((offset - IRR_BASE) >> 4))) & 0xFFFFFFFF
        if offset in self.lvt:
            return self.lvt[offset]
        return {
            ID: 0,
            VERSION: VERSION_VALUE,
            TPR: self.tpr,
            PPR: self._ppr(),
            LDR: self.ldr,
            DFR: self.dfr,
            SVR: self.svr,
        }.get(offset, 0)

    def write(self, offset: int, size: int, value: int) -> None:
        offset &= ~3
        if offset == EOI:  # (first: a handler writes it at every interrupt)
            if self.isr:
                vector = self.isr.bit_length() - 1
                self.isr &= ~(1 << vector)
                if self.tmr & 1 << vector and self._on_eoi is not None:
                    self._on_eoi(vector)
        elif offset == TPR:
            self.tpr = value & 0xFF
        elif offset == SVR:
            self.svr = value & 0x13FF
        elif offset == LDR:
            self.ldr = value & 0xFF000000
        elif offset == DFR:
            self.dfr = value | 0x0FFFFFFF
        elif offset in self.lvt:
            self.lvt[offset] = value & 0x1F7FF
