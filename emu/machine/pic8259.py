"""The two 8259A interrupt controllers of a PC (ports 0x20-0x21, 0xA0-0xA1), masked.

On this board every interrupt goes through the I/O APIC, and the 8259s deliver
nothing: they are here because an OS checks that they exist (Linux writes the
master's mask register and reads it back) before it numbers the ISA interrupts
0-15 and masks the 8259s for good. They take the initialization sequence
(ICW1-ICW4), hold their mask (OCW1) and read zero for IRR and ISR.
"""

ICW1 = 0x10  # a command-port write with this bit starts initialization
ICW1_NEEDS_ICW4 = 0x01
ICW1_SINGLE = 0x02
MASTER_BASE = 0x20
SLAVE_BASE = 0xA0
LENGTH = 2


class Pic8259:
    """One 8259A: ``read``/``write`` at offset 0 (command) and 1 (data)."""

    def __init__(self) -> None:
        self.imr = 0xFF
        self._icw_expected: list[str] = []

    def read(self, offset: int, size: int) -> int:
        return self.imr if offset == 1 else 0  # IRR and ISR: nothing requested or in service

    def write(self, offset: int, size: int, value: int) -> None:
        value &= 0xFF
        if offset == 0:
            if value & ICW1:
                self.imr = 0
                self._icw_expected = ["vector"]
                if not value & ICW1_SINGLE:
                    self._icw_expected.append("cascade")
                if value & ICW1_NEEDS_ICW4:
                    self._icw_expected.append("mode")
            return  # OCW2 (EOI) and OCW3 (IRR/ISR select): nothing is ever pending
        if self._icw_expected:
            self._icw_expected.pop(0)
        else:
            self.imr = value
