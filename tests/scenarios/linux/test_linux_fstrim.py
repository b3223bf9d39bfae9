"""``fstrim`` on a mounted ext4 on a VDI differencing image: the blocks a deleted
file held come back as zero blocks in the leaf.

Boot 1 makes a filesystem (4 KiB blocks) and writes an 8 MiB file; the host then
finds every 4 KiB piece of it in the leaf. Boot 2 deletes the file and runs
busybox ``fstrim -v`` on the mounted filesystem: ext4 discards its free space
(FITRIM), libata sends DATA SET MANAGEMENT TRIM, and the leaf must read zeros
where the file was. Every 1 MiB block the file filled is a block the leaf holds
already, so a whole-block discard frees its data in place: the block's range in
the leaf file becomes a hole (where the host's file system has holes; zeros
written otherwise). The base never changes.
"""

from __future__ import annotations

import os
import re

import pytest
from support.linux_disks import MIB, block_states, chain_bytes, pattern, sha256

from emu.storage.image import BlockState, punch_hole
from emu.storage.vdi import VdiImage

DISK = 64 * MIB
FS_BYTES = 32 * MIB
FILE = 8 * MIB
PIECE = 4096
TRIM = 0x06  # DATA SET MANAGEMENT (TRIM)

WRITE = f"""\
set -e
mke2fs -q -b 4096 /dev/sda {FS_BYTES // 1024}  # busybox counts 1 KiB units
mount -t ext4 /dev/sda /mnt
echo one > /mnt/kept.txt
cp /data/pattern /mnt/big.bin
umount /mnt
"""
TRIM_SCRIPT = """\
set -e
mount -t ext4 /dev/sda /mnt
rm /mnt/big.bin
sync
fstrim -v /mnt
echo "kept=$(cat /mnt/kept.txt)"
umount /mnt
"""


def pieces_on_disk(leaf, data: bytes) -> dict[int, int]:
    """Where each 4 KiB piece of ``data`` lies in the chain: disk offset -> piece index."""
    wanted = {data[i : i + PIECE]: i // PIECE for i in range(0, len(data), PIECE)}
    disk = chain_bytes(leaf, 0, FS_BYTES)
    return {
        offset: wanted[disk[offset : offset + PIECE]]
        for offset in range(0, FS_BYTES, PIECE)
        if disk[offset : offset + PIECE] in wanted
    }


def is_hole(path, offset: int, length: int) -> bool:
    """No data in ``path``'s bytes ``offset .. offset + length`` (SEEK_DATA)."""
    with open(path, "rb") as f:
        try:
            return os.lseek(f.fileno(), offset, os.SEEK_DATA) >= offset + length
        except OSError:  # ENXIO: no data at or after offset
            return True


def host_has_holes(folder) -> bool:
    """Whether a punched range of a file in ``folder`` reads back as a hole."""
    probe = folder / "hole-probe"
    with open(probe, "wb") as f:
        f.write(b"x" * 3 * MIB)
        f.flush()
        punch_hole(f.fileno(), MIB, MIB, str(probe))
    try:
        return is_hole(probe, MIB, MIB)
    finally:
        probe.unlink()


@pytest.mark.timeout(1200)
def test_fstrim_turns_a_deleted_files_blocks_into_zero_blocks(ahci, linux):
    base = ahci.image("base.vdi", DISK)
    leaf = ahci.diff(base, "leaf.vdi")
    base_before = sha256(base.read_bytes())
    data = pattern(FILE, seed=5)

    linux.boot(WRITE, leaf, files={"data/pattern": data}).assert_ok()
    where = pieces_on_disk(leaf, data)
    assert sorted(where.values()) == list(range(FILE // PIECE))  # all of it, once
    blocks = {offset // MIB for offset in where}
    states = block_states(leaf)
    assert {states[b] for b in blocks} == {BlockState.ALLOCATED}
    full = [b for b in blocks if all(b * MIB + p in where for p in range(0, MIB, PIECE))]
    assert len(full) >= FILE // MIB - 2  # the file is mostly contiguous
    with VdiImage.open(os.fspath(leaf), read_only=True) as vdi:
        data_at = [vdi.block_offset(b) for b in full]
    assert [at for at in data_at if is_hole(leaf, at, MIB)] == []

    run = linux.boot(TRIM_SCRIPT, leaf, trace=True).assert_ok()
    trimmed = re.search(r"^/mnt: (\d+) bytes trimmed", "\n".join(run.output), re.M)
    assert trimmed and int(trimmed.group(1)) >= FILE, run.output
    assert run.values()["kept"] == "one"
    assert any(c["opcode"] == TRIM for c in run.commands()), "no TRIM reached the disk"
    assert all(c["status"] & 0x01 == 0 for c in run.commands()), "a command ended with ERR"
    assert pieces_on_disk(leaf, data) == {}
    for offset in where:
        assert chain_bytes(leaf, offset, PIECE) == bytes(PIECE), hex(offset)
    with VdiImage.open(os.fspath(leaf), read_only=True) as vdi:
        assert {vdi.block_state(b) for b in full} == {BlockState.ALLOCATED}  # freed in place
        assert [vdi.block_offset(b) for b in full] == data_at
    if host_has_holes(leaf.parent):
        assert [at for at in data_at if not is_hole(leaf, at, MIB)] == []
    assert sha256(base.read_bytes()) == base_before
