"""`ahci-emu vm ...` through the real command-line entry point."""

import json

import pytest

from emu.storage import ops
from emu.storage.vm import Machine

MiB = 1 << 20


def sector0(folder) -> bytes:
    with Machine.open(folder) as vm:
        disk = vm.start()[0]
        buf = bytearray(512)
        disk.readv(0, [memoryview(buf)])
        return bytes(buf)


def test_create_attach_snapshot_write_restore(tmp_path, ahci_emu):
    base = tmp_path / "disk.vdi"
    ops.create_image(str(base), 4 * MiB, fmt="vdi", variant="dynamic")
    vm = tmp_path / "vm"
    assert ahci_emu("vm", "create", vm)[0] == 0
    assert ahci_emu("vm", "attach", vm, "--port", 0, "--medium", base)[0] == 0
    status, out, _ = ahci_emu("vm", "snapshot", vm, "take", "clean", "--description", "fresh")
    assert status == 0 and "clean" in out
    with Machine.open(vm) as machine:
        disk = machine.start()[0]
        disk.writev(0, [memoryview(bytearray(b"dirty" * 100))])
    assert sector0(vm)[:5] == b"dirty"
    assert ahci_emu("vm", "snapshot", vm, "restore", "clean")[0] == 0
    assert sector0(vm) == bytes(512)

    status, out, _ = ahci_emu("vm", "snapshot", vm, "list")
    first, description = out.splitlines()
    assert status == 0 and first.startswith("clean (") and first.endswith(" *")
    assert description.strip() == "fresh"
    status, out, _ = ahci_emu("vm", "info", vm, "--output", "json")
    info = json.loads(out)
    assert info["current_snapshot"] == "clean"
    assert info["attachments"][0]["type"] == "normal"
    assert len(info["attachments"][0]["chain"]) == 2
    status, out, _ = ahci_emu("vm", "info", vm)
    assert status == 0 and "Port 0:" in out and "clean" in out

    assert ahci_emu("vm", "snapshot", vm, "delete", "clean")[0] == 0
    assert ahci_emu("vm", "detach", vm, "--port", 0)[0] == 0
    assert json.loads(ahci_emu("vm", "info", vm, "--output", "json")[1])["attachments"] == []


def test_immutable_without_autoreset(tmp_path, ahci_emu):
    base = tmp_path / "disk.vdi"
    ops.create_image(str(base), 4 * MiB, fmt="vdi", variant="dynamic")
    ahci_emu("vm", "create", tmp_path / "vm")
    status, _, _ = ahci_emu(
        "vm",
        "attach",
        tmp_path / "vm",
        "--port",
        1,
        "--medium",
        base,
        "--type",
        "immutable",
        "--no-autoreset",
    )
    assert status == 0
    info = json.loads(ahci_emu("vm", "info", tmp_path / "vm", "--output", "json")[1])
    assert info["attachments"][0] | {"chain": None, "medium": None, "path": None} == {
        "port": 1,
        "type": "immutable",
        "autoreset": False,
        "chain": None,
        "medium": None,
        "path": None,
    }


@pytest.mark.parametrize(
    "argv, message",
    [
        (["vm", "info", "{tmp}/nothing"], "not a machine folder"),
        (["vm", "create", "{tmp}/vm"], "already a machine folder"),
        (["vm", "snapshot", "{tmp}/vm", "restore", "nope"], "no snapshot named 'nope'"),
        (["vm", "snapshot", "{tmp}/vm", "take"], "snapshot take needs a NAME"),
        (["vm", "snapshot", "{tmp}/vm", "list", "x"], "takes no NAME"),
        (["vm", "attach", "{tmp}/vm", "--port", "0", "--medium", "{tmp}/none.vdi"], "cannot open"),
        (["vm", "detach", "{tmp}/vm", "--port", "3"], "port 3 has no disk"),
    ],
)
def test_errors_are_one_line_on_stderr_and_exit_1(tmp_path, ahci_emu, argv, message):
    Machine.create(tmp_path / "vm").close()
    status, out, err = ahci_emu(*(a.format(tmp=tmp_path) for a in argv))
    assert status == 1 and out == ""
    assert err.count("\n") == 1 and err.startswith("ahci-emu: error: ") and message in err


def test_a_bad_type_is_a_usage_error(tmp_path, ahci_emu):
    with pytest.raises(SystemExit) as exc:
        ahci_emu("vm", "attach", tmp_path, "--port", 0, "--medium", "x", "--type", "sticky")
    assert exc.value.code == 2


@pytest.fixture
def branched(tmp_path):
    """A machine whose snapshot s1 has two children (s2's branch and the current state)."""
    base, other = tmp_path / "disk.vdi", tmp_path / "other.vdi"
    for path in (base, other):
        ops.create_image(str(path), 4 * MiB, fmt="vdi", variant="dynamic")
    with Machine.create(tmp_path / "vm") as vm:
        vm.attach(0, str(base))
        vm.attach(1, str(other), "immutable")  # a start would reset its diff
        vm.snapshot_take("s1")
        vm.snapshot_take("s2")
        vm.snapshot_restore("s1")
    return tmp_path


@pytest.mark.parametrize(
    "argv, message",
    [
        (["attach", "--port", "0", "--medium", "{tmp}/disk.vdi"], "port 0 already has a disk"),
        (["attach", "--port", "40", "--medium", "{tmp}/disk.vdi"], "port 40 does not exist"),
        (["attach", "--port", "2", "--medium", "{tmp}/none.vdi"], "cannot open"),
        (["attach", "--port", "2", "--medium", "{diff}"], "is a differencing image"),
        (["attach", "--port", "2", "--medium", "{tmp}/disk.vdi", "--no-autoreset"], "autoreset"),
        (["attach", "--port", "2", "--medium", "{tmp}/disk.vdi", "--type", "shareable"], "fixed"),
        (["detach", "--port", "3"], "port 3 has no disk"),
        (["snapshot", "take", "s1"], "a snapshot named 's1' already exists"),
        (["snapshot", "take", " "], "a snapshot needs a name"),
        (["snapshot", "restore", "nope"], "no snapshot named 'nope'"),
        (["snapshot", "delete", "s1"], "has 2 children"),
        (["run", "{tmp}/no-such-guest.elf"], "no-such-guest.elf"),
    ],
)
def test_every_refused_operation_changes_no_byte(branched, ahci_emu, tree_state, argv, message):
    """Issue 10: a refused operation leaves every file under the folder byte-identical."""
    vm = branched / "vm"
    diff = next((vm / "Snapshots").iterdir())
    action, *rest = argv
    argv = ["vm", action, vm, *(a.format(tmp=branched, diff=diff) for a in rest)]
    before = tree_state(branched)
    status, out, err = ahci_emu(*argv)
    assert (status, out) == (1, ""), err
    assert err.count("\n") == 1 and err.startswith("ahci-emu: error: ") and message in err, err
    assert tree_state(branched) == before


def test_a_machine_another_process_holds_is_refused_unchanged(branched, ahci_emu, tree_state):
    before = tree_state(branched)
    with Machine.open(branched / "vm"):
        status, _, err = ahci_emu("vm", "snapshot", branched / "vm", "take", "s3")
    assert status == 1 and "machine is in use by another process" in err
    assert tree_state(branched) == before


def test_commands_say_what_they_did(tmp_path, ahci_emu):
    """Issue 9: attach, detach, restore, delete and an empty list are not silent."""
    base = tmp_path / "disk.vdi"
    ops.create_image(str(base), 4 * MiB, fmt="vdi", variant="dynamic")
    vm = tmp_path / "vm"
    ahci_emu("vm", "create", vm)
    assert ahci_emu("vm", "snapshot", vm, "list")[1] == "machine 'vm' has no snapshots\n"
    out = ahci_emu("vm", "attach", vm, "--port", 2, "--medium", base, "--type", "immutable")[1]
    assert out == f"attached {base} to port 2 of machine 'vm' (immutable)\n"
    snap = ahci_emu("vm", "snapshot", vm, "take", "s1")[1].split("(")[1].rstrip(")\n")
    assert (
        ahci_emu("vm", "snapshot", vm, "restore", "s1")[1] == f"snapshot 's1' restored ({snap})\n"
    )
    assert ahci_emu("vm", "snapshot", vm, "delete", "s1")[1] == (
        "snapshot 's1' deleted (1 image merge(s))\n"
    )
    assert ahci_emu("vm", "detach", vm, "--port", 2)[1] == (
        "detached port 2 of machine 'vm' (the base image is kept)\n"
    )
