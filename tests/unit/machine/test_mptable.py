"""The MP table Linux finds the APICs and the interrupt routing in (MP spec 1.4)."""

import struct

from emu.machine import mptable

ADDRESS = 0xF0000


def tables():
    data = mptable.build(ADDRESS, {31: 16}, 0x306C4, 0x078BFBFF)
    return data[:16], data[16:]


def entries(table: bytes) -> list[bytes]:
    count = struct.unpack_from("<H", table, 34)[0]
    out, at = [], 44
    for _ in range(count):
        size = 20 if table[at] == mptable.ENTRY_PROCESSOR else 8
        out.append(table[at : at + size])
        at += size
    assert at == struct.unpack_from("<H", table, 4)[0]  # base table length covers them all
    return out


def test_floating_pointer_is_16_bytes_checksummed_and_points_at_the_table():
    floating, _ = tables()
    signature, pointer, length, revision = struct.unpack_from("<4sIBB", floating)
    assert (signature, pointer, length, revision) == (b"_MP_", ADDRESS + 16, 1, 4)
    assert sum(floating) % 256 == 0
    assert floating[11] == 0  # feature byte 1: the configuration table is present


def test_configuration_table_is_checksummed_and_names_the_local_apic():
    _, table = tables()
    assert table[:4] == b"PCMP"
    assert sum(table[: struct.unpack_from("<H", table, 4)[0]]) % 256 == 0
    assert struct.unpack_from("<I", table, 36)[0] == 0xFEE00000


def test_one_boot_processor_and_the_io_apic():
    _, table = tables()
    kinds = [e[0] for e in entries(table)]
    assert kinds.count(mptable.ENTRY_PROCESSOR) == 1
    cpu = next(e for e in entries(table) if e[0] == mptable.ENTRY_PROCESSOR)
    assert cpu[1] == 0 and cpu[3] == 0x03  # APIC id 0, enabled, bootstrap
    ioapic = next(e for e in entries(table) if e[0] == mptable.ENTRY_IOAPIC)
    assert struct.unpack_from("<BBBBI", ioapic) == (2, 1, 0x20, 1, 0xFEC00000)


def test_interrupt_routing_timer_on_pin_2_uart_on_4_ahci_on_16_level_low():
    _, table = tables()
    routes = {
        (e[4], e[5]): (e[7], struct.unpack_from("<H", e, 2)[0])
        for e in entries(table)
        if e[0] == mptable.ENTRY_IO_INTERRUPT
    }
    assert routes[(mptable.ISA_BUS, 0)] == (2, 0)
    assert routes[(mptable.ISA_BUS, 4)] == (4, 0)
    assert (mptable.ISA_BUS, 2) not in routes
    assert routes[(mptable.PCI_BUS, 31 << 2)] == (16, 0x0F)
    local = [e for e in entries(table) if e[0] == mptable.ENTRY_LOCAL_INTERRUPT]
    assert [(e[1], e[7]) for e in local] == [(3, 0), (1, 1)]  # LINT0 ExtINT, LINT1 NMI
