"""A guest meets a media error, sees it as ATA reports it, and recovers.

The `faults` guest reads LBA 96..111 while sectors 100..107 cannot be read; it
checks PxIS.TFES, UNC and LBA 100 in the D2H Register FIS, recovers the port
(AHCI 6.2.2) and reads again. The marker checks its driver on the way.
"""

import pytest

pytestmark = pytest.mark.ahci_sanitize("strict")  # every run here also keeps the AHCI rules


def test_a_guest_recovers_from_a_media_error(ahci):
    disk = ahci.image("disk.vdi", "1M")
    run = ahci.run(
        "faults",
        disk,
        append="test=media lba=96 count=16 bad=100 tag=0",  # expect UNC at LBA 100
        faults=["media-error:lba=100-107"],  # sectors 100..107 cannot be read
    )

    assert run.passed, run  # every check of the guest, recovery included
    assert run.violations == []  # its driver broke no rule (strict would end the run)
    [fired] = run.faults_fired  # the trace's fault events
    assert (fired["kind"], fired["opcode"], fired["lba"]) == ("media-error", 0x25, 96)
