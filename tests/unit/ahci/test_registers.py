"""The HBA register file driven directly: reset values, RO/RW/RW1C, HR, COMRESET."""

import pytest
from driver import h2d, make_machine

from emu.ahci import fis, regs


@pytest.fixture
def m():
    return make_machine()


def test_global_reset_values_match_q35(m):
    assert m.reg(regs.CAP) == 0xC0141F05
    assert m.reg(regs.GHC) == regs.GHC_AE
    assert m.reg(regs.PI) == 0x3F
    assert m.reg(regs.VS) == 0x00010000
    for offset in (
        regs.IS,
        regs.CCC_CTL,
        regs.CCC_PORTS,
        regs.EM_LOC,
        regs.EM_CTL,
        regs.CAP2,
        regs.BOHC,
        0x2C,
        0xA0,
        0xFC,
    ):
        assert m.reg(offset) == 0, hex(offset)


def test_port_with_disk_after_reset_shows_signature_and_link(m):
    assert m.preg(0, regs.PxSIG) == regs.SIG_ATA
    assert m.preg(0, regs.PxSSTS) == 0x113
    assert m.preg(0, regs.PxTFD) == 0x150
    assert m.preg(0, regs.PxCMD) == regs.CMD_SUD | regs.CMD_POD


def test_empty_port_shows_no_device(m):
    assert m.preg(1, regs.PxSSTS) == 0
    assert m.preg(1, regs.PxSIG) == 0xFFFFFFFF
    assert m.preg(1, regs.PxTFD) == 0x7F


def test_unimplemented_port_range_reads_zero(m):
    assert m.reg(regs.PORT_BASE + 6 * regs.PORT_STRIDE + regs.PxCMD) == 0


def test_read_only_registers_ignore_writes(m):
    for offset in (regs.CAP, regs.PI, regs.VS):
        before = m.reg(offset)
        m.set_reg(offset, ~before & 0xFFFFFFFF)
        assert m.reg(offset) == before
    for reg in (regs.PxSIG, regs.PxSSTS, regs.PxTFD):
        before = m.preg(0, reg)
        m.set_preg(0, reg, 0x12345678)
        assert m.preg(0, reg) == before


def test_ghc_ae_stays_set_and_ie_is_writable(m):
    m.set_reg(regs.GHC, 0)
    assert m.reg(regs.GHC) == regs.GHC_AE
    m.set_reg(regs.GHC, regs.GHC_IE)
    assert m.reg(regs.GHC) == regs.GHC_AE | regs.GHC_IE


def test_base_registers_keep_reserved_low_bits_zero(m):
    m.set_preg(0, regs.PxCLB, 0xFFFFFFFF)
    m.set_preg(0, regs.PxFB, 0xFFFFFFFF)
    m.set_preg(0, regs.PxCLBU, 0xFFFFFFFF)
    assert m.preg(0, regs.PxCLB) == 0xFFFFFC00
    assert m.preg(0, regs.PxFB) == 0xFFFFFF00
    assert m.preg(0, regs.PxCLBU) == 0xFFFFFFFF


def test_interrupt_enable_masks_unsupported_bits(m):
    m.set_preg(0, regs.PxIE, 0xFFFFFFFF)
    assert m.preg(0, regs.PxIE) == 0x7DC0007F


def test_sctl_reserved_high_bits_read_zero(m):
    m.set_preg(0, regs.PxSCTL, 0xFFFFFFF0)
    assert m.preg(0, regs.PxSCTL) == 0x000FFFF0


def test_start_and_stop_set_and_clear_cr_and_fr(m):
    m.start(0)
    assert m.preg(0, regs.PxCMD) & (regs.CMD_CR | regs.CMD_FR) == regs.CMD_CR | regs.CMD_FR
    m.set_preg(0, regs.PxCMD, 0)
    assert m.preg(0, regs.PxCMD) & (regs.CMD_CR | regs.CMD_FR | regs.CMD_ST | regs.CMD_FRE) == 0


def test_cmd_read_only_bits_and_self_clearing_clo(m):
    m.set_preg(0, regs.PxCMD, regs.CMD_CR | regs.CMD_FR | regs.CMD_CCS_MASK | regs.CMD_CLO)
    assert m.preg(0, regs.PxCMD) == regs.CMD_SUD | regs.CMD_POD


def test_clo_clears_busy_and_drq(m):
    m.start(0)
    m.command(0, h2d(0, c=False, control=fis.CONTROL_SRST))  # SRST asserted: BSY
    m.issue(1)
    assert m.preg(0, regs.PxTFD) & regs.TFD_STS_BSY
    m.set_preg(0, regs.PxCMD, regs.CMD_FRE | regs.CMD_ST | regs.CMD_CLO)
    assert m.preg(0, regs.PxTFD) & (regs.TFD_STS_BSY | regs.TFD_STS_DRQ) == 0
    assert m.preg(0, regs.PxCMD) & regs.CMD_CLO == 0


def test_hba_reset_restores_port_registers_but_keeps_the_bases(m):
    m.start(0)
    m.set_preg(0, regs.PxIE, 0xFF)
    m.set_reg(regs.GHC, regs.GHC_IE)
    m.set_reg(regs.GHC, regs.GHC_HR)
    assert m.reg(regs.GHC) == regs.GHC_AE
    assert m.preg(0, regs.PxCMD) == regs.CMD_SUD | regs.CMD_POD
    assert m.preg(0, regs.PxIE) == 0
    assert m.preg(0, regs.PxSIG) == regs.SIG_ATA
    assert (m.preg(0, regs.PxCLB), m.preg(0, regs.PxFB)) == (0x10000, 0x40000)  # AHCI 10.4.3


def test_comreset_brings_the_link_back_and_reports_exchange(m):
    m.set_preg(0, regs.PxSCTL, 1)
    assert m.preg(0, regs.PxSSTS) == 0
    assert m.preg(0, regs.PxTFD) == 0x7F  # AHCI 10.4.2
    m.set_preg(0, regs.PxSCTL, 0)
    assert m.preg(0, regs.PxSSTS) == 0x113
    assert m.preg(0, regs.PxSERR) & regs.SERR_DIAG_X
    assert m.preg(0, regs.PxIS) & regs.IS_PCS
    m.set_preg(0, regs.PxSERR, regs.SERR_DIAG_X)  # RW1C; PCS follows DIAG.X
    assert m.preg(0, regs.PxSERR) == 0
    assert m.preg(0, regs.PxIS) & regs.IS_PCS == 0


def test_byte_writes_touch_only_their_bytes(m):
    m.set_preg(0, regs.PxCLB, 0x12345400)
    m.hba.write(regs.PORT_BASE + regs.PxCLB + 3, 1, 0xAB)
    assert m.preg(0, regs.PxCLB) == 0xAB345400
    assert m.hba.read(regs.PORT_BASE + regs.PxCLB + 2, 2) == 0xAB34
