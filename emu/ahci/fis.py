"""Frame Information Structures (SATA 3.x, 10.5) and the received-FIS area (AHCI 4.2.1).

One writer per FIS the HBA posts into the guest's FIS receive area, plus the
parser of the Register Host-to-Device FIS that starts every command.
"""

import struct

from emu.ata.errors import GOOD
from emu.ata.taskfile import Completion, TaskFile

TYPE_REG_H2D = 0x27
TYPE_REG_D2H = 0x34
TYPE_DMA_SETUP = 0x41
TYPE_PIO_SETUP = 0x5F
TYPE_SET_DEVICE_BITS = 0xA1

H2D_C = 0x80  # command (1) or device control (0) update
FLAG_I = 0x40  # interrupt bit of D2H, PIO Setup, DMA Setup and SDB FISes
FLAG_D = 0x20  # data direction of PIO/DMA Setup: device to host
CONTROL_SRST = 0x04

# Offsets of each FIS in the 256-byte received-FIS area (AHCI 4.2.1).
RFIS_DSFIS = 0x00
RFIS_PSFIS = 0x20
RFIS_RFIS = 0x40
RFIS_SDBFIS = 0x58
RFIS_SIZE = 0x100

_H2D = struct.Struct("<BBBBIIHBB")  # type, flags, command, features, 2 LBA words, count, ...
_D2H = struct.Struct("<BBBBBBBBBBBxHxxxxxx")  # 20 bytes
_PIO_SETUP = struct.Struct("<BBBBBBBBBBBxHxBHxx")  # 20 bytes
_DMA_SETUP = struct.Struct("<BBxxQxxxxIIxxxx")  # 28 bytes
_SDB = struct.Struct("<BBBBI")  # 8 bytes
_D2H_GOOD = _D2H.pack(TYPE_REG_D2H, FLAG_I, GOOD.status, 0, 0, 0, 0, 0, 0, 0, 0, 0)
_D2H_GOOD_NO_I = _D2H.pack(TYPE_REG_D2H, 0, GOOD.status, 0, 0, 0, 0, 0, 0, 0, 0, 0)


def read_h2d(
    buffer: bytes | memoryview, offset: int = 0
) -> tuple[int, int, int, int, int, int, int, int]:
    """(FIS type, flags byte, command, features, LBA, count, device, control) of a Register
    H2D FIS at ``offset``, the task file registers expanded to full widths (as TaskFile)."""
    kind, flags, command, features, low, high, count, _icc, control = _H2D.unpack_from(
        buffer, offset
    )
    # low: LBA(23:0) | DEVICE << 24; high: LBA(47:24) | FEATURES(15:8) << 24
    return (
        kind,
        flags,
        command,
        features | (high >> 24) << 8,
        (low & 0xFFFFFF) | (high & 0xFFFFFF) << 24,
        count,
        low >> 24,
        control,
    )


def parse_h2d(buffer: bytes | memoryview, offset: int = 0) -> tuple[int, int, TaskFile]:
    """(FIS type, flags byte, task file) of a Register H2D FIS at ``offset``."""
    kind, flags, *registers = read_h2d(buffer, offset)
    return kind, flags, TaskFile(*registers)


def _lba_bytes(lba: int) -> tuple[int, int, int, int, int, int]:
    return (
        lba & 0xFF,
        (lba >> 8) & 0xFF,
        (lba >> 16) & 0xFF,
        (lba >> 24) & 0xFF,
        (lba >> 32) & 0xFF,
        (lba >> 40) & 0xFF,
    )


def write_d2h(area: memoryview, c: Completion, interrupt: bool = True) -> None:
    if c is GOOD:  # most commands end so: post the bytes packed once
        area[RFIS_RFIS : RFIS_RFIS + _D2H.size] = _D2H_GOOD if interrupt else _D2H_GOOD_NO_I
        return
    l0, l1, l2, l3, l4, l5 = _lba_bytes(c.lba)
    _D2H.pack_into(
        area,
        RFIS_RFIS,
        TYPE_REG_D2H,
        FLAG_I if interrupt else 0,
        c.status,
        c.error,
        l0,
        l1,
        l2,
        c.device,
        l3,
        l4,
        l5,
        c.count,
    )


def write_pio_setup(
    area: memoryview,
    c: Completion,
    *,
    to_host: bool,
    interrupt: bool,
    transfer_count: int,
    status: int,
) -> None:
    """PIO Setup: ``status`` is the status while the data moves, ``c.status`` the E_Status."""
    l0, l1, l2, l3, l4, l5 = _lba_bytes(c.lba)
    flags = (FLAG_D if to_host else 0) | (FLAG_I if interrupt else 0)
    _PIO_SETUP.pack_into(
        area,
        RFIS_PSFIS,
        TYPE_PIO_SETUP,
        flags,
        status,
        c.error,
        l0,
        l1,
        l2,
        c.device,
        l3,
        l4,
        l5,
        c.count,
        c.status,
        transfer_count & 0xFFFF,
    )


def write_dma_setup(area: memoryview, tag: int, *, to_host: bool, transfer_count: int) -> None:
    """DMA Setup for a queued command: buffer identifier = tag, auto-activate set."""
    flags = (FLAG_D if to_host else 0) | 0x80
    _DMA_SETUP.pack_into(area, RFIS_DSFIS, TYPE_DMA_SETUP, flags, tag, 0, transfer_count)


def write_sdb(area: memoryview, status: int, error: int, sactive: int) -> None:
    """Set Device Bits with I set: ``sactive`` names the queued commands it completes."""
    _SDB.pack_into(area, RFIS_SDBFIS, TYPE_SET_DEVICE_BITS, FLAG_I, status & 0x77, error, sactive)
