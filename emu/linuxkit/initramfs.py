"""The test initramfs: busybox, a kernel's module stack, ``/init`` and a script.

``/init`` mounts proc, sysfs and devtmpfs, loads the modules in dependency order,
waits until the expected number of SCSI disks (``/sys/block/sd*``) is there, runs
``/script`` with ``sh``, prints the kernel log, and ends the run by writing the
script's exit status to port 0xF4 through ``/dev/port`` (ahci-emu exits with that
status, QEMU's isa-debug-exit with ``(status << 1) | 1``). If the disks are still
missing after ``DISK_WAIT_TICKS``, it does not run the script: it prints one
``MISSING_DISKS`` line and ends with status ``MISSING_DISKS_STATUS`` instead.
Its own lines start with ``ahci-emu-init:``; :mod:`emu.linuxkit.transcript` takes a
transcript apart by them. ``/init`` does not sync: what the script leaves unsynced
may never reach the disk, as on a power cut.

The archive is an uncompressed newc cpio (the kernel needs no decompressor for it),
the same bytes for the same inputs.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from pathlib import Path

from emu.linuxkit.cpio import NewcArchive
from emu.linuxkit.material import Material
from emu.linuxkit.modules import Module, ModuleTree

DEFAULT_MODULES = ("ahci", "sd_mod", "ext4")  # the AHCI stack, disks, the filesystem
MARK = "ahci-emu-init:"
SCRIPT_BEGIN = f"{MARK} script begin"
SCRIPT_END = f"{MARK} script end status="
DMESG_BEGIN = f"{MARK} dmesg begin"
DMESG_END = f"{MARK} dmesg end"
DISK_WAIT_TICKS = 300  # tenths of a second of guest time /init waits for the disks
MISSING_DISKS = f"{MARK} disks missing:"
MISSING_DISKS_STATUS = 122  # below ahci-emu's own statuses (123 is a kernel panic)

_INIT = """\
#!/bin/busybox sh
# /init of an ahci-emu test initramfs (emu.linuxkit.initramfs)
/bin/busybox --install -s
export PATH=/bin:/sbin:/usr/bin:/usr/sbin
mount -t proc proc /proc
mount -t sysfs sysfs /sys
mount -t devtmpfs devtmpfs /dev
while read -r name need; do
  if ! insmod "/lib/modules/$name.ko" 2>/tmp/insmod.err && [ "$need" = required ]; then
    echo "{mark} insmod $name failed: $(cat /tmp/insmod.err)"
  fi
done < /lib/modules/load.order
ticks=0
while [ "$(ls /sys/block | grep -c '^sd')" -lt {disks} ] && [ $ticks -lt {wait} ]; do
  sleep 0.1
  ticks=$((ticks + 1))
done
found=$(ls /sys/block | grep -c '^sd')
if [ "$found" -lt {disks} ]; then
  echo "{missing} $found of {disks} after {wait_seconds} s; the script did not run"
  status={missing_status}
else
  echo "{mark} $found of {disks} disks after $ticks waits"
  echo "{begin}"
  sh /script
  status=$?
  echo "{end}$status"
fi
echo "{dmesg_begin}"
dmesg
echo "{dmesg_end}"
byte=$(printf '\\\\%03o' "$status")
printf "$byte" | dd of=/dev/port bs=1 seek=244 count=1 conv=notrunc 2>/dev/null
echo "{mark} the write to port 0xf4 did not end the run"
poweroff -f
"""


def init_script(disks: int) -> str:
    """``/init`` for a guest that expects ``disks`` SCSI disks."""
    return _INIT.format(
        mark=MARK,
        disks=disks,
        wait=DISK_WAIT_TICKS,
        wait_seconds=DISK_WAIT_TICKS // 10,
        missing=MISSING_DISKS,
        missing_status=MISSING_DISKS_STATUS,
        begin=SCRIPT_BEGIN,
        end=SCRIPT_END,
        dmesg_begin=DMESG_BEGIN,
        dmesg_end=DMESG_END,
    )


def build_initramfs(
    material: Material,
    script: str,
    out: Path,
    *,
    disks: int = 1,
    modules: Iterable[str] = DEFAULT_MODULES,
    files: Mapping[str, bytes] | None = None,
) -> list[Module]:
    """Write the initramfs to ``out``; returns the modules it loads, in order.

    ``script`` is a shell script (busybox sh) run as ``/script``; its exit status
    ends the run. ``disks``: how many disks ``/init`` waits for. ``modules``: what
    to load, each with everything it needs (see :class:`ModuleTree`). ``files``:
    more files (path inside the archive -> bytes), e.g. data the script uses."""
    stack = ModuleTree(material.modules).resolve(modules)
    archive = NewcArchive()
    for folder in ("bin", "sbin", "usr", "usr/bin", "usr/sbin", "dev", "proc", "sys", "tmp",
                   "mnt", "lib", "lib/modules"):  # fmt: skip
        archive.directory(folder)
    archive.char_device("dev/console", 5, 1)
    archive.file("bin/busybox", material.busybox.read_bytes(), 0o755)
    archive.symlink("bin/sh", "busybox")
    archive.file("init", init_script(disks).encode(), 0o755)
    archive.file("script", script.encode(), 0o755)
    order = []
    for module in stack:
        archive.file(f"lib/modules/{module.name}.ko", module.image())
        order.append(f"{module.name} {'optional' if module.optional else 'required'}\n")
    archive.file("lib/modules/load.order", "".join(order).encode())
    for name, data in (files or {}).items():
        parent = name.strip("/").rpartition("/")[0]
        if parent:
            _directories(archive, parent)
        archive.file(name, data)
    archive.write(out)
    return stack


def _directories(archive: NewcArchive, path: str) -> None:
    """Add ``path`` and its parents unless the archive has them."""
    parts = path.split("/")
    for n in range(1, len(parts) + 1):
        folder = "/".join(parts[:n])
        if folder not in archive:
            archive.directory(folder)
