import struct

import pytest

from emu.ata import AtaDisk, Protocol
from emu.ata.commands import Command
from emu.ata.taskfile import ERROR_ABRT
from emu.testing.memory_disk import MemoryDevice

from .helpers import issue, pattern, taskfile


def ranges(*entries: tuple[int, int], blocks: int = 1) -> bytes:
    """LBA Range Entries (LBA, length), zero-padded to ``blocks`` 512-byte blocks."""
    data = b"".join(struct.pack("<Q", lba | length << 48) for lba, length in entries)
    return data.ljust(blocks * 512, b"\0")


def trim(disk, data: bytes, *, blocks: int = 1, buffer_size: int | None = None):
    tf = taskfile(Command.DATA_SET_MANAGEMENT, features=0x01, count=blocks)
    return issue(disk, tf, data, buffer_size=buffer_size)


def filled(sectors: int = 64) -> tuple[AtaDisk, MemoryDevice]:
    mem = MemoryDevice(sectors)
    for s in range(sectors):
        mem.sectors[s] = pattern(1, seed=s)
    return AtaDisk(mem), mem


def test_trim_is_dma_out_of_count_blocks(disk):
    req = disk.decode(taskfile(Command.DATA_SET_MANAGEMENT, features=0x01, count=3))
    assert (req.protocol, req.nbytes) == (Protocol.DMA_OUT, 3 * 512)


def test_trim_zeroes_the_ranges_in_the_image_file(raw_disk, image_path):
    data = pattern(2048)
    image_path.write_bytes(data)
    assert trim(raw_disk, ranges((10, 5), (1000, 1))).ok
    content = image_path.read_bytes()
    assert content[10 * 512 : 15 * 512] == bytes(5 * 512)
    assert content[1000 * 512 : 1001 * 512] == bytes(512)
    assert content[: 10 * 512] == data[: 10 * 512]
    assert content[15 * 512 : 1000 * 512] == data[15 * 512 : 1000 * 512]
    assert content[1001 * 512 :] == data[1001 * 512 :]
    out = issue(raw_disk, taskfile(Command.READ_DMA_EXT, lba=10, count=5))
    assert bytes(out.data) == bytes(5 * 512)


def test_trim_discards_each_range_and_skips_unused_entries():
    disk, mem = filled()
    # Length 0 marks an unused entry, whatever its LBA.
    assert trim(disk, ranges((3, 2), (0xFFFF_FFFF_FFFF, 0), (40, 1))).ok
    assert mem.ops("discard") == [("discard", 3 * 512, 2 * 512), ("discard", 40 * 512, 512)]
    assert 3 not in mem.sectors and 4 not in mem.sectors and 40 not in mem.sectors
    assert mem.sectors[5] == pattern(1, seed=5)


def test_trim_merges_adjacent_ranges():
    disk, mem = filled()
    assert trim(disk, ranges((8, 4), (12, 4), (16, 1))).ok
    assert mem.ops("discard") == [("discard", 8 * 512, 9 * 512)]


def test_trim_reads_entries_from_every_block():
    disk, mem = filled()
    data = ranges((1, 1)) + ranges((2, 1))[:8].rjust(512, b"\0")
    assert trim(disk, data, blocks=2).ok
    assert mem.ops("discard") == [("discard", 512, 1024)]


def test_trim_range_ending_at_the_last_sector_succeeds():
    disk, mem = filled()
    assert trim(disk, ranges((60, 4))).ok
    assert mem.ops("discard") == [("discard", 60 * 512, 4 * 512)]


def test_trim_entry_past_the_end_aborts_and_discards_nothing():
    disk, mem = filled()
    out = trim(disk, ranges((1, 1), (60, 5), (2, 1)))
    c = out.completion
    assert (c.status, c.error, c.lba) == (0x41, ERROR_ABRT, 60)
    assert mem.ops("discard") == []
    assert len(mem.sectors) == 64


@pytest.mark.parametrize(("features", "count"), [(0x00, 1), (0x02, 1), (0x01, 0)])
def test_dsm_without_trim_or_blocks_aborts(disk, mem, features, count):
    out = issue(disk, taskfile(Command.DATA_SET_MANAGEMENT, features=features, count=count))
    assert (out.completion.status, out.completion.error) == (0x41, ERROR_ABRT)
    assert out.request is None


def test_trim_on_a_read_only_medium_aborts():
    mem = MemoryDevice(64, read_only=True)
    out = trim(AtaDisk(mem), ranges((0, 1)))
    assert out.completion.error == ERROR_ABRT


def test_trim_medium_error_aborts_with_the_range_lba(disk, mem):
    mem.failing.add("discard")
    out = trim(disk, ranges((7, 1)))
    assert (out.completion.error, out.completion.lba) == (ERROR_ABRT, 7)


def test_trim_with_a_short_buffer_uses_only_the_whole_entries_received():
    disk, mem = filled()
    data = ranges((1, 1), (5, 1))
    assert trim(disk, data, buffer_size=13).ok  # one entry and 5 bytes of the next
    assert mem.ops("discard") == [("discard", 512, 512)]
