"""Property tests of the HBA against arbitrary guests: any sequence of register writes and
any command table leaves it answering, with the register invariants AHCI 1.3.1 section 3
sets, and a port halted by a bad command recovers as AHCI 6.2.2 says."""

import struct

from driver import CLB, DATA, TABLES, h2d, make_machine, sector_pattern
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from emu.ahci import regs

READ_DMA_EXT = 0x25
PORT_REGS = [
    regs.PxCLB,
    regs.PxCLBU,
    regs.PxFB,
    regs.PxFBU,
    regs.PxIS,
    regs.PxIE,
    regs.PxCMD,
    regs.PxTFD,
    regs.PxSIG,
    regs.PxSSTS,
    regs.PxSCTL,
    regs.PxSERR,
    regs.PxSACT,
    regs.PxCI,
    regs.PxSNTF,
    regs.PxFBS,
]
PROPERTY_SETTINGS = settings(
    max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow]
)


def port_offset(port: int, reg: int) -> int:
    return regs.PORT_BASE + port * regs.PORT_STRIDE + reg


# A write: a port register of port 0 or 1 (or a host control register), a byte lane or a
# whole dword, a value biased towards the interesting ones.
values = st.one_of(
    st.integers(0, 0xFFFFFFFF),
    st.sampled_from([0, 1, 0xFFFFFFFF, regs.CMD_ST | regs.CMD_FRE, regs.CMD_FRE, 0x11]),
)
port_write = st.tuples(
    st.sampled_from([0, 1]), st.sampled_from(PORT_REGS), st.sampled_from([1, 2, 4]), values
)
ghc_write = st.tuples(
    st.just(None), st.sampled_from([regs.GHC, regs.IS]), st.sampled_from([4]), values
)


def registers(m, port: int) -> dict[int, int]:
    return {reg: m.preg(port, reg) for reg in PORT_REGS}


def check_invariants(m, port: int) -> None:
    r = registers(m, port)
    assert r[regs.PxCLB] & 0x3FF == 0  # 3.3.1: 1 KiB aligned
    assert r[regs.PxFB] & 0xFF == 0  # 3.3.3: 256-byte aligned
    assert r[regs.PxIE] & ~regs.IE_WRITABLE == 0  # 3.3.6
    assert r[regs.PxSCTL] >> 20 == 0  # 3.3.11: bits 31:20 reserved
    assert r[regs.PxCMD] & (regs.CMD_SUD | regs.CMD_POD) == regs.CMD_SUD | regs.CMD_POD
    assert bool(r[regs.PxCMD] & regs.CMD_FR) == bool(r[regs.PxCMD] & regs.CMD_FRE)
    assert r[regs.PxFBS] == 0  # no FIS-based switching
    if not r[regs.PxCMD] & regs.CMD_ST:  # 3.3.14, 3.3.13: a stopped port has nothing issued
        assert r[regs.PxCI] == 0 and r[regs.PxSACT] == 0
    assert m.reg(regs.GHC) & regs.GHC_AE  # CAP.SAM: AHCI mode only


@PROPERTY_SETTINGS
@given(writes=st.lists(st.one_of(port_write, ghc_write), max_size=40))
def test_any_register_writes_keep_the_invariants(writes):
    m = make_machine(disk_sizes=(1 << 20, 1 << 20))
    for port in (0, 1):
        m.command(0, h2d(READ_DMA_EXT, lba=1, count=1), [(DATA, 512)], port=port)
    for port, reg, size, value in writes:
        offset = reg if port is None else port_offset(port, reg)
        before = registers(m, port or 0)
        lane = 0 if size == 4 else (value & 3) & (4 - size)
        m.hba.write(offset + lane, size, value & ((1 << (8 * size)) - 1))
        after = registers(m, port or 0)
        if port is not None and reg != regs.PxCI:  # only a PxCI write sets PxCI bits
            assert after[regs.PxCI] & ~before[regs.PxCI] == 0
        if port is not None and reg == regs.PxIS and size == 4:  # write one to clear
            assert after[regs.PxIS] & ~before[regs.PxIS] == 0
            assert after[regs.PxIS] & value & regs.IS_RW1C == 0
        if port is not None and reg == regs.PxSERR and size == 4:
            assert after[regs.PxSERR] & ~before[regs.PxSERR] == 0
            assert after[regs.PxSERR] & value & regs.SERR_RW1C == 0
        for p in (0, 1):
            check_invariants(m, p)


def restart(m) -> None:
    """AHCI 6.2.2.2: clear ST, clear the errors, start again."""
    m.stop(0)
    m.set_preg(0, regs.PxSERR, 0xFFFFFFFF)
    m.set_preg(0, regs.PxIS, 0xFFFFFFFF)
    m.set_preg(0, regs.PxCMD, regs.CMD_FRE | regs.CMD_ST)


@PROPERTY_SETTINGS
@given(
    header=st.binary(min_size=16, max_size=16),
    table=st.binary(min_size=0x80, max_size=0x80 + 16 * 8),
    slots=st.integers(1, 0xFFFFFFFF),
)
def test_garbage_command_tables_end_or_halt_and_the_port_recovers(header, table, slots):
    m = make_machine()
    m.start(0)
    for slot in range(32):
        # The guest's command header (its table pointer at the usual place half the time).
        dw0, _prdbc, ctba, ctbau = struct.unpack("<IIII", header)
        if slot % 2:
            ctba, ctbau = TABLES + slot * 0x1000, 0
        m.memory.write(CLB + slot * 32, struct.pack("<IIII", dw0, 0, ctba, ctbau) + bytes(16))
        m.memory.write(TABLES + slot * 0x1000, table)
    m.issue(slots)
    status = m.preg(0, regs.PxIS)
    ci = m.preg(0, regs.PxCI)
    assert ci & ~slots == 0  # nothing issued appears
    if ci:  # a command is still issued only when the port halted on a fatal error
        assert status & regs.IS_FATAL
    check_invariants(m, 0)
    assert m.rfis(0, 1) in (b"\0", b"\x41")  # only a DMA Setup FIS may sit at offset 0

    restart(m)
    # Software reset ends any SRST a garbage control FIS left asserted (AHCI 10.4.1).
    m.command(0, h2d(0, c=False), [])
    m.issue(1)
    m.set_preg(0, regs.PxIS, 0xFFFFFFFF)
    m.command(1, h2d(READ_DMA_EXT, lba=5, count=1), [(DATA, 512)])
    m.issue(1 << 1)
    assert m.preg(0, regs.PxCI) == 0
    assert m.preg(0, regs.PxIS) & regs.IS_FATAL == 0
    assert m.memory.read(DATA, 512) == sector_pattern(5)
    assert m.preg(0, regs.PxTFD) & 0xFF == 0x50
