"""Unpacked kernels kept between runs, so a kernel is decompressed once, not per boot.

Unpacking Debian's xz-compressed kernel (8 MiB into a 66 MiB vmlinux) costs
about a second of CPU at every boot; reading the unpacked file back costs a few
tens of milliseconds. An entry is named by the SHA-256 of the compressed payload
(the same kernel from any path finds it; a changed kernel never matches), written
whole or not at all (a temporary file in the same folder, renamed into place, so
concurrent runs are safe), and used only if its trailer (length and CRC-32 of the
vmlinux) matches what it holds, so a damaged entry is unpacked afresh. Payloads
below ``MIN_PAYLOAD`` are not worth a file and are always unpacked.

The folder is ``$XDG_CACHE_HOME/ahci-emu/vmlinux``, else ``~/.cache/ahci-emu/vmlinux``.
It holds at most ``KEEP`` kernels: an entry is touched when used, and storing a
new one removes the least recently used beyond that. Only files named as this
module names its entries (and its own temporaries left by a killed run, after a
day) are ever removed; anything else in the folder is left alone. When it cannot
be read or written the kernel is simply unpacked every time: the cache never
makes a boot fail.
"""

import contextlib
import hashlib
import os
import re
import stat
import struct
import tempfile
import time
import zlib
from collections.abc import Callable
from pathlib import Path

MIN_PAYLOAD = 1 << 20  # bytes of compressed payload: smaller kernels unpack in no time
TRAILER = struct.Struct("<QI")  # after the vmlinux: its length and CRC-32
KEEP = 4  # kernels kept (66 MiB each for Debian's)
ENTRY_NAME = re.compile(r"[0-9a-f]{64}\.vmlinux")
TEMPORARY_PREFIX = ".unpacking-"
STALE_TEMPORARY = 86400.0  # seconds after which a temporary is a killed run's leftover


def cache_dir() -> Path:
    """Where unpacked kernels are kept (see the module doc)."""
    base = os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
    return Path(base) / "ahci-emu" / "vmlinux"


def unpacked(
    payload: bytes,
    unpack: Callable[[bytes], bytes],
    folder: Path | None = None,
    min_payload: int = MIN_PAYLOAD,
) -> bytes:
    """``unpack(payload)``, from the cache in ``folder`` when it holds it; a fresh
    result is stored there for the next run. Errors of ``unpack`` propagate."""
    if len(payload) < min_payload:
        return unpack(payload)
    folder = folder or cache_dir()
    entry = folder / f"{hashlib.sha256(payload).hexdigest()}.vmlinux"
    with contextlib.suppress(OSError):
        data = _intact(entry.read_bytes())
        if data is not None:
            os.utime(entry)
            return data
    data = unpack(payload)
    with contextlib.suppress(OSError):
        _store(entry, data)
        _prune(folder, KEEP)
    return data


def _intact(raw: bytes) -> bytes | None:
    """The vmlinux an entry holds, or None if the entry is damaged."""
    if len(raw) < TRAILER.size:
        return None
    length, crc = TRAILER.unpack_from(raw, len(raw) - TRAILER.size)
    data = memoryview(raw)[: len(raw) - TRAILER.size]
    if length != len(data) or zlib.crc32(data) != crc:
        return None
    return bytes(data)


def _store(entry: Path, data: bytes) -> None:
    entry.parent.mkdir(parents=True, exist_ok=True)
    fd, temporary = tempfile.mkstemp(prefix=TEMPORARY_PREFIX, dir=entry.parent)
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.write(TRAILER.pack(len(data), zlib.crc32(data)))
        os.replace(temporary, entry)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(temporary)
        raise


def _prune(folder: Path, keep: int) -> None:
    """Remove this module's entries beyond the ``keep`` most recently used, and its
    temporaries older than a day; never a symlink or a file it did not name."""
    entries = []
    now = time.time()
    for name in os.listdir(folder):
        path = folder / name
        info = path.lstat()
        if not stat.S_ISREG(info.st_mode):
            continue
        if ENTRY_NAME.fullmatch(name):
            entries.append((info.st_mtime, path))
        elif name.startswith(TEMPORARY_PREFIX) and now - info.st_mtime > STALE_TEMPORARY:
            path.unlink()
    for _, path in sorted(entries, reverse=True)[keep:]:
        path.unlink()
