"""Command list entries and command tables in guest memory (AHCI 4.2.2, 4.2.3)."""

import struct
from dataclasses import dataclass

HEADER_SIZE = 32
CFIS_OFFSET = 0x00
ACMD_OFFSET = 0x40
PRDT_OFFSET = 0x80
PRD_SIZE = 16
PRD_DBC_MASK = 0x3FFFFF
PRD_I = 1 << 31

_HEADER = struct.Struct("<IIII")  # DW0 flags/PRDTL, DW1 PRDBC, DW2 CTBA, DW3 CTBAU
_PRD = struct.Struct("<IIxxxxI")  # DBA, DBAU, DW3 (DBC, I)

# Command header DW0.
HDR_CFL_MASK = 0x1F
HDR_A = 1 << 5
HDR_W = 1 << 6
HDR_P = 1 << 7
HDR_R = 1 << 8
HDR_B = 1 << 9
HDR_C = 1 << 10


@dataclass(slots=True)
class CommandHeader:
    flags: int
    prdtl: int
    ctba: int  # 64-bit command table base

    @property
    def cfl(self) -> int:
        return self.flags & HDR_CFL_MASK

    @property
    def write(self) -> bool:
        return bool(self.flags & HDR_W)


def parse_header(entry: memoryview) -> CommandHeader:
    dw0, _prdbc, ctba, ctbau = _HEADER.unpack_from(entry)
    return CommandHeader(dw0 & 0xFFFF, dw0 >> 16, (ctbau << 32) | (ctba & ~0x7F))


def parse_prdt(table: memoryview, count: int) -> list[tuple[int, int, bool]]:
    """[(address, length, interrupt)] of ``count`` PRD entries following the command table."""
    pieces = []
    for index in range(count):
        dba, dbau, dw3 = _PRD.unpack_from(table, PRDT_OFFSET + index * PRD_SIZE)
        pieces.append(((dbau << 32) | (dba & ~1), (dw3 & PRD_DBC_MASK) + 1, bool(dw3 & PRD_I)))
    return pieces


def write_prdbc(entry: memoryview, count: int) -> None:
    struct.pack_into("<I", entry, 4, count)
