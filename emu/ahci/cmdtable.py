"""Command list entries and command tables in guest memory (AHCI 4.2.2, 4.2.3)."""

import struct
from collections.abc import Sequence

from emu.machine.memory import HostBusError, HostMemory

HEADER_SIZE = 32
CFIS_OFFSET = 0x00
PRDT_OFFSET = 0x80
PRD_SIZE = 16
PRD_DBC_MASK = 0x3FFFFF
PRD_I = 1 << 31

# A command header: DW0 (PRDTL in 31:16, flags), DW1 PRDBC, DW2 CTBA (128-byte aligned:
# bits 6:0 are reserved), DW3 CTBAU.
HEADER = struct.Struct("<IIII")
_PRD = struct.Struct("<IIxxxxI")  # DBA, DBAU, DW3 (DBC, I)
_unpack_prd = _PRD.unpack_from
# prdt_buffers remembers the walks of tables of up to this many entries, this many tables.
_REMEMBERED_ENTRIES = 256
_REMEMBERED_TABLES = 1024
_RAW_PRDTS: dict[int, struct.Struct] = {}  # entry count -> those entries as one bytes
PRDBC = struct.Struct("<I")  # DW1 of a command header, at PRDBC_OFFSET
PRDBC_OFFSET = 4


def header_outside(address: int) -> HostBusError:
    return HostBusError(f"command header at 0x{address:x} is outside guest RAM")


def _prd_outside(address: int) -> HostBusError:
    return HostBusError(f"PRD entry at 0x{address:x} is outside guest RAM")


def _read_prd(ram: memoryview, address: int) -> tuple[int, int, int]:
    try:
        return _PRD.unpack_from(ram, address)
    except (struct.error, OverflowError):
        raise _prd_outside(address) from None


def parse_prdt(ram: memoryview, table: int, count: int) -> list[tuple[int, int, bool]]:
    """[(address, length, interrupt)] of the ``count`` PRD entries of the table at ``table``."""
    pieces = []
    for index in range(count):
        dba, dbau, dw3 = _read_prd(ram, table + PRDT_OFFSET + index * PRD_SIZE)
        pieces.append(((dbau << 32) | (dba & ~1), (dw3 & PRD_DBC_MASK) + 1, bool(dw3 & PRD_I)))
    return pieces


def prdt_buffers(
    memory: HostMemory, table: int, count: int, nbytes: int, walked: dict | None = None
) -> tuple[Sequence[memoryview] | None, bool]:
    """Views of guest RAM that the first PRD entries of the table at ``table`` describe,
    covering exactly ``nbytes`` (the last piece cut short), and whether any of them has
    its I bit; None when the ``count`` entries describe fewer bytes (an overflow).
    Entries are fetched as needed, as an HBA does; HostBusError for RAM that is not there.
    Pieces that follow each other in RAM come as one view (the same bytes, in order).

    Drivers issue the same few PRDTs over and over (a buffer per slot): with ``walked``
    (a dict kept with ``memory``), the answer for a table is remembered by its bytes, so
    the same table costs one lookup the next time."""
    address = table + PRDT_OFFSET
    if walked is None or not 0 < count <= _REMEMBERED_ENTRIES:
        return _walk(memory, address, count, nbytes)
    raw = _RAW_PRDTS.get(count)
    if raw is None:
        raw = _RAW_PRDTS[count] = struct.Struct(f"{count * PRD_SIZE}s")
    try:
        key = (raw.unpack_from(memory.mem, address)[0], nbytes)
    except (struct.error, OverflowError):  # the table runs out of RAM: walk up to there
        return _walk(memory, address, count, nbytes)
    known = walked.get(key)
    if known is None:
        known = _walk(memory, address, count, nbytes)
        if known[0] is not None:
            if len(walked) >= _REMEMBERED_TABLES:
                walked.clear()
            walked[key] = known
    return known


def _walk(
    memory: HostMemory, address: int, count: int, nbytes: int
) -> tuple[tuple[memoryview, ...] | None, bool]:
    """prdt_buffers' walk of ``count`` PRD entries from ``address``."""
    ram = memory.mem
    ram_end = len(ram)
    runs = []
    flags = 0  # the entries' DW3s, ORed: their I bits
    start = end = -1  # the run of adjacent pieces not yet in ``runs``
    try:
        while nbytes > 0 and count:
            dba, dbau, dw3 = _unpack_prd(ram, address)
            base = (dbau << 32) | (dba & ~1)
            length = (dw3 & PRD_DBC_MASK) + 1
            if length > nbytes:
                length = nbytes
            if base + length > ram_end:
                memory.view(base, length)  # HostBusError, as for any DMA outside RAM
            if base != end:
                if end > start:
                    runs.append(ram[start:end])
                start = base
            end = base + length
            flags |= dw3
            nbytes -= length
            count -= 1
            address += PRD_SIZE
    except (struct.error, OverflowError):
        raise _prd_outside(address) from None
    if nbytes > 0:
        return None, False
    if end > start:
        runs.append(ram[start:end])
    return tuple(runs), bool(flags & PRD_I)


def write_prdbc(ram: memoryview, header: int, count: int) -> None:
    """Write PRDBC (DW1) of the command header at ``header``."""
    PRDBC.pack_into(ram, header + PRDBC_OFFSET, count)
