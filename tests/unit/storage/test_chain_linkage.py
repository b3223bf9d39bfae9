"""Parents are found by UUID (registry, then the child's directory and the one above)
and validated on open; broken linkage is refused naming both files and UUIDs."""

import shutil
from pathlib import Path

import pytest

from emu.storage import ops
from emu.storage.chain import find_parent, open_chain
from emu.storage.errors import LinkageError, ParentNotFoundError, StorageError
from emu.storage.vdi import VdiImage

MiB = 1 << 20


def write(path: str, offset: int, payload: bytes) -> None:
    with open_chain(path) as chain:
        chain.writev(offset, [memoryview(payload)])


def first_bytes(path: str, n: int = 512, **kwargs) -> bytes:
    with open_chain(path, read_only=True, **kwargs) as chain:
        buf = bytearray(n)
        chain.readv(0, [memoryview(buf)])
    return bytes(buf)


def uuid_of(path: str):
    with VdiImage.open(path, read_only=True) as image:
        return image.uuid_create


@pytest.fixture
def machine(tmp_path) -> dict[str, str]:
    """VirtualBox's layout: DIR/base.vdi, DIR/Snapshots/s1.vdi <- DIR/Snapshots/s2.vdi."""
    (tmp_path / "Snapshots").mkdir()
    base = ops.create_image(str(tmp_path / "base.vdi"), 2 * MiB)
    write(base, 0, b"B" * 512)
    s1 = ops.create_diff(base, str(tmp_path / "Snapshots" / "s1.vdi"))
    s2 = ops.create_diff(s1, str(tmp_path / "Snapshots" / "s2.vdi"))
    return {"base": base, "s1": s1, "s2": s2}


def test_parents_are_found_in_the_same_directory_then_the_one_above(machine):
    with open_chain(machine["s2"]) as chain:
        assert [i.path for i in chain.images] == [machine["s2"], machine["s1"], machine["base"]]
    assert first_bytes(machine["s2"]) == b"B" * 512


def test_a_registry_finds_parents_anywhere(tmp_path, machine):
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    moved = str(elsewhere / "renamed.vdi")
    shutil.move(machine["base"], moved)
    with pytest.raises(ParentNotFoundError):
        open_chain(machine["s2"])
    registry = {uuid_of(moved): moved}
    assert first_bytes(machine["s2"], registry=registry) == b"B" * 512
    assert ops.check(machine["s2"], registry=registry).exit_code == 0


def test_a_missing_parent_is_refused_naming_the_child_and_the_uuid(machine):
    wanted = uuid_of(machine["base"])
    Path(machine["base"]).unlink()
    with pytest.raises(ParentNotFoundError) as exc:
        open_chain(machine["s1"])
    message = str(exc.value)
    assert machine["s1"] in message and str(wanted) in message and "not found" in message


def test_a_registry_naming_the_wrong_file_is_refused_naming_both(tmp_path, machine):
    impostor = ops.create_image(str(tmp_path / "impostor.vdi"), 2 * MiB)
    wanted = uuid_of(machine["base"])
    registry = {wanted: impostor}
    with pytest.raises(LinkageError) as exc:
        open_chain(machine["s1"], registry=registry)
    message = str(exc.value)
    for part in (machine["s1"], impostor, str(wanted), str(uuid_of(impostor))):
        assert part in message
    assert ops.check(machine["s1"], registry=registry).exit_code == 2


def test_a_parent_of_another_size_is_refused(tmp_path, machine):
    other = ops.create_image(str(tmp_path / "big.vdi"), 3 * MiB)
    with VdiImage.open(machine["s1"]) as child:
        child.set_parent(uuid_of(other), uuid_of(other))
    with pytest.raises(LinkageError, match="differs from its parent"):
        open_chain(machine["s1"])


def test_two_candidate_parents_with_the_same_uuid_are_ambiguous(tmp_path, machine):
    shutil.copy(machine["base"], tmp_path / "copy-of-base.vdi")
    with pytest.raises(LinkageError, match="ambiguous"):
        find_parent(machine["s1"], uuid_of(machine["base"]))


def test_a_chain_looping_back_is_refused(machine):
    registry = {uuid_of(machine["s1"]): machine["s2"]}
    with pytest.raises(LinkageError, match="loops back"):
        open_chain(machine["s2"], registry=registry)


def test_a_parent_written_after_its_diff_was_made_opens_with_a_warning(machine):
    write(machine["base"], 512, b"changed!" * 64)  # behind s1's back
    with open_chain(machine["s1"]) as chain:
        assert len(chain.warnings) == 1 and "modified after the diff was made" in chain.warnings[0]
    result = ops.check(machine["s2"])
    assert result.exit_code == 0 and len(result.warnings) == 1


def test_raw_images_cannot_have_differencing_children(tmp_path):
    raw = ops.create_image(str(tmp_path / "d.img"), MiB, fmt="raw")
    with pytest.raises(StorageError, match="not a VDI"):
        ops.create_diff(raw, str(tmp_path / "c.vdi"))


def test_relink_points_a_diff_at_another_parent(tmp_path, machine):
    copy = str(tmp_path / "Snapshots" / "copy.vdi")
    ops.convert(machine["s1"], copy, fmt="vdi")  # the same data under a new UUID
    Path(machine["s1"]).unlink()
    ops.relink(machine["s2"], copy)
    with open_chain(machine["s2"]) as chain:
        assert chain.images[1].path == copy and chain.warnings == []
    assert first_bytes(machine["s2"]) == b"B" * 512
