"""The `faults` guest meets each injected fault kind and recovers (firmware/guests/faults.c).

Disk 0 holds the test pattern (tag 0xD0). Each test boots the guest with a
scenario and a fault spec, checks every TAP line passed, that the fault fired
where the spec says (``run.faults_fired``), and what landed in the image.
"""

from __future__ import annotations

import pytest
from support.disks import bad_sectors, make_disk

SECTORS = 2048
TAG0, TAG_WRITE = 0xD0, 0xD1


@pytest.fixture
def disk(ahci):
    return make_disk(ahci.path("disk.img"), SECTORS, TAG0)


def test_read_media_error_reports_unc_at_the_first_bad_sector(ahci, disk):
    run = ahci.run(
        "faults", disk, append="test=media lba=96 count=16 bad=100",
        faults=["media-error:lba=100-107"],
    )  # fmt: skip
    run.assert_ok()
    assert [(e["kind"], e["opcode"], e["lba"]) for e in run.faults_fired] == [
        ("media-error", 0x25, 96)
    ]
    assert bad_sectors(disk, 0, SECTORS, TAG0) == []


def test_write_media_error_aborts_at_the_first_bad_sector_after_writing_the_rest(ahci, disk):
    run = ahci.run(
        "faults", disk, append="test=media op=write lba=200 count=8 bad=203 err=4",
        faults=["media-error:lba=203-300,opcode=write"],
    )  # fmt: skip
    run.assert_ok()
    assert bad_sectors(disk, 200, 3, TAG_WRITE) == []  # before the bad sector: written
    assert bad_sectors(disk, 203, 5, TAG0) == []  # from it on: untouched


def test_ncq_error_recovery_reads_log_10h(ahci, disk):
    run = ahci.run(
        "faults", disk, append="test=ncq lba=64 bad=85",
        faults=["media-error:lba=85-86,opcode=ncq,times=1"],
    )  # fmt: skip
    run.assert_ok()
    fired = run.faults_fired
    assert [(e["kind"], e["slot"], e["lba"]) for e in fired] == [("media-error", 2, 80)]


@pytest.mark.parametrize(("kind", "err"), [("idnf", 0x10), ("abrt", 0x04)])
def test_idnf_and_abrt_reach_the_guest(ahci, disk, kind, err):
    run = ahci.run(
        "faults", disk, append=f"test=media lba=40 count=8 bad=40 err={err}",
        faults=[f"{kind}:opcode=0x25,lba=40"],
    )  # fmt: skip
    run.assert_ok()


def test_device_fault_reaches_the_guest(ahci, disk):
    run = ahci.run(
        "faults", disk, append="test=media lba=40 count=8 bad=40 err=4 sts=0x61",
        faults=["df:opcode=0x25,lba=40"],
    )  # fmt: skip
    run.assert_ok()  # status DRDY|DF|ERR, error ABRT


@pytest.mark.parametrize(
    ("how", "fault"),
    [("comreset", "stall:nth=1,opcode=0x25"), ("hba", "stall:lba=0,opcode=read,times=1")],
)
def test_a_stalled_command_is_recovered_by_reset(ahci, disk, how, fault):
    run = ahci.run("faults", disk, append=f"test=stall how={how}", faults=[fault])
    run.assert_ok()
    assert [e["kind"] for e in run.faults_fired] == ["stall"]


def test_the_guest_survives_unplug_and_replug(ahci, disk):
    run = ahci.run(
        "faults", disk, append="test=unplug", faults=["link-loss:nth=1,opcode=read,down=100"]
    )
    run.assert_ok()
    kinds = [(e["kind"], e.get("what")) for e in run.faults_fired]
    assert kinds == [("link-loss", None), ("link-loss", "link back")]


@pytest.mark.parametrize("fault", ["latency:opcode=ncq,nth=1,commands=3", "latency:nth=1,ms=30"])
def test_held_completions_arrive(ahci, disk, fault):
    run = ahci.run("faults", disk, append="test=latency", faults=[fault], trace=True)
    run.assert_ok()
    assert run.faults_fired[0]["kind"] == "latency"


def test_a_held_completion_wakes_a_halted_guest(ahci):
    """ahci_irq waits for its interrupts in `hlt`: a completion held back 20 ms must still
    arrive (the board wakes at the fault's deadline)."""
    from support.ahci_guests import CASES

    case = next(c for c in CASES if c.guest == "ahci_irq")
    disks = case.make_disks(ahci.root)
    run = ahci.run(case.elf(), *disks, faults=["latency:opcode=read,nth=1,ms=20"])
    run.assert_ok()
    assert [e.get("what") for e in run.faults_fired] == [None, "completion released"]
