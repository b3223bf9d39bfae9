"""Command list entries and command tables in guest memory (AHCI 4.2.2, 4.2.3)."""

import struct

from emu.machine.memory import HostBusError, HostMemory

HEADER_SIZE = 32
CFIS_OFFSET = 0x00
PRDT_OFFSET = 0x80
PRD_SIZE = 16
PRD_DBC_MASK = 0x3FFFFF
PRD_I = 1 << 31

_HEADER = struct.Struct("<IIII")  # DW0 flags/PRDTL, DW1 PRDBC, DW2 CTBA, DW3 CTBAU
_PRD = struct.Struct("<IIxxxxI")  # DBA, DBAU, DW3 (DBC, I)
_PRDBC = struct.Struct("<I")


def read_header(ram: memoryview, address: int) -> tuple[int, int]:
    """(PRDTL, command table base) of the command header at ``address``; the table is
    128-byte aligned. HostBusError when the header is not in RAM."""
    try:
        dw0, _prdbc, ctba, ctbau = _HEADER.unpack_from(ram, address)
    except (struct.error, OverflowError):
        raise HostBusError(f"command header at 0x{address:x} is outside guest RAM") from None
    return dw0 >> 16, (ctbau << 32) | (ctba & ~0x7F)


def _read_prd(ram: memoryview, address: int) -> tuple[int, int, int]:
    try:
        return _PRD.unpack_from(ram, address)
    except (struct.error, OverflowError):
        raise HostBusError(f"PRD entry at 0x{address:x} is outside guest RAM") from None


def parse_prdt(ram: memoryview, table: int, count: int) -> list[tuple[int, int, bool]]:
    """[(address, length, interrupt)] of the ``count`` PRD entries of the table at ``table``."""
    pieces = []
    for index in range(count):
        dba, dbau, dw3 = _read_prd(ram, table + PRDT_OFFSET + index * PRD_SIZE)
        pieces.append(((dbau << 32) | (dba & ~1), (dw3 & PRD_DBC_MASK) + 1, bool(dw3 & PRD_I)))
    return pieces


def prdt_buffers(
    memory: HostMemory, table: int, count: int, nbytes: int
) -> tuple[list[memoryview] | None, bool]:
    """Views of guest RAM that the first PRD entries of the table at ``table`` describe,
    covering exactly ``nbytes`` (the last piece cut short), and whether any of them has
    its I bit; None when the ``count`` entries describe fewer bytes (an overflow).
    Entries are fetched as needed, as an HBA does; HostBusError for RAM that is not there."""
    buffers = []
    interrupt = False
    address = table + PRDT_OFFSET
    ram = memory.mem
    view = memory.view
    for _ in range(count):
        if nbytes <= 0:
            break
        dba, dbau, dw3 = _read_prd(ram, address)
        length = (dw3 & PRD_DBC_MASK) + 1
        if length > nbytes:
            length = nbytes
        buffers.append(view((dbau << 32) | (dba & ~1), length))
        interrupt = interrupt or bool(dw3 & PRD_I)
        nbytes -= length
        address += PRD_SIZE
    if nbytes > 0:
        return None, False
    return buffers, interrupt


def write_prdbc(ram: memoryview, header: int, count: int) -> None:
    """Write PRDBC (DW1) of the command header at ``header``."""
    _PRDBC.pack_into(ram, header + 4, count)
