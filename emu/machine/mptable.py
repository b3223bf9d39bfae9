"""The Intel MultiProcessor Specification 1.4 tables that describe the board to an OS.

One processor (local APIC 0 at 0xFEE00000), the I/O APIC (id 1, 24 inputs at
0xFEC00000), PCI bus 0 and ISA bus 1 with their interrupt routing: ISA IRQ n on
I/O APIC input n (IRQ 0, the timer, on input 2, as PC firmware reports it), the
q35 PCI devices' INTA on input 16 (level, active low), LINT0 ExtINT and LINT1
NMI. An OS that finds the floating pointer (Linux scans 0xF0000-0xFFFFF) runs
the APICs in symmetric I/O mode, which is what it needs to start the local-APIC
timer and to route the UART's interrupt.
"""

import struct

from emu.machine import apic, ioapic

SPEC_REVISION = 4  # 1.4
IOAPIC_ID = 1
IOAPIC_VERSION = 0x20
LAPIC_VERSION = 0x14
PCI_BUS = 0
ISA_BUS = 1
TIMER_IRQ = 0
TIMER_PIN = 2
CASCADE_IRQ = 2  # no ISA device behind IRQ 2
ISA_IRQS = 16

ENTRY_PROCESSOR = 0
ENTRY_BUS = 1
ENTRY_IOAPIC = 2
ENTRY_IO_INTERRUPT = 3
ENTRY_LOCAL_INTERRUPT = 4
INT_VECTORED = 0
INT_NMI = 1
INT_EXTINT = 3
CPU_ENABLED_BSP = 0x03
IOAPIC_ENABLED = 0x01
FLAGS_CONFORMING = 0x0
FLAGS_LEVEL_LOW = 0x0F  # polarity active low (3), trigger level (3 << 2)
ALL_LAPICS = 0xFF

FLOATING_SIZE = 16
HEADER = struct.Struct("<4sHBB8s12sIHHIHBB")
FLOATING = struct.Struct("<4sIBBBB4x")


def checksum_fix(table: bytearray, at: int) -> None:
    """Set byte ``at`` so that all bytes of ``table`` sum to zero (mod 256)."""
    table[at] = 0
    table[at] = -sum(table) & 0xFF


def _interrupt(kind: int, entry: int, flags: int, bus: int, irq: int, dest: int, pin: int) -> bytes:
    return struct.pack("<BBHBBBB", entry, kind, flags, bus, irq, dest, pin)


def build(address: int, pci_interrupts: dict[int, int], cpu_signature: int, features: int) -> bytes:
    """The floating pointer at ``address`` followed by the configuration table.

    ``pci_interrupts`` maps a PCI device number on bus 0 to the I/O APIC input its
    INTA is wired to."""
    entries = [
        struct.pack(
            "<BBBBII8x",
            ENTRY_PROCESSOR,
            0,
            LAPIC_VERSION,
            CPU_ENABLED_BSP,
            cpu_signature,
            features,
        ),
        struct.pack("<BB6s", ENTRY_BUS, PCI_BUS, b"PCI   "),
        struct.pack("<BB6s", ENTRY_BUS, ISA_BUS, b"ISA   "),
        struct.pack("<BBBBI", ENTRY_IOAPIC, IOAPIC_ID, IOAPIC_VERSION, IOAPIC_ENABLED, ioapic.BASE),
    ]
    for irq in range(ISA_IRQS):
        if irq == CASCADE_IRQ:
            continue
        pin = TIMER_PIN if irq == TIMER_IRQ else irq
        entries.append(
            _interrupt(
                INT_VECTORED, ENTRY_IO_INTERRUPT, FLAGS_CONFORMING, ISA_BUS, irq, IOAPIC_ID, pin
            )
        )
    for device, pin in sorted(pci_interrupts.items()):
        entries.append(
            _interrupt(
                INT_VECTORED,
                ENTRY_IO_INTERRUPT,
                FLAGS_LEVEL_LOW,
                PCI_BUS,
                device << 2,
                IOAPIC_ID,
                pin,
            )
        )
    entries.append(
        _interrupt(INT_EXTINT, ENTRY_LOCAL_INTERRUPT, FLAGS_CONFORMING, ISA_BUS, 0, ALL_LAPICS, 0)
    )
    entries.append(
        _interrupt(INT_NMI, ENTRY_LOCAL_INTERRUPT, FLAGS_CONFORMING, ISA_BUS, 0, ALL_LAPICS, 1)
    )
    body = b"".join(entries)
    table = bytearray(
        HEADER.pack(
            b"PCMP",
            HEADER.size + len(body),
            SPEC_REVISION,
            0,
            b"AHCI-EMU",
            b"Q35 BOARD   ",
            0,
            0,
            len(entries),
            apic.BASE,
            0,
            0,
            0,
        )
        + body
    )
    checksum_fix(table, 7)
    floating = bytearray(
        FLOATING.pack(b"_MP_", address + FLOATING_SIZE, FLOATING_SIZE // 16, SPEC_REVISION, 0, 0)
    )
    checksum_fix(floating, 10)
    return bytes(floating + table)
