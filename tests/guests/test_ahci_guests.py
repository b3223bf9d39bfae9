"""The AHCI guests pass every check under ahci-emu, and leave the expected bytes in the images.

Each case (tests/support/ahci_guests.py) boots one guest with fresh disk images
on ports 0, 1, ...: the run must end with exit code 0 and a TAP transcript
without a single ``not ok``; then every sector the guest wrote, trimmed or left
alone is checked in the image files.
"""

from __future__ import annotations

import pytest
from support.ahci_guests import CASES, boot, image_problems


@pytest.mark.parametrize("case", CASES, ids=[c.id for c in CASES])
def test_guest(case, tmp_path):
    disks = case.make_disks(tmp_path)
    run = boot(case, disks, tmp_path / "rig")
    context = run.describe()
    assert run.exit_code == 0, context
    assert run.failed == [], context
    if case.tap:
        assert run.checks and run.problems == [], context
    else:  # demo checks what it does (nothing without a disk) but prints no plan line
        assert all(p.startswith("no plan line") for p in run.problems), context
    assert image_problems(case, disks) == []


def test_cases_are_well_formed():
    """Every case names a built guest, and writes only inside its disks."""
    for case in CASES:
        assert case.elf().is_file(), case.id
        assert len(case.writes) <= len(case.disks), case.id
        for disk, writes in zip(case.disks, case.writes, strict=False):
            for w in writes:
                assert w.lba >= 0 and w.lba + w.count <= disk.sectors, (case.id, w)
