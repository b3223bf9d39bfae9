"""A fake block device and a tiny host adapter for driving AtaDisk in tests."""

from dataclasses import dataclass

from emu.ata import AtaDisk, AtaError, Completion, Request, TaskFile
from emu.storage.blockdev import SECTOR_SIZE


def taskfile(
    command: int, *, lba: int = 0, count: int = 0, features: int = 0, device: int = 0x40
) -> TaskFile:
    return TaskFile(command=command, features=features, lba=lba, count=count, device=device)


@dataclass
class Outcome:
    completion: Completion
    request: Request | None  # None when decode refused the command
    data: bytearray  # the buffer the command read into or wrote from

    @property
    def ok(self) -> bool:
        return not self.completion.failed


def issue(
    disk: AtaDisk, tf: TaskFile, data: bytes | None = None, *, buffer_size: int | None = None
) -> Outcome:
    """Decode and execute as a host adapter would, with one buffer.

    ``data`` fills the buffer (for writes); ``buffer_size`` overrides its size
    (to model a short or long PRDT); otherwise it is exactly ``nbytes``.
    """
    try:
        req = disk.decode(tf)
    except AtaError as err:
        return Outcome(err.completion, None, bytearray())
    size = req.nbytes if buffer_size is None else buffer_size
    buf = bytearray(size) if data is None else bytearray(data[:size].ljust(size, b"\0"))
    buffers = [memoryview(buf)] if size else []
    return Outcome(disk.execute(req, buffers), req, buf)


def pattern(sectors: int, seed: int = 1) -> bytes:
    """Distinct, recognisable bytes for each sector."""
    return b"".join(
        bytes([(seed + s) & 0xFF, (s >> 8) & 0xFF]) * (SECTOR_SIZE // 2) for s in range(sectors)
    )
