"""The AHCI guests (firmware/guests/ahci_*.c, demo.c) as test cases.

One :class:`Case` per run: guest, command line, the disks on ports 0, 1, ...
(how to make each image) and what the guest leaves in each image. Both
tests/guests (our emulator alone, with checks of the image files) and
tests/oracle (our emulator against QEMU q35) run these cases.

The LBAs, counts and tags here mirror the guests' sources; a guest's header
comment says which sectors it writes.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

from emu.testing.results import GuestRun
from emu.testing.rig import Rig
from support.disks import SECTOR, bad_sectors, make_disk

ROOT = Path(__file__).resolve().parents[2]
GUEST_DIR = ROOT / "guest_images"

BIG = 272_629_760  # 130 GiB: beyond the 28-bit limit (0FFFFFFFh), sparse
BASE_TAG = 0xD0


@dataclass(frozen=True)
class Region:
    """``count`` sectors from ``lba`` hold the pattern for ``tag`` (zeros if None)."""

    lba: int
    count: int
    tag: int | None


@dataclass(frozen=True)
class Disk:
    """A raw image of ``sectors`` sectors: the pattern for ``tag`` on every sector,
    or only on ``ranges`` (the rest sparse zeros); no pattern if ``tag`` is None."""

    sectors: int
    tag: int | None = BASE_TAG
    ranges: tuple[tuple[int, int], ...] | None = None

    def make(self, path: Path) -> Path:
        return make_disk(path, self.sectors, self.tag, self.ranges)

    def base(self) -> list[Region]:
        """What the image holds before the guest runs, as far as it is checked:
        everything for a fully written disk; the ranges plus the first and last
        sector for a sparse one."""
        if self.tag is not None and self.ranges is None:
            return [Region(0, self.sectors, self.tag)]
        regions = [Region(lba, count, self.tag) for lba, count in self.ranges or ()]
        covered = [(r.lba, r.lba + r.count) for r in regions]
        for lba in (0, self.sectors - 1):
            if not any(a <= lba < b for a, b in covered):
                regions.append(Region(lba, 1, None))
        return regions


@dataclass(frozen=True)
class Case:
    guest: str
    append: str = ""
    disks: tuple[Disk, ...] = ()
    # Per disk, the regions the guest leaves changed (later entries win).
    writes: tuple[tuple[Region, ...], ...] = ()
    oracle: bool = True  # also run under QEMU (False: cases QEMU 7.2 does not survive)
    label: str = ""
    tap: bool = True  # a test guest: ends with the plan line "1..N"

    @property
    def id(self) -> str:
        return f"{self.guest}[{self.label}]" if self.label else self.guest

    def elf(self) -> Path:
        return GUEST_DIR / f"{self.guest}.elf"

    def make_disks(self, directory: Path) -> tuple[Path, ...]:
        directory.mkdir(parents=True, exist_ok=True)
        return tuple(
            disk.make(directory / f"{self.guest}-disk{n}.img") for n, disk in enumerate(self.disks)
        )

    def expected(self, index: int) -> list[Region]:
        """Disk ``index`` after the run: its base with the guest's writes on top."""
        regions = self.disks[index].base()
        for w in self.writes[index] if index < len(self.writes) else ():
            regions = [piece for r in regions for piece in _minus(r, w)]
            regions.append(w)
        return sorted(regions, key=lambda r: r.lba)


def _minus(r: Region, w: Region) -> list[Region]:
    """``r`` without the sectors of ``w``."""
    end, wend = r.lba + r.count, w.lba + w.count
    if wend <= r.lba or w.lba >= end:
        return [r]
    out = []
    if w.lba > r.lba:
        out.append(Region(r.lba, w.lba - r.lba, r.tag))
    if wend < end:
        out.append(Region(wend, end - wend, r.tag))
    return out


def image_problems(case: Case, paths: tuple[Path, ...]) -> list[str]:
    """Every way the images differ from what the case expects after a run."""
    problems = []
    for n, (disk, path) in enumerate(zip(case.disks, paths, strict=True)):
        size = os.path.getsize(path)
        if size != disk.sectors * SECTOR:
            problems.append(f"disk {n}: size {size}, expected {disk.sectors * SECTOR}")
        for region in case.expected(n):
            bad = bad_sectors(path, region.lba, region.count, region.tag)
            if bad:
                what = "zeros" if region.tag is None else f"tag {region.tag:#04x}"
                problems.append(
                    f"disk {n}: {len(bad)} of {region.count} sectors from LBA {region.lba} "
                    f"do not hold {what} (first: {bad[0]})"
                )
    return problems


# ---- the cases ---------------------------------------------------------------

_RW_WRITES_0 = tuple(
    Region(lba, count, tag)
    for lba, count, tag in (
        (70000, 1, 0x11),
        (70100, 256, 0x12),
        (70400, 300, 0x13),
        (70800, 1, 0x14),
        (70900, 256, 0x15),
        (71200, 300, 0x16),
        (71600, 40, 0x17),
        (71700, 33, 0x18),
        (71800, 1, 0x19),
        (71900, 64, 0x1A),
        (72000, 17, 0x1B),
        (72100, 4, 0x1C),
        (120000, 65536, 0x1D),
    )
)
_RW_WRITES_1 = (Region(0x0FFFFFF8, 8, 0x1E), Region(0x10000100, 8, 0x1F))
_NCQ_WRITES = tuple(Region(10000 + 100 * t, 8 + t, 0x40 + t) for t in range(1, 32, 2))
_TRIM_WRITES = (
    Region(2000, 100, 0x51),
    Region(3000, 200, 0x52),
    Region(3000, 100, None),
    Region(3150, 50, None),
    Region(5000, 8, None),
    Region(7000, 16, None),
)
_MULTI_SIZES = (12288, 8192, 20480)

CASES: tuple[Case, ...] = (
    Case("ahci_regs", disks=(Disk(2048),)),
    Case(
        "ahci_identify",
        append=f"sectors0=32768 sectors1={BIG}",
        disks=(Disk(32768), Disk(BIG, tag=None)),
    ),
    Case(
        "ahci_rw",
        disks=(Disk(196608), Disk(BIG, tag=0xB1, ranges=((0x0FFFFE00, 1024),))),
        writes=(_RW_WRITES_0, _RW_WRITES_1),
    ),
    Case("ahci_errors", disks=(Disk(16384),)),
    Case("ahci_errors", append="abuse=1", disks=(Disk(16384),), oracle=False, label="abuse"),
    Case("ahci_ncq", disks=(Disk(32768),), writes=(_NCQ_WRITES,)),
    Case(
        "ahci_irq",
        disks=(Disk(8192), Disk(2048, tag=None)),
        writes=((Region(2000, 8, 0x21), Region(2100, 4, 0x22)),),
    ),
    Case(
        "ahci_multi",
        append=" ".join(f"sectors{n}={s}" for n, s in enumerate(_MULTI_SIZES)),
        disks=tuple(Disk(s, tag=0xA0 + n) for n, s in enumerate(_MULTI_SIZES)),
        writes=tuple((Region(1000, 8, 0x30 + n),) for n in range(3)),
    ),
    Case("ahci_flush_trim", disks=(Disk(16384),), writes=(_TRIM_WRITES,)),
    Case("demo", disks=(Disk(16384),), tap=False),
    Case("demo", disks=(Disk(4096), Disk(2048, tag=0xA1)), label="two-disks", tap=False),
    Case("demo", label="no-disk", tap=False),
)


# ---- running our emulator and reading the transcript ---------------------------


def boot(case: Case, disks: tuple[Path, ...], root: Path, backend: str = "emu") -> GuestRun:
    """Boot the case's guest on ``disks`` through emu.testing's rig, as ``ahci-emu run``
    (``backend="emu"``, in a subprocess) or QEMU q35 (``"qemu"``) runs it."""
    rig = Rig(root, backend=backend, runner="subprocess", timeout=30)
    return rig.run(case.elf(), *disks, append=case.append, report_checks=False)
