"""Faults the disk itself reports: media errors, IDNF, ABRT, device fault, power cut.

:class:`DiskFaults` sits between :meth:`AtaDisk.execute` and the command: it asks
the run's :class:`~emu.faults.plan.FaultPlan` whether an "ata" fault fires on
this command and, if one does, does what a failing disk does.

- ``media-error``: the sectors before the first bad one are transferred; a read
  (or verify) ends with UNC, a write with ABRT (ACS-3 lists no UNC among the
  write commands' errors). Either way the LBA field holds the first bad sector,
  the "LBA of first unrecoverable error" of ATA8-ACS, and a queued command's
  error lands in the NCQ Command Error log (log 10h) as for any failure.
- ``idnf``: ID not found at the command's first LBA; ``abrt``: command aborted;
  ``df``: DEVICE FAULT and ERR in the status, ABRT in the error register.
- ``power-cut``: the run ends at once (:class:`PowerCut`); the write cache keeps
  what :class:`~emu.ata.cache.VolatileCache` says it may.
"""

from collections.abc import Sequence
from typing import TYPE_CHECKING

from emu.ata.errors import STATUS_FAILED, AtaError
from emu.ata.taskfile import ERROR_ABRT, STATUS_DF, Completion, Request
from emu.errors import RunStop
from emu.storage.blockdev import SECTOR_SIZE
from emu.storage.errors import StorageError

if TYPE_CHECKING:
    from emu.ata.cache import VolatileCache
    from emu.faults.plan import FaultPlan


class PowerCut(RunStop):
    """A power-cut fault fired: the run ends at once (exit status 137, as a SIGKILL)."""

    exit_status = 137


class DiskFaults:
    """The "ata" faults of ``plan`` for the disk on ``port`` (``cache``: its write cache,
    when the plan holds a power cut)."""

    def __init__(self, plan: "FaultPlan", port: int, cache: "VolatileCache | None") -> None:
        self.plan = plan
        self.port = port
        self.cache = cache

    def inject(
        self, req: Request, extent: tuple[int, int], kind: str, dev, buffers: Sequence[memoryview]
    ) -> AtaError | None:
        """The error a fault gives this command (after any partial transfer), or None.

        ``extent`` is the command's (first LBA, sectors), (0, 0) if it addresses none;
        ``kind`` is "read", "write" or "" for the media-error transfer."""
        tf = req.taskfile
        lba, count = extent
        fault = self.plan.check("ata", self.port, tf.command, lba, count, req.tag)
        if fault is None:
            return None
        if fault.kind == "power-cut":
            self._power_cut(tf.command)
        if fault.kind == "media-error":
            first_bad = max(lba, fault.trigger.lba[0])
            _transfer_prefix(kind, dev, lba, (first_bad - lba) * SECTOR_SIZE, buffers)
            if kind == "write":
                return AtaError.abrt(first_bad)
            return AtaError.unc(first_bad)
        if fault.kind == "idnf":
            return AtaError.idnf(lba)
        if fault.kind == "abrt":
            return AtaError.abrt(lba)
        return AtaError(Completion(STATUS_FAILED | STATUS_DF, ERROR_ABRT, lba))

    def _power_cut(self, opcode: int) -> None:
        kept = lost = 0
        if self.cache is not None:
            kept, lost = self.cache.cut(self.plan.random("power-cut"))
        raise PowerCut(
            f"power cut at command {opcode:#04x} on port {self.port}: "
            f"{kept} cached sector writes kept, {lost} lost"
        )


def _transfer_prefix(kind: str, dev, lba: int, nbytes: int, buffers) -> None:
    """Move the first ``nbytes`` of a command's data, the part before its bad sector."""
    if not nbytes or not kind:
        return
    pieces, left = [], nbytes
    for buf in buffers:
        if left <= 0:
            break
        pieces.append(buf[:left])
        left -= len(pieces[-1])
    if sum(map(len, pieces)) < nbytes:
        return  # the PRDT is short: the adapter reports that, nothing moves
    try:
        if kind == "read":
            dev.readv(lba * SECTOR_SIZE, pieces)
        else:
            dev.writev(lba * SECTOR_SIZE, pieces)
    except StorageError:
        pass  # the command fails at its bad sector anyway
