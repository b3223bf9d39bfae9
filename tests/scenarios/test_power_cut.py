"""A power cut (``--fault power-cut:...``) with the disk's volatile write cache on and off.

The gen guest loops: write a range with a new generation, FLUSH CACHE EXT, print
``gen: flushed ... generation G``. The power goes at a write or a flush; the run
ends at once with exit status 137. Then the image must be check-clean, hold every
generation the guest saw flushed, and hold nothing but whole generation markers
(no torn sector); with the write cache off, every completed write is there.
"""

from __future__ import annotations

import pytest

from emu.testing import lost_generations

SECTORS = 8192
COUNT = 24


@pytest.mark.parametrize(
    ("cut", "seed"), [("write=1", 0), ("write=40", 3), ("flush=17", 5), ("command=101", 9)]
)
def test_power_cut_keeps_every_flushed_generation(ahci, cut, seed):
    vm = ahci.machine("vm")
    base = ahci.image("vm/disk.vdi", "4M")
    vm.attach(0, base)
    vm.run(ops="write:0:2048:1").assert_ok()
    vm.take("s1")
    leaf = vm.leaf(0)

    run = vm.run(
        ops=f"loop:0:{COUNT}:2*300",
        faults=[f"power-cut:{cut}"],
        fault_seed=seed,
        report_checks=False,
    )
    assert run.exit_code == 137, run.describe()
    assert "power cut at command" in run.error
    assert [e["kind"] for e in run.faults_fired] == ["power-cut"]
    flushed = run.flushed
    check = ahci.cli("image", "check", leaf)
    assert check.returncode in (0, 3), check.stdout + check.stderr  # 3: leaks only

    after = vm.run(ops=f"read:0:{SECTORS}")
    after.assert_ok()
    assert lost_generations(flushed, after.generations) == []
    assert all(r.generation is not None for r in after.generations), after.generations


def test_write_cache_off_keeps_every_completed_write(ahci):
    disk = ahci.image("disk.img", "4M")
    run = ahci.run(
        "gen",
        disk,
        ops=["write:0:8:2", "write:8:8:3", "write:16:8:4"],  # each write then a flush
        faults=["power-cut:opcode=write,nth=3"],
        write_cache=False,
        report_checks=False,
    )
    assert run.exit_code == 137
    after = ahci.run("gen", disk, ops=["check:0:8:2", "check:8:8:3", "check:16:8:0"])
    after.assert_ok()


def test_write_cache_on_may_lose_unflushed_writes_but_never_tears_a_sector(ahci):
    disk = ahci.image("disk.img", "4M")
    # gen's write op flushes after writing: the cut comes at that flush, with the
    # 64-sector write still in the cache.
    run = ahci.run(
        "gen",
        disk,
        ops=["write:0:64:7"],
        faults=["power-cut:flush=1"],
        fault_seed=11,
        report_checks=False,
    )
    assert run.exit_code == 137
    kept = ahci.generations(disk, 0, 64)
    assert {r.generation for r in kept} <= {0, 7}  # whole old or whole new sectors
    assert {r.generation for r in kept} == {0, 7}  # with this seed, some of each
