"""ext4 on a VDI differencing chain, across a snapshot taken and restored.

A machine folder (``vm``) with one 64 MiB disk. Boot 1 makes a filesystem with
busybox mke2fs, mounts it with the kernel's ext4 module and creates files; then
a snapshot is taken on the host. Boot 2 changes the files; the snapshot is
restored. Boot 3, a new boot from the restored state, must see boot 1's files.
"""

from __future__ import annotations

import pytest
from support.linux_disks import MIB, chain_bytes, pattern, sha256

FS_BYTES = 32 * MIB  # the filesystem's size: the chain's first 32 blocks

MOUNT = "mount -t ext4 /dev/sda /mnt\n"
REPORT = """\
cd /mnt
for f in $(ls | grep -v lost+found); do echo "file $f $(sha256sum < $f | cut -d' ' -f1)"; done
echo "fs_type=$(awk '$2 == "/mnt" {print $3}' /proc/mounts)"
cd /
umount /mnt
"""
CREATE = (
    "set -e\n"
    f"mke2fs -q /dev/sda {FS_BYTES // 1024}\n" + MOUNT + "echo one > /mnt/kept.txt\n"
    "cp /data/pattern /mnt/big.bin\n"
    "echo doomed > /mnt/doomed.txt\n" + REPORT
)
CHANGE = (
    "set -e\n" + MOUNT + "echo two > /mnt/kept.txt\n"
    "rm /mnt/doomed.txt\n"
    "echo new > /mnt/new.txt\n"
    "dd if=/dev/zero of=/mnt/big.bin bs=4096 count=1 conv=notrunc 2>/dev/null\n" + REPORT
)
LOOK = "set -e\n" + MOUNT + REPORT


def files(run) -> dict[str, str]:
    return {line.split()[1]: line.split()[2] for line in run.output if line.startswith("file ")}


@pytest.mark.ahci_oracle
@pytest.mark.timeout(1500)  # boots of up to 5 minutes each (LinuxRig's budget)
def test_ext4_files_come_back_with_the_snapshot_after_a_reboot(ahci, linux):
    vm = ahci.machine("vm")
    vm.attach(0, ahci.image("vm/disk.vdi", "64M"))
    vm.take("blank")  # from here on the machine writes into differencing images
    data = {"data/pattern": pattern(3 * MIB + 123)}

    created = linux.boot(CREATE, files=data, vm=vm).assert_ok()
    first = files(created)
    assert first == {
        "kept.txt": sha256(b"one\n"),
        "big.bin": sha256(data["data/pattern"]),
        "doomed.txt": sha256(b"doomed\n"),
    }
    assert created.values()["fs_type"] == "ext4"
    assert created.messages("EXT4-fs (sda): mounted filesystem")
    chain = vm.chain(0)
    assert len(chain) == 2  # the snapshot "blank"'s diff over the base
    disk_after_create = sha256(chain_bytes(chain[0], 0, FS_BYTES, vm.registry()))
    assert chain_bytes(chain[-1], 0, FS_BYTES) == bytes(FS_BYTES)  # the base: never written

    vm.take("files")
    changed = linux.boot(CHANGE, vm=vm).assert_ok()
    assert files(changed) == {
        "kept.txt": sha256(b"two\n"),
        "big.bin": sha256(bytes(4096) + data["data/pattern"][4096:]),
        "new.txt": sha256(b"new\n"),
    }
    changed_leaf = vm.leaf(0)
    assert sha256(chain_bytes(changed_leaf, 0, FS_BYTES, vm.registry())) != disk_after_create

    vm.restore("files")
    assert not changed_leaf.exists()  # restore discards the changed state
    assert sha256(chain_bytes(vm.leaf(0), 0, FS_BYTES, vm.registry())) == disk_after_create
    restored = linux.boot(LOOK, vm=vm).assert_ok()
    assert files(restored) == first
    assert not restored.messages("EXT4-fs error")
