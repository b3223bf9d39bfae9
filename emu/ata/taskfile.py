"""The ATA register interface between a host adapter and the disk.

A host adapter (AHCI here) turns a Register Host-to-Device FIS into a
:class:`TaskFile`, asks :meth:`AtaDisk.decode` what the command needs, builds
the data buffers, calls :meth:`AtaDisk.execute`, and turns the
:class:`Completion` into a Device-to-Host FIS (or a Set Device Bits FIS for NCQ).
"""

from dataclasses import dataclass
from enum import IntEnum

# Status register bits (ATA8-ACS 6.2; QEMU's IDE core reports DRDY|DSC when idle).
STATUS_ERR = 0x01
STATUS_DRQ = 0x08
STATUS_DSC = 0x10
STATUS_DF = 0x20
STATUS_DRDY = 0x40
STATUS_BSY = 0x80

# Error register bits.
ERROR_ABRT = 0x04
ERROR_IDNF = 0x10
ERROR_UNC = 0x40
ERROR_ICRC = 0x80


class Protocol(IntEnum):
    """How a command moves its data (ATA8-ACS protocol column)."""

    NON_DATA = 0
    PIO_IN = 1
    PIO_OUT = 2
    DMA_IN = 3
    DMA_OUT = 4
    FPDMA_IN = 5  # READ FPDMA QUEUED (NCQ)
    FPDMA_OUT = 6  # WRITE FPDMA QUEUED (NCQ)
    DIAGNOSTIC = 7  # EXECUTE DEVICE DIAGNOSTIC: completes with the signature


@dataclass(slots=True)
class TaskFile:
    """The command registers of a Register H2D FIS, expanded to full widths."""

    command: int
    features: int = 0  # 16 bits: Features(7:0) | Features(15:8) << 8
    lba: int = 0  # 48 bits: LBA(23:0) | LBA(47:24) << 24
    count: int = 0  # 16 bits: Count(7:0) | Count(15:8) << 8
    device: int = 0
    control: int = 0


@dataclass(slots=True)
class Request:
    """What a decoded command needs from the host adapter.

    ``nbytes`` is the exact data length the command transfers (0 for
    non-data); ``tag`` is the NCQ tag for queued commands, else None. ``lba`` and
    ``count`` are a sector command's extent (first sector, number of sectors), read
    from the task file once by its addressing mode; 0 for other commands.
    """

    taskfile: TaskFile
    protocol: Protocol
    nbytes: int = 0
    tag: int | None = None
    lba: int = 0
    count: int = 0


@dataclass(slots=True, frozen=True)
class Completion:
    """What the device reports when a command ends (the D2H FIS contents)."""

    status: int
    error: int = 0
    lba: int = 0
    count: int = 0
    device: int = 0

    @property
    def failed(self) -> bool:
        return bool(self.status & STATUS_ERR)
