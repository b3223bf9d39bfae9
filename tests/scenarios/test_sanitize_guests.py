"""Every guest in guest_images/ keeps the AHCI rules: each boots under --sanitize=strict.

The cases are tests/support/ahci_guests.py's, plus the guests outside it (gen,
bench, faults with each fault it recovers from, and the guests that do not touch
the HBA). A guest that breaks a rule on purpose, to see the HBA's answer, runs
under --sanitize (reporting) instead, and must break exactly the rules it means to.
"""

from __future__ import annotations

import json

import pytest
from support.ahci_guests import CASES, GUEST_DIR
from support.disks import make_disk

pytestmark = pytest.mark.ahci_sanitize("strict")

# ahci_errors issues a command on a halted port to see that it is not processed
# (AHCI 6.1.2); with abuse=1 it also issues a READ DMA with PRDTL 0.
DELIBERATE = {
    "ahci_errors": {"issue-while-halted"},
    "ahci_errors[abuse]": {"issue-while-halted", "prdtl-zero"},
}


@pytest.mark.parametrize("case", CASES, ids=[c.id for c in CASES])
def test_ahci_guest_keeps_the_rules(ahci, case):
    disks = case.make_disks(ahci.root)
    deliberate = DELIBERATE.get(case.id)
    mode = "strict" if deliberate is None else True
    run = ahci.run(case.elf(), *disks, append=case.append, sanitize=mode)
    assert run.exit_code == 0, run.describe()
    assert {v["rule"] for v in run.violations} == (deliberate or set())


OTHERS = [
    ("gen", "ops=write:0:64:1,check:0:64:1,trim:0:8,loop:64:8:2*20", []),
    ("bench", "count=64 op=write flush=4", []),
    ("bench", "count=64 op=ncq qd=32", []),
    ("bench", "count=64 op=ncqwrite qd=8", []),
    *[
        (driver, workload, [])
        for driver in ("bench_bios", "bench_msi", "bench_osdev")
        for workload in ("count=32 op=write flush=0", "count=64 op=ncq qd=32")
    ],
    ("hello", "", []),
    ("pci", "", []),
    ("pcidump", "", []),
    ("faults", "test=media lba=96 count=16 bad=100", ["media-error:lba=100-107"]),
    ("faults", "test=ncq lba=64 bad=85", ["media-error:lba=85-86,opcode=ncq,times=1"]),
    # Recovery by COMRESET or GHC.HR with a command outstanding is legal.
    ("faults", "test=stall how=comreset", ["stall:nth=1,opcode=0x25"]),
    ("faults", "test=stall how=hba", ["stall:nth=1,opcode=0x25"]),
    ("faults", "test=unplug", ["link-loss:nth=1,opcode=read,down=100"]),
    ("faults", "test=latency", ["latency:opcode=ncq,nth=1,commands=3"]),
]


@pytest.mark.parametrize(("guest", "append", "faults"), OTHERS, ids=lambda v: str(v)[:40])
def test_other_guest_keeps_the_rules(ahci, guest, append, faults):
    disk = make_disk(ahci.path("disk.img"), 16384, 0xD0)
    run = ahci.run(GUEST_DIR / f"{guest}.elf", disk, append=append, faults=faults)
    assert run.exit_code == 0, run.describe()
    assert run.violations == []


def test_every_built_guest_is_covered():
    built = {entry["name"] for entry in json.loads((GUEST_DIR / "manifest.json").read_text())}
    covered = {c.guest for c in CASES} | {guest for guest, _, _ in OTHERS}
    assert built <= covered, built - covered
