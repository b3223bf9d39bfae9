"""The I/O APIC: redirection entries, level-triggered delivery and EOI."""

from emu.machine import ioapic
from emu.machine.apic import EOI, SVR, LocalApic
from emu.machine.ioapic import IoApic


def make():
    delivered = []
    io = IoApic(lambda vector, level: delivered.append((vector, level)))
    return io, delivered


def program(io: IoApic, pin: int, value: int) -> None:
    io.write(ioapic.IOREGSEL, 4, ioapic.REG_REDTBL + 2 * pin)
    io.write(ioapic.IOWIN, 4, value)


def read_entry(io: IoApic, pin: int) -> int:
    io.write(ioapic.IOREGSEL, 4, ioapic.REG_REDTBL + 2 * pin)
    return io.read(ioapic.IOWIN, 4)


def test_version_and_masked_reset_state():
    io, _ = make()
    io.write(ioapic.IOREGSEL, 4, ioapic.REG_VERSION)
    assert io.read(ioapic.IOWIN, 4) == 0x00170020
    assert read_entry(io, 16) == ioapic.RTE_MASKED


def test_masked_line_delivers_nothing_until_unmasked():
    io, delivered = make()
    io.set_line(16, True)
    assert delivered == []
    program(io, 16, 0x62 | ioapic.RTE_LEVEL)
    assert delivered == [(0x62, True)]
    assert read_entry(io, 16) & ioapic.RTE_REMOTE_IRR


def test_level_interrupt_repeats_after_eoi_only_while_asserted():
    io, delivered = make()
    program(io, 16, 0x62 | ioapic.RTE_LEVEL)
    io.set_line(16, True)
    io.set_line(16, True)
    assert delivered == [(0x62, True)]  # remote IRR holds it until EOI
    io.end_of_interrupt(0x62)
    assert delivered == [(0x62, True)] * 2  # still asserted: again
    io.set_line(16, False)
    io.end_of_interrupt(0x62)
    assert len(delivered) == 2
    assert read_entry(io, 16) & ioapic.RTE_REMOTE_IRR == 0


def test_edge_interrupt_fires_on_rising_edges():
    io, delivered = make()
    program(io, 3, 0x40)
    io.set_line(3, True)
    io.set_line(3, True)
    io.set_line(3, False)
    io.set_line(3, True)
    assert delivered == [(0x40, False)] * 2


def test_local_apic_eoi_of_a_level_vector_reaches_the_io_apic():
    retired = []
    lapic = LocalApic(on_eoi=retired.append)
    lapic.write(SVR, 4, 0x1FF)
    lapic.accept(0x62, level=True)
    lapic.acknowledge(0x62)
    lapic.write(EOI, 4, 0)
    lapic.accept(0x41)
    lapic.acknowledge(0x41)
    lapic.write(EOI, 4, 0)
    assert retired == [0x62]  # edge-triggered vectors are not broadcast
