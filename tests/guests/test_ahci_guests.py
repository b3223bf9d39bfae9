"""The AHCI guests pass every check under ahci-emu, and leave the expected bytes in the images.

Each case (tests/support/ahci_guests.py) boots one guest with fresh disk images
on ports 0, 1, ...: the run must end with exit code 0 and a TAP transcript
without a single ``not ok``; then every sector the guest wrote, trimmed or left
alone is checked in the image files.
"""

from __future__ import annotations

import pytest
from support.ahci_guests import CASES, image_problems, parse_tap, run_ours


@pytest.mark.parametrize("case", CASES, ids=[c.id for c in CASES])
def test_guest(case, tmp_path):
    disks = case.make_disks(tmp_path)
    result = run_ours(case, disks)
    tap = parse_tap(result.transcript, need_plan=case.tap)
    context = f"exit code {result.exit_code}\n{result.transcript}\n{result.stderr}"
    assert result.exit_code == 0, context
    assert tap.failed == [], context
    assert tap.problems == [], context
    if case.tap:
        assert tap.passed, context
    assert image_problems(case, disks) == []


def test_cases_are_well_formed():
    """Every case names a built guest, and writes only inside its disks."""
    for case in CASES:
        assert case.elf().is_file(), case.id
        assert len(case.writes) <= len(case.disks), case.id
        for disk, writes in zip(case.disks, case.writes, strict=False):
            for w in writes:
                assert w.lba >= 0 and w.lba + w.count <= disk.sectors, (case.id, w)
