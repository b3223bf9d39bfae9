"""Raw disk images holding a known pattern, and checks of what landed in them.

The pattern is the one the AHCI guests use (firmware/lib/ahci.c,
``ahci_pattern_*``): in a 512-byte sector at LBA ``L`` with tag ``T``,
little-endian qword ``i`` (0..63) is ``T << 56 | L << 8 | i``. Each sector
differs from every other and from the same sector under another tag, and a
shift of the data within a sector shows.

Guests read a disk made by :func:`make_disk` and verify the pattern without
writing first; what they write (other tags) the tests verify in the file with
:func:`bad_sectors`. Large disks may be sparse: only the given ranges hold the
pattern, the rest reads as zeros.
"""

from __future__ import annotations

import os
import shutil
from collections.abc import Iterable
from pathlib import Path

SECTOR = 512
_INDEX = bytes(range(64))
_CHUNK = 2048  # sectors per write


def sector_pattern(lba: int, tag: int) -> bytes:
    """The 512 bytes of sector ``lba`` under ``tag``."""
    if not 0 <= tag <= 0xFF or not 0 <= lba < 1 << 48:
        raise ValueError(f"tag {tag:#x} or LBA {lba} out of range")
    high = ((tag << 56) | (lba << 8)).to_bytes(8, "little")
    data = bytearray(high * 64)
    data[0::8] = _INDEX
    return bytes(data)


def pattern(lba: int, count: int, tag: int) -> bytes:
    """``count`` consecutive pattern sectors from ``lba``."""
    return b"".join(sector_pattern(lba + n, tag) for n in range(count))


def make_disk(
    path: str | os.PathLike,
    sectors: int,
    tag: int | None = None,
    ranges: Iterable[tuple[int, int]] | None = None,
) -> Path:
    """Create a raw image of ``sectors`` sectors (sparse where it holds zeros).

    With ``tag``, the pattern goes on every sector, or only on the ``(lba,
    count)`` ``ranges`` if given. Returns the path.
    """
    path = Path(path)
    with open(path, "wb") as f:
        f.truncate(sectors * SECTOR)
        if tag is not None:
            for start, count in [(0, sectors)] if ranges is None else ranges:
                if start < 0 or count < 0 or start + count > sectors:
                    raise ValueError(f"range ({start}, {count}) outside a {sectors}-sector disk")
                f.seek(start * SECTOR)
                for lba in range(start, start + count, _CHUNK):
                    f.write(pattern(lba, min(_CHUNK, start + count - lba), tag))
    return path


def copy_disk(src: str | os.PathLike, dst: str | os.PathLike) -> Path:
    """A fresh copy of an image (sparse regions may become allocated)."""
    shutil.copyfile(src, dst)
    return Path(dst)


def read_sectors(path: str | os.PathLike, lba: int, count: int) -> bytes:
    with open(path, "rb") as f:
        f.seek(lba * SECTOR)
        data = f.read(count * SECTOR)
    if len(data) != count * SECTOR:
        raise ValueError(f"{path}: sectors {lba}+{count} are beyond the end of the image")
    return data


def bad_sectors(path: str | os.PathLike, lba: int, count: int, tag: int | None) -> list[int]:
    """LBAs in ``[lba, lba + count)`` that do not hold the pattern for ``tag``
    (zeros if ``tag`` is None)."""
    bad = []
    zero = bytes(SECTOR)
    for start in range(lba, lba + count, _CHUNK):
        n = min(_CHUNK, lba + count - start)
        data = read_sectors(path, start, n)
        for k in range(n):
            got = data[k * SECTOR : (k + 1) * SECTOR]
            want = zero if tag is None else sector_pattern(start + k, tag)
            if got != want:
                bad.append(start + k)
    return bad


def describe(path: str | os.PathLike, lba: int) -> str:
    """What sector ``lba`` holds: ``pattern(lba=.., tag=..)``, ``zeros`` or ``other``."""
    data = read_sectors(path, lba, 1)
    if data == bytes(SECTOR):
        return "zeros"
    q0 = int.from_bytes(data[:8], "little")
    tag, where = q0 >> 56, (q0 >> 8) & ((1 << 48) - 1)
    if data == sector_pattern(where, tag):
        return f"pattern(lba={where}, tag={tag:#04x})"
    return "other"
