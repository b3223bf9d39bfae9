"""Port-side faults (emu.faults.port) as the guest's registers and FISes show them."""

import pytest
from driver import DATA, h2d, make_machine, sector_pattern

from emu.ahci import fis, regs
from emu.faults.plan import FaultPlan
from emu.faults.port import PortFaults
from emu.faults.spec import parse_fault

READ_DMA_EXT = 0x25
READ_FPDMA = 0x60


class Clock:
    now = 100.0

    def __call__(self) -> float:
        return self.now


def faulty(tmp_path, *specs):
    clock = Clock()
    faults = PortFaults(FaultPlan([parse_fault(s) for s in specs]), clock)
    m = make_machine(faults=faults)
    m.start(0)
    m.set_preg(0, regs.PxIE, 0xFFFFFFFF)
    m.set_reg(regs.GHC, regs.GHC_AE | regs.GHC_IE)
    return m, faults, clock


def read(m, slot=0, lba=0):
    m.command(slot, h2d(READ_DMA_EXT, lba=lba, count=1), [(DATA + slot * 512, 512)])
    m.issue(1 << slot)


def queued(m, slot):
    m.command(
        slot, h2d(READ_FPDMA, lba=slot, count=slot << 3, features=1), [(DATA + slot * 512, 512)]
    )
    m.set_preg(0, regs.PxSACT, 1 << slot)
    m.issue(1 << slot)


def test_a_stalled_command_keeps_ci_and_bsy_until_comreset(tmp_path):
    m, _, _ = faulty(tmp_path, "stall:nth=1")
    read(m, 0)
    assert m.preg(0, regs.PxCI) == 1
    assert m.preg(0, regs.PxTFD) & regs.TFD_STS_BSY
    assert m.memory.read(DATA, 512) == bytes(512)  # nothing moved
    read(m, 1, lba=1)  # the device is busy: nothing else runs
    assert m.preg(0, regs.PxCI) == 0b11
    m.stop(0)
    assert m.preg(0, regs.PxTFD) & regs.TFD_STS_BSY  # clearing ST does not unstick it
    m.set_preg(0, regs.PxSCTL, regs.SCTL_DET_COMRESET)
    m.set_preg(0, regs.PxSCTL, 0)
    assert m.preg(0, regs.PxTFD) & 0xFF == 0x50
    m.start(0)
    read(m, 2, lba=2)
    assert m.preg(0, regs.PxCI) == 0
    assert m.memory.read(DATA + 1024, 512) == sector_pattern(2)


def test_a_stalled_command_is_also_cleared_by_hba_reset(tmp_path):
    m, _, _ = faulty(tmp_path, "stall:nth=1")
    read(m, 0)
    m.set_reg(regs.GHC, regs.GHC_HR)
    m.start(0)
    read(m, 0, lba=3)
    assert m.preg(0, regs.PxCI) == 0 and m.memory.read(DATA, 512) == sector_pattern(3)


def test_a_stalled_queued_command_is_accepted_and_never_completes(tmp_path):
    m, _, _ = faulty(tmp_path, "stall:opcode=ncq,nth=1")
    queued(m, 4)
    assert (m.preg(0, regs.PxCI), m.preg(0, regs.PxSACT)) == (0, 1 << 4)


def test_latency_for_commands_completes_queued_tags_out_of_order(tmp_path):
    m, _, _ = faulty(tmp_path, "latency:opcode=ncq,nth=1,commands=2")
    queued(m, 0)
    assert m.preg(0, regs.PxSACT) == 1  # held: its data is there, its SDB not yet
    assert m.memory.read(DATA, 512) == sector_pattern(0)
    queued(m, 1)
    assert m.preg(0, regs.PxSACT) == 1  # tag 1 done, tag 0 still held
    queued(m, 2)  # the second command after it: tag 0's SDB comes now
    assert m.preg(0, regs.PxSACT) == 0
    assert m.rfis(fis.RFIS_SDBFIS, 1) == bytes([fis.TYPE_SET_DEVICE_BITS])


def test_latency_in_time_holds_a_non_queued_completion(tmp_path):
    m, faults, clock = faulty(tmp_path, "latency:nth=1,ms=50")
    read(m, 0)
    assert m.preg(0, regs.PxCI) == 1 and m.preg(0, regs.PxTFD) & regs.TFD_STS_BSY
    read(m, 1, lba=1)  # queued behind the busy device
    assert m.preg(0, regs.PxCI) == 0b11
    assert faults.next_deadline() == pytest.approx(100.05)
    clock.now += 0.049
    faults.run_due()
    assert m.preg(0, regs.PxCI) == 0b11
    clock.now += 0.002
    faults.run_due()  # the board does this at every ABAR access, and when the guest halts
    assert m.preg(0, regs.PxCI) == 0
    assert m.preg(0, regs.PxTFD) & 0xFF == 0x50
    assert m.memory.read(DATA + 512, 512) == sector_pattern(1)


def test_clearing_st_drops_a_held_completion(tmp_path):
    m, faults, _ = faulty(tmp_path, "latency:nth=1,ms=5")
    read(m, 0)
    m.stop(0)
    assert not faults.pending
    m.start(0)
    read(m, 0, lba=7)
    assert m.preg(0, regs.PxCI) == 0


def test_link_loss_and_return(tmp_path):
    m, faults, clock = faulty(tmp_path, "link-loss:nth=1,down-ms=20")
    m.interrupts.clear()
    read(m, 0)
    assert m.preg(0, regs.PxSSTS) & 0xF == 0
    assert m.preg(0, regs.PxSERR) & regs.SERR_DIAG_N
    assert m.preg(0, regs.PxIS) & regs.IS_PRCS
    assert m.preg(0, regs.PxCI) == 1  # the command is lost with the link
    assert m.interrupts
    read(m, 1, lba=1)  # no device: nothing runs
    assert m.memory.read(DATA + 512, 512) == bytes(512)
    m.set_preg(0, regs.PxSERR, regs.SERR_DIAG_N)
    assert not m.preg(0, regs.PxIS) & regs.IS_PRCS  # PRCS mirrors DIAG.N
    clock.now += 0.021
    faults.run_due()
    assert m.preg(0, regs.PxSSTS) & 0xF == regs.SSTS_DET_PRESENT
    assert m.preg(0, regs.PxSERR) & (regs.SERR_DIAG_X | regs.SERR_DIAG_N) == (
        regs.SERR_DIAG_X | regs.SERR_DIAG_N
    )
    assert m.preg(0, regs.PxIS) & (regs.IS_PCS | regs.IS_PRCS) == regs.IS_PCS | regs.IS_PRCS
    assert m.preg(0, regs.PxSIG) == regs.SIG_ATA
    assert m.rfis(fis.RFIS_RFIS, 1) == bytes([fis.TYPE_REG_D2H])  # the signature FIS
    m.stop(0)
    m.set_preg(0, regs.PxSERR, 0xFFFFFFFF)
    m.start(0)
    read(m, 2, lba=2)
    assert m.preg(0, regs.PxCI) == 0 and m.memory.read(DATA + 1024, 512) == sector_pattern(2)


def test_a_comreset_while_the_link_is_down_finds_no_device(tmp_path):
    m, _, _ = faulty(tmp_path, "link-loss:nth=1")
    read(m, 0)
    m.stop(0)
    m.set_preg(0, regs.PxSCTL, regs.SCTL_DET_COMRESET)
    m.set_preg(0, regs.PxSCTL, 0)
    assert m.preg(0, regs.PxSSTS) & 0xF == 0
    assert not m.preg(0, regs.PxSERR) & regs.SERR_DIAG_X


def test_a_non_queued_completion_held_for_commands_is_released_by_later_issues(tmp_path):
    m, faults, _ = faulty(tmp_path, "latency:nth=1,commands=1")
    read(m, 0)
    assert m.preg(0, regs.PxCI) == 1  # held; the device is busy
    read(m, 1, lba=1)  # issuing one more releases it, then the new one runs
    assert m.preg(0, regs.PxCI) == 0
    assert m.memory.read(DATA + 512, 512) == sector_pattern(1)
    assert not faults.pending


def test_a_link_down_for_polls_comes_back_at_the_nth_read_of_pxssts(tmp_path):
    m, faults, _ = faulty(tmp_path, "link-loss:nth=1,down=3")
    read(m, 0)
    ssts = regs.PORT_BASE + regs.PxSSTS
    for _ in range(2):
        faults.before_access(ssts, True)  # as the board does before each ABAR access
        assert m.preg(0, regs.PxSSTS) & 0xF == 0
    faults.before_access(regs.PORT_BASE + regs.PxIS, True)  # other registers do not count
    faults.before_access(ssts, True)
    assert m.preg(0, regs.PxSSTS) & 0xF == regs.SSTS_DET_PRESENT
