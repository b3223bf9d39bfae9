"""Linux under a storm of stops: what the guest computes must not change.

Under load, the emulator halves of the Linux scenarios once failed now and then:
wrong checksums inside the guest, ``dd`` reading 0 bytes, init killed, a kernel
that found no timer. The cause was a stop pending at an unlucky moment (Unicorn
then skipped the board's SYSCALL or CPUID hook); a loaded host makes stops land
anywhere. ``AHCI_EMU_STOP_STORM_US`` makes the board stop the CPU every few
microseconds, so every such moment is met many times in one boot, whatever the
host's load. The guest hashes a file and the disk over and over, with a second
hashing process and a 1 ms sleeper running (task switches, FPU state, one-shot
timer interrupts and system calls by the thousand); every result must equal the
host's.
"""

from __future__ import annotations

import hashlib

import pytest
from support.linux_disks import MIB, chain_bytes, pattern, sha256

from emu.machine.linux_board import STOP_STORM_ENV

ROUNDS = 12
BLOB = 2 * MIB
DISK_READ = 4 * MIB
SCRIPT = f"""\
( while :; do usleep 1000; done ) &
sleeper=$!
i=0
while [ $i -lt {ROUNDS} ]; do
  md5sum /data/blob > /tmp/md5.$i &
  echo "sha=$(sha256sum /data/blob | cut -d' ' -f1)"
  wait $!
  echo "md5=$(cut -d' ' -f1 /tmp/md5.$i)"
  echo "disk=$(dd if=/dev/sda bs=64k count={DISK_READ // 65536} 2>/dev/null | sha256sum |
               cut -d' ' -f1)"
  i=$((i + 1))
done
kill $sleeper
"""


def results(run, key: str) -> list[str]:
    return [line.split("=", 1)[1] for line in run.output if line.startswith(f"{key}=")]


@pytest.mark.timeout(1200)
def test_checksums_stay_right_under_a_storm_of_stops(ahci, linux, monkeypatch):
    monkeypatch.setenv(STOP_STORM_ENV, "50")
    disk = ahci.image("disk.vdi", "64M")
    ahci.fill(disk, 0, DISK_READ // 512, 7)
    blob = pattern(BLOB, seed=12)
    run = linux.boot(SCRIPT, disk, files={"data/blob": blob}).assert_ok()
    assert results(run, "sha") == [sha256(blob)] * ROUNDS
    assert results(run, "md5") == [hashlib.md5(blob).hexdigest()] * ROUNDS
    assert results(run, "disk") == [sha256(chain_bytes(disk, 0, DISK_READ))] * ROUNDS
    assert not [line for line in run.transcript.splitlines() if "segfault" in line]
