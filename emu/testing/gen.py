"""Generation markers, the host side of the ``gen`` guest (firmware/guests/gen.c).

A marker sector for LBA ``L`` and generation ``G`` (1..65535), little-endian::

    bytes 0-7      b"GENMARK1"
    bytes 8-15     L
    bytes 16-19    G
    bytes 20-23    0
    qword i, 3-63  G << 48 | (L & 0xFFFFFFFFFF) << 8 | i

A sector is generation ``G`` when it is exactly the marker for its own LBA and
``G``, generation 0 when it is all zeros, and :data:`UNRECOGNISED` (-1)
otherwise. Tests write markers straight into images (through the image stack,
no guest needed) and read what a disk holds the same way, to compare with what
the guest printed.
"""

from __future__ import annotations

import os
import struct
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from uuid import UUID

SECTOR = 512
MAGIC = b"GENMARK1"
MAX_GENERATION = 0xFFFF
UNRECOGNISED = -1
_HEADER = struct.Struct("<8sQI4x")
_FILLER = struct.Struct("<61Q")
_ZERO = bytes(SECTOR)
_CHUNK = 2048  # sectors per read or write: one 1 MiB image block


def marker(lba: int, generation: int) -> bytes:
    """The 512 bytes of the marker for ``lba`` and ``generation`` (1..65535)."""
    if not 1 <= generation <= MAX_GENERATION:
        raise ValueError(f"generation {generation} is outside 1..{MAX_GENERATION}")
    if not 0 <= lba < 1 << 64:
        raise ValueError(f"LBA {lba} out of range")
    high = generation << 48 | (lba & 0xFFFFFFFFFF) << 8
    return _HEADER.pack(MAGIC, lba, generation) + _FILLER.pack(*(high | i for i in range(3, 64)))


def markers(lba: int, count: int, generation: int) -> bytes:
    """``count`` consecutive marker sectors from ``lba`` (zeros for generation 0)."""
    if generation == 0:
        return bytes(count * SECTOR)
    return b"".join(marker(lba + n, generation) for n in range(count))


def classify(sector: bytes | memoryview, lba: int) -> int:
    """What one sector at ``lba`` holds: its generation, 0 for zeros, or UNRECOGNISED."""
    sector = bytes(sector)
    if len(sector) != SECTOR:
        raise ValueError(f"a sector is {SECTOR} bytes, not {len(sector)}")
    if sector[:8] == MAGIC:
        _, at, generation = _HEADER.unpack_from(sector)
        if at == lba and 1 <= generation <= MAX_GENERATION and sector == marker(lba, generation):
            return generation
        return UNRECOGNISED
    return 0 if sector == _ZERO else UNRECOGNISED


@dataclass(frozen=True)
class GenRange:
    """Sectors ``first..last`` of a port's disk, all holding ``generation``
    (0: zeros; None: unrecognised data). As the guest prints it:
    ``gen: port P lba FIRST..LAST generation G`` (or ``unrecognised``)."""

    port: int
    first: int
    last: int
    generation: int | None

    @property
    def count(self) -> int:
        return self.last - self.first + 1

    def __str__(self) -> str:
        what = "unrecognised" if self.generation is None else f"generation {self.generation}"
        return f"port {self.port} lba {self.first}..{self.last} {what}"


def runs(values: Iterable[int], lba: int, port: int = 0) -> list[GenRange]:
    """Per-sector values (from :func:`classify`) from ``lba`` as runs of equal sectors."""
    out: list[GenRange] = []
    start, current = lba, None
    at = lba
    for at, value in enumerate(values, lba):
        if current is not None and value != current:
            out.append(_range(port, start, at - 1, current))
            start = at
        current = value
    if current is not None:
        out.append(_range(port, start, at, current))
    return out


def expected(*layers: tuple[int, int, int], port: int = 0) -> list[GenRange]:
    """The runs a disk shows after writing ``(lba, count, generation)`` layers in order,
    later ones on top, over a zeroed disk; only the sectors some layer covers."""
    sectors: dict[int, int] = {}
    for lba, count, generation in layers:
        for at in range(lba, lba + count):
            sectors[at] = generation
    out: list[GenRange] = []
    for at in sorted(sectors):
        gen = sectors[at]
        if out and out[-1].last == at - 1 and out[-1].generation == gen:
            out[-1] = GenRange(port, out[-1].first, at, gen)
        else:
            out.append(GenRange(port, at, at, gen))
    return out


def lost_generations(flushed: Iterable[GenRange], found: Iterable[GenRange]) -> list[str]:
    """Flushed writes the disk lost: every sector of a ``flushed`` range (the gen guest's
    ``loop`` lines, oldest first) must hold that generation or a later one (a later
    write may have landed, flushed or not), per ``found`` (what the disk holds now).
    Returns one message per lost range; empty if nothing was lost."""
    latest: dict[tuple[int, int], int] = {}
    for r in flushed:
        for lba in range(r.first, r.last + 1):
            latest[r.port, lba] = max(latest.get((r.port, lba), 0), r.generation or 0)
    holds = {(r.port, lba): r.generation for r in found for lba in range(r.first, r.last + 1)}
    lost: list[GenRange] = []
    for (port, lba), gen in sorted(latest.items()):
        have = holds.get((port, lba), 0)
        if have is None or have < gen:
            lost.append(GenRange(port, lba, lba, gen))
    return [f"{r}: flushed, but the disk holds {holds.get((r.port, r.first))}" for r in lost]


def _range(port: int, first: int, last: int, value: int) -> GenRange:
    return GenRange(port, first, last, None if value == UNRECOGNISED else value)


def write_generation(image: str | os.PathLike, lba: int, count: int, generation: int) -> None:
    """Write markers of ``generation`` (0: zeros) on ``lba..lba+count-1`` of an image
    (raw, VDI, or the leaf of a chain; its parents are found as ``run --disk`` finds
    them), through the image stack, and flush."""
    from emu.storage.chain import open_chain

    with open_chain(os.fspath(image)) as disk:
        for start in range(lba, lba + count, _CHUNK):
            n = min(_CHUNK, lba + count - start)
            disk.writev(start * SECTOR, [memoryview(bytearray(markers(start, n, generation)))])
        disk.flush()


def read_generations(
    image: str | os.PathLike,
    lba: int,
    count: int,
    port: int = 0,
    registry: Mapping[UUID, str] | None = None,
) -> list[GenRange]:
    """What ``lba..lba+count-1`` of an image (through its chain) holds, as runs.
    Parents are found through ``registry`` (a machine's media), else beside the image."""
    from emu.storage.chain import open_chain

    values: list[int] = []
    with open_chain(os.fspath(image), read_only=True, registry=registry) as disk:
        for start in range(lba, lba + count, _CHUNK):
            n = min(_CHUNK, lba + count - start)
            buf = bytearray(n * SECTOR)
            disk.readv(start * SECTOR, [memoryview(buf)])
            values += [classify(buf[k * SECTOR : (k + 1) * SECTOR], start + k) for k in range(n)]
    return runs(values, lba, port)
