"""A raw image: a plain file of the virtual size, one byte per disk byte.

It is both a block device on its own and an :class:`~emu.storage.image.Image`
(a chain's base; raw files have no UUID, so they never have a parent or children).
Every block is ALLOCATED, at its own offset.
"""

import os
from collections.abc import Sequence

from emu.storage.blockdev import SECTOR_SIZE
from emu.storage.errors import ImageFormatError, ReadOnlyError, StorageError
from emu.storage.image import (
    BLOCK_SIZE,
    BlockState,
    check_size,
    fsync,
    fsync_dir,
    open_locked,
    punch_hole,
    read_exact,
    write_exact,
)


class RawImage:
    """A raw file, locked while open (exclusively to write, shared to read)."""

    uuid = None
    parent_uuid = None
    modify_uuid = None
    parent_modify_uuid = None
    block_size = BLOCK_SIZE

    def __init__(
        self, path: str, *, read_only: bool = False, exclusive: bool | None = None
    ) -> None:
        """``exclusive`` (default: when writable) picks the lock; a shareable medium is
        opened writable under a shared lock."""
        self.path = os.path.abspath(path)
        self._read_only = read_only
        if exclusive is None:
            exclusive = not read_only
        # The open descriptor (-1 once closed): an attribute, read on every chain read.
        self.fd = open_locked(self.path, read_only=read_only, exclusive=exclusive)
        size = os.fstat(self.fd).st_size
        if size == 0 or size % SECTOR_SIZE:
            os.close(self.fd)
            raise ImageFormatError(
                f"{self.path}: raw image size {size} is not a non-zero multiple of {SECTOR_SIZE}"
            )
        self._size = size
        self._dirty = False

    @classmethod
    def create(cls, path: str, size: int, *, preallocate: bool = False) -> "RawImage":
        """Create a raw file of ``size`` bytes (sparse unless ``preallocate``); open it."""
        check_size(size)
        try:
            fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_EXCL, 0o644)
        except OSError as exc:
            raise StorageError(f"{path}: cannot create: {exc.strerror}") from None
        try:
            os.ftruncate(fd, size)
            if preallocate:
                os.posix_fallocate(fd, 0, size)
            os.fsync(fd)
        except OSError as exc:
            os.unlink(path)
            raise StorageError(f"{path}: cannot create: {exc.strerror}") from None
        finally:
            os.close(fd)
        fsync_dir(path)
        return cls(path)

    @property
    def size(self) -> int:
        return self._size

    @property
    def read_only(self) -> bool:
        return self._read_only

    @property
    def identity(self) -> str:
        return self.path

    def block_state(self, index: int) -> BlockState:
        return BlockState.ALLOCATED

    def block_offset(self, index: int) -> int:
        return index * BLOCK_SIZE

    def stored_blocks(self, *, zeros: bool = True) -> range:
        return range(-(-self._size // BLOCK_SIZE))

    def read_at(self, offset: int, buffers: Sequence[memoryview]) -> None:
        read_exact(self.fd, buffers, offset, self.path)

    def write_at(self, offset: int, buffers: Sequence[memoryview]) -> None:
        if self._read_only:
            raise ReadOnlyError(f"{self.path}: medium is read-only")
        write_exact(self.fd, buffers, offset, self.path)
        self._dirty = True

    # As a block device, file offsets are disk offsets.
    readv = read_at
    writev = write_at

    def sources(self, offset: int, length: int) -> list[tuple[int, int, str | None]]:
        """Every byte of a raw disk comes from its one file."""
        return [(offset, length, self.path)]

    def allocate_block(self, index: int, buffers: Sequence[memoryview]) -> int:
        """Raw blocks are always in place: write the data there."""
        offset = index * BLOCK_SIZE
        self.write_at(offset, buffers)
        return offset

    def zero_block(self, index: int) -> None:
        start = index * BLOCK_SIZE
        self.discard(start, min(BLOCK_SIZE, self._size - start))

    def flush(self) -> None:
        if self._dirty:
            fsync(self.fd, self.path)
            self._dirty = False

    def discard(self, offset: int, length: int) -> None:
        if self._read_only:
            raise ReadOnlyError(f"{self.path}: medium is read-only")
        punch_hole(self.fd, offset, length, self.path)
        self._dirty = True

    def close(self) -> None:
        if self.fd >= 0:
            try:
                self.flush()
            finally:
                os.close(self.fd)
                self.fd = -1
