"""The "newc" cpio format (``070701``), the one the kernel unpacks as initramfs.

Each entry is a 110-byte ASCII header (magic and 13 eight-digit hex fields), the
NUL-terminated name padded to 4 bytes, then the data padded to 4 bytes; the
archive ends with an entry named ``TRAILER!!!``. See the kernel's
Documentation/driver-api/early-userspace/buffer-format.rst.
"""

from __future__ import annotations

import stat
from pathlib import Path

MAGIC = b"070701"
TRAILER = "TRAILER!!!"


class NewcArchive:
    """An archive built in memory, entry by entry; :meth:`write` finishes it."""

    def __init__(self) -> None:
        self._parts: list[bytes] = []
        self._inode = 0
        self._names: set[str] = set()

    def directory(self, name: str, mode: int = 0o755) -> None:
        self._entry(name, stat.S_IFDIR | mode, b"", nlink=2)

    def file(self, name: str, data: bytes, mode: int = 0o644) -> None:
        self._entry(name, stat.S_IFREG | mode, data)

    def symlink(self, name: str, target: str) -> None:
        self._entry(name, stat.S_IFLNK | 0o777, target.encode())

    def char_device(self, name: str, major: int, minor: int, mode: int = 0o600) -> None:
        self._entry(name, stat.S_IFCHR | mode, b"", rdev=(major, minor))

    def __contains__(self, name: str) -> bool:
        return name.strip("/") in self._names

    def to_bytes(self) -> bytes:
        """The archive with its trailer (padded to 512 bytes, as cpio does)."""
        parts = [*self._parts, _entry_bytes(TRAILER, 0, 0, b"", 1, (0, 0))]
        blob = b"".join(parts)
        return blob + b"\0" * (-len(blob) % 512)

    def write(self, path: Path) -> None:
        path.write_bytes(self.to_bytes())

    def _entry(
        self, name: str, mode: int, data: bytes, nlink: int = 1, rdev: tuple[int, int] = (0, 0)
    ) -> None:
        name = name.strip("/")
        if not name or name == TRAILER or name in self._names:
            raise ValueError(f"cpio: bad or repeated entry name {name!r}")
        self._names.add(name)
        self._inode += 1
        self._parts.append(_entry_bytes(name, self._inode, mode, data, nlink, rdev))


def _entry_bytes(
    name: str, inode: int, mode: int, data: bytes, nlink: int, rdev: tuple[int, int]
) -> bytes:
    encoded = name.encode() + b"\0"
    fields = (inode, mode, 0, 0, nlink, 0, len(data), 0, 0, rdev[0], rdev[1], len(encoded), 0)
    head = MAGIC + b"".join(b"%08X" % value for value in fields) + encoded
    head += b"\0" * (-len(head) % 4)
    return head + data + b"\0" * (-len(data) % 4)
