"""Linux's libata error handler against injected faults, with its driver sanitized.

One boot of Debian's kernel under ahci-emu with ``--sanitize=strict``: the script
reads across a sector that fails once (UNC), then, with a 3 s command timeout,
a range whose first READ never completes (a stall). libata must report the
failed command with UNC and the first bad LBA, time out the stalled one and
recover by resetting the link (COMRESET with commands outstanding: legal), and
the script must read both ranges in the end. Nothing libahci does may break a
sanitizer rule (strict would end the run with 125).
"""

from __future__ import annotations

SCRIPT = """\
set -e
echo 3 > /sys/block/sda/device/timeout
dd if=/dev/sda of=/dev/null bs=4096 count=64
echo unc_read=$?
dd if=/dev/sda of=/dev/null bs=4096 count=16 skip=500
echo stalled_read=$?
"""
FAULTS = [
    "media-error:lba=100-107,opcode=ncq,times=1",  # the retry succeeds
    "stall:lba=4000,opcode=ncq,times=1",
]


def test_libata_recovers_from_unc_and_a_stall_and_keeps_the_rules(ahci, linux):
    disk = ahci.image("disk.img", "64M")
    run = linux.boot(SCRIPT, disk, faults=FAULTS, sanitize="strict", backend="emu")

    assert run.passed, run
    assert run.values() == {"unc_read": "0", "stalled_read": "0"}
    assert run.violations == []
    assert [e["kind"] for e in run.faults_fired] == ["media-error", "stall"]
    console = run.transcript
    # The UNC: the failed queued read, status DRDY|ERR, error UNC, LBA 64h (100).
    assert "failed command: READ FPDMA QUEUED" in console
    assert "error: { UNC }" in console
    assert "res 41/40:00:64:00:00/00:00:00:00:00/40" in console
    assert "I/O error, dev sda, sector 100" in console
    # The stall: a timeout, the link reset, and the error handler done.
    assert "frozen" in console
    assert "ata1: hard resetting link" in console
    assert "ata1: SATA link up" in console.split("hard resetting link", 1)[1]
    assert "ata1: EH complete" in console
