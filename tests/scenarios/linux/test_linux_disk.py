"""Linux's own AHCI driver on one disk: probe, reads, writes, FLUSH CACHE, discard.

One boot per machine (QEMU q35 and ahci-emu) of the same
kernel, initramfs and disk: a VDI differencing image over a base, both holding
data written from the host. The script probes the disk, checksums what it
reads, writes through the page cache, syncs the disk (``sync /dev/sda``, an
fsync of the block device: Linux then sends a cache flush; a bare ``sync``
writes the dirty pages but flushes only through a mounted filesystem's
sync_fs), discards 2 MiB and reads back.
Each machine's run is checked on its own (as subtests), then what the two
scripts printed is compared line by line.
"""

from __future__ import annotations

import os

import pytest
from support.linux_disks import (
    MIB,
    block_states,
    chain_bytes,
    pattern,
    sha256,
    trouble,
)

from emu.storage.image import BlockState
from emu.testing.linux import LinuxRig
from emu.testing.rig import qemu_path

DISK = 64 * MIB
WRITE_NEW = 8 * MIB  # a block no image holds: the write allocates it in the leaf
WRITE_COPYUP = 1 * MIB + 4096  # inside block 1 of the base: copied up into the leaf
WRITE_LEN = 256 * 1024
DISCARD = 16 * MIB  # 2 MiB the base holds: the leaf must hide them
# libata sends FLUSH CACHE EXT only to disks of 2^28 sectors or more (ata_dev_configure
# sets ATA_DFLAG_FLUSH_EXT for those alone); this 64 MiB disk gets FLUSH CACHE.
FLUSH_CACHE = 0xE7
FPDMA = {0x60, 0x61}  # READ / WRITE FPDMA QUEUED
# What ahci-emu and QEMU may print differently, and why.
DIFFERENT = {"model": "by design: our IDENTIFY model string (tests/oracle/differences.toml)"}

SCRIPT = f"""\
set -e
disk=/dev/sda
sys=/sys/block/sda
sum() {{ dd if=$disk bs=4096 skip=$(($1 / 4096)) count=$(($2 / 4096)) 2>/dev/null |
         sha256sum | cut -d' ' -f1; }}
echo "model=$(cat $sys/device/model)"
echo "sectors=$(cat $sys/size)"
echo "queue_depth=$(cat $sys/device/queue_depth)"
echo "msi_vectors=$(grep -c 'PCI-MSI.*ahci' /proc/interrupts)"
echo "write_cache=$(cat $sys/queue/write_cache)"
echo "read_0_8m=$(sum 0 {8 * MIB})"
echo "read_end=$(sum {DISK - 4 * MIB} {4 * MIB})"
dd if=/data/pattern of=$disk bs=4096 seek={WRITE_NEW // 4096} conv=notrunc 2>/dev/null
dd if=/data/pattern of=$disk bs=4096 seek={WRITE_COPYUP // 4096} conv=notrunc 2>/dev/null
sync $disk
echo synced=1
echo 3 > /proc/sys/vm/drop_caches
echo "readback_new=$(sum {WRITE_NEW} {WRITE_LEN})"
echo "readback_copyup=$(sum {WRITE_COPYUP} {WRITE_LEN})"
blkdiscard -o {DISCARD} -l {2 * MIB} $disk
echo "discarded=$(sum {DISCARD} {2 * MIB})"
echo "discard_granularity=$(cat $sys/queue/discard_granularity)"
"""


def make_disk(rig, folder):
    """A 64 MiB base with data in its first 32 MiB, and a diff holding a 1 MiB
    block of its own at 2 MiB, in ``folder``; returns (base, leaf)."""
    base = rig.image(f"{folder}/base.vdi", DISK)
    rig.fill(base, 0, 32 * MIB // 512, 1)
    leaf = rig.diff(base, f"{folder}/leaf.vdi")
    rig.fill(leaf, 2 * MIB // 512, MIB // 512, 2)
    return base, leaf


@pytest.mark.timeout(1200)
def test_one_disk_under_linux_on_ahci_emu_and_qemu(ahci, linux_material, subtests):
    if qemu_path() is None:
        if os.environ.get("CI") == "true":
            pytest.fail("qemu-system-x86_64 is not installed, and CI must run the oracle")
        pytest.skip("qemu-system-x86_64 is not installed")
    rig = LinuxRig(ahci, linux_material)
    machines = ["qemu", "emu"]
    files = {"data/pattern": pattern(WRITE_LEN)}
    runs = {}
    for backend in machines:
        base, leaf = make_disk(ahci, backend)  # each machine on its own copy
        before = {
            "base_file": sha256(base.read_bytes()),
            "read_0_8m": sha256(chain_bytes(leaf, 0, 8 * MIB)),
        }
        run = rig.boot(SCRIPT, leaf, backend=backend, trace=backend == "emu", files=files)
        runs[backend] = run
        with subtests.test(msg=f"{backend}: the script ran to its end"):
            assert run.passed, run.describe()
        values = run.values()
        with subtests.test(msg=f"{backend}: libata finds the disk"):
            _check_probe(run, values, backend)
        with subtests.test(msg=f"{backend}: reads equal the host image"):
            assert values["read_0_8m"] == before["read_0_8m"]
            assert values["read_end"] == sha256(bytes(4 * MIB))
        with subtests.test(msg=f"{backend}: writes land in the leaf only"):
            data = pattern(WRITE_LEN)
            assert values["readback_new"] == values["readback_copyup"] == sha256(data)
            assert chain_bytes(leaf, WRITE_NEW, WRITE_LEN) == data
            assert chain_bytes(leaf, WRITE_COPYUP, WRITE_LEN) == data
            assert sha256(base.read_bytes()) == before["base_file"]
            states = block_states(leaf)
            assert states[WRITE_NEW // MIB] == states[WRITE_COPYUP // MIB] == BlockState.ALLOCATED
            # the rest of the copied-up block still reads as the base's data
            assert chain_bytes(leaf, MIB, 4096) == chain_bytes(base, MIB, 4096)
        with subtests.test(msg=f"{backend}: blkdiscard lands as zero blocks"):
            assert values["discarded"] == sha256(bytes(2 * MIB))
            assert chain_bytes(leaf, DISCARD, 2 * MIB) == bytes(2 * MIB)
            assert chain_bytes(base, DISCARD, MIB) != bytes(MIB)  # the base keeps its data
            if backend == "emu":  # under QEMU the leaf got the zeros written back
                assert (
                    block_states(leaf)[DISCARD // MIB : DISCARD // MIB + 2] == [BlockState.ZERO] * 2
                )
        if backend == "emu":
            with subtests.test(msg="emu: sync reaches FLUSH CACHE"):
                _check_flush(run)
    with subtests.test(msg="the script prints the same on ahci-emu as on QEMU"):
        _compare(runs["emu"], runs["qemu"])


def _check_probe(run, values, backend):
    model = "QEMU HARDDISK" if backend == "qemu" else "AHCI-EMU HARDDISK"
    # sysfs shows the SCSI INQUIRY product field, which libata fills with the first
    # 16 characters of the ATA model (IDENTIFY words 27-46); dmesg has all of it.
    assert values["model"] == model[:16]
    assert values["sectors"] == str(DISK // 512)
    assert values["queue_depth"] == "32"
    assert values["msi_vectors"] == "1"
    assert values["write_cache"] == "write back"
    assert run.messages("ata1: SATA link up"), run.dmesg
    identify = run.messages("ata1.00: ", model)
    assert identify, "no IDENTIFY line with the model in dmesg"
    capacity = run.messages("ata1.00: ", f"{DISK // 512} sectors")
    assert capacity and "NCQ (depth 32)" in capacity[0], capacity
    assert not run.messages("ata2: SATA link up"), "only port 0 has a disk"
    assert trouble(run.dmesg) == []


def _check_flush(run):
    commands = run.commands()
    assert commands, "no trace"
    last_write = max(n for n, c in enumerate(commands) if c["opcode"] == 0x61 and c["port"] == 0)
    flushes = [n for n, c in enumerate(commands) if c["opcode"] == FLUSH_CACHE]
    assert any(n > last_write for n in flushes), "no FLUSH CACHE after the writes"
    assert {c["opcode"] for c in commands} & FPDMA, "Linux used no NCQ command"
    assert all(c["status"] & 0x01 == 0 for c in commands), "a command ended with ERR"


def _compare(ours, qemu):
    mine = [ln for ln in ours.output if ln.split("=", 1)[0] not in DIFFERENT]
    theirs = [ln for ln in qemu.output if ln.split("=", 1)[0] not in DIFFERENT]
    assert mine == theirs
