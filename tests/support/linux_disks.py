"""Host-side views of the disks a Linux scenario used: bytes through a chain, block
states of one VDI, and the checksums the guest's ``sha256sum`` prints."""

from __future__ import annotations

import hashlib
import os
import re
from collections.abc import Mapping
from uuid import UUID

from emu.storage.chain import open_chain
from emu.storage.image import BlockState
from emu.storage.vdi import VdiImage

MIB = 1 << 20

# dmesg lines that mean libata met trouble: errors, timeouts, resets, slowed links.
ATA_TROUBLE = re.compile(
    r"ata\d+(\.\d+)?: .*(failed command|timeout|hard resetting link|exception Emask|"
    r"SError|COMRESET failed|limiting SATA link speed|disabling queued TRIM|NCQ disabled)",
    re.IGNORECASE,
)


def chain_bytes(
    image: str | os.PathLike,
    offset: int,
    length: int,
    registry: Mapping[UUID, str] | None = None,
) -> bytes:
    """``length`` bytes at ``offset`` of an image read through its chain."""
    buf = bytearray(length)
    with open_chain(os.fspath(image), read_only=True, registry=registry) as chain:
        chain.readv(offset, [memoryview(buf)])
    return bytes(buf)


def sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def block_states(image: str | os.PathLike) -> list[BlockState]:
    """What one VDI (not its parents) holds for each 1 MiB block."""
    with VdiImage.open(os.fspath(image), read_only=True) as vdi:
        return [vdi.block_state(n) for n in range(vdi.size // MIB)]


def pattern(nbytes: int, seed: int = 0) -> bytes:
    """Deterministic bytes that no two offsets share (SHA-256 of a counter)."""
    chunks = (hashlib.sha256(f"{seed}:{n}".encode()).digest() for n in range(-(-nbytes // 32)))
    return b"".join(chunks)[:nbytes]


def trouble(dmesg: list[str]) -> list[str]:
    """The kernel log lines that show libata errors, timeouts or link resets."""
    return [line for line in dmesg if ATA_TROUBLE.search(line)]
