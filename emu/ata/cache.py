"""The disk's volatile write cache, modelled for power cuts.

Writes land in the cache (whole sectors, in order) and reach the medium at a
flush; reads see the cache over the medium. A power cut keeps what a disk with
a volatile write cache may keep (ATA8-ACS 4.11 and FLUSH CACHE): everything up
to the last completed flush, plus any subset of the sector writes after it
(chosen by the run's seed), applied in the order they were written. A sector
is written whole or not at all, never torn.

Only runs with a power-cut fault pay for the model; the others write straight
to the medium, where the end of the run makes every write durable anyway.
"""

import random
from collections.abc import Sequence

from emu.storage.blockdev import SECTOR_SIZE, BlockDevice


class VolatileCache:
    """A :class:`BlockDevice` over ``dev`` that holds writes until :meth:`flush`."""

    def __init__(self, dev: BlockDevice) -> None:
        self._dev = dev
        self._log: list[tuple[int, bytes]] = []  # (sector, contents) since the last flush
        self._latest: dict[int, bytes] = {}  # sector -> what it reads back as now

    @property
    def size(self) -> int:
        return self._dev.size

    @property
    def read_only(self) -> bool:
        return self._dev.read_only

    @property
    def identity(self) -> str:
        return self._dev.identity

    @property
    def pending(self) -> int:
        """Sector writes not yet on the medium."""
        return len(self._log)

    def sources(self, offset: int, length: int) -> list[tuple[int, int, str | None]] | None:
        sources = getattr(self._dev, "sources", None)
        return None if sources is None else sources(offset, length)

    def readv(self, offset: int, buffers: Sequence[memoryview]) -> None:
        self._dev.readv(offset, buffers)
        if not self._latest:
            return
        sector = offset // SECTOR_SIZE
        for buf in buffers:
            for pos in range(0, len(buf), SECTOR_SIZE):
                cached = self._latest.get(sector)
                if cached is not None:
                    buf[pos : pos + SECTOR_SIZE] = cached
                sector += 1

    def writev(self, offset: int, buffers: Sequence[memoryview]) -> None:
        if self._dev.read_only:
            self._dev.writev(offset, buffers)  # refused as the medium refuses it
        data = b"".join(buffers)
        first = offset // SECTOR_SIZE
        for i in range(len(data) // SECTOR_SIZE):
            contents = data[i * SECTOR_SIZE : (i + 1) * SECTOR_SIZE]
            self._log.append((first + i, contents))
            self._latest[first + i] = contents

    def flush(self) -> None:
        """Everything cached reaches the medium, then the medium makes it durable."""
        self._write_back(self._log)
        self._dev.flush()

    def discard(self, offset: int, length: int) -> None:
        self.flush()  # earlier writes first, so the discard is not undone by them
        self._dev.discard(offset, length)

    def cut(self, rng: random.Random) -> tuple[int, int]:
        """The power goes: a random subset of the cached sector writes reaches the medium
        (in order), the rest is lost. Returns (kept, lost)."""
        kept = [entry for entry in self._log if rng.random() < 0.5]
        lost = len(self._log) - len(kept)
        self._write_back(kept)
        self._dev.flush()
        return len(kept), lost

    def close(self) -> None:
        self._dev.close()

    def _write_back(self, entries: list[tuple[int, bytes]]) -> None:
        """Write ``entries`` in order, each run of consecutive sectors as one write."""
        run: list[memoryview] = []
        start = 0
        for sector, contents in entries:
            if run and sector != start + len(run):
                self._dev.writev(start * SECTOR_SIZE, run)
                run = []
            if not run:
                start = sector
            run.append(memoryview(contents))
        if run:
            self._dev.writev(start * SECTOR_SIZE, run)
        self._log = []
        self._latest = {}
