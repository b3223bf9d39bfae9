import pytest

from emu.ata import AtaDisk, Protocol
from emu.ata.commands import Command
from emu.ata.taskfile import ERROR_ABRT, ERROR_IDNF, ERROR_UNC
from emu.testing.memory_disk import MemoryDevice

from .helpers import issue, taskfile


@pytest.mark.parametrize("command", [Command.READ_VERIFY_SECTORS, Command.READ_VERIFY_SECTORS_EXT])
def test_read_verify_is_non_data_and_reads_the_range(disk, mem, command):
    out = issue(disk, taskfile(command, lba=0x10, count=200))
    assert out.ok
    assert (out.request.protocol, out.request.nbytes) == (Protocol.NON_DATA, 0)
    reads = mem.ops("readv")
    assert reads[0][1] == 0x10 * 512
    assert sum(c[2] for c in reads) == 200 * 512


def test_read_verify_28_bit_takes_lba_27_24_from_device():
    mem = MemoryDevice(1 << 28)
    tf = taskfile(Command.READ_VERIFY_SECTORS, lba=0xFF_000001, count=1, device=0x47)
    assert issue(AtaDisk(mem), tf).ok
    assert mem.ops("readv") == [("readv", 0x7000001 * 512, 512)]


def test_read_verify_28_bit_count_zero_verifies_256_sectors(disk, mem):
    assert issue(disk, taskfile(Command.READ_VERIFY_SECTORS, lba=0, count=0)).ok
    assert sum(c[2] for c in mem.ops("readv")) == 256 * 512


def test_read_verify_ext_count_zero_verifies_65536_sectors():
    mem = MemoryDevice(65536)
    assert issue(AtaDisk(mem), taskfile(Command.READ_VERIFY_SECTORS_EXT, lba=0, count=0)).ok
    assert sum(c[2] for c in mem.ops("readv")) == 65536 * 512


@pytest.mark.parametrize("command", [Command.READ_VERIFY_SECTORS, Command.READ_VERIFY_SECTORS_EXT])
def test_read_verify_past_end_sets_idnf(disk, mem, command):
    out = issue(disk, taskfile(command, lba=2040, count=9))
    assert (out.completion.status, out.completion.error) == (0x41, ERROR_IDNF)
    assert mem.calls == []


def test_read_verify_medium_error_sets_unc(disk, mem):
    mem.failing.add("readv")
    out = issue(disk, taskfile(Command.READ_VERIFY_SECTORS_EXT, lba=12, count=3))
    assert (out.completion.error, out.completion.lba) == (ERROR_UNC, 12)


@pytest.mark.parametrize("command", [Command.FLUSH_CACHE, Command.FLUSH_CACHE_EXT])
def test_flush_cache_flushes_the_block_device(disk, mem, command):
    out = issue(disk, taskfile(command))
    assert out.ok and out.completion.status == 0x50
    assert mem.ops("flush") == [("flush",)]


@pytest.mark.parametrize("command", [Command.FLUSH_CACHE, Command.FLUSH_CACHE_EXT])
def test_flush_cache_failure_aborts(disk, mem, command):
    mem.failing.add("flush")
    out = issue(disk, taskfile(command))
    assert (out.completion.status, out.completion.error) == (0x41, ERROR_ABRT)


def test_check_power_mode_reports_active_or_idle(disk):
    out = issue(disk, taskfile(Command.CHECK_POWER_MODE))
    assert (out.completion.status, out.completion.count) == (0x50, 0xFF)


@pytest.mark.parametrize(
    "command",
    [
        Command.STANDBY_IMMEDIATE,
        Command.IDLE_IMMEDIATE,
        Command.STANDBY,
        Command.IDLE,
        Command.SLEEP,
    ],
)
def test_power_commands_succeed_with_drdy_only_as_qemu(disk, command):
    out = issue(disk, taskfile(command, count=0x10))
    assert (out.completion.status, out.completion.error) == (0x40, 0)
    assert issue(disk, taskfile(Command.CHECK_POWER_MODE)).completion.count == 0xFF


def test_execute_device_diagnostic_reports_passed_and_the_ata_signature(disk):
    out = issue(disk, taskfile(Command.EXECUTE_DEVICE_DIAGNOSTIC, lba=0x123456, count=9))
    c = out.completion
    assert out.request.protocol is Protocol.DIAGNOSTIC
    assert not c.failed
    assert (c.status, c.error, c.count, c.lba, c.device) == (0x50, 0x01, 0x01, 0x000001, 0x00)


@pytest.mark.parametrize(
    "opcode",
    [
        0x00,  # NOP: always aborted (ACS-3 7.17)
        0x27,  # READ NATIVE MAX ADDRESS EXT: HPA not claimed
        0x3F,  # WRITE LOG EXT: no writable logs
        0x47,  # READ LOG DMA EXT: not claimed
        0x91,  # INITIALIZE DEVICE PARAMETERS: obsolete
        0xB0,  # SMART: not claimed
        0xC9,  # READ DMA without retry: obsolete
        0xF8,  # READ NATIVE MAX ADDRESS
        0xFF,
        0x1FF,  # not even a byte
    ],
)
def test_unsupported_commands_abort(disk, mem, opcode):
    out = issue(disk, taskfile(opcode, count=1))
    c = out.completion
    assert (c.status, c.error, c.lba) == (0x41, ERROR_ABRT, 0)
    assert out.request is None and mem.calls == []
