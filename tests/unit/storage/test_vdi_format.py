"""The VDI file format: what create writes, and data surviving close and reopen."""

import os
import struct
from pathlib import Path
from uuid import UUID

import pytest

from emu.storage import vdi
from emu.storage.chain import open_chain
from emu.storage.errors import StorageError
from emu.storage.image import BlockState
from emu.storage.vdi import VDIHEADER1PLUS, VDIPREHEADER, ImageType, VdiImage

MiB = 1 << 20
NIL = UUID(int=0)


def header_of(path) -> tuple:
    raw = Path(path).read_bytes()[: 72 + 0x190]
    return VDIPREHEADER.parse(raw), VDIHEADER1PLUS.parse(raw[72:])


def map_of(path) -> list[int]:
    _, hdr = header_of(path)
    with open(path, "rb") as f:
        f.seek(hdr.offBlocks)
        raw = f.read(4 * hdr.cBlocks)
    return list(struct.unpack(f"<{hdr.cBlocks}I", raw))


def test_dynamic_image_has_virtualbox_pre_header_header_and_layout(tmp_path):
    path = tmp_path / "d.vdi"
    VdiImage.create(str(path), 3 * MiB).close()
    pre, hdr = header_of(path)
    assert pre.szFileInfo == b"<<< Oracle VM VirtualBox Disk Image >>>\n".ljust(64, b"\0")
    assert (pre.u32Signature, pre.u32Version) == (0xBEDA107F, 0x00010001)
    assert hdr.cbHeader == 0x190 and hdr.u32Type == 1
    assert (hdr.offBlocks, hdr.offData) == (MiB, 2 * MiB)  # VDI_DATA_ALIGN, as VirtualBox
    assert (hdr.cbDisk, hdr.cbBlock, hdr.cbBlockExtra, hdr.cBlocks) == (3 * MiB, MiB, 0, 3)
    assert hdr.cBlocksAllocated == 0
    assert hdr.LegacyGeometry.cbSector == hdr.LCHSGeometry.cbSector == 512
    assert NIL not in (hdr.uuidCreate, hdr.uuidModify)
    assert hdr.uuidLinkage == hdr.uuidParentModify == NIL
    assert map_of(path) == [0xFFFFFFFF] * 3
    assert os.path.getsize(path) == 2 * MiB


def test_uuids_are_stored_little_endian_as_rtuuid(tmp_path):
    path = tmp_path / "d.vdi"
    with VdiImage.create(str(path), MiB) as image:
        expected = image.uuid_create
    raw = path.read_bytes()[72 + 0x140 : 72 + 0x150]  # VDIHEADER1.uuidCreate
    assert UUID(bytes_le=raw) == expected
    assert UUID(bytes=raw) != expected  # not RFC byte order


def test_fixed_image_maps_every_block_to_its_slot_and_is_full_size(tmp_path):
    path = tmp_path / "f.vdi"
    with VdiImage.create(str(path), 3 * MiB + 512, variant="fixed") as image:
        assert image.image_type == "fixed" and image.allocated_blocks == 4
    _, hdr = header_of(path)
    assert hdr.u32Type == 2 and hdr.cBlocks == hdr.cBlocksAllocated == 4
    assert map_of(path) == [0, 1, 2, 3]
    assert os.path.getsize(path) == hdr.offData + 4 * MiB


def test_diff_links_to_its_parents_uuids(tmp_path):
    with (
        VdiImage.create(str(tmp_path / "b.vdi"), 2 * MiB) as base,
        VdiImage.create(str(tmp_path / "c.vdi"), 2 * MiB, parent=base) as child,
    ):
        assert child.image_type is ImageType.DIFF
        assert child.parent_uuid == child.uuid_linkage == base.uuid_create
        assert child.uuid_parent_modify == base.uuid_modify
    _, hdr = header_of(tmp_path / "c.vdi")
    assert hdr.u32Type == 4


def test_diff_must_have_its_parents_size_and_be_dynamic(tmp_path):
    with VdiImage.create(str(tmp_path / "b.vdi"), 2 * MiB) as base:
        with pytest.raises(StorageError, match="differs from its parent"):
            VdiImage.create(str(tmp_path / "c.vdi"), 3 * MiB, parent=base)
        with pytest.raises(StorageError, match="always dynamic"):
            VdiImage.create(str(tmp_path / "c.vdi"), 2 * MiB, variant="fixed", parent=base)
    assert not (tmp_path / "c.vdi").exists()


@pytest.mark.parametrize("size", [0, 1000, -512])
def test_create_refuses_sizes_not_a_positive_sector_multiple(tmp_path, size):
    with pytest.raises(StorageError, match="multiple of 512"):
        VdiImage.create(str(tmp_path / "x.vdi"), size)
    assert not (tmp_path / "x.vdi").exists()


def test_create_never_overwrites_an_existing_file(tmp_path):
    path = tmp_path / "x.vdi"
    path.write_bytes(b"precious")
    with pytest.raises(StorageError, match="cannot create"):
        VdiImage.create(str(path), MiB)
    assert path.read_bytes() == b"precious"


@pytest.mark.parametrize("variant", ["dynamic", "fixed"])
def test_data_round_trips_through_close_and_reopen(tmp_path, data, variant):
    path = str(tmp_path / "d.vdi")
    size = 3 * MiB + 1536  # a partial last block
    VdiImage.create(path, size, variant=variant).close()
    content = bytearray(size)
    writes = [(0, 4096), (MiB - 700, 1400), (2 * MiB + 512, MiB), (size - 512, 512)]
    with open_chain(path) as chain:
        for seed, (offset, length) in enumerate(writes):
            chunk = data(seed, length)
            chain.writev(offset, [memoryview(chunk)])
            content[offset : offset + length] = chunk
    with open_chain(path, read_only=True) as chain:
        got = bytearray(size)
        chain.readv(0, [memoryview(got)])
    assert got == content


def test_a_block_is_allocated_whole_and_the_count_reaches_the_header(tmp_path):
    path = str(tmp_path / "d.vdi")
    VdiImage.create(path, 4 * MiB).close()
    with open_chain(path) as chain:
        chain.writev(2 * MiB + 4096, [memoryview(b"\x55" * 512)])
    _, hdr = header_of(path)
    assert map_of(path) == [0xFFFFFFFF, 0xFFFFFFFF, 0, 0xFFFFFFFF]
    assert hdr.cBlocksAllocated == 1
    assert os.path.getsize(path) == hdr.offData + MiB


def test_new_map_entry_reaches_the_file_only_at_flush_after_its_data(tmp_path):
    path = str(tmp_path / "d.vdi")
    with VdiImage.create(path, 2 * MiB) as image:
        image.allocate_block(1, [memoryview(b"\x77" * MiB)])
        assert image.block_state(1) is BlockState.ALLOCATED
        assert map_of(path)[1] == 0xFFFFFFFF  # the data is written, the entry not yet
        with open(path, "rb") as f:
            f.seek(image.block_offset(1))
            assert f.read(MiB) == b"\x77" * MiB
        image.flush()
        assert map_of(path)[1] == 0
        assert header_of(path)[1].cBlocksAllocated == 1


def test_first_change_gives_a_new_uuid_modify_persisted_on_flush(tmp_path):
    path = str(tmp_path / "d.vdi")
    with VdiImage.create(path, 2 * MiB) as image:
        created = image.uuid_modify
    with VdiImage.open(path) as image:
        assert image.uuid_modify == created  # opening alone changes nothing
        image.allocate_block(0, [memoryview(b"x" * 512)])
        changed = image.uuid_modify
        image.allocate_block(1, [memoryview(b"y" * 512)])
        assert image.uuid_modify == changed != created  # once per session
    assert header_of(path)[1].uuidModify == changed
    with VdiImage.open(path) as image:
        image.zero_block(0)
        assert image.uuid_modify not in (created, changed)


def test_reading_through_a_read_only_chain_changes_no_byte(tmp_path, data):
    path = str(tmp_path / "d.vdi")
    with VdiImage.create(path, 2 * MiB) as image:
        image.allocate_block(0, [memoryview(data(1, MiB))])
    before = Path(path).read_bytes()
    with open_chain(path, read_only=True) as chain:
        chain.readv(0, [memoryview(bytearray(2 * MiB))])
        chain.flush()
    assert Path(path).read_bytes() == before


def test_scan_reports_identity_and_allocation(tmp_path):
    path = str(tmp_path / "d.vdi")
    with VdiImage.create(path, 3 * MiB) as image:
        image.allocate_block(2, [memoryview(b"a")])
        uuid_create = image.uuid_create
    info = vdi.scan(path)
    assert (info.image_type, info.size, info.allocated_blocks) == ("normal", 3 * MiB, 1)
    assert info.uuid == uuid_create and info.parent_uuid is None
    assert info.corruptions == [] and info.leaks == []
