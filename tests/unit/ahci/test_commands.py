"""Commands through the HBA: data in guest RAM, FISes, TFD, PRDBC, errors, NCQ, interrupts."""

import io
import json
import struct

import pytest
from driver import DATA, h2d, make_machine, sector_pattern

from emu.ahci import fis, regs
from emu.ahci.trace import Tracer

READ_DMA_EXT = 0x25
WRITE_DMA_EXT = 0x35
READ_SECTORS = 0x20
WRITE_SECTORS = 0x30
IDENTIFY = 0xEC
READ_FPDMA = 0x60
WRITE_FPDMA = 0x61


@pytest.fixture
def m():
    machine = make_machine(disk_sizes=(1 << 20,))
    machine.start(0)
    return machine


def test_read_dma_ext_lands_in_ram_and_completes(m):
    m.command(3, h2d(READ_DMA_EXT, lba=5, count=2), [(DATA, 1024)])
    m.issue(1 << 3)
    assert m.preg(0, regs.PxCI) == 0
    assert m.memory.read(DATA, 1024) == sector_pattern(5) + sector_pattern(6)
    assert m.prdbc(3) == 1024
    assert m.preg(0, regs.PxTFD) == 0x50
    assert m.preg(0, regs.PxIS) & regs.IS_DHRS
    d2h = m.rfis(fis.RFIS_RFIS, 20)
    assert (d2h[0], d2h[1] & fis.FLAG_I, d2h[2], d2h[3]) == (fis.TYPE_REG_D2H, fis.FLAG_I, 0x50, 0)


def test_fragmented_odd_prdt_scatters_exactly(m):
    pieces = [
        (DATA + 1 * 0x1000 + 2, 2),
        (DATA + 2 * 0x1000 + 6, 254),
        (DATA + 3 * 0x1000, 256),
        (DATA + 4 * 0x1000 + 10, 512),
    ]
    m.command(0, h2d(READ_DMA_EXT, lba=9, count=2), pieces)
    m.issue(1)
    got = b"".join(m.memory.read(address, length) for address, length in pieces)
    assert got == sector_pattern(9) + sector_pattern(10)
    assert m.memory.read(DATA + 0x1000, 2) == b"\0\0"  # nothing before the first piece


def test_write_dma_ext_lands_in_the_file(m):
    m.memory.write(DATA, b"\xa5" * 1024)
    m.command(0, h2d(WRITE_DMA_EXT, lba=100, count=2), [(DATA, 512), (DATA + 512, 512)], write=True)
    m.issue(1)
    assert m.preg(0, regs.PxTFD) == 0x50
    assert m.disk_bytes(100, 3) == b"\xa5" * 1024 + sector_pattern(102)


def test_identify_posts_pio_setup_and_no_d2h(m):
    m.command(0, h2d(IDENTIFY), [(DATA, 512)])
    m.issue(1)
    ident = m.memory.read(DATA, 512)
    assert sum(ident) % 256 == 0 and ident[510] == 0xA5
    assert struct.unpack_from("<I", ident, 120)[0] == (1 << 20) // 512
    assert m.prdbc(0) == 512
    pio = m.rfis(fis.RFIS_PSFIS, 20)
    assert pio[0] == fis.TYPE_PIO_SETUP and pio[1] & fis.FLAG_D and pio[1] & fis.FLAG_I
    assert pio[15] == 0x50 and struct.unpack_from("<H", pio, 16)[0] == 512
    assert m.preg(0, regs.PxIS) & (regs.IS_PSS | regs.IS_DHRS) == regs.IS_PSS
    assert m.rfis(fis.RFIS_RFIS, 1) == b"\0"


def test_pio_write_posts_setup_then_d2h(m):
    m.memory.write(DATA, b"\x11" * 512)
    m.command(0, h2d(WRITE_SECTORS, lba=7, count=1), [(DATA, 512)], write=True)
    m.issue(1)
    assert m.preg(0, regs.PxIS) & regs.IS_DHRS
    assert m.rfis(fis.RFIS_PSFIS, 1)[0] == fis.TYPE_PIO_SETUP
    assert m.disk_bytes(7, 1) == b"\x11" * 512


READ_SECTORS_EXT = 0x24
READ_MULTIPLE = 0xC4
WRITE_MULTIPLE_EXT = 0x39
SET_MULTIPLE_MODE = 0xC6


def _pio_setup(m) -> tuple[int, int]:
    """(flags byte, transfer count) of the PIO Setup FIS in the received-FIS area."""
    pio = m.rfis(fis.RFIS_PSFIS, 20)
    assert pio[0] == fis.TYPE_PIO_SETUP
    return pio[1], struct.unpack_from("<H", pio, 16)[0]


@pytest.mark.parametrize("count", [1, 2, 255, 256])
def test_pio_read_leaves_the_last_drq_blocks_setup_fis(m, count):
    """SATA 11.7: one PIO Setup FIS per 512-byte DRQ block; the last one stays, so its
    transfer count is 512 however long the read (256 sectors used to wrap to 0)."""
    m.command(0, h2d(READ_SECTORS_EXT, lba=0, count=count), [(DATA, count * 512)])
    m.issue(1)
    assert m.memory.read(DATA + (count - 1) * 512, 512) == sector_pattern(count - 1)
    flags, transfer_count = _pio_setup(m)
    assert flags & fis.FLAG_I and flags & fis.FLAG_D
    assert transfer_count == 512
    assert m.prdbc(0) == count * 512


@pytest.mark.parametrize(("multiple", "count", "last"), [(16, 20, 4), (16, 32, 16), (8, 3, 3)])
def test_read_multiple_blocks_are_the_multiple_count(m, multiple, count, last):
    m.command(0, h2d(SET_MULTIPLE_MODE, count=multiple))
    m.issue(1)
    m.command(1, h2d(READ_MULTIPLE, lba=0, count=count), [(DATA, count * 512)])
    m.issue(2)
    assert m.preg(0, regs.PxTFD) == 0x50
    assert _pio_setup(m)[1] == last * 512


@pytest.mark.parametrize(
    ("command", "count", "pss"),
    [
        (WRITE_SECTORS, 1, False),
        (WRITE_SECTORS, 2, True),
        (WRITE_MULTIPLE_EXT, 16, False),
        (WRITE_MULTIPLE_EXT, 17, True),
    ],
)
def test_pio_write_of_more_than_one_block_sets_pss(m, command, count, pss):
    """SATA 11.8: the device asks for each block after the first with a PIO Setup FIS
    whose I bit is set (PxIS.PSS); the command ends with a D2H FIS (PxIS.DHRS)."""
    m.memory.write(DATA, b"\x3c" * count * 512)
    m.command(0, h2d(command, lba=8, count=count), [(DATA, count * 512)], write=True)
    m.issue(1)
    status = m.preg(0, regs.PxIS)
    assert status & regs.IS_DHRS
    assert bool(status & regs.IS_PSS) == pss
    flags, transfer_count = _pio_setup(m)
    assert not flags & fis.FLAG_D and bool(flags & fis.FLAG_I) == pss
    assert transfer_count == (512 if command == WRITE_SECTORS else (count - 1) % 16 * 512 + 512)
    assert m.disk_bytes(8, count) == b"\x3c" * count * 512


def test_read_past_end_sets_idnf_and_halts_port(m):
    m.command(0, h2d(READ_DMA_EXT, lba=2047, count=2), [(DATA, 1024)])
    m.issue(1)
    assert m.preg(0, regs.PxTFD) == 0x1041  # error IDNF, status DRDY|ERR
    assert m.preg(0, regs.PxIS) & regs.IS_TFES
    assert m.preg(0, regs.PxCI) == 1  # the failed command stays issued
    assert m.preg(0, regs.PxCMD) & regs.CMD_CCS_MASK == 0
    m.command(1, h2d(READ_DMA_EXT, lba=0, count=1), [(DATA, 512)])
    m.issue(1 << 1)
    assert m.preg(0, regs.PxCI) == 0b11  # halted: nothing runs until recovery


def test_recovery_after_error_lets_the_port_work_again(m):
    m.command(0, h2d(READ_DMA_EXT, lba=5000, count=1), [(DATA, 512)])
    m.issue(1)
    m.stop(0)
    assert m.preg(0, regs.PxCI) == 0 and m.preg(0, regs.PxCMD) & regs.CMD_CR == 0
    m.set_preg(0, regs.PxSERR, 0xFFFFFFFF)
    m.set_preg(0, regs.PxIS, 0xFFFFFFFF)
    m.start(0)
    m.command(0, h2d(READ_DMA_EXT, lba=1, count=1), [(DATA, 512)])
    m.issue(1)
    assert m.preg(0, regs.PxCI) == 0
    assert m.memory.read(DATA, 512) == sector_pattern(1)


def test_unknown_opcode_aborts(m):
    m.command(0, h2d(0xFB), [])
    m.issue(1)
    assert m.preg(0, regs.PxTFD) == 0x0441


def test_prdt_outside_ram_is_host_bus_fatal_and_touches_nothing(m):
    m.command(0, h2d(READ_DMA_EXT, lba=0, count=1), [(0xF0000000, 512)])
    m.issue(1)
    assert m.preg(0, regs.PxIS) & regs.IS_HBFS
    assert m.preg(0, regs.PxCI) == 1
    m.command(1, h2d(READ_DMA_EXT, lba=0, count=1), [(1 << 40, 512)])
    m.stop(0)
    m.start(0)
    m.issue(1 << 1)
    assert m.preg(0, regs.PxIS) & regs.IS_HBFS


def test_command_table_outside_ram_is_host_bus_fatal(m):
    m.command(0, h2d(READ_DMA_EXT, lba=0, count=1), [(DATA, 512)], ctba=m.memory.size)
    m.issue(1)
    assert m.preg(0, regs.PxIS) & regs.IS_HBFS


def test_short_prdt_is_an_overflow_and_transfers_nothing(m):
    m.memory.write(DATA, b"\x77" * 1024)
    m.command(0, h2d(READ_DMA_EXT, lba=0, count=2), [(DATA, 512)])
    m.issue(1)
    assert m.preg(0, regs.PxIS) & regs.IS_OFS
    assert m.memory.read(DATA, 1024) == b"\x77" * 1024


def test_read_dma_with_no_prdt_is_an_overflow_not_a_crash(m):
    m.command(0, h2d(0xC8, lba=0, count=1), [])
    m.issue(1)
    assert m.preg(0, regs.PxIS) & regs.IS_OFS


def test_command_issued_while_stopped_is_ignored(m):
    m.stop(0)
    m.command(0, h2d(READ_DMA_EXT, lba=0, count=1), [(DATA, 512)])
    m.issue(1)
    assert m.preg(0, regs.PxCI) == 0
    assert m.memory.read(DATA, 512) == bytes(512)


def test_bus_master_disabled_is_host_bus_fatal(m):
    m.bus_master = False
    m.command(0, h2d(READ_DMA_EXT, lba=0, count=1), [(DATA, 512)])
    m.issue(1)
    assert m.preg(0, regs.PxIS) & regs.IS_HBFS


def test_no_fis_posted_without_fre(m):
    m.stop(0)
    m.set_preg(0, regs.PxCMD, 0)
    m.set_preg(0, regs.PxCMD, regs.CMD_ST)
    m.command(0, h2d(READ_DMA_EXT, lba=0, count=1), [(DATA, 512)])
    m.issue(1)
    assert m.preg(0, regs.PxCI) == 0
    assert m.rfis(0, 0x100) == bytes(0x100)


def test_prd_interrupt_bit_sets_dps(m):
    m.command(0, h2d(READ_DMA_EXT, lba=0, count=1), [(DATA, 512)], prd_interrupt=True)
    m.issue(1)
    assert m.preg(0, regs.PxIS) & regs.IS_DPS


def test_ncq_32_tags_complete_through_sdb(m):
    for tag in range(32):
        cfis = h2d(READ_FPDMA if tag % 2 else WRITE_FPDMA, lba=tag * 4, count=tag << 3, features=2)
        if tag % 2 == 0:
            m.memory.write(DATA + tag * 0x1000, bytes([tag]) * 1024)
        m.command(tag, cfis, [(DATA + tag * 0x1000, 1024)], write=tag % 2 == 0)
    m.set_preg(0, regs.PxSACT, 0xFFFFFFFF)
    m.issue(0xFFFFFFFF)
    assert m.preg(0, regs.PxCI) == 0
    assert m.preg(0, regs.PxSACT) == 0
    assert m.preg(0, regs.PxIS) & regs.IS_SDBS
    for tag in range(1, 32, 2):
        assert m.memory.read(DATA + tag * 0x1000, 512) == sector_pattern(tag * 4)
    for tag in range(0, 32, 2):
        assert m.disk_bytes(tag * 4, 2) == bytes([tag]) * 1024
    sdb = m.rfis(fis.RFIS_SDBFIS, 8)  # one SDB FIS completes the whole batch
    assert sdb[0] == fis.TYPE_SET_DEVICE_BITS and struct.unpack_from("<I", sdb, 4)[0] == 0xFFFFFFFF


def test_ncq_error_sets_tfes_keeps_sact_and_logs_the_tag(m):
    m.command(4, h2d(READ_FPDMA, lba=4000, count=4 << 3, features=1), [(DATA, 512)])
    m.set_preg(0, regs.PxSACT, 1 << 4)
    m.issue(1 << 4)
    assert m.preg(0, regs.PxIS) & regs.IS_TFES
    assert m.preg(0, regs.PxSACT) == 1 << 4
    m.stop(0)
    assert m.preg(0, regs.PxSACT) == 0
    m.start(0)
    m.command(0, h2d(0x2F, lba=0x10, count=1), [(DATA, 512)])  # READ LOG EXT page 10h
    m.issue(1)
    log = m.memory.read(DATA, 512)
    assert log[0] & 0x1F == 4 and log[0] & 0x80 == 0


def test_interrupt_raised_only_when_enabled(m):
    m.command(0, h2d(READ_DMA_EXT, lba=0, count=1), [(DATA, 512)])
    m.issue(1)
    assert m.interrupts == []
    m.set_preg(0, regs.PxIS, 0xFFFFFFFF)
    m.set_preg(0, regs.PxIE, regs.IS_DHRS)
    m.set_reg(regs.GHC, regs.GHC_IE)
    m.issue(1)
    assert m.interrupts == [1]
    assert m.reg(regs.IS) == 1
    m.set_reg(regs.IS, 1)
    assert m.reg(regs.IS) == 1  # the port still has DHRS pending
    m.set_preg(0, regs.PxIS, regs.IS_DHRS)
    m.set_reg(regs.IS, 1)
    assert m.reg(regs.IS) == 0


def test_software_reset_by_control_fises_reports_the_signature(m):
    m.command(0, h2d(0, c=False, control=fis.CONTROL_SRST))
    m.issue(1)
    assert m.preg(0, regs.PxTFD) & regs.TFD_STS_BSY
    m.command(1, h2d(0, c=False, control=0))
    m.issue(1 << 1)
    assert m.preg(0, regs.PxTFD) == 0x150
    assert m.preg(0, regs.PxSIG) == regs.SIG_ATA


def test_trace_records_each_command():
    stream = io.StringIO()
    m = make_machine(tracer=Tracer(stream))
    m.start(0)
    m.command(0, h2d(READ_DMA_EXT, lba=3, count=1), [(DATA, 512)])
    m.issue(1)
    m.command(1, h2d(READ_DMA_EXT, lba=9999, count=1), [(DATA, 512)])
    m.issue(2)
    first, second = (json.loads(line) for line in stream.getvalue().splitlines())
    assert first == {
        "event": "command",
        "port": 0,
        "slot": 0,
        "opcode": 0x25,
        "lba": 3,
        "count": 1,
        "features": 0,
        "bytes": 512,
        "prdt": [[DATA, 512]],
        "status": 0x50,
        "error": 0,
        "sources": [[3 * 512, 512, "mem:0"]],  # the block device's sources()
    }
    assert second["event"] == "failure" and second["error"] == 0x10
