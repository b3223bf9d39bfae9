"""Medium types as the guest sees them: what is written where, reset, shared, snapshotted."""

import json
import os
from pathlib import Path

import pytest

from emu.storage import ops
from emu.storage.errors import ImageLockedError, ReadOnlyError
from emu.storage.media import MediumType
from emu.storage.vm import Machine

MiB = 1 << 20
SIZE = 4 * MiB
BASE = b"base" * 128


def make_base(path: Path, *, variant: str = "dynamic", fmt: str = "vdi") -> str:
    """A base image whose first sector is BASE."""
    ops.create_image(str(path), SIZE, fmt=fmt, variant=variant)
    with Machine.create(path.parent / f"maker-{path.name}") as maker:
        maker.attach(0, str(path), "writethrough")
        write(maker.start()[0], BASE)
    return str(path)


def read(dev, offset: int = 0, length: int = 512) -> bytes:
    buf = bytearray(length)
    dev.readv(offset, [memoryview(buf)])
    return bytes(buf)


def write(dev, data: bytes, offset: int = 0) -> None:
    dev.writev(offset, [memoryview(bytearray(data))])
    dev.flush()


def first_sector(vm: Machine, port: int = 0) -> bytes:
    """Start ``vm``, read sector 0 of ``port``, stop."""
    try:
        return read(vm.start()[port])
    finally:
        vm.stop()


def diffs(vm: Machine) -> set[str]:
    return set(os.listdir(Path(vm.folder, "Snapshots")))


def leaf(vm: Machine, port: int = 0) -> str:
    data = json.loads(Path(vm.folder, "machine.json").read_text())
    return data["current"]["leaves"][str(port)]


def test_the_type_table():
    assert [t for t in MediumType if t.in_snapshots] == ["normal", "immutable", "multiattach"]
    assert [t for t in MediumType if t.diff_at_attach] == ["immutable", "multiattach"]
    assert [t for t in MediumType if not t.multi_user] == ["normal", "writethrough"]
    assert [t for t in MediumType if t.resets] == ["immutable"]


def test_immutable_diff_is_reset_at_every_start_and_the_base_never_written(tmp_path):
    base = make_base(tmp_path / "base.vdi")
    before = Path(base).read_bytes()
    with Machine.create(tmp_path / "vm") as vm:
        vm.attach(0, base, "immutable")
        disk = vm.start()[0]
        write(disk, b"X" * 512)
        assert read(disk) == b"X" * 512
        vm.stop()
        old = leaf(vm)
        assert f"{{{old}}}.vdi" in diffs(vm)  # kept after the run, for inspection
        assert first_sector(vm) == BASE
        assert f"{{{old}}}.vdi" not in diffs(vm) and len(diffs(vm)) == 1
    assert Path(base).read_bytes() == before


def test_immutable_with_autoreset_off_keeps_its_diff(tmp_path):
    base = make_base(tmp_path / "base.vdi")
    before = Path(base).read_bytes()
    with Machine.create(tmp_path / "vm") as vm:
        vm.attach(0, base, "immutable", autoreset=False)
        write(vm.start()[0], b"X" * 512)
        vm.stop()
    with Machine.open(tmp_path / "vm") as vm:
        assert first_sector(vm) == b"X" * 512
    assert Path(base).read_bytes() == before


def test_immutable_resets_to_the_current_snapshot(tmp_path):
    base = make_base(tmp_path / "base.vdi")
    with Machine.create(tmp_path / "vm") as vm:
        vm.attach(0, base, "immutable")
        write(vm.start()[0], b"S" * 512)
        vm.stop()
        vm.snapshot_take("s")
        write(vm.start()[0], b"T" * 512)
        vm.stop()
        assert first_sector(vm) == b"S" * 512


def test_multiattach_machines_see_their_own_writes_only(tmp_path):
    base = make_base(tmp_path / "base.vdi")
    before = Path(base).read_bytes()
    with Machine.create(tmp_path / "a") as a, Machine.create(tmp_path / "b") as b:
        a.attach(0, base, "multiattach")
        b.attach(0, base, "multiattach")
        b.attach(1, base, "multiattach")  # a second attachment gets a second diff
        disk_a, disk_b, disk_b1 = a.start()[0], *b.start().values()  # all at once
        write(disk_a, b"A" * 512)
        write(disk_b, b"B" * 512)
        assert (read(disk_a), read(disk_b), read(disk_b1)) == (b"A" * 512, b"B" * 512, BASE)
        a.stop()
        b.stop()
        assert first_sector(a) == b"A" * 512  # never reset
        assert len(diffs(b)) == 2
    assert Path(base).read_bytes() == before


def test_writethrough_keeps_its_contents_across_snapshots(tmp_path):
    base = make_base(tmp_path / "base.vdi")
    with Machine.create(tmp_path / "vm") as vm:
        vm.attach(0, base, "writethrough")
        vm.snapshot_take("s")
        assert diffs(vm) == set()
        write(vm.start()[0], b"W" * 512)
        vm.stop()
        vm.snapshot_restore("s")
        assert first_sector(vm) == b"W" * 512
        assert vm.info()["attachments"][0]["type"] == "writethrough"
        vm.snapshot_delete("s")
        assert first_sector(vm) == b"W" * 512 and diffs(vm) == set()


def test_writethrough_beside_a_normal_disk_in_one_snapshot(tmp_path):
    with Machine.create(tmp_path / "vm") as vm:
        vm.attach(0, make_base(tmp_path / "n.vdi"))
        vm.attach(1, make_base(tmp_path / "w.vdi"), "writethrough")
        vm.snapshot_take("s")
        disks = vm.start()
        write(disks[0], b"N" * 512)
        write(disks[1], b"W" * 512)
        vm.stop()
        vm.snapshot_restore("s")
        disks = vm.start()
        assert (read(disks[0]), read(disks[1])) == (BASE, b"W" * 512)
        vm.stop()


def test_readonly_refuses_writes_and_can_be_used_by_two_machines(tmp_path):
    base = make_base(tmp_path / "base.vdi")
    before = Path(base).read_bytes()
    with Machine.create(tmp_path / "a") as a, Machine.create(tmp_path / "b") as b:
        a.attach(0, base, "readonly")
        b.attach(0, base, "readonly")
        disk_a, disk_b = a.start()[0], b.start()[0]
        assert disk_a.read_only
        with pytest.raises(ReadOnlyError):
            write(disk_a, b"X" * 512)
        assert read(disk_a) == read(disk_b) == BASE
        a.stop()
        b.stop()
        a.snapshot_take("s")
        assert diffs(a) == set()
    assert Path(base).read_bytes() == before


def test_shareable_is_written_directly_by_machines_running_at_once(tmp_path):
    base = make_base(tmp_path / "shared.vdi", variant="fixed")
    with Machine.create(tmp_path / "a") as a, Machine.create(tmp_path / "b") as b:
        a.attach(0, base, "shareable")
        b.attach(0, base, "shareable")
        disk_a, disk_b = a.start()[0], b.start()[0]
        write(disk_a, b"A" * 512, offset=MiB)
        assert read(disk_b, MiB) == b"A" * 512  # no diff, no cache: the other sees it
        with Machine.create(tmp_path / "c") as c, pytest.raises(ImageLockedError):
            c.attach(0, base, "writethrough")  # an exclusive user must wait
        a.stop()
        b.stop()
        assert diffs(a) == diffs(b) == set()


def test_shareable_raw_file_is_written_by_machines_running_at_once(tmp_path):
    base = make_base(tmp_path / "shared.img", fmt="raw", variant="fixed")
    with Machine.create(tmp_path / "a") as a, Machine.create(tmp_path / "b") as b:
        a.attach(0, base, "shareable")
        b.attach(0, base, "shareable")
        disk_a, disk_b = a.start()[0], b.start()[0]
        write(disk_a, b"R" * 512, offset=MiB)
        assert read(disk_b, MiB) == b"R" * 512
        with Machine.create(tmp_path / "c") as c, pytest.raises(ImageLockedError):
            c.attach(0, base, "writethrough")
        a.stop()
        b.stop()
    with open(base, "rb") as f:
        f.seek(MiB)
        assert f.read(512) == b"R" * 512
