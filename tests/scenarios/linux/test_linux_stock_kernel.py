"""Debian's stock kernel on the 64-bit board with nothing but ``console=ttyS0``.

libata's ``ahci`` must drive the controller with MSI and NCQ and no error, timeout
or link reset; a panic must end the run with its own status and message.
"""

from __future__ import annotations

import re

import pytest

from emu.testing.linux import LinuxRig

TROUBLE = re.compile(r"\b(error|timeout|timed out|reset|failed|exception|frozen)\b", re.I)
SCRIPT = """\
dd if=/dev/sda of=/dev/null bs=64k count=64 iflag=direct 2>/dev/null
echo "msi=$(grep -c 'PCI-MSI.*ahci' /proc/interrupts)"
echo "queue_depth=$(cat /sys/block/sda/device/queue_depth)"
"""


@pytest.fixture
def plain(linux: LinuxRig) -> LinuxRig:
    linux.append = "console=ttyS0"  # no quiet, no workarounds: every kernel line shows
    return linux


@pytest.mark.timeout(900)
def test_libata_drives_the_controller_with_msi_and_ncq_and_no_trouble(ahci, plain):
    run = plain.boot(SCRIPT, ahci.image("disk.img", "64M")).assert_ok()
    assert run.values() == {"msi": "1", "queue_depth": "32"}
    assert run.messages("ata1: SATA link up 1.5 Gbps")
    assert run.messages("ata1.00:", "NCQ (depth 32)")
    libata = [line for line in run.dmesg if re.search(r"\b(ata\d|ahci|sd \d)", line)]
    assert libata and not [line for line in libata if TROUBLE.search(line)]
    assert "Kernel panic" not in run.transcript


@pytest.mark.timeout(900)
def test_a_kernel_panic_ends_the_run_with_status_123_and_its_message(ahci, plain):
    # No /init to run and no root device: the kernel cannot go on.
    run = plain.boot("true\n", ahci.image("disk.img", "64M"), append="rdinit=/no/such/init")
    assert run.exit_code == 123
    assert "Kernel panic - not syncing: VFS: Unable to mount root fs" in run.transcript
    assert run.stderr.splitlines() == [
        "ahci-emu: error: kernel panic: VFS: Unable to mount root fs on unknown-block(0,0)"
    ]
