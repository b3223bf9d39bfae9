import pytest

from emu.ata import AtaDisk, Protocol
from emu.ata.commands import Command
from emu.ata.taskfile import ERROR_ABRT, ERROR_IDNF, ERROR_UNC
from emu.storage.blockdev import SECTOR_SIZE
from emu.testing.memory_disk import MemoryDevice

from .helpers import issue, pattern, taskfile

LBA28 = {
    Command.READ_SECTORS,
    Command.WRITE_SECTORS,
    Command.READ_MULTIPLE,
    Command.WRITE_MULTIPLE,
    Command.READ_DMA,
    Command.WRITE_DMA,
}
QUEUED = {Command.READ_FPDMA_QUEUED, Command.WRITE_FPDMA_QUEUED}

# (read command, write command, read protocol, write protocol)
PAIRS = [
    (Command.READ_DMA, Command.WRITE_DMA, Protocol.DMA_IN, Protocol.DMA_OUT),
    (Command.READ_DMA_EXT, Command.WRITE_DMA_EXT, Protocol.DMA_IN, Protocol.DMA_OUT),
    (Command.READ_SECTORS, Command.WRITE_SECTORS, Protocol.PIO_IN, Protocol.PIO_OUT),
    (Command.READ_SECTORS_EXT, Command.WRITE_SECTORS_EXT, Protocol.PIO_IN, Protocol.PIO_OUT),
    (Command.READ_MULTIPLE, Command.WRITE_MULTIPLE, Protocol.PIO_IN, Protocol.PIO_OUT),
    (Command.READ_MULTIPLE_EXT, Command.WRITE_MULTIPLE_EXT, Protocol.PIO_IN, Protocol.PIO_OUT),
    (
        Command.READ_FPDMA_QUEUED,
        Command.WRITE_FPDMA_QUEUED,
        Protocol.FPDMA_IN,
        Protocol.FPDMA_OUT,
    ),
]


def rw(command: int, lba: int, count: int, *, tag: int = 0):
    """A task file addressing ``count`` sectors at ``lba`` the way ``command`` expects."""
    if command in QUEUED:
        return taskfile(command, lba=lba, features=count & 0xFFFF, count=tag << 3)
    if command in LBA28:
        return taskfile(command, lba=lba & 0xFFFFFF, count=count & 0xFF, device=0x40 | lba >> 24)
    return taskfile(command, lba=lba, count=count & 0xFFFF)


@pytest.mark.parametrize(("read", "write", "read_proto", "write_proto"), PAIRS)
def test_written_sectors_read_back_through_every_read_write_pair(
    disk, read, write, read_proto, write_proto
):
    data = pattern(5)
    out = issue(disk, rw(write, 100, 5), data)
    assert out.ok and out.request.protocol is write_proto and out.request.nbytes == 5 * 512
    out = issue(disk, rw(read, 100, 5))
    assert out.ok and out.request.protocol is read_proto
    assert bytes(out.data) == data


def test_write_dma_ext_lands_in_the_image_file(raw_disk, image_path):
    data = pattern(4, seed=7)
    assert issue(raw_disk, rw(Command.WRITE_DMA_EXT, 10, 4), data).ok
    content = image_path.read_bytes()
    assert content[10 * 512 : 14 * 512] == data
    assert content[: 10 * 512] == bytes(10 * 512)
    assert content[14 * 512 :] == bytes(len(content) - 14 * 512)


def test_read_dma_returns_the_image_file_bytes(raw_disk, image_path):
    data = pattern(3, seed=9)
    with open(image_path, "r+b") as f:
        f.seek(2045 * 512)
        f.write(data)
    out = issue(raw_disk, rw(Command.READ_DMA, 2045, 3))
    assert out.ok and bytes(out.data) == data


def test_success_status_is_drdy_dsc(disk):
    out = issue(disk, rw(Command.READ_DMA_EXT, 0, 1))
    assert (out.completion.status, out.completion.error) == (0x50, 0)


def test_scattered_buffers_are_filled_in_order(disk, mem):
    data = pattern(3, seed=3)
    assert issue(disk, rw(Command.WRITE_DMA_EXT, 20, 3), data).ok
    req = disk.decode(rw(Command.READ_DMA_EXT, 20, 3))
    pieces = [bytearray(100), bytearray(412), bytearray(2), bytearray(1022)]
    assert not disk.execute(req, [memoryview(p) for p in pieces]).failed
    assert b"".join(pieces) == data


def test_scattered_buffers_are_written_in_order(disk, mem):
    data = pattern(2, seed=5)
    req = disk.decode(rw(Command.WRITE_DMA, 7, 2))
    assert not disk.execute(req, [memoryview(data[:300]), memoryview(data[300:])]).failed
    assert mem.sectors[7] + mem.sectors[8] == data


def test_28_bit_count_zero_means_256_sectors(disk):
    for command in LBA28:
        req = disk.decode(taskfile(command, lba=0, count=0))
        assert req.nbytes == 256 * SECTOR_SIZE, command


def test_48_bit_count_zero_means_65536_sectors():
    disk = AtaDisk(MemoryDevice(70000))
    for command in (Command.READ_DMA_EXT, Command.WRITE_SECTORS_EXT, Command.READ_MULTIPLE_EXT):
        req = disk.decode(taskfile(command, lba=0, count=0))
        assert req.nbytes == 65536 * SECTOR_SIZE, command


def test_48_bit_count_zero_past_the_end_sets_idnf(disk):
    out = issue(disk, taskfile(Command.READ_DMA_EXT, lba=0, count=0))
    assert out.completion.error == ERROR_IDNF


def test_28_bit_command_ignores_the_high_count_byte(disk):
    req = disk.decode(taskfile(Command.READ_DMA, lba=0, count=0x0302))
    assert req.nbytes == 2 * SECTOR_SIZE


def test_28_bit_lba_takes_bits_27_24_from_the_device_register():
    mem = MemoryDevice(1 << 28)
    disk = AtaDisk(mem)
    # LBA(47:24) of the task file is garbage; DEVICE(3:0) = Ah carries LBA(27:24).
    tf = taskfile(Command.WRITE_DMA, lba=0x5A5A_5ABCDE, count=1, device=0xEA)
    assert issue(disk, tf, pattern(1)).ok
    assert mem.ops("writev") == [("writev", 0xA5ABCDE * 512, 512)]


def test_48_bit_lba_uses_all_48_bits():
    mem = MemoryDevice((1 << 40) + 10)
    disk = AtaDisk(mem)
    assert issue(disk, taskfile(Command.WRITE_DMA_EXT, lba=(1 << 40) + 3, count=2), pattern(2)).ok
    assert mem.ops("writev") == [("writev", ((1 << 40) + 3) * 512, 1024)]


@pytest.mark.parametrize("command", sorted({c for pair in PAIRS for c in pair[:2]}))
def test_range_overflowing_the_end_by_one_sector_sets_idnf(disk, mem, command):
    out = issue(disk, rw(command, 2047, 2), pattern(2))
    c = out.completion
    assert (c.status, c.error) == (0x41, ERROR_IDNF)
    assert c.lba == 2047
    assert out.request is None  # refused at decode: the adapter moves no data
    assert mem.calls == []


@pytest.mark.parametrize("command", sorted({c for pair in PAIRS for c in pair[:2]}))
def test_range_ending_at_the_last_sector_succeeds(disk, command):
    assert issue(disk, rw(command, 2046, 2), pattern(2)).ok


def test_read_past_end_sets_idnf(disk):
    out = issue(disk, rw(Command.READ_DMA_EXT, 5000, 1))
    assert out.completion.error == ERROR_IDNF and out.completion.lba == 5000


def test_idnf_on_a_28_bit_command_reports_lba_27_24_in_device(disk):
    out = issue(disk, rw(Command.READ_SECTORS, 0x3123456, 1))
    c = out.completion
    assert c.error == ERROR_IDNF
    assert c.lba == 0x3123456 and c.device & 0x0F == 0x3


def test_read_multiple_aborts_once_multiple_mode_is_disabled(disk):
    assert issue(disk, taskfile(Command.SET_MULTIPLE_MODE, count=0)).ok
    for command in (
        Command.READ_MULTIPLE,
        Command.WRITE_MULTIPLE,
        Command.READ_MULTIPLE_EXT,
        Command.WRITE_MULTIPLE_EXT,
    ):
        out = issue(disk, rw(command, 0, 1), pattern(1))
        assert (out.completion.status, out.completion.error) == (0x41, ERROR_ABRT), command


def test_write_to_a_read_only_medium_aborts_and_reads_still_work():
    mem = MemoryDevice(64, read_only=True)
    mem.sectors[3] = pattern(1)
    disk = AtaDisk(mem)
    for command in (Command.WRITE_DMA, Command.WRITE_SECTORS_EXT, Command.WRITE_FPDMA_QUEUED):
        out = issue(disk, rw(command, 3, 1), pattern(1, seed=99))
        assert (out.completion.status, out.completion.error) == (0x41, ERROR_ABRT), command
    assert mem.sectors[3] == pattern(1)
    assert bytes(issue(disk, rw(Command.READ_DMA, 3, 1)).data) == pattern(1)


def test_write_to_a_read_only_raw_image_aborts(image_path):
    from emu.storage.raw import RawImage  # here: only the file-backed tests need it

    image = RawImage(str(image_path), read_only=True)
    try:
        out = issue(AtaDisk(image), rw(Command.WRITE_DMA_EXT, 0, 1), pattern(1))
    finally:
        image.close()
    assert out.completion.error == ERROR_ABRT
    assert image_path.read_bytes()[:512] == bytes(512)


def test_medium_error_on_read_sets_unc_with_the_first_lba(disk, mem):
    mem.failing.add("readv")
    out = issue(disk, rw(Command.READ_DMA_EXT, 33, 4))
    c = out.completion
    assert (c.status, c.error, c.lba) == (0x41, ERROR_UNC, 33)


def test_medium_error_on_write_aborts(disk, mem):
    mem.failing.add("writev")
    out = issue(disk, rw(Command.WRITE_SECTORS, 33, 4), pattern(4))
    assert (out.completion.status, out.completion.error, out.completion.lba) == (0x41, 4, 33)


def test_short_buffer_on_read_fills_only_the_whole_sectors_that_fit(disk, mem):
    data = pattern(4)
    assert issue(disk, rw(Command.WRITE_DMA_EXT, 50, 4), data).ok
    req = disk.decode(rw(Command.READ_DMA_EXT, 50, 4))
    buf = bytearray(b"\xee" * 700)  # one sector and a bit, of four
    mem.calls.clear()
    assert not disk.execute(req, [memoryview(buf)]).failed
    assert buf[:512] == data[:512]
    assert buf[512:] == b"\xee" * 188
    assert mem.ops("readv") == [("readv", 50 * 512, 512)]


def test_short_buffers_on_write_write_only_the_whole_sectors_that_fit(disk, mem):
    data = pattern(4)
    req = disk.decode(rw(Command.WRITE_DMA, 60, 4))
    pieces = [memoryview(data[:300]), memoryview(data[300:1100])]  # 1100 bytes of 2048
    assert not disk.execute(req, pieces).failed
    assert mem.sectors == {60: data[:512], 61: data[512:1024]}


@pytest.mark.parametrize("command", [Command.READ_DMA_EXT, Command.WRITE_DMA_EXT])
def test_no_buffers_transfer_nothing(disk, mem, command):
    req = disk.decode(rw(command, 0, 8))
    assert not disk.execute(req, []).failed
    assert mem.ops("readv") == mem.ops("writev") == []


def test_long_buffers_are_not_touched_past_nbytes(disk):
    assert issue(disk, rw(Command.WRITE_DMA_EXT, 0, 1), pattern(1)).ok
    out = issue(disk, rw(Command.READ_DMA_EXT, 0, 1), b"\xee" * 1000, buffer_size=1000)
    assert out.ok
    assert bytes(out.data[:512]) == pattern(1)
    assert out.data[512:] == b"\xee" * 488


def test_long_buffers_write_only_nbytes(disk, mem):
    out = issue(disk, rw(Command.WRITE_DMA_EXT, 9, 1), pattern(2), buffer_size=1024)
    assert out.ok
    assert mem.sectors == {9: pattern(2)[:512]}
