"""The block-device interface: the disk as the ATA layer sees it.

Offsets and lengths are in bytes and multiples of :data:`SECTOR_SIZE`; callers
check ranges before calling. Buffers are writable ``memoryview`` pieces (for a
guest command, slices of guest RAM), filled or drained consecutively, so a
scatter-gather list goes to and from the image files without a copy.
"""

from collections.abc import Sequence
from typing import Protocol

SECTOR_SIZE = 512


class BlockDevice(Protocol):
    """What every disk backend (a raw file, an image chain) provides."""

    @property
    def size(self) -> int:
        """Virtual size in bytes (a multiple of SECTOR_SIZE)."""

    @property
    def read_only(self) -> bool:
        """True when writes and discards raise ReadOnlyError."""

    @property
    def identity(self) -> str:
        """A stable identifier of the medium (its UUID, or its path), for serial numbers."""

    def readv(self, offset: int, buffers: Sequence[memoryview]) -> None:
        """Fill ``buffers`` in order with the bytes starting at ``offset``."""

    def sources(self, offset: int, length: int) -> list[tuple[int, int, str | None]]:
        """Where the bytes [offset, offset+length) come from, in order: (offset, length,
        the file serving them, or None where they read as zeros). `--trace` records it
        for every read."""

    def writev(self, offset: int, buffers: Sequence[memoryview]) -> None:
        """Write the bytes of ``buffers`` in order starting at ``offset``."""

    def flush(self) -> None:
        """Make every completed write durable (fsync of every file written)."""

    def discard(self, offset: int, length: int) -> None:
        """Forget a range; it reads back as zeros afterwards."""

    def close(self) -> None:
        """Release files and locks. Idempotent."""
