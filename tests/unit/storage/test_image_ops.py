"""Whole-image operations keep the data: merge (both directions), convert, compact."""

import os
from pathlib import Path

import pytest

from emu.storage import ops
from emu.storage.chain import open_chain
from emu.storage.errors import LinkageError, StorageError
from emu.storage.image import BlockState
from emu.storage.vdi import ImageType, VdiImage

MiB = 1 << 20
SIZE = 4 * MiB + 1024  # a partial last block


def write(path: str, offset: int, payload: bytes) -> None:
    with open_chain(path) as chain:
        chain.writev(offset, [memoryview(payload)])


def discard(path: str, offset: int, length: int) -> None:
    with open_chain(path) as chain:
        chain.discard(offset, length)


def read_all(path: str) -> bytes:
    with open_chain(path, read_only=True) as chain:
        buf = bytearray(chain.size)
        chain.readv(0, [memoryview(buf)])
    return bytes(buf)


@pytest.fixture
def chain3(tmp_path, data) -> list[str]:
    """base <- s1 <- s2 with data, zero blocks and partial blocks at every level."""
    base = ops.create_image(str(tmp_path / "base.vdi"), SIZE)
    write(base, 0, data(1, SIZE))
    s1 = ops.create_diff(base, str(tmp_path / "s1.vdi"))
    write(s1, MiB + 512, data(2, 4096))
    discard(s1, 2 * MiB, MiB)  # a zero block hiding base
    s2 = ops.create_diff(s1, str(tmp_path / "s2.vdi"))
    write(s2, 2 * MiB + 4096, data(3, 512))  # over s1's zero block
    write(s2, SIZE - 512, data(4, 512))
    discard(s2, 0, MiB)
    return [s2, s1, base]


def test_merge_writes_the_childs_blocks_into_its_parent(chain3):
    s2, s1, _base = chain3
    expected = read_all(s2)
    with VdiImage.open(s1, read_only=True) as image:
        old_modify = image.uuid_modify
    assert ops.merge(s2) == s1
    assert read_all(s1) == expected  # the parent now reads as the child did
    assert read_all(s2) == expected  # the child still does, re-linked to the changed parent
    with VdiImage.open(s1, read_only=True) as parent, VdiImage.open(s2, read_only=True) as child:
        assert parent.uuid_modify != old_modify
        assert child.uuid_parent_modify == parent.uuid_modify
        assert parent.block_state(0) is BlockState.ZERO
    assert ops.check(s2).exit_code == 0 and ops.check(s2).warnings == []


def test_merging_into_a_base_and_repeating_it_is_harmless(chain3):
    _s2, s1, base = chain3
    expected = read_all(s1)
    ops.merge(s1)
    ops.merge(s1)  # as after a crash before the caller recorded the merge
    assert read_all(base) == expected
    assert ops.check(base).exit_code == 0


def test_merge_of_a_base_is_refused(chain3):
    with pytest.raises(StorageError, match="base image"):
        ops.merge(chain3[2])


def test_merge_into_child_copies_what_the_child_lacks_and_relinks_it(chain3):
    s2, s1, base = chain3
    expected = read_all(s2)
    with VdiImage.open(s2, read_only=True) as image:
        kept_modify = image.uuid_modify
    assert ops.merge_into_child(s1, s2) == s2
    Path(s1).unlink()  # the caller deletes the merged parent
    assert read_all(s2) == expected
    with VdiImage.open(s2, read_only=True) as child, VdiImage.open(base, read_only=True) as b:
        assert child.uuid_linkage == b.uuid_create
        assert child.uuid_parent_modify == b.uuid_modify
        assert child.uuid_modify == kept_modify  # the child reads the same
    assert ops.check(s2).exit_code == 0


def test_merge_into_child_repeated_after_completion_changes_nothing(chain3):
    s2, s1, _base = chain3
    ops.merge_into_child(s1, s2)
    before = Path(s2).read_bytes()
    ops.merge_into_child(s1, s2)
    assert Path(s2).read_bytes() == before


def test_merge_into_child_of_a_base_makes_the_child_a_base(chain3):
    s2, s1, base = chain3
    expected = read_all(s1)
    ops.merge_into_child(base, s1)
    Path(base).unlink()
    with VdiImage.open(s1, read_only=True) as image:
        assert image.image_type is ImageType.NORMAL and image.parent_uuid is None
    assert read_all(s1) == expected
    assert ops.check(s2).exit_code == 0


def test_merge_into_a_non_child_is_refused(chain3):
    s2, _s1, base = chain3
    with pytest.raises(LinkageError):
        ops.merge_into_child(base, s2)


@pytest.mark.parametrize(
    "fmt,variant", [("raw", "dynamic"), ("raw", "fixed"), ("vdi", "dynamic"), ("vdi", "fixed")]
)
def test_convert_flattens_a_chain_into_a_base(tmp_path, chain3, fmt, variant):
    dst = str(tmp_path / f"flat.{'img' if fmt == 'raw' else 'vdi'}")
    expected = read_all(chain3[0])
    steps = []
    ops.convert(chain3[0], dst, fmt=fmt, variant=variant, progress=lambda d, t: steps.append(d))
    assert read_all(dst) == expected
    assert steps == [1, 2, 3, 4, 5]
    if fmt == "vdi":
        with VdiImage.open(dst, read_only=True) as image:
            assert image.image_type == ("fixed" if variant == "fixed" else "normal")
            assert image.parent_uuid is None
    assert ops.check(dst).exit_code == 0


def test_convert_leaves_zero_blocks_unallocated(tmp_path, chain3):
    dst = str(tmp_path / "flat.vdi")
    ops.convert(chain3[0], dst, fmt="vdi")
    with VdiImage.open(dst, read_only=True) as image:
        states = [image.block_state(i) for i in range(5)]
    assert states[0] is BlockState.ABSENT  # discarded in s2
    assert states[1] is BlockState.ALLOCATED


def test_convert_refuses_an_existing_destination(tmp_path, chain3):
    dst = tmp_path / "x.img"
    dst.write_bytes(b"keep")
    with pytest.raises(StorageError, match="already exists"):
        ops.convert(chain3[0], str(dst), fmt="raw")
    assert dst.read_bytes() == b"keep"


def test_compact_drops_zero_and_leaked_blocks_keeping_data_and_uuids(tmp_path, data):
    path = ops.create_image(str(tmp_path / "d.vdi"), SIZE)
    write(path, 0, data(1, SIZE))
    discard(path, MiB, 2 * MiB)  # two allocated blocks become zeros in place
    with open(path, "ab") as f:
        f.write(b"\xee" * (MiB + 77))  # a leaked block and a torn one, as a crash leaves
    assert ops.check(path).exit_code == 3
    expected = read_all(path)
    with VdiImage.open(path, read_only=True) as image:
        uuids = (image.uuid_create, image.uuid_modify)
    size_before = os.path.getsize(path)
    saved = ops.compact(path)
    assert saved == size_before - os.path.getsize(path) == 3 * MiB + 77
    assert read_all(path) == expected
    with VdiImage.open(path, read_only=True) as image:
        assert (image.uuid_create, image.uuid_modify) == uuids
        assert image.allocated_blocks == 3
    assert ops.check(path).exit_code == 0
    assert not [p for p in os.listdir(tmp_path) if "compact" in p]


def test_compacting_a_diff_keeps_zero_blocks_hiding_the_parent(chain3):
    s2, _s1, base = chain3
    write(s2, 3 * MiB, b"\x01" * 512)
    discard(s2, 3 * MiB, MiB)  # s2 keeps the block, deallocated to zeros, over base's data
    with VdiImage.open(s2, read_only=True) as image:
        assert image.block_state(3) is BlockState.ALLOCATED
    expected = read_all(s2)
    ops.compact(s2)
    with VdiImage.open(s2, read_only=True) as image:
        assert image.block_state(3) is BlockState.ZERO
        assert image.block_state(0) is BlockState.ZERO
    assert read_all(s2) == expected
    ops.compact(base)  # a parent keeps its UUIDs, so its children still link to it
    assert read_all(s2) == expected and ops.check(s2).exit_code == 0


def test_compact_refuses_fixed_and_raw_images(tmp_path):
    fixed = ops.create_image(str(tmp_path / "f.vdi"), MiB, variant="fixed")
    raw = ops.create_image(str(tmp_path / "r.img"), MiB, fmt="raw")
    with pytest.raises(StorageError, match="preallocated"):
        ops.compact(fixed)
    with pytest.raises(StorageError, match="not a VDI"):
        ops.compact(raw)


def test_create_image_makes_sparse_or_preallocated_files(tmp_path):
    sparse = ops.create_image(str(tmp_path / "s.img"), 8 * MiB, fmt="raw")
    full = ops.create_image(str(tmp_path / "f.img"), 8 * MiB, fmt="raw", variant="fixed")
    assert os.path.getsize(sparse) == os.path.getsize(full) == 8 * MiB
    assert os.stat(full).st_blocks * 512 >= 8 * MiB > os.stat(sparse).st_blocks * 512
    with pytest.raises(StorageError, match="unknown image format"):
        ops.create_image(str(tmp_path / "x"), MiB, fmt="qcow2")
