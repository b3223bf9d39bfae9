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
