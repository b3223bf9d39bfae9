"""A Linux test guest's serial output taken apart by ``/init``'s marker lines."""

from __future__ import annotations

import re
from dataclasses import dataclass

from emu.linuxkit.initramfs import (
    DMESG_BEGIN,
    DMESG_END,
    MARK,
    MISSING_DISKS,
    SCRIPT_BEGIN,
    SCRIPT_END,
)

# A kernel message on the console: "[    1.234567] text" (CONFIG_PRINTK_TIME).
KERNEL_LINE = re.compile(r"^\[\s*\d+\.\d+\] ")


@dataclass(frozen=True)
class Parts:
    """What the script printed, its exit status (None if it never ended), the
    kernel log as ``dmesg`` printed it, and ``/init``'s own notes."""

    output: list[str]
    status: int | None
    dmesg: list[str]
    notes: list[str]

    @property
    def disks_missing(self) -> bool:
        """``/init`` gave up waiting for the disks and did not run the script."""
        return any(note.startswith(MISSING_DISKS) for note in self.notes)


def split(transcript: str) -> Parts:
    """Split a transcript; kernel messages the console printed while the script
    ran are left out of ``output`` (they are in ``dmesg``)."""
    output: list[str] = []
    dmesg: list[str] = []
    notes: list[str] = []
    status = None
    where = None
    for raw in transcript.splitlines():
        line = raw.rstrip("\r")
        if line.startswith(SCRIPT_BEGIN):
            where = output
        elif line.startswith(SCRIPT_END):
            where = None
            try:
                status = int(line[len(SCRIPT_END) :])
            except ValueError:
                status = None
        elif line.startswith(DMESG_BEGIN):
            where = dmesg
        elif line.startswith(DMESG_END):
            where = None
        elif line.startswith(MARK):
            notes.append(line)
        elif where is dmesg or (where is output and not KERNEL_LINE.match(line)):
            where.append(line)
    return Parts(output, status, dmesg, notes)
