"""Snapshots seen from the guest: take, restore, delete (merge), write-through disks.

Each test boots the gen guest on a machine folder (``ahci-emu vm run``) between
snapshot operations, and checks both what the guest read and what the files hold.
"""

from __future__ import annotations

from emu.testing import GenRange, expected

SIZE = "4M"  # 8192 sectors, four 1 MiB VDI blocks


def test_restore_brings_back_the_snapshot_and_deletes_the_discarded_diff(ahci):
    base = ahci.image("disk.vdi", SIZE)
    vm = ahci.machine()
    vm.attach(0, base)
    vm.run(ops="write:0:64:1,write:2048:16:1").assert_ok()  # no snapshot yet: into the base
    assert vm.chain(0) == [base]
    assert ahci.generations(base, 0, 64) == [GenRange(0, 0, 63, 1)]

    vm.take("gen1")
    after_take = vm.leaf(0)
    assert vm.chain(0) == [after_take, base] and after_take.parent.name == "Snapshots"

    run = vm.run(ops="write:0:32:2,check:0:32:2,check:32:32:1")
    run.assert_ok()
    assert vm.generations(after_take, 0, 64) == expected((0, 32, 2), (32, 32, 1))
    assert ahci.generations(base, 0, 64) == [GenRange(0, 0, 63, 1)]  # the base is frozen

    vm.restore("gen1")
    assert not after_take.exists(), "the diff with generation 2 must be deleted"
    assert vm.leaf(0) != after_take and vm.chain(0)[1:] == [base]
    run = vm.run(ops="check:0:64:1,check:2048:16:1")
    run.assert_ok()
    assert run.generations == [GenRange(0, 0, 63, 1), GenRange(0, 2048, 2063, 1)]
    assert vm.generations(0, 0, 64) == [GenRange(0, 0, 63, 1)]


def test_restore_to_an_older_snapshot_of_a_tree(ahci):
    base = ahci.image("disk.vdi", SIZE)
    vm = ahci.machine()
    vm.attach(0, base)
    vm.take("empty")
    vm.run(ops="write:0:8:1").assert_ok()
    vm.take("one")
    vm.run(ops="write:8:8:2").assert_ok()
    vm.take("two")
    vm.run(ops="write:16:8:3").assert_ok()

    vm.restore("one")
    vm.run(ops="check:0:8:1,check:8:16:0").assert_ok()
    vm.restore("empty")
    vm.run(ops="check:0:24:0").assert_ok()
    vm.restore("two")
    run = vm.run(ops="read:0:24")
    run.assert_ok()
    assert run.generations == [GenRange(0, 0, 7, 1), GenRange(0, 8, 15, 2), GenRange(0, 16, 23, 0)]
    assert ahci.generations(base, 0, 24) == [GenRange(0, 0, 23, 0)]  # every write went to diffs


def test_write_through_disk_keeps_its_contents_across_a_restore(ahci):
    normal = ahci.image("normal.vdi", SIZE)
    through = ahci.image("through.vdi", SIZE)
    vm = ahci.machine()
    vm.attach(0, normal)
    vm.attach(1, through, "writethrough")
    vm.run(ops="write:0:64:1,write:0:64:1@1").assert_ok()
    vm.take("s1")
    assert vm.chain(1) == [through], "a write-through disk gets no diff"
    vm.run(ops="write:0:64:2,write:0:64:2@1").assert_ok()

    vm.restore("s1")
    run = vm.run(ops="check:0:64:1,check:0:64:2@1")
    run.assert_ok()
    assert run.generations == [GenRange(0, 0, 63, 1), GenRange(1, 0, 63, 2)]
    assert ahci.generations(through, 0, 64) == [GenRange(0, 0, 63, 2)]
    assert ahci.generations(normal, 0, 64) == [GenRange(0, 0, 63, 1)]


def test_deleting_snapshots_merges_and_the_guest_reads_the_same(ahci):
    """Deleting a snapshot whose image the current state still reads through merges
    it (forward or backward); the guest must read exactly what it read before, and
    so must the other snapshot when restored."""
    base = ahci.image("disk.vdi", SIZE)
    vm = ahci.machine()
    vm.attach(0, base)
    vm.run(ops="write:0:2048:1").assert_ok()  # all of block 0 in the base
    vm.take("s1")
    vm.run(ops="write:100:50:2,write:2048:100:2").assert_ok()  # blocks 0 and 1
    vm.take("s2")
    vm.run(ops="write:120:10:3,write:4096:10:3,trim:2100:20").assert_ok()  # 0, 2; 1 zeroed
    layers = ((0, 2048, 1), (100, 50, 2), (2048, 100, 2), (120, 10, 3), (4096, 10, 3))
    want = expected(*layers, (2100, 20, 0))

    before = vm.run(ops="read:0:8192")
    before.assert_ok()
    assert [r for r in before.generations if r.generation != 0] == [
        r for r in want if r.generation != 0
    ]
    chain_before = vm.chain(0)
    assert len(chain_before) == 3

    vm.delete("s2")  # s2's image (with generation 2) is merged with the current diff
    assert len(vm.chain(0)) == 2
    gone = set(chain_before) - set(vm.chain(0))
    assert gone and not any(p.exists() for p in gone), "the merged-away image is deleted"
    after = vm.run(ops="read:0:8192")
    after.assert_ok()
    assert after.generations == before.generations

    vm.delete("s1")  # the base itself: the diff is merged back into it
    assert vm.chain(0) == [base]
    assert ahci.generations(base, 0, 8192) == before.generations
    final = vm.run(ops="read:0:8192")
    final.assert_ok()
    assert final.generations == before.generations
    assert sorted(p.name for p in (vm.folder / "Snapshots").iterdir()) == []


def test_deleting_a_middle_snapshot_keeps_the_older_one_restorable(ahci):
    base = ahci.image("disk.vdi", SIZE)
    vm = ahci.machine()
    vm.attach(0, base)
    vm.take("s0")
    vm.run(ops="write:0:16:1").assert_ok()
    vm.take("s1")
    vm.run(ops="write:16:16:2").assert_ok()
    vm.take("s2")
    vm.run(ops="write:32:16:3").assert_ok()

    vm.delete("s1")
    vm.run(ops="check:0:16:1,check:16:16:2,check:32:16:3").assert_ok()
    vm.restore("s2")
    vm.run(ops="check:0:16:1,check:16:16:2,check:32:16:0").assert_ok()
    vm.restore("s0")
    vm.run(ops="check:0:48:0").assert_ok()
