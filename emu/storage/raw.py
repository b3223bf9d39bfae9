"""A raw image: a plain file of the virtual size, one byte per disk byte."""

import ctypes
import fcntl
import os
from collections.abc import Sequence

from emu.storage.blockdev import SECTOR_SIZE
from emu.storage.errors import ImageFormatError, ImageLockedError, MediumError, ReadOnlyError

_PUNCH_HOLE = 0x02 | 0x01  # FALLOC_FL_PUNCH_HOLE | FALLOC_FL_KEEP_SIZE
_libc = ctypes.CDLL(None, use_errno=True)
_libc.fallocate.argtypes = [ctypes.c_int, ctypes.c_int, ctypes.c_int64, ctypes.c_int64]


def punch_hole(fd: int, offset: int, length: int) -> None:
    """Deallocate a file range so it reads as zeros; write zeros where holes are unsupported."""
    if _libc.fallocate(fd, _PUNCH_HOLE, offset, length) == 0:
        return
    zeros = memoryview(bytes(min(length, 1 << 20)))
    end = offset + length
    while offset < end:
        offset += os.pwrite(fd, zeros[: min(len(zeros), end - offset)], offset)


class RawImage:
    """A raw file as a block device, locked while open (shared for readers)."""

    def __init__(self, path: str, *, read_only: bool = False) -> None:
        self.path = os.path.abspath(path)
        self._read_only = read_only
        try:
            self._fd = os.open(self.path, os.O_RDONLY if read_only else os.O_RDWR)
        except OSError as exc:
            raise MediumError(f"{path}: cannot open: {exc.strerror}") from exc
        try:
            fcntl.flock(self._fd, (fcntl.LOCK_SH if read_only else fcntl.LOCK_EX) | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(self._fd)
            raise ImageLockedError(f"{path}: image is in use by another process") from None
        size = os.fstat(self._fd).st_size
        if size == 0 or size % SECTOR_SIZE:
            os.close(self._fd)
            raise ImageFormatError(
                f"{path}: raw image size {size} is not a non-zero multiple of {SECTOR_SIZE}"
            )
        self._size = size
        self._dirty = False

    @property
    def size(self) -> int:
        return self._size

    @property
    def read_only(self) -> bool:
        return self._read_only

    @property
    def identity(self) -> str:
        return self.path

    def readv(self, offset: int, buffers: Sequence[memoryview]) -> None:
        try:
            got = os.preadv(self._fd, buffers, offset)
        except OSError as exc:
            raise MediumError(f"{self.path}: read failed: {exc.strerror}") from exc
        want = sum(len(b) for b in buffers)
        if got != want:  # the file shrank under us
            raise MediumError(f"{self.path}: short read at offset {offset}")

    def writev(self, offset: int, buffers: Sequence[memoryview]) -> None:
        if self._read_only:
            raise ReadOnlyError(f"{self.path}: medium is read-only")
        try:
            os.pwritev(self._fd, buffers, offset)
        except OSError as exc:
            raise MediumError(f"{self.path}: write failed: {exc.strerror}") from exc
        self._dirty = True

    def flush(self) -> None:
        if self._dirty:
            try:
                os.fsync(self._fd)
            except OSError as exc:
                raise MediumError(f"{self.path}: flush failed: {exc.strerror}") from exc
            self._dirty = False

    def discard(self, offset: int, length: int) -> None:
        if self._read_only:
            raise ReadOnlyError(f"{self.path}: medium is read-only")
        try:
            punch_hole(self._fd, offset, length)
        except OSError as exc:
            raise MediumError(f"{self.path}: discard failed: {exc.strerror}") from exc
        self._dirty = True

    def close(self) -> None:
        if self._fd >= 0:
            os.close(self._fd)
            self._fd = -1
