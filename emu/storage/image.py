"""The per-file interface of the image stack, and the file helpers its formats share.

An :class:`Image` is one file of a chain: a raw file or a VDI. It knows its own
blocks only; :class:`emu.storage.chain.Chain` stacks images and resolves which
one serves each block. Every image divides its virtual disk into blocks of
:data:`BLOCK_SIZE` bytes (the last may be partial), each of them in one of the
states of :class:`BlockState`.

Offsets given to ``read_at``/``write_at`` are *file* offsets (``block_offset``
tells where an allocated block lives). Buffers are 1-D byte memoryviews (or
bytearrays), filled or drained in order; piece lengths are arbitrary.
"""

import ctypes
import enum
import fcntl
import os
import stat
from collections.abc import Iterable, Sequence
from typing import Protocol, Self
from uuid import UUID

from emu.storage.blockdev import SECTOR_SIZE
from emu.storage.errors import ImageLockedError, MediumError, StorageError

BLOCK_SIZE = 1 << 20  # VDI's only block size; also the unit a chain resolves raw files in

ZEROS = memoryview(bytes(BLOCK_SIZE))  # read-only source of zeros for fills and pads

IOV_MAX = os.sysconf("SC_IOV_MAX")  # the most buffers one preadv or pwritev takes

_PUNCH_HOLE = 0x02 | 0x01  # FALLOC_FL_PUNCH_HOLE | FALLOC_FL_KEEP_SIZE
_libc = ctypes.CDLL(None, use_errno=True)
_libc.fallocate.argtypes = [ctypes.c_int, ctypes.c_int, ctypes.c_int64, ctypes.c_int64]


class Closing:
    """``with`` support for storage objects: the block ends with ``close()``."""

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    def close(self) -> None:
        raise NotImplementedError


class BlockState(enum.IntEnum):
    """What an image holds for one block."""

    ABSENT = 0  # not stored here: read through to the parent (zeros in a base)
    ZERO = 1  # reads as zeros and hides the parent's data
    ALLOCATED = 2  # stored in this file at block_offset()


class Image(Protocol):
    """One file of a chain (leaf, intermediate diff or base)."""

    @property
    def path(self) -> str:
        """Absolute path of the file."""

    @property
    def fd(self) -> int:
        """The open file descriptor (for the chain's direct preadv/pwritev)."""

    @property
    def size(self) -> int:
        """Virtual disk size in bytes (a multiple of 512)."""

    @property
    def block_size(self) -> int:
        """Bytes per block (:data:`BLOCK_SIZE`)."""

    @property
    def read_only(self) -> bool:
        """True when the file was opened read-only (shared lock)."""

    @property
    def uuid(self) -> UUID | None:
        """The image's identity (VDI uuidCreate); None for raw."""

    @property
    def parent_uuid(self) -> UUID | None:
        """The parent's identity (VDI uuidLinkage of a diff); None for a base."""

    @property
    def modify_uuid(self) -> UUID | None:
        """Changes whenever the image's content changes (VDI uuidModify); None for raw."""

    @property
    def parent_modify_uuid(self) -> UUID | None:
        """The parent's modify_uuid when this diff was made (uuidParentModify), if known."""

    def block_state(self, index: int) -> BlockState:
        """The state of block ``index``."""

    def block_offset(self, index: int) -> int:
        """File offset of the data of an ALLOCATED block."""

    def stored_blocks(self, *, zeros: bool = True) -> Iterable[int]:
        """Indexes of the blocks stored here (ALLOCATED, and ZERO unless ``zeros`` is
        False), ascending, without visiting long empty stretches one by one."""

    def read_at(self, offset: int, buffers: Sequence[memoryview]) -> None:
        """Fill ``buffers`` from the file starting at file offset ``offset``."""

    def write_at(self, offset: int, buffers: Sequence[memoryview]) -> None:
        """Write ``buffers`` to the file starting at file offset ``offset``."""

    def allocate_block(self, index: int, buffers: Sequence[memoryview]) -> int:
        """Store a whole block's data (zero-padded to the block size); return its file offset.

        The block must not be ALLOCATED yet. The caller supplies the complete
        content (a partial write is merged with the chain's data first).
        """

    def zero_block(self, index: int) -> None:
        """Make block ``index`` read as zeros from this image on, hiding any parent data."""

    def flush(self) -> None:
        """Make everything written so far durable, metadata consistent."""

    def close(self) -> None:
        """Flush (if writable), release the lock, close the file. Idempotent."""


def lock_file(fd: int, path: str, *, exclusive: bool) -> None:
    """Take the advisory lock an open image holds: exclusive to write, shared to read."""
    try:
        fcntl.flock(fd, (fcntl.LOCK_EX if exclusive else fcntl.LOCK_SH) | fcntl.LOCK_NB)
    except BlockingIOError:
        holder = "is in use by another process" if exclusive else "is open for writing elsewhere"
        raise ImageLockedError(f"{path}: image {holder} (locked)") from None


def open_regular(path: str, *, read_only: bool = True) -> int:
    """Open an existing regular file without blocking; refuse anything else.

    A stat first names what the path is; O_NONBLOCK then makes an open that races
    with a rename to a FIFO or a device return at once (a plain open of a FIFO waits
    for a writer forever), and fstat checks what was opened.
    """
    flags = (os.O_RDONLY if read_only else os.O_RDWR) | os.O_NONBLOCK | os.O_NOCTTY
    try:
        _check_regular(path, os.stat(path).st_mode)
        fd = os.open(path, flags)
    except OSError as exc:
        raise MediumError(f"{path}: cannot open: {exc.strerror}") from None
    except ValueError:  # a NUL byte in the path
        raise MediumError(f"{path!r}: cannot open: the path contains a NUL byte") from None
    try:
        _check_regular(path, os.fstat(fd).st_mode)
    except BaseException:
        os.close(fd)
        raise
    return fd


def _check_regular(path: str, mode: int) -> None:
    kind = stat.S_IFMT(mode)
    if kind != stat.S_IFREG:
        what = _FILE_KINDS.get(kind, "special file")
        raise MediumError(f"{path}: is a {what}, not an image file")


_FILE_KINDS = {
    stat.S_IFDIR: "directory",
    stat.S_IFIFO: "FIFO",
    stat.S_IFSOCK: "socket",
    stat.S_IFCHR: "character device",
    stat.S_IFBLK: "block device",
}


def read_head(path: str, length: int) -> bytes:
    """The first ``length`` bytes of a regular file (no lock; see :func:`open_regular`)."""
    fd = open_regular(path)
    try:
        return os.pread(fd, length, 0)
    except OSError as exc:
        raise MediumError(f"{path}: cannot read: {exc.strerror}") from None
    finally:
        os.close(fd)


def open_locked(path: str, *, read_only: bool, exclusive: bool) -> int:
    """Open an existing regular image file and lock it; errors become storage errors."""
    fd = open_regular(path, read_only=read_only)
    try:
        lock_file(fd, path, exclusive=exclusive)
    except BaseException:
        os.close(fd)
        raise
    return fd


def read_exact(fd: int, buffers: Sequence[memoryview], offset: int, path: str) -> None:
    """preadv all of ``buffers`` (in IOV_MAX chunks); a short read is a MediumError."""
    try:
        for start in range(0, len(buffers), IOV_MAX):
            chunk = buffers[start : start + IOV_MAX]
            want = sum(len(b) for b in chunk)
            if os.preadv(fd, chunk, offset) != want:
                raise MediumError(f"{path}: short read at offset {offset} (file truncated?)")
            offset += want
    except OSError as exc:
        raise MediumError(f"{path}: read failed at offset {offset}: {exc.strerror}") from None


def write_exact(fd: int, buffers: Sequence[memoryview], offset: int, path: str) -> None:
    """pwritev all of ``buffers`` (in IOV_MAX chunks); a short write is a MediumError."""
    try:
        for start in range(0, len(buffers), IOV_MAX):
            chunk = buffers[start : start + IOV_MAX]
            want = sum(len(b) for b in chunk)
            if os.pwritev(fd, chunk, offset) != want:
                raise MediumError(f"{path}: short write at offset {offset} (disk full?)")
            offset += want
    except OSError as exc:
        raise MediumError(f"{path}: write failed at offset {offset}: {exc.strerror}") from None


def fsync(fd: int, path: str) -> None:
    """fsync with the error as a MediumError."""
    try:
        os.fsync(fd)
    except OSError as exc:
        raise MediumError(f"{path}: flush failed: {exc.strerror}") from None


def fsync_dir(path: str) -> None:
    """Make a rename or create in the directory of ``path`` durable."""
    fd = os.open(os.path.dirname(os.path.abspath(path)), os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def punch_hole(fd: int, offset: int, length: int, path: str) -> None:
    """Deallocate a file range so it reads as zeros; write zeros where holes are unsupported."""
    if _libc.fallocate(fd, _PUNCH_HOLE, offset, length) == 0:
        return
    end = offset + length
    while offset < end:
        n = min(len(ZEROS), end - offset)
        write_exact(fd, [ZEROS[:n]], offset, path)
        offset += n


def is_zero(data: memoryview) -> bool:
    """Whether a buffer of at most a block holds only zeros (memcmp speed)."""
    return ZEROS.obj.startswith(data)


MAX_DISK_SIZE = (1 << 48) * SECTOR_SIZE  # 128 PiB: what 48-bit LBAs address


def check_size(size: int, limit: int = MAX_DISK_SIZE, what: str = "a disk") -> None:
    """Refuse a virtual size that is not a positive multiple of the sector size, or above
    ``limit`` (the most ``what`` may have)."""
    if size <= 0 or size % SECTOR_SIZE:
        raise StorageError(f"size {size} is not a positive multiple of {SECTOR_SIZE} bytes")
    if size > limit:
        raise StorageError(f"size {size} is larger than {what} may be ({limit >> 40} TiB at most)")
