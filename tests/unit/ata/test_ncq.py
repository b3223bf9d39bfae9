import pytest

from emu.ata import AtaDisk, AtaError, Protocol
from emu.ata.commands import Command
from emu.ata.taskfile import ERROR_ABRT, ERROR_IDNF, ERROR_UNC
from emu.testing.memory_disk import MemoryDevice

from .helpers import issue, pattern, taskfile


def fpdma(command: int, *, lba: int, sectors: int, tag: int, device: int = 0x40, prio: int = 0):
    return taskfile(command, lba=lba, features=sectors, count=prio << 14 | tag << 3, device=device)


def read_log(disk, address: int, *, page: int = 0, count: int = 1):
    lba = address | (page & 0xFF) << 8 | (page >> 8) << 32
    return issue(disk, taskfile(Command.READ_LOG_EXT, lba=lba, count=count))


@pytest.mark.parametrize(
    ("command", "protocol"),
    [
        (Command.READ_FPDMA_QUEUED, Protocol.FPDMA_IN),
        (Command.WRITE_FPDMA_QUEUED, Protocol.FPDMA_OUT),
    ],
)
def test_fpdma_decode_takes_tag_from_count_and_sectors_from_features(disk, command, protocol):
    req = disk.decode(fpdma(command, lba=100, sectors=24, tag=29, prio=3))
    assert (req.protocol, req.tag, req.nbytes) == (protocol, 29, 24 * 512)


def test_fpdma_sector_count_zero_means_65536():
    disk = AtaDisk(MemoryDevice(65536))
    req = disk.decode(fpdma(Command.READ_FPDMA_QUEUED, lba=0, sectors=0, tag=0))
    assert req.nbytes == 65536 * 512


def test_fpdma_uses_the_full_48_bit_lba():
    mem = MemoryDevice((1 << 47) + 8)
    disk = AtaDisk(mem)
    assert issue(disk, fpdma(Command.READ_FPDMA_QUEUED, lba=1 << 47, sectors=1, tag=1)).ok
    assert mem.ops("readv") == [("readv", (1 << 47) * 512, 512)]


def test_fpdma_past_end_fails_at_decode_with_idnf(disk, mem):
    with pytest.raises(AtaError) as caught:
        disk.decode(fpdma(Command.READ_FPDMA_QUEUED, lba=2040, sectors=9, tag=5))
    c = caught.value.completion
    assert (c.status, c.error, c.lba) == (0x41, ERROR_IDNF, 2040)
    assert mem.calls == []


def test_ncq_error_log_is_empty_before_any_error(disk):
    out = read_log(disk, 0x10)
    assert out.ok and bytes(out.data) == bytes(512)


def test_ncq_error_log_describes_a_queued_command_that_failed_at_decode(disk):
    failed = issue(disk, fpdma(Command.WRITE_FPDMA_QUEUED, lba=0x7FE, sectors=4, tag=17))
    assert failed.completion.failed and failed.request is None
    out = read_log(disk, 0x10)
    log = bytes(out.data)
    assert out.ok and out.request.protocol is Protocol.PIO_IN
    assert log[0] == 17  # NQ = 0, TAG = 17
    assert (log[2], log[3]) == (0x41, ERROR_IDNF)
    assert int.from_bytes(log[4:7] + log[8:11], "little") == 0x7FE
    assert sum(log) % 256 == 0


def test_ncq_error_log_describes_a_queued_command_that_failed_in_the_medium(disk, mem):
    mem.failing.add("readv")
    out = issue(disk, fpdma(Command.READ_FPDMA_QUEUED, lba=0x123, sectors=2, tag=30))
    assert (out.completion.status, out.completion.error) == (0x41, ERROR_UNC)
    log = bytes(read_log(disk, 0x10).data)
    assert (log[0], log[2], log[3]) == (30, 0x41, ERROR_UNC)
    assert int.from_bytes(log[4:7] + log[8:11], "little") == 0x123
    assert sum(log) % 256 == 0


def test_ncq_error_log_keeps_the_last_error_across_good_commands(disk, mem):
    mem.failing.add("writev")
    issue(disk, fpdma(Command.WRITE_FPDMA_QUEUED, lba=1, sectors=1, tag=9), pattern(1))
    mem.failing.clear()
    assert issue(disk, fpdma(Command.WRITE_FPDMA_QUEUED, lba=1, sectors=1, tag=3), pattern(1)).ok
    assert issue(disk, taskfile(Command.READ_DMA_EXT, lba=5000, count=1)).completion.failed
    log = bytes(read_log(disk, 0x10).data)
    assert (log[0], log[3]) == (9, ERROR_ABRT)


def test_reset_clears_the_ncq_error_log(disk):
    issue(disk, fpdma(Command.READ_FPDMA_QUEUED, lba=5000, sectors=1, tag=2))
    disk.reset()
    assert bytes(read_log(disk, 0x10).data) == bytes(512)


def test_fua_write_is_flushed_before_it_completes(disk, mem):
    tf = fpdma(Command.WRITE_FPDMA_QUEUED, lba=8, sectors=1, tag=4, device=0xC0)
    assert issue(disk, tf, pattern(1)).ok
    assert [c[0] for c in mem.calls] == ["writev", "flush"]


def test_write_without_fua_is_not_flushed(disk, mem):
    assert issue(disk, fpdma(Command.WRITE_FPDMA_QUEUED, lba=8, sectors=1, tag=4), pattern(1)).ok
    # DEVICE bit 7 of a non-queued command is obsolete (often set as E0h): no FUA.
    assert issue(disk, taskfile(Command.WRITE_DMA_EXT, lba=8, count=1, device=0xE0), pattern(1)).ok
    assert mem.ops("flush") == []


def test_log_directory_lists_the_ncq_command_error_log(disk):
    out = read_log(disk, 0x00)
    directory = bytes(out.data)
    assert out.ok
    assert int.from_bytes(directory[0:2], "little") == 0x0001  # GPL version
    assert int.from_bytes(directory[0x20:0x22], "little") == 1  # log 10h: one page
    assert directory[2:0x20] == bytes(0x1E) and directory[0x22:] == bytes(512 - 0x22)


@pytest.mark.parametrize(
    ("address", "page", "count"),
    [
        (0x10, 0, 0),  # count 0
        (0x10, 0, 2),  # past the single page
        (0x10, 1, 1),
        (0x10, 0x100, 1),  # page number bits 15:8 come from LBA(39:32)
        (0x11, 0, 1),  # SATA Phy event counters: not kept
        (0x13, 0, 1),
        (0x80, 0, 1),
    ],
)
def test_read_log_ext_aborts_for_missing_logs_and_pages(disk, address, page, count):
    out = read_log(disk, address, page=page, count=count)
    assert (out.completion.status, out.completion.error) == (0x41, ERROR_ABRT)
    assert out.request is None
