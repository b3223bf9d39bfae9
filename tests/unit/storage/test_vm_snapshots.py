"""Snapshots: take, restore, delete (with merges), the tree, and crashes in between."""

import json
import os
import uuid
from pathlib import Path

import pytest

from emu.storage import machine_file, machine_store, ops, ownership, vdi
from emu.storage.vm import Machine, MachineError

MiB = 1 << 20
SIZE = 4 * MiB


def make_base(path: Path) -> str:
    ops.create_image(str(path), SIZE, fmt="vdi", variant="dynamic")
    return str(path)


def read(dev, offset: int = 0, length: int = 512) -> bytes:
    buf = bytearray(length)
    dev.readv(offset, [memoryview(buf)])
    return bytes(buf)


def write(dev, data: bytes, offset: int = 0) -> None:
    dev.writev(offset, [memoryview(bytearray(data))])


def disk_bytes(vm: Machine, port: int = 0) -> bytes:
    """The whole disk on ``port`` as the guest would read it (starts and stops ``vm``)."""
    dev = vm.start()[port]
    try:
        return read(dev, 0, dev.size)
    finally:
        vm.stop()


def write_disk(vm: Machine, data: bytes, offset: int = 0, port: int = 0) -> None:
    dev = vm.start()[port]
    try:
        write(dev, data, offset)
    finally:
        vm.stop()


def machine_json(folder: Path) -> dict:
    return json.loads((folder / "machine.json").read_text())


def diff_files(folder: Path) -> set[str]:
    return set(os.listdir(folder / "Snapshots"))


def image_of(folder: Path, snapshot: str, port: int = 0) -> str:
    data = machine_json(folder)
    snap = next(s for s in data["snapshots"] if s["name"] == snapshot)
    return snap["attachments"][str(port)]["image"]


def path_of(folder: Path, medium: str) -> Path:
    return (folder / machine_json(folder)["media"][medium]["path"]).resolve()


@pytest.fixture
def machine(tmp_path):
    vm = Machine.create(tmp_path / "vm")
    vm.attach(0, make_base(tmp_path / "base.vdi"))
    yield vm, tmp_path / "vm"
    vm.close()


def test_take_write_restore_brings_the_old_data_back_and_deletes_the_discarded_diff(machine):
    vm, folder = machine
    write_disk(vm, b"A" * 4096)
    vm.snapshot_take("before", "clean install")
    leaf_after_take = machine_json(folder)["current"]["leaves"]["0"]
    write_disk(vm, b"B" * 4096, offset=MiB - 512)  # straddles two blocks
    assert disk_bytes(vm)[:4096] == b"A" * 4096
    vm.snapshot_restore("before")
    data = disk_bytes(vm)
    assert data[:4096] == b"A" * 4096
    assert data[MiB - 512 : MiB + 3584] == bytes(4096)
    assert f"{{{leaf_after_take}}}.vdi" not in diff_files(folder)
    leaf = machine_json(folder)["current"]["leaves"]["0"]
    assert diff_files(folder) == {f"{{{leaf}}}.vdi"}
    assert machine_json(folder)["media"][leaf]["parent"] == image_of(folder, "before")


def test_a_frozen_image_is_never_written_again(machine):
    vm, folder = machine
    write_disk(vm, b"A" * 512)
    vm.snapshot_take("one")
    write_disk(vm, b"B" * 512)
    vm.snapshot_take("two")
    frozen = path_of(folder, image_of(folder, "two"))
    before = frozen.read_bytes()
    write_disk(vm, b"C" * 512)
    vm.snapshot_restore("one")
    write_disk(vm, b"D" * 512)
    assert frozen.read_bytes() == before
    vm.snapshot_restore("two")
    assert disk_bytes(vm)[:512] == b"B" * 512


def test_the_tree_records_parents_and_the_current_snapshot(machine):
    vm, _ = machine
    vm.snapshot_take("a", "first")
    vm.snapshot_take("b")
    vm.snapshot_restore("a")
    vm.snapshot_take("c")
    [a] = vm.snapshot_list()
    assert (a.name, a.description, a.current) == ("a", "first", False)
    assert [(n.name, n.current) for n in a.children] == [("b", False), ("c", True)]
    info = vm.info()
    assert info["current_snapshot"] == "c"
    assert [s["name"] for s in info["snapshots"][0]["children"]] == ["b", "c"]
    with pytest.raises(MachineError, match="already exists"):
        vm.snapshot_take("a")
    with pytest.raises(MachineError, match="no snapshot named 'zz'"):
        vm.snapshot_restore("zz")


def test_deleting_the_only_snapshot_merges_back_into_the_base(machine):
    vm, folder = machine
    write_disk(vm, b"A" * 512)
    vm.snapshot_take("one")
    write_disk(vm, b"B" * 512, offset=MiB)
    before = disk_bytes(vm)
    vm.snapshot_delete("one")
    assert disk_bytes(vm) == before
    assert diff_files(folder) == set()  # the diff went into the base
    data = machine_json(folder)
    assert data["snapshots"] == [] and data["current"]["snapshot"] is None
    assert data["current"]["leaves"]["0"] == data["attachments"]["0"]["medium"]
    Machine.open(folder, read_only=True).close()  # a valid machine file


def test_deleting_a_snapshot_whose_data_later_states_need(machine):
    """Delete the middle of a -> b -> current: every state reads as before."""
    vm, folder = machine
    write_disk(vm, b"A" * 512)
    vm.snapshot_take("a")
    write_disk(vm, b"B" * 512, offset=MiB)
    vm.snapshot_take("b")
    write_disk(vm, b"C" * 512, offset=2 * MiB)
    current = disk_bytes(vm)
    b_image = image_of(folder, "b")
    vm.snapshot_delete("b")
    assert disk_bytes(vm) == current
    assert f"{{{b_image}}}.vdi" not in diff_files(folder)
    data = machine_json(folder)
    leaf = data["current"]["leaves"]["0"]
    assert data["media"][leaf]["parent"] == image_of(folder, "a")  # re-linked
    assert data["current"]["snapshot"] == data["snapshots"][0]["uuid"]
    vm.snapshot_restore("a")
    assert disk_bytes(vm)[: 3 * MiB : MiB // 2] == b"A" + bytes(5)


def test_deleting_a_parent_snapshot_relinks_its_children(machine):
    vm, _ = machine
    write_disk(vm, b"A" * 512)
    vm.snapshot_take("a")
    write_disk(vm, b"B" * 512, offset=MiB)
    vm.snapshot_take("b")
    write_disk(vm, b"C" * 512, offset=2 * MiB)
    vm.snapshot_take("c")
    vm.snapshot_delete("a")
    [b] = vm.snapshot_list()
    assert b.name == "b" and [n.name for n in b.children] == ["c"]
    vm.snapshot_restore("b")
    data = disk_bytes(vm)
    assert (data[0], data[MiB], data[2 * MiB]) == (ord("A"), ord("B"), 0)
    vm.snapshot_restore("c")
    data = disk_bytes(vm)
    assert (data[0], data[MiB], data[2 * MiB]) == (ord("A"), ord("B"), ord("C"))


def test_merge_direction_follows_the_file_sizes(machine):
    """A diff image larger than its child takes the child (backward); else it goes forward."""
    vm, folder = machine
    vm.snapshot_take("a")
    write_disk(vm, b"1" * 3 * MiB)  # the diff "b" will freeze is big
    vm.snapshot_take("b")
    write_disk(vm, b"2" * 512)  # the current leaf is small
    big = image_of(folder, "b")
    small = machine_json(folder)["current"]["leaves"]["0"]
    before = disk_bytes(vm)
    vm.snapshot_delete("b")
    assert disk_bytes(vm) == before
    data = machine_json(folder)
    assert data["current"]["leaves"]["0"] == big  # the child went into the bigger image
    assert small not in data["media"] and f"{{{small}}}.vdi" not in diff_files(folder)

    vm.snapshot_take("c")  # freezes "big" again; the new leaf is empty
    write_disk(vm, b"3" * 3 * MiB + b"4" * MiB)
    leaf = machine_json(folder)["current"]["leaves"]["0"]
    vm.snapshot_delete("c")  # the image is smaller than its child: forward
    data = machine_json(folder)
    assert data["current"]["leaves"]["0"] == leaf
    assert big not in data["media"] and f"{{{big}}}.vdi" not in diff_files(folder)
    assert data["media"][leaf]["parent"] == image_of(folder, "a")


def test_deleting_a_snapshot_with_two_children_is_refused_and_changes_nothing(machine):
    vm, folder = machine
    write_disk(vm, b"A" * 512)
    vm.snapshot_take("a")
    write_disk(vm, b"B" * 512)
    vm.snapshot_take("b")  # a's image now has b's image as its child...
    vm.snapshot_restore("a")  # ...and the new current leaf as a second child
    files = {f: (folder / "Snapshots" / f).read_bytes() for f in diff_files(folder)}
    config = (folder / "machine.json").read_bytes()
    with pytest.raises(MachineError, match="has 2 children"):
        vm.snapshot_delete("a")
    assert (folder / "machine.json").read_bytes() == config
    assert {f: (folder / "Snapshots" / f).read_bytes() for f in diff_files(folder)} == files


def test_deleting_a_snapshot_nothing_derives_from_deletes_its_image(machine):
    vm, folder = machine
    vm.snapshot_take("a")
    write_disk(vm, b"B" * 512)
    vm.snapshot_take("b")
    vm.snapshot_restore("a")  # b's image has no children now
    b_image = image_of(folder, "b")
    vm.snapshot_delete("b")
    assert f"{{{b_image}}}.vdi" not in diff_files(folder)
    assert [n.name for n in vm.snapshot_list()] == ["a"]


def test_a_snapshot_of_a_raw_normal_disk_is_refused(tmp_path):
    raw = tmp_path / "disk.img"
    ops.create_image(str(raw), SIZE, fmt="raw")
    with Machine.create(tmp_path / "vm") as vm:
        vm.attach(0, str(raw))
        before = (tmp_path / "vm" / "machine.json").read_bytes()
        with pytest.raises(
            MachineError, match=r"port 0: \.\./disk\.img is raw; snapshots need a VDI"
        ):
            vm.snapshot_take("s")
        assert (tmp_path / "vm" / "machine.json").read_bytes() == before
        assert diff_files(tmp_path / "vm") == set()


def test_restore_brings_back_the_snapshots_attachments(tmp_path):
    vm = Machine.create(tmp_path / "vm")
    vm.attach(0, make_base(tmp_path / "a.vdi"))
    vm.snapshot_take("one")
    vm.detach(0)
    vm.attach(1, make_base(tmp_path / "b.vdi"), "immutable")
    vm.snapshot_restore("one")
    assert [a["port"] for a in vm.info()["attachments"]] == [0]
    assert len(diff_files(tmp_path / "vm")) == 1  # port 1's diff went with it
    vm.close()


# ---- crashes: a killed process must leave a machine that opens -------------


def crash_at(monkeypatch, target, name: str, after_calls: int = 0):
    """Make the ``after_calls``-th later call of ``target.name`` kill the process."""
    real = getattr(target, name)
    calls = iter(range(after_calls + 1))

    def dying(*args, **kwargs):
        if next(calls, None) == after_calls:
            os._exit(17)
        return real(*args, **kwargs)

    monkeypatch.setattr(target, name, dying)


def in_child(action) -> None:
    """Run ``action`` in a forked process that is expected to die (exit 17)."""
    pid = os.fork()
    if pid == 0:
        try:
            action()
        finally:
            os._exit(0)
    _, status = os.waitpid(pid, 0)
    assert os.waitstatus_to_exitcode(status) == 17


def prepared(tmp_path) -> Path:
    with Machine.create(tmp_path / "vm") as vm:
        vm.attach(0, make_base(tmp_path / "base.vdi"))
        write_disk(vm, b"A" * 512)
        vm.snapshot_take("a")
        write_disk(vm, b"B" * 512, offset=MiB)
        vm.snapshot_take("b")
        write_disk(vm, b"C" * 512, offset=2 * MiB)
    return tmp_path / "vm"


SNAPSHOT_A = b"A" * 512 + bytes(SIZE - 512)
SNAPSHOT_B = b"A" * 512 + bytes(MiB - 512) + b"B" * 512 + bytes(SIZE - MiB - 512)


@pytest.mark.parametrize(
    "op, target, name, after, restored",
    [
        ("take", machine_file.os, "replace", 0, False),  # intent not committed
        ("take", ownership.MachineFiles, "rename", 0, False),  # .new- file made, not renamed
        ("take", machine_file.os, "replace", 1, False),  # diff made, not committed
        ("restore", machine_file.os, "replace", 1, False),  # new diff made, not committed
        ("restore", ownership.MachineFiles, "remove", 0, True),  # committed, old leaf remains
        # b's image and the current leaf are the same size: a forward merge
        ("delete b", ops, "merge_into_child", 0, False),  # intent committed, merge not started
        ("delete b", machine_file.os, "replace", 1, False),  # merged, final commit not written
        ("delete b", ownership.MachineFiles, "remove", 0, False),  # committed, merged file remains
        # a's image is the base: a backward merge, then b's image re-linked
        ("delete a", vdi.VdiImage, "allocate_block", 0, False),  # in the middle of the merge
        ("delete a", ops, "relink", 0, False),  # merged, the grandchild not re-linked yet
        ("delete a", machine_file.os, "replace", 1, False),  # all done but the final commit
    ],
)
def test_a_crash_leaves_a_machine_that_opens_with_its_data(
    tmp_path, monkeypatch, op, target, name, after, restored
):
    folder = prepared(tmp_path)
    with Machine.open(folder) as vm:
        current = disk_bytes(vm)

    def action():
        with Machine.open(folder) as vm:
            crash_at(monkeypatch, target, name, after)
            if op == "take":
                vm.snapshot_take("c")
            elif op == "restore":
                vm.snapshot_restore("a")
            else:
                vm.snapshot_delete(op.split()[1])

    in_child(action)
    with Machine.open(folder) as vm:
        named = {Path(m["path"]).name for m in vm.info()["media"]}
        assert diff_files(folder) <= named  # strays removed
        assert disk_bytes(vm) == (SNAPSHOT_A if restored else current)
        assert machine_json(folder)["pending"] is None
        left = [n.name for n in vm.snapshot_list()] + [
            c.name for n in vm.snapshot_list() for c in n.children
        ]
        assert left == {"delete a": ["b"], "delete b": ["a"]}.get(op, left)
        for snap in left:
            vm.snapshot_restore(snap)
            assert disk_bytes(vm) == {"a": SNAPSHOT_A, "b": SNAPSHOT_B}.get(snap, current)


def test_open_finishes_a_pending_delete_before_anything_else(tmp_path, monkeypatch):
    folder = prepared(tmp_path)
    with Machine.open(folder) as vm:
        current = disk_bytes(vm)

    def interrupted(self, snapshot, merges):
        raise KeyboardInterrupt  # between the intent and the merges

    with Machine.open(folder) as vm:
        monkeypatch.setattr(machine_store.MachineStore, "finish_delete", interrupted)
        with pytest.raises(KeyboardInterrupt):
            vm.snapshot_delete("b")
        monkeypatch.undo()
    assert machine_json(folder)["pending"]["delete_snapshot"] == image_snapshot_uuid(folder, "b")
    with Machine.open(folder) as vm:
        assert machine_json(folder)["pending"] is None
        assert [n.name for n in vm.snapshot_list()] == ["a"]
        assert disk_bytes(vm) == current


def image_snapshot_uuid(folder: Path, name: str) -> str:
    return next(s["uuid"] for s in machine_json(folder)["snapshots"] if s["name"] == name)


def test_every_image_checks_clean_after_merges_both_ways(machine):
    """ops.check finds no corruption and no stale parent link (uuidParentModify) anywhere."""
    vm, folder = machine
    write_disk(vm, b"A" * 512)
    vm.snapshot_take("a")
    write_disk(vm, b"B" * 2 * MiB)
    vm.snapshot_take("b")
    write_disk(vm, b"C" * 512)
    vm.snapshot_take("c")
    write_disk(vm, b"D" * 512, offset=3 * MiB)
    vm.snapshot_delete("b")  # b's image is the larger: backward, c's image re-linked
    vm.snapshot_delete("a")  # a's image is the base: backward into it
    vm.snapshot_take("e")
    vm.snapshot_delete("c")  # c's image is smaller than its child? either way, checked
    data = machine_json(folder)
    registry = {uuid.UUID(u): str((folder / m["path"]).resolve()) for u, m in data["media"].items()}
    for medium in data["media"]:
        result = ops.check(str(path_of(folder, medium)), registry=registry)
        assert (result.exit_code, result.warnings) == (0, []), result
    assert disk_bytes(vm)[: 4 * MiB : MiB] == b"CB\0D"
