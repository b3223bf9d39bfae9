"""The driver sanitizer: one test per rule, each against the HBA driven from the host."""

import io
import struct

import pytest
from driver import CLB, DATA, FB, h2d, make_machine

from emu.ahci import regs
from emu.sanitizer.checker import Sanitizer, Violation
from emu.sanitizer.rules import RULES

READ_DMA_EXT = 0x25
READ_FPDMA = 0x60
FLUSH = 0xE7
EIP = 0x00101234


class Watched:
    """A machine whose register writes go through a Sanitizer."""

    def __init__(self, tmp_path, *, strict: bool = False) -> None:
        self.m = make_machine(disk_sizes=(1 << 20, 1 << 20))
        self.err = io.StringIO()
        self.san = Sanitizer(self.m.hba, self.m.memory, lambda: EIP, strict=strict, stream=self.err)
        self.m.hba.write = self.san.watch(self.m.hba.write)
        self.m.hba.read = self.san.watch_reads(self.m.hba.read)

    @property
    def rules(self) -> list[str]:
        return [v["rule"] for v in self.san.violations]

    def read(self, slot: int = 0, port: int = 0, **kw) -> None:
        self.m.command(slot, h2d(READ_DMA_EXT, lba=slot, count=1), [(DATA, 512)], port=port, **kw)

    def queued(self, slot: int, tag: int | None = None) -> None:
        tag = slot if tag is None else tag
        cfis = h2d(READ_FPDMA, lba=slot, count=tag << 3, features=1)
        self.m.command(slot, cfis, [(DATA + slot * 512, 512)])


@pytest.fixture
def w(tmp_path):
    return Watched(tmp_path)


def _set_header(w: Watched, slot: int, *, flags=None, ctba=None, port: int = 0) -> None:
    address = CLB + port * 0x1000 + slot * 32
    dw0, prdbc, old_ctba, ctbau = struct.unpack_from("<IIII", w.m.memory.mem, address)
    if flags is not None:
        dw0 = dw0 & ~0xFFFF | flags
    struct.pack_into("<IIII", w.m.memory.mem, address, dw0, prdbc, ctba or old_ctba, ctbau)


def test_a_driver_that_keeps_the_rules_is_clean(w):
    w.m.start(0)
    w.read(0)
    w.m.issue(1)
    for slot in range(4):
        w.queued(slot)
    w.m.set_preg(0, regs.PxSACT, 0xF)
    w.m.issue(0xF)
    w.m.stop(0)
    assert w.san.violations == [] and w.err.getvalue() == ""


def test_report_line_trace_record_and_once_per_rule_and_port(w):
    seen = []
    w.san.listeners.append(seen.append)
    w.m.start(0)
    w.m.start(1)
    for port in (0, 0, 1):
        w.m.set_preg(port, regs.PxCLB, CLB)
    assert w.err.getvalue().splitlines() == [
        f"ahci-emu: violation: clb-while-running (AHCI 1.3.1 §3.3.1): PxCLB written while "
        f"PxCMD.CR is set, port {port}, EIP=0x{EIP:08x}"
        for port in (0, 1)
    ]
    assert seen == w.san.violations
    assert seen[0] == {
        "event": "violation", "rule": "clb-while-running", "section": "AHCI 1.3.1 §3.3.1",
        "port": 0, "eip": EIP, "detail": "PxCLB written while PxCMD.CR is set",
    }  # fmt: skip


def test_strict_stops_before_the_write_reaches_the_hba(tmp_path):
    w = Watched(tmp_path, strict=True)
    w.m.start(0)
    with pytest.raises(Violation, match="clb-while-running") as exc:
        w.m.set_preg(0, regs.PxCLB, CLB + 0x400)
    assert exc.value.exit_status == 125
    assert w.m.preg(0, regs.PxCLB) == CLB  # the write never happened


def test_fb_while_receiving(w):
    w.m.start(0)
    w.m.set_preg(0, regs.PxFBU, 0)
    assert w.rules == ["fb-while-receiving"]


def test_start_without_fre(w):
    w.m.set_preg(0, regs.PxCLB, CLB)
    w.m.set_preg(0, regs.PxCMD, regs.CMD_ST)
    assert w.rules == ["start-without-fre"]


def test_start_while_running(w, monkeypatch):
    w.m.start(0)
    port = w.m.hba.ports[0]
    # A real HBA clears CR some time after ST; this one at once, so hold CR up.
    monkeypatch.setattr(port, "cmd", regs.CMD_FRE | regs.CMD_FR | regs.CMD_CR)
    w.m.set_preg(0, regs.PxCMD, regs.CMD_FRE | regs.CMD_ST)
    assert w.rules == ["start-while-running"]


def test_start_without_device(w):
    w.m.start(0)
    w.m.command(0, h2d(0, c=False, control=0x04), [])  # SRST asserted: the device is BSY
    _set_header(w, 0, flags=5 | 1 << 8 | 1 << 10)
    w.m.issue(1)
    w.m.stop(0)
    w.m.set_preg(0, regs.PxCMD, regs.CMD_FRE | regs.CMD_ST)
    assert w.rules == ["start-without-device"]
    assert "PxSSTS.DET 3 and PxTFD 0x80" in w.san.violations[0]["detail"]


def test_starting_a_port_with_nothing_attached_is_left_alone(w):
    w.m.set_preg(2, regs.PxCLB, CLB + 0x2000)
    w.m.set_preg(2, regs.PxFB, FB + 0x200)
    w.m.set_preg(2, regs.PxCMD, regs.CMD_FRE)
    w.m.set_preg(2, regs.PxCMD, regs.CMD_FRE | regs.CMD_ST)  # port 2 has no disk
    assert w.rules == []


@pytest.mark.parametrize("cfl", [4, 17])
def test_bad_cfl(w, cfl):
    w.m.start(0)
    w.read(0)
    _set_header(w, 0, flags=cfl)
    w.m.issue(1)
    assert w.rules == ["bad-cfl"]


def test_odd_prd_byte_count(w):
    w.m.start(0)
    w.m.command(0, h2d(READ_DMA_EXT, lba=0, count=1), [(DATA, 3), (DATA + 4, 509)])
    w.m.issue(1)
    assert w.rules == ["odd-prd-byte-count"]


def test_misaligned_command_table(w):
    w.m.start(0)
    w.read(0, ctba=DATA + 0x10000)
    _set_header(w, 0, ctba=DATA + 0x10040)  # the HBA ignores the low bits: the FIS is found
    w.m.issue(1)
    assert w.rules == ["misaligned-command-table"]


def test_misaligned_command_list_and_fis_area_count_when_used(w):
    w.m.set_preg(0, regs.PxCLB, CLB + 0x200)
    w.m.set_preg(0, regs.PxFB, FB + 0x80)
    assert w.rules == []  # written, not used yet: a register test may probe the low bits
    w.m.set_preg(0, regs.PxCMD, regs.CMD_FRE)
    w.m.set_preg(0, regs.PxCMD, regs.CMD_FRE | regs.CMD_ST)
    assert w.rules == ["misaligned-fis-area", "misaligned-command-list"]


def test_reissued_slot(w):
    w.m.start(0)
    w.queued(3)
    w.m.set_preg(0, regs.PxSACT, 1 << 3)
    w.m.hba.ports[0].ci = 1 << 3  # still outstanding (the HBA here finishes at once)
    w.m.issue(1 << 3)
    assert w.rules == ["reissued-slot"]


def test_mixed_queueing(w):
    w.m.start(0)
    w.m.hba.ports[0].sact = 1 << 5  # a queued command outstanding
    w.read(0)
    w.m.issue(1)
    assert w.rules == ["mixed-queueing"]


def test_sact_without_ci(w):
    w.m.start(0)
    w.read(0)
    w.m.set_preg(0, regs.PxSACT, 1 << 4)
    w.m.issue(1)
    assert w.rules == ["sact-without-ci"]
    assert "0x00000010" in w.san.violations[0]["detail"]


def test_queued_command_without_its_sact_bit(w):
    w.m.start(0)
    w.queued(2)
    w.m.issue(1 << 2)
    assert w.rules == ["sact-without-ci"]


def test_ncq_tag_mismatch(w):
    w.m.start(0)
    w.queued(6, tag=9)
    w.m.set_preg(0, regs.PxSACT, 1 << 6)
    w.m.issue(1 << 6)
    assert w.rules == ["ncq-tag-mismatch"]


def test_issue_while_halted(w):
    w.m.start(0)
    w.m.command(0, h2d(READ_DMA_EXT, lba=1 << 20, count=1), [(DATA, 512)])  # past the end
    w.m.issue(1)
    assert w.m.hba.ports[0].engine.halted
    assert w.m.preg(0, regs.PxIS) & regs.IS_TFES  # the driver has seen the error
    w.read(1)
    w.m.issue(1 << 1)
    assert w.rules == ["issue-while-halted"]


def test_a_command_issued_before_the_driver_could_see_the_halt_is_legal(w):
    """Hardware finds errors asynchronously: Linux issues a batch of NCQ commands and
    may issue the next before its handler has read PxIS."""
    w.m.start(0)
    w.m.command(0, h2d(READ_DMA_EXT, lba=1 << 20, count=1), [(DATA, 512)])  # past the end
    w.m.issue(1)
    assert w.m.hba.ports[0].engine.halted
    w.read(1)
    w.m.issue(1 << 1)
    assert w.rules == []
    assert w.m.preg(0, regs.PxTFD) & regs.TFD_STS_ERR  # now it knows
    w.read(2)
    w.m.issue(1 << 2)
    assert w.rules == ["issue-while-halted"]


def test_recovery_is_legal_after_a_halt_comreset_and_hba_reset(w):
    w.m.start(0)
    w.m.command(0, h2d(READ_DMA_EXT, lba=1 << 20, count=1), [(DATA, 512)])
    w.m.issue(1)
    w.m.stop(0)  # ST cycled: the error is cleared
    w.m.set_preg(0, regs.PxCMD, regs.CMD_FRE | regs.CMD_ST)
    w.read(1)
    w.m.issue(1 << 1)
    w.queued(4)
    w.m.hba.ports[0].sact = w.m.hba.ports[0].ci = 1 << 4  # outstanding, as Linux's EH finds it
    w.m.set_preg(0, regs.PxSCTL, regs.SCTL_DET_COMRESET)
    w.m.set_preg(0, regs.PxSCTL, 0)
    w.m.set_reg(regs.GHC, regs.GHC_HR)
    assert w.rules == []


def test_prdtl_zero_for_a_data_command(w):
    w.m.start(0)
    w.m.command(1, h2d(FLUSH), [])  # no data: no PRDT needed
    w.m.issue(1 << 1)
    w.m.command(0, h2d(READ_DMA_EXT, lba=0, count=1), [])
    w.m.issue(1)
    assert w.rules == ["prdtl-zero"]


def test_bad_command_fis_type(w):
    w.m.start(0)
    w.m.command(0, b"\x34" + h2d(READ_DMA_EXT)[1:], [(DATA, 512)])
    w.m.issue(1)
    assert w.rules == ["bad-command-fis"]


def test_software_reset_fises_are_legal_and_a_stray_control_fis_is_not(w):
    w.m.start(0)
    w.m.command(0, h2d(0, c=False, control=0x04), [])
    _set_header(w, 0, flags=5 | 1 << 8 | 1 << 10)  # CFL 5, R, C
    w.m.issue(1)
    w.m.command(1, h2d(0, c=False, control=0), [])
    w.m.issue(1 << 1)
    assert w.rules == []
    w.m.command(2, h2d(0, c=False, control=0), [])
    w.m.issue(1 << 2)
    assert w.rules == ["bad-command-fis"]


def test_every_rule_has_a_test_and_a_section():
    tested = {name[5:].replace("_", "-") for name in globals() if name.startswith("test_")}
    text = " ".join(tested)
    for rule in RULES.values():
        assert rule.section.startswith(("AHCI 1.3.1 §", "ATA8-ACS")), rule
        assert rule.name in text or rule.name in _COVERED_ELSEWHERE, rule.name


_COVERED_ELSEWHERE = {
    "clb-while-running": "test_report_line_trace_record_and_once_per_rule_and_port",
    "misaligned-command-list": "test_misaligned_command_list_and_fis_area_count_when_used",
    "misaligned-fis-area": "test_misaligned_command_list_and_fis_area_count_when_used",
}
