"""Reading through chains and trees of differencing images, as the guest sees them and as
``--trace`` says they were served.

Disks are 4 MiB: four 1 MiB VDI blocks (2048 sectors each).
"""

from __future__ import annotations

import pytest

from emu.testing import GenRange, Rig, Vm, expected

BLOCK = 1 << 20
DEPTH = 64


def test_trace_names_the_image_that_served_each_block(ahci):
    base = ahci.image("base.vdi", "4M")
    ahci.fill(base, 0, 2048, 1)  # block 0
    ahci.fill(base, 6144, 2048, 1)  # block 3
    mid = ahci.diff(base, "mid.vdi")
    ahci.run("gen", mid, ops="write:2048:52:2").assert_ok()  # block 1, copied on write
    top = ahci.diff(mid, "top.vdi")
    ahci.run("gen", top, ops="write:4096:10:3,trim:6144:2048").assert_ok()  # block 2; 3 zeroed

    run = ahci.run("gen", top, ops="read:1024:6144", trace=True)  # 3 reads, each across 2 blocks
    run.assert_ok()
    assert run.generations == [
        GenRange(0, 1024, 2047, 1),
        GenRange(0, 2048, 2099, 2),
        GenRange(0, 2100, 4095, 0),
        GenRange(0, 4096, 4105, 3),
        GenRange(0, 4106, 7167, 0),
    ]
    reads = [(e["lba"], e["count"], e["sources"]) for e in run.commands(0x25)]
    half = BLOCK // 2
    assert reads == [
        (1024, 2048, [[half, half, str(base)], [BLOCK, half, str(mid)]]),
        (3072, 2048, [[BLOCK + half, half, str(mid)], [2 * BLOCK, half, str(top)]]),
        (5120, 2048, [[2 * BLOCK + half, half, str(top)], [3 * BLOCK, half, None]]),
    ]
    # The TRIM reached the stack: a DATA SET MANAGEMENT command, and block 3 of the base
    # still holds generation 1 underneath.
    trim_run = ahci.runs[-2]
    assert trim_run.trace == []  # not traced
    assert ahci.generations(base, 6144, 2048) == [GenRange(0, 6144, 8191, 1)]


@pytest.fixture(scope="module")
def deep_chain(tmp_path_factory):
    """A machine whose disk is a chain of 64 images, built once for both backends (the
    tests only read it): before each snapshot the guest writes layer k, LBA
    k*64..k*64+63 and (every layer) 4096..4103, with generation k+1. The machine
    folder and its images, base first."""
    rig = Rig(tmp_path_factory.mktemp("deep-chain"))
    vm = rig.machine("vm")
    vm.attach(0, rig.image("vm/disk.vdi", "4M"))
    for k in range(DEPTH):
        vm.run(ops=f"write:{k * 64}:64:{k + 1},write:4096:8:{k + 1}").assert_ok()
        if k + 1 < DEPTH:
            vm.take(f"layer {k + 1}")
    return vm.folder, vm.chain(0)[::-1]


@pytest.mark.ahci_oracle
def test_guest_reads_every_layer_of_a_64_deep_chain(ahci, deep_chain):
    folder, images = deep_chain
    vm = Vm(ahci, folder)
    assert len(images) == DEPTH
    layers = [(k * 64, 64, k + 1) for k in range(DEPTH)]
    want = [*expected(*layers), GenRange(0, 4096, 4103, DEPTH)]

    ops = f"check:0:64:1*{DEPTH},check:4096:8:{DEPTH}"
    run = vm.run(ops=ops, trace=True)
    run.assert_ok()
    assert run.generations == want
    assert vm.generations(0, 0, 4104) == [*expected(*layers, (4096, 8, DEPTH))]
    if run.backend == "emu":
        # A block is served by the topmost layer that wrote into it (copy-on-write makes
        # the whole block that layer's): block 0 by layer 31, blocks 1 and 2 by 63.
        served = {e["lba"]: e["sources"] for e in run.commands(0x25)}
        for k in range(DEPTH):
            owner = 31 if k < 32 else 63
            assert served[k * 64] == [[k * 64 * 512, 64 * 512, str(images[owner])]], k
        assert served[4096] == [[4096 * 512, 8 * 512, str(images[63])]]

        # The same chain through `run --disk LEAF` (parents found beside it, in
        # Snapshots/, and the base in the folder above), no machine involved.
        direct = ahci.run("gen", images[-1], ops=ops)
        direct.assert_ok()
        assert direct.generations == want


@pytest.mark.ahci_oracle
def test_sibling_diffs_and_a_grandchild_each_read_their_own_branch(ahci):
    base = ahci.image("base.vdi", "4M")
    ahci.fill(base, 0, 4096, 1)
    a, b = ahci.diff(base, "a.vdi"), ahci.diff(base, "b.vdi")
    ahci.run("gen", a, ops="write:0:64:2,write:2048:64:2", backend="emu").assert_ok()
    ahci.run("gen", b, ops="write:32:64:3", backend="emu").assert_ok()
    a1 = ahci.diff(a, "a1.vdi")
    ahci.run("gen", a1, ops="write:64:64:4", backend="emu").assert_ok()

    want = {
        a: expected((0, 4096, 1), (0, 64, 2), (2048, 64, 2)),
        b: expected((0, 4096, 1), (32, 64, 3)),
        a1: expected((0, 4096, 1), (0, 64, 2), (2048, 64, 2), (64, 64, 4)),
        base: expected((0, 4096, 1)),
    }
    for image, ranges in want.items():
        run = ahci.run("gen", image, ops="read:0:4096")
        run.assert_ok()
        assert run.generations == ranges, image.name
        assert ahci.generations(image, 0, 4096) == ranges, image.name
