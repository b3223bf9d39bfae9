"""Malformed images are refused on open with a message naming the problem and the file,
and nothing is written to them."""

import os
import re
import struct
from pathlib import Path
from uuid import UUID, uuid4

import pytest

from emu.storage import ops
from emu.storage.chain import open_chain
from emu.storage.detect import open_image
from emu.storage.errors import ImageFormatError
from emu.storage.vdi import VDIHEADER1PLUS, VDIPREHEADER, VdiImage

MiB = 1 << 20


@pytest.fixture
def good(tmp_path, data) -> Path:
    """A 3 MiB dynamic VDI with blocks 0 and 2 allocated (slots 0 and 1)."""
    path = tmp_path / "disk.vdi"
    with VdiImage.create(str(path), 3 * MiB) as image:
        image.allocate_block(0, [memoryview(data(0, MiB))])
        image.allocate_block(2, [memoryview(data(2, MiB))])
    return path


def patch_pre(path: Path, **fields) -> None:
    raw = bytearray(path.read_bytes())
    pre = VDIPREHEADER.parse(raw)
    pre.update(fields)
    raw[:72] = VDIPREHEADER.build(pre)
    path.write_bytes(raw)


def patch_header(path: Path, **fields) -> None:
    raw = bytearray(path.read_bytes())
    hdr = VDIHEADER1PLUS.parse(raw[72:])
    for name, value in fields.items():
        if "." in name:
            outer, inner = name.split(".")
            hdr[outer][inner] = value
        else:
            hdr[name] = value
    raw[72 : 72 + 0x190] = VDIHEADER1PLUS.build(hdr)
    path.write_bytes(raw)


def patch_map(path: Path, index: int, entry: int) -> None:
    raw = bytearray(path.read_bytes())
    offset = VDIHEADER1PLUS.parse(raw[72:]).offBlocks + 4 * index
    raw[offset : offset + 4] = struct.pack("<I", entry)
    path.write_bytes(raw)


def truncate(path: Path, size: int) -> None:
    os.truncate(path, size)


CASES = {
    "bad signature": (lambda p: patch_pre(p, u32Signature=0x12345678), r"bad signature 0x12345678"),
    "version 1.2": (lambda p: patch_pre(p, u32Version=0x00010002), r"unsupported VDI version 1\.2"),
    "version 0.2": (lambda p: patch_pre(p, u32Version=0x00000002), r"unsupported VDI version 0\.2"),
    "short file": (lambda p: truncate(p, 40), r"too short for a VDI header"),
    "short header": (lambda p: truncate(p, 200), r"header is truncated"),
    "cbHeader": (lambda p: patch_header(p, cbHeader=0x100), r"cbHeader 0x100 is wrong"),
    "undo type": (lambda p: patch_header(p, u32Type=3), r"unsupported image type 3"),
    "block size 0": (lambda p: patch_header(p, cbBlock=0), r"block size 0 is not a power of two"),
    "block size 1536": (
        lambda p: patch_header(p, cbBlock=1536),
        r"block size 1536 is not a power of two",
    ),
    "block size 2M": (
        lambda p: patch_header(p, cbBlock=2 * MiB, cBlocks=2),
        r"block size 2097152 is not 1 MiB",
    ),
    "cbBlockExtra": (lambda p: patch_header(p, cbBlockExtra=512), r"cbBlockExtra is 512"),
    "disk size 0": (lambda p: patch_header(p, cbDisk=0), r"disk size 0 is not a positive"),
    "odd disk size": (lambda p: patch_header(p, cbDisk=3 * MiB - 100), r"multiple of 512"),
    "cBlocks": (lambda p: patch_header(p, cBlocks=2), r"cBlocks 2 x block size .* needs 3"),
    "cBlocksAllocated": (
        lambda p: patch_header(p, cBlocksAllocated=4),
        r"cBlocksAllocated 4 exceeds cBlocks 3",
    ),
    "sector size": (
        lambda p: patch_header(p, **{"LegacyGeometry.cbSector": 4096}),
        r"LegacyGeometry.cbSector is 4096, not 512",
    ),
    "LCHS sector size": (
        lambda p: patch_header(p, **{"LCHSGeometry.cbSector": 0}),
        r"LCHSGeometry.cbSector is 0, not 512",
    ),
    "offBlocks in header": (
        lambda p: patch_header(p, offBlocks=0x100),
        r"offBlocks 0x100 overlaps the header",
    ),
    "offData in map": (
        lambda p: patch_header(p, offData=MiB),
        r"offData 0x100000 overlaps the block map",
    ),
    "nil uuidCreate": (lambda p: patch_header(p, uuidCreate=UUID(int=0)), r"nil UUID"),
    "base with parent": (
        lambda p: patch_header(p, uuidLinkage=uuid4()),
        r"normal image has a parent",
    ),
    "diff without parent": (lambda p: patch_header(p, u32Type=4), r"nil uuidLinkage"),
    "entry past end": (lambda p: patch_map(p, 1, 2), r"block 1 maps to slot 2 .* past the end"),
    "entry twice": (lambda p: patch_map(p, 2, 0), r"blocks 0 and 2 both map to slot 0"),
    "entry beyond cBlocks": (lambda p: patch_map(p, 1, 7), r"block 1 maps to slot 7, beyond"),
    "truncated map": (lambda p: truncate(p, MiB + 4), r"file is truncated: .* block map ends"),
    "truncated data": (
        lambda p: truncate(p, 3 * MiB + 100),
        r"block 2 maps to slot 1 .* past the end",
    ),
}


@pytest.mark.parametrize("case", CASES)
def test_malformed_vdi_is_refused_naming_problem_and_file_and_left_untouched(good, case):
    mutate, message = CASES[case]
    mutate(good)
    before = good.read_bytes()
    mtime = good.stat().st_mtime_ns
    for opener in (
        lambda: open_image(str(good)),
        lambda: open_image(str(good), read_only=True),
        lambda: open_chain(str(good)),
    ):
        with pytest.raises(ImageFormatError, match=message) as exc:
            opener()
        assert str(good) in str(exc.value)
    assert good.read_bytes() == before
    assert good.stat().st_mtime_ns == mtime


@pytest.mark.parametrize("case", CASES)
def test_check_reports_a_malformed_vdi_as_corrupt(good, case):
    CASES[case][0](good)
    result = ops.check(str(good))
    assert result.exit_code == 2
    assert any(re.search(CASES[case][1], m) and str(good) in m for m in result.corruptions)


def test_damaged_vdi_without_vdi_name_is_not_taken_for_a_raw_disk(good):
    renamed = good.with_suffix(".img")
    good.rename(renamed)
    patch_pre(renamed, u32Signature=0)
    with pytest.raises(ImageFormatError, match="bad signature"):
        open_image(str(renamed))


def test_file_named_vdi_with_other_content_is_refused(tmp_path):
    path = tmp_path / "notes.vdi"
    path.write_bytes(b"hello world\n" * 100)
    with pytest.raises(ImageFormatError, match="bad signature"):
        open_image(str(path))


@pytest.mark.parametrize("size", [0, 1000, 512 * 3 + 1])
def test_raw_file_not_a_sector_multiple_is_refused(tmp_path, size):
    path = tmp_path / "disk.img"
    path.write_bytes(b"\1" * size)
    with pytest.raises(ImageFormatError, match=rf"raw image size {size} is not"):
        open_image(str(path))
    assert path.read_bytes() == b"\1" * size
