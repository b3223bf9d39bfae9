"""The test initramfs's ``/init`` on a real boot: it runs the script only when the
disks it waits for are there."""

from __future__ import annotations

import pytest

from emu.linuxkit.initramfs import MISSING_DISKS, MISSING_DISKS_STATUS


@pytest.mark.timeout(900)
def test_init_refuses_to_run_the_script_when_disks_are_missing(ahci, linux):
    # One disk attached, two awaited: /init gives up after its 30 s of guest time
    # (skipped while the guest idles) and never starts the script.
    disk = ahci.image("disk.img", "64M")
    run = linux.boot("echo ran=1\n", disk, wait_disks=2)
    assert run.exit_code == MISSING_DISKS_STATUS == 122
    assert run.disks_missing and run.status is None and run.output == []
    missing = [note for note in run.notes if note.startswith(MISSING_DISKS)]
    assert missing == [f"{MISSING_DISKS} 1 of 2 after 30 s; the script did not run"]
    assert "ran=1" not in run.transcript
    assert run.messages("ata1: SATA link up")  # the disk that is there was found
