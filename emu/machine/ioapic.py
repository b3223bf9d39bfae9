"""The I/O APIC at 0xFEC00000 (82093AA register model, 24 inputs), for INTx.

q35 routes the AHCI function's INTA through PIRQA to input (GSI) 16. A
level-triggered input delivers its vector to the local APIC while the line is
asserted and the entry unmasked, once per EOI (remote IRR); an edge-triggered
one on each rising edge.
"""

from collections.abc import Callable

BASE = 0xFEC00000
SIZE = 0x1000
PINS = 24

IOREGSEL = 0x00
IOWIN = 0x10
REG_ID = 0x00
REG_VERSION = 0x01
REG_ARBITRATION = 0x02
REG_REDTBL = 0x10
VERSION_VALUE = (PINS - 1) << 16 | 0x20

RTE_VECTOR = 0xFF
RTE_REMOTE_IRR = 1 << 14
RTE_LEVEL = 1 << 15
RTE_MASKED = 1 << 16
RTE_WRITABLE = 0x0001AFFF  # vector, delivery/destination mode, polarity, trigger, mask


class IoApic:
    def __init__(self, deliver: Callable[[int, bool], None]) -> None:
        """``deliver(vector, level_triggered)`` hands a vector to the local APIC."""
        self._deliver = deliver
        self.select = 0
        self.id = 0
        self.entries = [RTE_MASKED] * PINS
        self.destinations = [0] * PINS
        self.lines = [False] * PINS

    def set_line(self, pin: int, asserted: bool) -> None:
        rising = asserted and not self.lines[pin]
        self.lines[pin] = asserted
        if rising or (asserted and self.entries[pin] & RTE_LEVEL):
            self._service(pin)

    def end_of_interrupt(self, vector: int) -> None:
        """The local APIC retired a level-triggered ``vector``: clear remote IRR, and
        deliver again if the line is still asserted."""
        for pin, entry in enumerate(self.entries):
            if entry & RTE_LEVEL and entry & RTE_REMOTE_IRR and entry & RTE_VECTOR == vector:
                self.entries[pin] &= ~RTE_REMOTE_IRR
                self._service(pin)

    def _service(self, pin: int) -> None:
        entry = self.entries[pin]
        if not self.lines[pin] or entry & RTE_MASKED:
            return
        if entry & RTE_LEVEL:
            if entry & RTE_REMOTE_IRR:
                return
            self.entries[pin] |= RTE_REMOTE_IRR
        self._deliver(entry & RTE_VECTOR, bool(entry & RTE_LEVEL))

    def read(self, offset: int, size: int) -> int:
        if offset == IOREGSEL:
            return self.select
        if offset == IOWIN:
            return self._read_register(self.select)
        return 0

    def write(self, offset: int, size: int, value: int) -> None:
        if offset == IOREGSEL:
            self.select = value & 0xFF
        elif offset == IOWIN:
            self._write_register(self.select, value)

    def _read_register(self, reg: int) -> int:
        if reg == REG_ID:
            return self.id << 24
        if reg == REG_VERSION:
            return VERSION_VALUE
        if reg == REG_ARBITRATION:
            return self.id << 24
        pin, high = divmod(reg - REG_REDTBL, 2)
        if reg < REG_REDTBL or pin >= PINS:
            return 0
        return self.destinations[pin] << 24 if high else self.entries[pin]

    def _write_register(self, reg: int, value: int) -> None:
        if reg == REG_ID:
            self.id = (value >> 24) & 0xF
            return
        pin, high = divmod(reg - REG_REDTBL, 2)
        if reg < REG_REDTBL or pin >= PINS:
            return
        if high:
            self.destinations[pin] = value >> 24
            return
        self.entries[pin] = (self.entries[pin] & RTE_REMOTE_IRR) | (value & RTE_WRITABLE)
        self._service(pin)  # unmasking an asserted line delivers it
