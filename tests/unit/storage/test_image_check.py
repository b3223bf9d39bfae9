"""`check` finds corruption, leaks and linkage problems, with qemu-img's exit codes."""

import struct
from pathlib import Path

from emu.storage import ops
from emu.storage.chain import open_chain
from emu.storage.vdi import VDIHEADER1PLUS, VdiImage

MiB = 1 << 20


def make(tmp_path, name="d.vdi", blocks=(0, 2)) -> str:
    path = ops.create_image(str(tmp_path / name), 4 * MiB)
    with open_chain(path) as chain:
        for block in blocks:
            chain.writev(block * MiB, [memoryview(b"\x11" * 512)])
    return path


def set_field(path: str, **fields) -> None:
    raw = bytearray(Path(path).read_bytes())
    hdr = VDIHEADER1PLUS.parse(raw[72:])
    hdr.update(fields)
    raw[72 : 72 + 0x190] = VDIHEADER1PLUS.build(hdr)
    Path(path).write_bytes(raw)


def set_entry(path: str, index: int, entry: int) -> None:
    raw = bytearray(Path(path).read_bytes())
    at = VDIHEADER1PLUS.parse(raw[72:]).offBlocks + 4 * index
    raw[at : at + 4] = struct.pack("<I", entry)
    Path(path).write_bytes(raw)


def test_a_clean_chain_checks_clean_like_qemu_img(tmp_path, qemu_img):
    base = make(tmp_path)
    diff = ops.create_diff(base, str(tmp_path / "c.vdi"))
    result = ops.check(diff)
    assert (result.exit_code, result.images) == (0, [diff, base])
    assert result.corruptions == result.leaks == result.errors == result.warnings == []
    assert qemu_img("check", base).returncode == 0


def test_a_data_block_no_entry_points_at_is_a_leak(tmp_path):
    path = make(tmp_path)
    with open(path, "ab") as f:
        f.write(b"\x22" * MiB)  # a block whose map entry never made it
    result = ops.check(path)
    assert result.exit_code == 3 and result.corruptions == []
    assert "1 data slot(s) no map entry points at" in result.leaks[0]
    with open_chain(path) as chain:  # still opens and works
        chain.writev(MiB, [memoryview(b"\x33" * 512)])  # reuses the leaked slot
    assert ops.check(path).exit_code == 0


def test_an_incomplete_block_at_the_end_is_a_leak(tmp_path):
    path = make(tmp_path)
    with open(path, "ab") as f:
        f.write(b"\x22" * 5000)
    result = ops.check(path)
    assert result.exit_code == 3 and "5000 bytes of an incomplete block" in result.leaks[0]


def test_a_stale_block_count_is_a_leak_the_next_change_repairs(tmp_path):
    path = make(tmp_path)
    set_field(path, cBlocksAllocated=3)  # as a crash between header and map writes leaves
    result = ops.check(path)
    assert result.exit_code == 3 and "cBlocksAllocated is 3 but 2" in result.leaks[-1]
    before = Path(path).read_bytes()
    with VdiImage.open(path, read_only=True):
        pass
    with open_chain(path):
        pass  # opened for writing, nothing changed: nothing is written
    assert Path(path).read_bytes() == before
    with open_chain(path) as chain:
        chain.writev(0, [memoryview(b"\x01" * 512)])
    assert ops.check(path).exit_code == 0


def test_entries_sharing_a_slot_or_past_the_end_are_corruption(tmp_path):
    path = make(tmp_path, blocks=(0, 1, 2))
    set_entry(path, 1, 0)
    set_entry(path, 3, 9)
    result = ops.check(path)
    assert result.exit_code == 2
    assert any("blocks 0 and 1 both map to slot 0" in m for m in result.corruptions)
    assert any("block 3 maps to slot 9" in m for m in result.corruptions)


def test_a_missing_parent_makes_the_check_incomplete(tmp_path):
    base = make(tmp_path)
    diff = ops.create_diff(base, str(tmp_path / "c.vdi"))
    Path(base).unlink()
    result = ops.check(diff)
    assert result.exit_code == 1 and "not found" in result.errors[0]
    assert result.images == [diff]


def test_problems_in_a_parent_are_reported_with_its_name(tmp_path):
    base = make(tmp_path)
    diff = ops.create_diff(base, str(tmp_path / "c.vdi"))
    with open(base, "ab") as f:
        f.write(bytes(MiB))
    result = ops.check(diff)
    assert result.exit_code == 3 and result.leaks[0].startswith(base)


def test_a_raw_base_checks_by_its_size(tmp_path):
    path = tmp_path / "d.img"
    path.write_bytes(bytes(1000))
    assert ops.check(str(path)).exit_code == 2
    path.write_bytes(bytes(1024))
    assert ops.check(str(path)).exit_code == 0


def test_describe_lists_the_chain_with_sizes_and_uuids(tmp_path):
    base = make(tmp_path)
    diff = ops.create_diff(base, str(tmp_path / "c.vdi"))
    leaf, parent = ops.describe(diff)
    with VdiImage.open(base, read_only=True) as image:
        assert leaf.uuid_linkage == parent.uuid == image.uuid_create
    assert (leaf.type, leaf.allocated, parent.type, parent.allocated) == (
        "differencing",
        0,
        "normal",
        2 * MiB,
    )
    assert parent.uuid_linkage is None and leaf.size == parent.size == 4 * MiB
