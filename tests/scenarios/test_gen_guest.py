"""The gen guest itself: its markers, its op syntax and its report, on ahci-emu and QEMU.

The host side (emu.testing.gen) and the guest (firmware/guests/gen.c) must agree
byte for byte on what a marker is, or every scenario built on them proves nothing.
"""

from __future__ import annotations

import pytest

from emu.testing import UNRECOGNISED, GenRange, classify, marker, markers

SECTOR = 512


def sectors(path, lba: int, count: int) -> bytes:
    with open(path, "rb") as f:
        f.seek(lba * SECTOR)
        return f.read(count * SECTOR)


def test_marker_layout():
    m = marker(0x1234, 7)
    assert len(m) == SECTOR
    assert m[:8] == b"GENMARK1"
    assert int.from_bytes(m[8:16], "little") == 0x1234
    assert int.from_bytes(m[16:20], "little") == 7
    assert m[20:24] == bytes(4)
    for i in range(3, 64):
        assert int.from_bytes(m[8 * i : 8 * i + 8], "little") == 7 << 48 | 0x1234 << 8 | i
    assert classify(m, 0x1234) == 7
    assert classify(m, 0x1235) == UNRECOGNISED  # a marker at the wrong place
    assert classify(bytes(SECTOR), 9) == 0
    assert classify(m[:-1] + b"\x01", 0x1234) == UNRECOGNISED
    with pytest.raises(ValueError):
        marker(0, 0)


@pytest.mark.ahci_oracle
def test_guest_writes_the_host_marker_and_reports_what_it_read(ahci):
    """One run of every op on two raw disks; the transcript is the same on both
    machines, line for line, and so are the bytes left in the files."""
    d0, d1 = ahci.image("d0.img", "4M"), ahci.image("d1.img", "1M")
    run = ahci.run(
        "gen",
        d0,
        d1,
        ops=[
            "write:10:10:7",
            "check:10:10:7",
            "read:8:14",
            "write:100:8:1*3",  # 100..107 gen 1, 108..115 gen 2, 116..123 gen 3
            "check:100:8:1*3",
            "trim:104:8",
            "check:104:8",
            "loop:2000:4:20*2",
            "write:0:2:9@1",
            "flush@1",
            "check:0:3:9@1",  # one sector too many: fails on purpose
        ],
        report_checks=False,
    )
    assert run.exit_code == 1, run
    assert run.lines == [
        "ok 1 - AHCI HBA found and reset",
        "gen: port 0 capacity 8192 sectors",
        "gen: port 1 capacity 2048 sectors",
        "ok 2 - port 0 write lba 10..19 generation 7",
        "gen: port 0 lba 10..19 generation 7",
        "ok 3 - port 0 lba 10..19 generation 7",
        "gen: port 0 lba 8..9 generation 0",
        "gen: port 0 lba 10..19 generation 7",
        "gen: port 0 lba 20..21 generation 0",
        "ok 4 - port 0 read lba 8..21",
        "ok 5 - port 0 write lba 100..107 generation 1",
        "ok 6 - port 0 write lba 108..115 generation 2",
        "ok 7 - port 0 write lba 116..123 generation 3",
        "gen: port 0 lba 100..107 generation 1",
        "ok 8 - port 0 lba 100..107 generation 1",
        "gen: port 0 lba 108..115 generation 2",
        "ok 9 - port 0 lba 108..115 generation 2",
        "gen: port 0 lba 116..123 generation 3",
        "ok 10 - port 0 lba 116..123 generation 3",
        "ok 11 - port 0 trim lba 104..111",
        "gen: port 0 lba 104..111 generation 0",
        "ok 12 - port 0 lba 104..111 generation 0",
        "gen: flushed port 0 lba 2000..2003 generation 20",
        "gen: flushed port 0 lba 2004..2007 generation 21",
        "ok 13 - port 0 loop: 2 generations flushed",
        "ok 14 - port 1 write lba 0..1 generation 9",
        "ok 15 - port 1 flush",
        "gen: port 1 lba 0..1 generation 9",
        "gen: port 1 lba 2..2 generation 0",
        "not ok 16 - port 1 lba 0..2 generation 9: 1 of 3 sectors differ; lba 2 holds generation 0",
        "1..16",
    ]
    assert [c.number for c in run.failed] == [16]
    assert run.failed[0].name == "port 1 lba 0..2 generation 9"
    assert run.failed[0].detail == "1 of 3 sectors differ; lba 2 holds generation 0"
    assert run.generations[-2:] == [GenRange(1, 0, 1, 9), GenRange(1, 2, 2, 0)]
    assert [r.generation for r in run.flushed] == [20, 21]
    # The files hold exactly the host's markers where the guest wrote, zeros elsewhere.
    assert sectors(d0, 10, 10) == markers(10, 10, 7)
    assert sectors(d0, 100, 4) == markers(100, 4, 1)
    assert sectors(d0, 104, 8) == bytes(8 * SECTOR)
    assert sectors(d0, 112, 12) == markers(112, 4, 2) + markers(116, 8, 3)
    assert sectors(d0, 2000, 8) == markers(2000, 4, 20) + markers(2004, 4, 21)
    assert sectors(d1, 0, 3) == markers(0, 2, 9) + bytes(SECTOR)
    assert ahci.generations(d0, 0, 8192) == [
        GenRange(0, 0, 9, 0),
        GenRange(0, 10, 19, 7),
        GenRange(0, 20, 99, 0),
        GenRange(0, 100, 103, 1),
        GenRange(0, 104, 111, 0),
        GenRange(0, 112, 115, 2),
        GenRange(0, 116, 123, 3),
        GenRange(0, 124, 1999, 0),
        GenRange(0, 2000, 2003, 20),
        GenRange(0, 2004, 2007, 21),
        GenRange(0, 2008, 8191, 0),
    ]


@pytest.mark.ahci_oracle
def test_guest_reads_host_markers_and_tells_foreign_data(ahci):
    disk = ahci.image("disk.img", "1M")
    ahci.fill(disk, 0, 16, 3)
    with open(disk, "r+b") as f:
        f.seek(5 * SECTOR)
        f.write(marker(4, 3))  # sector 4's marker in sector 5: misplaced
        f.seek(6 * SECTOR + 100)
        f.write(b"\x01")  # one byte off
        f.seek(20 * SECTOR)
        f.write(b"not a marker")
    run = ahci.run("gen", disk, append="op=check lba=0 count=24 expect=3", report_checks=False)
    assert run.exit_code == 1, run
    assert run.generations == [
        GenRange(0, 0, 4, 3),
        GenRange(0, 5, 6, None),
        GenRange(0, 7, 15, 3),
        GenRange(0, 16, 19, 0),
        GenRange(0, 20, 20, None),
        GenRange(0, 21, 23, 0),
    ]
    assert run.failed[0].detail == "10 of 24 sectors differ; lba 5 holds unrecognised data"
    assert run.generation_at(5) is None and run.generation_at(7) == 3


def test_single_op_form_and_port_key(ahci):
    d0, d1 = ahci.image("d0.img", "1M"), ahci.image("d1.img", "1M")
    run = ahci.run("gen", d0, d1, append="op=write lba=4 count=2 gen=5 repeat=2 port=1")
    assert run.passed, run
    assert ahci.generations(d1, 0, 10) == [
        GenRange(0, 0, 3, 0),
        GenRange(0, 4, 5, 5),
        GenRange(0, 6, 7, 6),
        GenRange(0, 8, 9, 0),
    ]
    assert ahci.generations(d0, 0, 2048) == [GenRange(0, 0, 2047, 0)]


def test_loop_without_repeat_fills_the_disk_to_its_end(ahci):
    disk = ahci.image("disk.img", "64K")  # 128 sectors
    run = ahci.run("gen", disk, ops="loop:96:8:1")
    assert run.passed, run
    assert [(r.first, r.generation) for r in run.flushed] == [(96, 1), (104, 2), (112, 3), (120, 4)]


@pytest.mark.parametrize(
    "ops",
    [
        "bogus:1:2",
        "write:0:8",  # no generation
        "write:0:8:0",  # generation 0 is zeros: nothing to write
        "write:0:0:1",  # no sectors
        "write:0:8:65535*2",  # past the last generation
        "check:0:8:1@32",  # no such port
        "read:0:8:1",  # read takes no generation
        "check:x:8:1",
    ],
)
def test_bad_ops_are_refused_before_anything_runs(ahci, ops):
    disk = ahci.image("disk.img", "1M")
    run = ahci.run("gen", disk, ops=f"write:0:1:1,{ops}", report_checks=False)
    assert run.exit_code == 1, run
    assert run.lines == [f"not ok 1 - ops= parsed: cannot use op 2 ('{ops}')", "1..1"]
    assert ahci.generations(disk, 0, 2048) == [GenRange(0, 0, 2047, 0)]  # op 1 never ran


def test_an_op_on_a_port_without_disk_fails(ahci):
    disk = ahci.image("disk.img", "1M")
    run = ahci.run("gen", disk, ops="check:0:1@2", report_checks=False)
    assert run.exit_code == 1
    assert run.failed[0].line == "not ok 2 - check: a disk on port 2: no disk found there"
