"""The ownership rule: a machine creates and deletes only its own diffs (issue 10, items 1, 2, 6).

Every refusal here is one line through the real entry point, exit status 1,
and the whole tree (both machines, the bases, the user's files) byte-identical.
"""

import json
import os
import uuid
from pathlib import Path

import pytest

from emu.storage import machine_file, ops, vdi
from emu.storage.machine_file import MachineFileError
from emu.storage.vm import Machine

MiB = 1 << 20


def make_base(path: Path) -> str:
    ops.create_image(str(path), 4 * MiB, fmt="vdi", variant="dynamic")
    return str(path)


def machine_json(folder: Path) -> dict:
    return json.loads((folder / "machine.json").read_text())


def put_json(folder: Path, data: dict) -> None:
    (folder / "machine.json").write_text(json.dumps(data, indent=2))


def leaf_of(folder: Path, port: int = 0) -> str:
    return machine_json(folder)["current"]["leaves"][str(port)]


@pytest.fixture
def two_machines(tmp_path):
    """Machines A and B on one base; B has a snapshot, so two diffs of its own."""
    base = make_base(tmp_path / "base.vdi")
    for name in ("A", "B"):
        Machine.create(tmp_path / name).close()
    with Machine.open(tmp_path / "B") as b:
        b.attach(0, base, "multiattach")
        b.snapshot_take("s1")
    return tmp_path, base


def refused(ahci_emu, tree_state, root, *argv, match: str) -> str:
    """Run ``ahci-emu ARGV``; it must be refused in one line and change nothing under root."""
    before = tree_state(root)
    status, out, err = ahci_emu(*argv)
    assert (status, out) == (1, ""), err
    assert len(err.splitlines()) == 1 and err.startswith("ahci-emu: error: "), err
    assert match in err, err
    assert tree_state(root) == before
    return err


# ---- item 1: Snapshots/ a symlink to another machine's ------------------------------


def test_a_snapshots_symlink_to_another_machine_keeps_that_machines_diffs(
    two_machines, ahci_emu, tree_state
):
    root, base = two_machines
    a = root / "A"
    (a / "Snapshots").rmdir()
    (a / "Snapshots").symlink_to(root / "B" / "Snapshots")
    refused(
        ahci_emu, tree_state, root, "vm", "attach", a, "--port", 0, "--medium", base,
        "--type", "immutable", match="is a symlink to",
    )  # fmt: skip
    # a change that needs no diff works, and still deletes nothing of B's
    b_files = sorted(os.listdir(root / "B" / "Snapshots"))
    assert ahci_emu("vm", "attach", a, "--port", 1, "--medium", base, "--type", "readonly")[0] == 0
    assert ahci_emu("vm", "detach", a, "--port", 1)[0] == 0
    assert sorted(os.listdir(root / "B" / "Snapshots")) == b_files
    with Machine.open(root / "B") as b:
        assert len(b.start()) == 1  # B's chain is whole
        b.stop()


def test_a_diff_that_is_a_symlink_is_not_deleted_through(two_machines, ahci_emu, tree_state):
    """B's leaf file replaced by a symlink to a file elsewhere: restore would delete it."""
    root, _ = two_machines
    b = root / "B"
    leaf = b / "Snapshots" / f"{{{leaf_of(b)}}}.vdi"
    outside = root / "precious.vdi"
    leaf.rename(outside)
    leaf.symlink_to(outside)
    refused(ahci_emu, tree_state, root, "vm", "snapshot", b, "restore", "s1", match="a symlink")


# ---- item 2: media paths naming non-images or files outside the machine ----------------


def test_restore_does_not_delete_a_text_file_set_as_the_leafs_path(
    two_machines, ahci_emu, tree_state
):
    root, _ = two_machines
    b = root / "B"
    notes = b / "notes.txt"
    notes.write_text("mine")
    data = machine_json(b)
    data["media"][leaf_of(b)]["path"] = "notes.txt"
    put_json(b, data)
    refused(
        ahci_emu, tree_state, root, "vm", "snapshot", b, "restore", "s1",
        match="a machine keeps its diffs at",
    )  # fmt: skip
    assert notes.read_text() == "mine"


def test_restore_does_not_delete_a_text_file_in_the_leafs_place(two_machines, ahci_emu, tree_state):
    root, _ = two_machines
    b = root / "B"
    leaf = b / "Snapshots" / f"{{{leaf_of(b)}}}.vdi"
    leaf.write_text("not a disk")
    refused(
        ahci_emu, tree_state, root, "vm", "snapshot", b, "restore", "s1",
        match=f"not a VDI with the UUID {leaf_of(b)}",
    )  # fmt: skip


def test_an_unreachable_entry_naming_another_machines_file_is_refused(
    two_machines, ahci_emu, tree_state
):
    root, base = two_machines
    a = root / "A"
    data = machine_json(a)
    stray = str(uuid.uuid4())
    data["media"][stray] = {
        "path": "../B/machine.json",
        "format": "vdi",
        "type": "normal",
        "parent": stray,  # any diff entry: its path is not the machine's own
    }
    put_json(a, data)
    refused(
        ahci_emu, tree_state, root, "vm", "attach", a, "--port", 0, "--medium", base,
        match="a machine keeps its diffs at",
    )  # fmt: skip
    machine_file.read(str(root / "B"))  # B is whole


def test_an_unreachable_base_is_unregistered_never_deleted(two_machines, ahci_emu):
    root, base = two_machines
    a = root / "A"
    data = machine_json(a)
    data["media"][str(uuid.uuid4())] = {
        "path": "../B/machine.json",
        "format": "raw",
        "type": "normal",
        "parent": None,
    }
    put_json(a, data)
    before = (root / "B" / "machine.json").read_bytes()
    assert ahci_emu("vm", "attach", a, "--port", 0, "--medium", base, "--type", "readonly")[0] == 0
    assert (root / "B" / "machine.json").read_bytes() == before
    paths = [m["path"] for m in machine_json(a)["media"].values()]
    assert paths == [os.path.join("..", "base.vdi")]


def test_a_crash_leftover_is_deleted_only_if_it_is_still_the_machines_diff(tmp_path):
    """Files named by ``discard`` go at the next open, unless they are not diffs any more."""
    base = make_base(tmp_path / "base.vdi")
    with Machine.create(tmp_path / "vm") as vm:
        vm.attach(0, base, "immutable")
    snapshots = tmp_path / "vm" / "Snapshots"
    # a diff whose UUID is in discard, as an interrupted change leaves it
    ops.create_diff(base, str(snapshots / "own.vdi"))
    own, replaced = vdi.read_uuids(str(snapshots / "own.vdi"))[0], uuid.uuid4()
    (snapshots / "own.vdi").rename(snapshots / f"{{{own}}}.vdi")
    data = machine_json(tmp_path / "vm")
    (snapshots / f"{{{replaced}}}.vdi").write_text("the user's now")
    data["discard"] = [str(own), str(replaced)]
    put_json(tmp_path / "vm", data)
    Machine.open(tmp_path / "vm", read_only=True).close()
    assert (snapshots / f"{{{own}}}.vdi").exists()  # a read-only open changes nothing
    Machine.open(tmp_path / "vm").close()
    assert not (snapshots / f"{{{own}}}.vdi").exists()
    assert (snapshots / f"{{{replaced}}}.vdi").read_text() == "the user's now"


# ---- item 6: snapshot cycles ----------------------------------------------------------


@pytest.fixture
def snapshotted(tmp_path):
    base = make_base(tmp_path / "base.vdi")
    with Machine.create(tmp_path / "vm") as vm:
        vm.attach(0, base)
        vm.snapshot_take("s1")
        vm.snapshot_take("s2")
    return tmp_path / "vm"


def test_a_snapshot_that_is_its_own_parent_is_refused(snapshotted, ahci_emu, tree_state):
    data = machine_json(snapshotted)
    data["snapshots"][0]["parent"] = data["snapshots"][0]["uuid"]
    put_json(snapshotted, data)
    for action in (
        ["info", snapshotted],
        ["snapshot", snapshotted, "list"],
        ["snapshot", snapshotted, "delete", "s2"],
    ):
        refused(ahci_emu, tree_state, snapshotted, "vm", *action, match="'s1' is its own ancestor")


def test_a_cycle_of_two_snapshots_is_refused(snapshotted):
    data = machine_json(snapshotted)
    s1, s2 = data["snapshots"]
    s1["parent"] = s2["uuid"]
    put_json(snapshotted, data)
    with pytest.raises(MachineFileError, match="is its own ancestor"):
        Machine.open(snapshotted)


def test_the_tool_never_writes_a_machine_file_it_would_refuse(snapshotted):
    config = machine_file.read(str(snapshotted))
    first = next(iter(config.snapshots.values()))
    first.parent = first.uuid
    before = (snapshotted / "machine.json").read_bytes()
    with pytest.raises(MachineFileError, match="not written, it would be inconsistent"):
        machine_file.write(str(snapshotted), config)
    assert (snapshotted / "machine.json").read_bytes() == before


def test_every_delete_leaves_a_machine_file_that_reads_back(snapshotted):
    with Machine.open(snapshotted) as vm:
        vm.snapshot_take("s3")
        for name in ("s2", "s1", "s3"):
            vm.snapshot_delete(name)
            machine_file.read(str(snapshotted))
        assert vm.snapshot_list() == []
