"""Machine folders: the machine file, locking, attach and detach."""

import json
import os
import uuid
from pathlib import Path

import pytest

from emu.storage import machine_file, ops
from emu.storage.chain import open_chain
from emu.storage.errors import ImageLockedError
from emu.storage.machine_file import MachineFileError
from emu.storage.media import MediumTypeError
from emu.storage.vm import Machine, MachineError, MachineLockedError

MiB = 1 << 20
SIZE = 4 * MiB


def make_base(path: Path, fill: bytes = b"", *, fmt: str = "vdi", variant: str = "dynamic") -> str:
    """A small base image whose first bytes are ``fill``."""
    ops.create_image(str(path), SIZE, fmt=fmt, variant=variant)
    if fill:
        dev = open_chain(str(path))
        try:
            dev.writev(0, [memoryview(bytearray(fill))])
            dev.flush()
        finally:
            dev.close()
    return str(path)


def read(dev, offset: int = 0, length: int = 512) -> bytes:
    buf = bytearray(length)
    dev.readv(offset, [memoryview(buf)])
    return bytes(buf)


def write(dev, data: bytes, offset: int = 0) -> None:
    dev.writev(offset, [memoryview(bytearray(data))])


def snapshot_files(vm: Path) -> list[str]:
    return sorted(os.listdir(vm / "Snapshots"))


def machine_json(vm: Path) -> dict:
    return json.loads((vm / "machine.json").read_text())


def test_create_writes_a_versioned_machine_file_and_a_snapshots_folder(tmp_path):
    with Machine.create(tmp_path / "vm") as vm:
        assert vm.name == "vm"
    data = machine_json(tmp_path / "vm")
    assert data["schema"] == "ahci-emu machine"
    assert data["version"] == 1
    assert data["media"] == {} and data["attachments"] == {} and data["snapshots"] == []
    assert (tmp_path / "vm" / "Snapshots").is_dir()
    assert not (tmp_path / "vm" / "machine.json.tmp").exists()


def test_create_refuses_an_existing_machine_folder(tmp_path):
    Machine.create(tmp_path / "vm").close()
    before = (tmp_path / "vm" / "machine.json").read_bytes()
    with pytest.raises(MachineError, match="already a machine folder"):
        Machine.create(tmp_path / "vm")
    assert (tmp_path / "vm" / "machine.json").read_bytes() == before


def test_open_refuses_an_unknown_schema_version(tmp_path):
    Machine.create(tmp_path / "vm").close()
    data = machine_json(tmp_path / "vm")
    data["version"] = 99
    (tmp_path / "vm" / "machine.json").write_text(json.dumps(data))
    with pytest.raises(MachineFileError, match="version 99 is not supported"):
        Machine.open(tmp_path / "vm")


@pytest.mark.parametrize(
    "text, message",
    [
        ("{", "not valid JSON"),
        ('{"schema": "something else"}', "not an ahci-emu machine file"),
        ('{"schema": "ahci-emu machine", "version": 1}', "malformed"),
    ],
)
def test_open_refuses_a_damaged_machine_file(tmp_path, text, message):
    Machine.create(tmp_path / "vm").close()
    (tmp_path / "vm" / "machine.json").write_text(text)
    with pytest.raises(MachineFileError, match=message):
        Machine.open(tmp_path / "vm")


def test_open_refuses_an_attachment_to_an_unregistered_medium(tmp_path):
    Machine.create(tmp_path / "vm").close()
    data = machine_json(tmp_path / "vm")
    ghost = str(uuid.uuid4())
    data["attachments"]["0"] = {"medium": ghost, "type": "normal", "autoreset": True}
    data["current"]["leaves"]["0"] = ghost
    (tmp_path / "vm" / "machine.json").write_text(json.dumps(data))
    with pytest.raises(MachineFileError, match="unregistered medium"):
        Machine.open(tmp_path / "vm")


def test_open_refuses_a_folder_without_a_machine(tmp_path):
    with pytest.raises(MachineFileError, match="not a machine folder"):
        Machine.open(tmp_path)


def test_a_machine_is_locked_while_open_but_readable(tmp_path):
    base = make_base(tmp_path / "base.vdi")
    with Machine.create(tmp_path / "vm") as vm:
        vm.attach(0, base)
        with pytest.raises(MachineLockedError, match="in use by another process"):
            Machine.open(tmp_path / "vm")
        with Machine.open(tmp_path / "vm", read_only=True) as viewer:
            assert viewer.info()["attachments"][0]["port"] == 0
            with pytest.raises(MachineError, match="read-only"):
                viewer.detach(0)
    Machine.open(tmp_path / "vm").close()


def test_a_failed_machine_file_write_keeps_the_old_file(tmp_path, monkeypatch):
    base = make_base(tmp_path / "base.vdi")
    vm = Machine.create(tmp_path / "vm")
    before = (tmp_path / "vm" / "machine.json").read_bytes()

    def no_rename(src, dst):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(machine_file.os, "replace", no_rename)
    with pytest.raises(MachineFileError, match="No space left"):
        vm.attach(0, base, "immutable")
    monkeypatch.undo()
    assert (tmp_path / "vm" / "machine.json").read_bytes() == before
    assert snapshot_files(tmp_path / "vm") == []  # the new diff was removed again
    vm.close()


def test_normal_medium_is_written_directly_until_a_snapshot(tmp_path):
    base = make_base(tmp_path / "base.vdi", b"base")
    with Machine.create(tmp_path / "vm") as vm:
        vm.attach(2, base)
        disk = vm.start()[2]
        assert read(disk, 0, 4) == b"base"
        write(disk, b"guest")
        vm.stop()
    assert snapshot_files(tmp_path / "vm") == []
    dev = open_chain(base)
    try:
        assert read(dev, 0, 5) == b"guest"
    finally:
        dev.close()


def test_attach_records_the_medium_relative_to_the_folder(tmp_path):
    (tmp_path / "disks").mkdir()
    base = make_base(tmp_path / "disks" / "base.vdi")
    with Machine.create(tmp_path / "vm") as vm:
        vm.attach(0, base, "immutable", autoreset=False)
    data = machine_json(tmp_path / "vm")
    att = data["attachments"]["0"]
    assert att["type"] == "immutable" and att["autoreset"] is False
    medium = data["media"][att["medium"]]
    assert medium == {
        "path": "../disks/base.vdi",
        "format": "vdi",
        "type": "immutable",
        "parent": None,
    }
    leaf = data["current"]["leaves"]["0"]
    assert data["media"][leaf]["parent"] == att["medium"]
    assert data["media"][leaf]["path"] == f"Snapshots/{{{leaf}}}.vdi"
    assert snapshot_files(tmp_path / "vm") == [f"{{{leaf}}}.vdi"]


def test_detach_deletes_the_attachments_own_diff_and_keeps_the_base(tmp_path):
    base = make_base(tmp_path / "base.vdi", b"base")
    before = Path(base).read_bytes()
    with Machine.create(tmp_path / "vm") as vm:
        vm.attach(0, base, "multiattach")
        assert len(snapshot_files(tmp_path / "vm")) == 1
        vm.detach(0)
        assert vm.info()["attachments"] == [] and vm.info()["media"] == []
    assert snapshot_files(tmp_path / "vm") == []
    assert Path(base).read_bytes() == before


def test_open_keeps_files_the_machine_did_not_make(tmp_path):
    """A diff-shaped file the registry never held is not the machine's to delete."""
    base = make_base(tmp_path / "base.vdi")
    with Machine.create(tmp_path / "vm") as vm:
        vm.attach(0, base, "immutable")
    stray = tmp_path / "vm" / "Snapshots" / f"{{{uuid.uuid4()}}}.vdi"
    ops.create_diff(base, str(stray))
    other = tmp_path / "vm" / "Snapshots" / "notes.txt"
    other.write_text("mine")
    with Machine.open(tmp_path / "vm") as vm:
        vm.start()
        vm.stop()  # a change: the immutable diff is replaced
        vm.detach(0)  # and the machine's last diff deleted
    assert snapshot_files(tmp_path / "vm") == sorted([stray.name, "notes.txt"])


class TestRefusals:
    """Each refused attach names the reason and leaves every file as it was."""

    @pytest.fixture
    def setup(self, tmp_path):
        vm_dir = tmp_path / "vm"
        vm = Machine.create(vm_dir)
        base = make_base(tmp_path / "base.vdi", b"base")
        vm.attach(0, base)
        vm.snapshot_take("s1")
        yield vm, vm_dir, tmp_path
        vm.close()

    @staticmethod
    def state(vm_dir: Path, *images: str) -> list[bytes]:
        files = [vm_dir / "machine.json", *sorted((vm_dir / "Snapshots").iterdir())]
        return [Path(f).read_bytes() for f in [*files, *images]] + [str(files).encode()]

    def refused(self, setup, exc, match, port, make_medium, mtype="normal", **kwargs):
        vm, vm_dir, tmp = setup
        medium = make_medium(tmp)
        before = self.state(vm_dir, medium)
        with pytest.raises(exc, match=match):
            vm.attach(port, medium, mtype, **kwargs)
        assert self.state(vm_dir, medium) == before

    def test_port_in_use(self, setup):
        self.refused(
            setup, MachineError, "port 0 already has a disk", 0, lambda t: make_base(t / "b.vdi")
        )

    def test_port_out_of_range(self, setup):
        self.refused(
            setup, MachineError, "port 32 does not exist", 32, lambda t: make_base(t / "b.vdi")
        )

    def test_unknown_type(self, setup):
        self.refused(
            setup,
            MachineError,
            "unknown medium type 'sticky'",
            1,
            lambda t: make_base(t / "b.vdi"),
            "sticky",
        )

    def test_autoreset_off_for_a_normal_medium(self, setup):
        self.refused(
            setup,
            MachineError,
            "autoreset applies to immutable",
            1,
            lambda t: make_base(t / "b.vdi"),
            autoreset=False,
        )

    def test_shareable_on_a_dynamic_vdi(self, setup):
        self.refused(
            setup,
            MediumTypeError,
            "shareable media must be fixed-size",
            1,
            lambda t: make_base(t / "b.vdi"),
            "shareable",
        )

    def test_immutable_on_a_raw_file(self, setup):
        self.refused(
            setup,
            MediumTypeError,
            "immutable needs a VDI base",
            1,
            lambda t: make_base(t / "b.img", fmt="raw"),
            "immutable",
        )

    def test_a_diff_image_as_immutable_base(self, setup):
        def diff(t):
            make_base(t / "p.vdi")
            ops.create_diff(str(t / "p.vdi"), str(t / "d.vdi"))
            return str(t / "d.vdi")

        self.refused(
            setup,
            MediumTypeError,
            "differencing image cannot be an immutable base",
            1,
            diff,
            "immutable",
        )

    def test_a_normal_medium_already_attached_here(self, setup):
        self.refused(
            setup,
            MachineError,
            "already attached to port 0; a normal medium can be attached once",
            1,
            lambda t: str(t / "base.vdi"),
        )

    def test_changing_the_type_of_a_medium_with_children(self, setup):
        self.refused(
            setup,
            MachineError,
            "cannot change its type from normal to immutable: it has 1 differencing image",
            1,
            lambda t: str(t / "base.vdi"),
            "immutable",
        )

    def test_one_of_the_machines_own_diffs(self, setup):
        _, vm_dir, _ = setup
        leaf = machine_json(vm_dir)["current"]["leaves"]["0"]
        self.refused(
            setup,
            MediumTypeError,
            "differencing image",
            1,
            lambda t: str(vm_dir / "Snapshots" / f"{{{leaf}}}.vdi"),
        )

    def test_a_copy_with_the_same_uuid(self, setup):
        def copy(t):
            (t / "copy.vdi").write_bytes((t / "base.vdi").read_bytes())
            return str(t / "copy.vdi")

        self.refused(setup, MachineError, "a copy of it", 1, copy, "writethrough")

    def test_changes_while_started(self, setup):
        vm, vm_dir, _ = setup
        vm.start()
        before = self.state(vm_dir)
        for op in (
            lambda: vm.detach(0),
            lambda: vm.snapshot_take("s2"),
            lambda: vm.snapshot_restore("s1"),
            lambda: vm.snapshot_delete("s1"),
        ):
            with pytest.raises(MachineError, match="started"):
                op()
        with pytest.raises(MachineError, match="already started"):
            vm.start()
        vm.stop()
        assert self.state(vm_dir) == before


def test_attach_refuses_a_normal_medium_a_running_machine_uses(tmp_path):
    base = make_base(tmp_path / "base.vdi")
    with Machine.create(tmp_path / "a") as a, Machine.create(tmp_path / "b") as b:
        a.attach(0, base)
        a.start()
        with pytest.raises(ImageLockedError, match="in use by another machine"):
            b.attach(0, base)
        assert b.info()["attachments"] == []
        a.stop()
        b.attach(0, base)  # allowed once the other machine stopped (as in VirtualBox)


def test_changing_the_type_of_a_medium_in_use_is_refused(tmp_path):
    base = make_base(tmp_path / "base.vdi")
    with Machine.create(tmp_path / "vm") as vm:
        vm.attach(0, base, "writethrough")
        with pytest.raises(MachineError, match="to readonly: it is in use by port 0"):
            vm.attach(1, base, "readonly")
        with pytest.raises(MachineError, match="a writethrough medium can be attached once"):
            vm.attach(1, base, "writethrough")
