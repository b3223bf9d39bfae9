"""An in-memory block device for tests of the layers above storage (ATA, the HBA, the
board), so that they do not depend on image files."""

from collections.abc import Sequence

from emu.storage.blockdev import SECTOR_SIZE
from emu.storage.errors import MediumError, ReadOnlyError

ZERO_SECTOR = bytes(SECTOR_SIZE)


class MemoryDevice:
    """A sparse in-memory BlockDevice that logs calls and can be told to fail.

    It asserts the block-device contract (sector-aligned, in range), so a test
    also catches the ATA layer calling it wrongly.
    """

    def __init__(self, sectors: int, *, read_only: bool = False, identity: str = "mem:0") -> None:
        self.size = sectors * SECTOR_SIZE
        self.read_only = read_only
        self.identity = identity
        self.sectors: dict[int, bytes] = {}
        self.calls: list[tuple] = []
        self.failing: set[str] = set()  # any of "readv", "writev", "flush", "discard"

    def _check(self, op: str, offset: int, length: int) -> None:
        assert offset % SECTOR_SIZE == 0 and length % SECTOR_SIZE == 0, (op, offset, length)
        assert offset >= 0 and offset + length <= self.size, (op, offset, length)
        self.calls.append((op, offset, length))
        if op in self.failing:
            raise MediumError(f"injected {op} failure")

    def readv(self, offset: int, buffers: Sequence[memoryview]) -> None:
        total = sum(len(b) for b in buffers)
        self._check("readv", offset, total)
        first = offset // SECTOR_SIZE
        data = b"".join(
            self.sectors.get(s, ZERO_SECTOR) for s in range(first, first + total // SECTOR_SIZE)
        )
        pos = 0
        for buf in buffers:
            buf[:] = data[pos : pos + len(buf)]
            pos += len(buf)

    def sources(self, offset: int, length: int) -> list[tuple[int, int, str | None]]:
        """Sectors never written read as zeros (None); the others come from the device,
        named by its identity."""
        pieces: list[tuple[int, int, str | None]] = []
        for sector in range(offset // SECTOR_SIZE, (offset + length) // SECTOR_SIZE):
            source = self.identity if sector in self.sectors else None
            start = sector * SECTOR_SIZE
            if pieces and pieces[-1][2] == source:
                first, size, _ = pieces[-1]
                pieces[-1] = (first, size + SECTOR_SIZE, source)
            else:
                pieces.append((start, SECTOR_SIZE, source))
        return pieces

    def writev(self, offset: int, buffers: Sequence[memoryview]) -> None:
        data = b"".join(buffers)
        if self.read_only:
            raise ReadOnlyError("read-only")
        self._check("writev", offset, len(data))
        first = offset // SECTOR_SIZE
        for i in range(len(data) // SECTOR_SIZE):
            self.sectors[first + i] = data[i * SECTOR_SIZE : (i + 1) * SECTOR_SIZE]

    def flush(self) -> None:
        self.calls.append(("flush",))
        if "flush" in self.failing:
            raise MediumError("injected flush failure")

    def discard(self, offset: int, length: int) -> None:
        if self.read_only:
            raise ReadOnlyError("read-only")
        self._check("discard", offset, length)
        first = offset // SECTOR_SIZE
        for s in range(first, first + length // SECTOR_SIZE):
            self.sectors.pop(s, None)

    def close(self) -> None:
        pass

    def ops(self, name: str) -> list[tuple]:
        return [c for c in self.calls if c[0] == name]
