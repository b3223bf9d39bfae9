"""Reads and writes through chains: fall-through, scatter-gather pieces, copy-on-write,
zero blocks, discards, siblings, read-only chains."""

from pathlib import Path

import pytest

from emu.storage import ops
from emu.storage.chain import Chain, open_chain
from emu.storage.errors import ReadOnlyError, StorageError
from emu.storage.image import BlockState
from emu.storage.raw import RawImage
from emu.storage.vdi import VDIHEADER1PLUS, VdiImage

MiB = 1 << 20
SIZE = 4 * MiB


def write(path: str, offset: int, payload: bytes) -> None:
    with open_chain(path) as chain:
        chain.writev(offset, [memoryview(payload)])


def read(path: str, offset: int = 0, length: int = SIZE) -> bytes:
    with open_chain(path, read_only=True) as chain:
        buf = bytearray(length)
        chain.readv(offset, [memoryview(buf)])
    return bytes(buf)


@pytest.fixture
def three(tmp_path) -> list[str]:
    """base <- mid <- leaf: base has blocks 0-1, mid block 1, leaf nothing yet."""
    base = ops.create_image(str(tmp_path / "base.vdi"), SIZE)
    write(base, 0, b"\xb0" * (2 * MiB))
    mid = ops.create_diff(base, str(tmp_path / "mid.vdi"))
    write(mid, MiB, b"\x33" * MiB)
    leaf = ops.create_diff(mid, str(tmp_path / "leaf.vdi"))
    return [leaf, mid, base]


def test_each_block_is_read_from_the_nearest_image_that_has_it_else_zeros(three):
    leaf, mid, base = three
    data = read(leaf)
    assert data[:MiB] == b"\xb0" * MiB
    assert data[MiB : 2 * MiB] == b"\x33" * MiB
    assert data[2 * MiB :] == bytes(2 * MiB)
    with open_chain(leaf, read_only=True) as chain:
        assert chain.sources(0, SIZE) == [(0, MiB, base), (MiB, MiB, mid), (2 * MiB, 2 * MiB, None)]
        assert [i.path for i in chain.images] == [leaf, mid, base]


def test_reads_use_the_resolved_map_without_walking_the_chain(three, monkeypatch):
    calls = []
    real = VdiImage.block_state
    monkeypatch.setattr(VdiImage, "block_state", lambda self, i: calls.append(i) or real(self, i))
    with open_chain(three[0], read_only=True) as chain:
        assert calls == []  # opening resolves nothing
        chain.readv(500, [memoryview(bytearray(3 * MiB + 1000))])
        assert sorted(set(calls)) == [0, 1, 2, 3]  # each block resolved on its first read
        calls.clear()
        chain.readv(500, [memoryview(bytearray(3 * MiB + 1000))])
        chain.readv(MiB + 4096, [memoryview(bytearray(4096))])
    assert calls == []


def test_pieces_of_any_length_straddling_blocks_read_and_write_in_order(tmp_path, data):
    path = ops.create_image(str(tmp_path / "d.vdi"), SIZE)
    base_data = data(9, SIZE)
    write(path, 0, base_data)
    diff = ops.create_diff(path, str(tmp_path / "c.vdi"))
    lengths = [1, 511, 7, MiB - 300, 600, MiB + 13]
    lengths.append(512 - sum(lengths) % 512 + 300)  # only the total is a sector multiple
    total = sum(lengths)
    offset = MiB - 1024
    payload = data(10, total)
    pieces, pos = [], 0
    for n in lengths:
        pieces.append(memoryview(bytearray(payload[pos : pos + n])))
        pos += n
    with open_chain(diff) as chain:
        chain.writev(offset, pieces)
        out = [memoryview(bytearray(n)) for n in reversed(lengths)]
        chain.readv(offset - 512, [memoryview(bytearray(512)), *out])
    expected = bytearray(base_data)
    expected[offset : offset + total] = payload
    assert b"".join(bytes(p) for p in out) == expected[offset - 512 + 512 : offset + total]
    assert read(diff) == expected


def test_more_pieces_than_iov_max_in_one_block(tmp_path, data):
    path = ops.create_image(str(tmp_path / "d.img"), SIZE, fmt="raw")
    payload = data(3, 3000 * 8)
    with open_chain(path) as chain:
        chain.writev(4096, [memoryview(payload)[i : i + 8] for i in range(0, len(payload), 8)])
        out = [memoryview(bytearray(8)) for _ in range(3000)]
        chain.readv(4096, out)
    assert b"".join(bytes(p) for p in out) == payload


def test_partial_write_copies_the_rest_of_the_block_into_the_leaf(three):
    leaf, mid, base = three
    mid_before, base_before = Path(mid).read_bytes(), Path(base).read_bytes()
    write(leaf, MiB + 1000 * 512, b"\x77" * 512)
    assert Path(mid).read_bytes() == mid_before and Path(base).read_bytes() == base_before
    with VdiImage.open(leaf, read_only=True) as image:  # the leaf's block alone is complete
        assert image.block_state(1) is BlockState.ALLOCATED
        block = bytearray(MiB)
        image.read_at(image.block_offset(1), [memoryview(block)])
    expected = bytearray(b"\x33" * MiB)
    expected[1000 * 512 : 1001 * 512] = b"\x77" * 512
    assert block == expected


def test_whole_block_discard_in_a_diff_records_a_zero_block_hiding_the_parent(three):
    leaf, mid, _base = three
    with open_chain(leaf) as chain:
        chain.discard(0, 2 * MiB)
        assert chain.sources(0, 2 * MiB) == [(0, 2 * MiB, None)]
    with VdiImage.open(leaf, read_only=True) as image:
        assert [image.block_state(i) for i in (0, 1)] == [BlockState.ZERO, BlockState.ZERO]
    assert read(leaf, 0, 2 * MiB) == bytes(2 * MiB)  # after reopen
    assert read(mid, 0, 2 * MiB) == b"\xb0" * MiB + b"\x33" * MiB


def test_discard_of_a_block_the_diff_already_has_still_hides_the_parent(three):
    leaf = three[0]
    write(leaf, 0, b"\x99" * 4096)
    with open_chain(leaf) as chain:
        chain.discard(0, MiB)
    assert read(leaf, 0, MiB) == bytes(MiB)
    assert ops.check(leaf).exit_code == 0


def test_writing_a_block_of_zeros_into_a_diff_records_a_zero_block(three):
    leaf = three[0]
    with open_chain(leaf) as chain:
        chain.writev(0, [memoryview(bytes(MiB - 512)), memoryview(bytes(512))])
        chain.writev(MiB, [memoryview(bytes(4096))])  # not the whole block: copy-on-write
    with VdiImage.open(leaf, read_only=True) as image:
        assert image.block_state(0) is BlockState.ZERO
        assert image.block_state(1) is BlockState.ALLOCATED
        assert image.allocated_blocks == 1
    assert read(leaf, 0, MiB + 8192) == bytes(MiB + 4096) + b"\x33" * 4096


def test_partial_discard_writes_zeros_and_keeps_the_rest_of_the_block(three):
    leaf = three[0]
    with open_chain(leaf) as chain:
        chain.discard(MiB - 4096, 8192)  # the end of block 0 and the start of block 1
    data = read(leaf, 0, 2 * MiB)
    assert data[: MiB - 4096] == b"\xb0" * (MiB - 4096)
    assert data[MiB - 4096 : MiB + 4096] == bytes(8192)
    assert data[MiB + 4096 :] == b"\x33" * (MiB - 4096)


def test_partial_discard_of_a_zero_block_allocates_nothing(three):
    leaf = three[0]
    with open_chain(leaf) as chain:
        chain.discard(3 * MiB + 512, 512)
    with VdiImage.open(leaf, read_only=True) as image:
        assert image.allocated_blocks == 0


@pytest.mark.parametrize("variant", ["dynamic", "fixed"])
def test_whole_block_discard_in_a_base_reads_zeros_and_keeps_the_file_consistent(tmp_path, variant):
    path = ops.create_image(str(tmp_path / "b.vdi"), SIZE, variant=variant)
    write(path, 0, b"\x5a" * SIZE)
    size_before = Path(path).stat().st_size
    with open_chain(path) as chain:
        chain.discard(MiB, 2 * MiB)
    assert read(path) == b"\x5a" * MiB + bytes(2 * MiB) + b"\x5a" * MiB
    assert Path(path).stat().st_size == size_before
    assert ops.check(path).exit_code == 0


def test_raw_image_works_alone_as_a_chain(tmp_path, data):
    path = ops.create_image(str(tmp_path / "d.img"), SIZE, fmt="raw")
    payload = data(1, 5000 * 512)
    with open_chain(path) as chain:
        assert chain.identity == path and chain.images[0].uuid is None
        chain.writev(MiB - 512, [memoryview(payload)])
        chain.discard(3 * MiB, MiB)
    assert Path(path).read_bytes()[MiB - 512 : 3 * MiB] == payload[: 2 * MiB + 512]
    assert Path(path).read_bytes()[3 * MiB :] == bytes(MiB)


def test_sibling_diffs_of_one_base_are_used_at_once_independently(tmp_path):
    base = ops.create_image(str(tmp_path / "base.vdi"), SIZE)
    write(base, 0, b"\x01" * MiB)
    a = ops.create_diff(base, str(tmp_path / "a.vdi"))
    b = ops.create_diff(base, str(tmp_path / "b.vdi"))
    with open_chain(a) as ca, open_chain(b) as cb:
        ca.writev(0, [memoryview(b"\xaa" * 512)])
        cb.writev(512, [memoryview(b"\xbb" * 512)])
        assert ca.images[1].read_only and cb.images[1].read_only
    assert read(a, 0, 1024) == b"\xaa" * 512 + b"\x01" * 512
    assert read(b, 0, 1024) == b"\x01" * 512 + b"\xbb" * 512
    assert read(base, 0, 1024) == b"\x01" * 1024


def test_read_only_chain_refuses_writes_and_discards(three):
    with open_chain(three[0], read_only=True) as chain:
        assert chain.read_only
        with pytest.raises(ReadOnlyError):
            chain.writev(0, [memoryview(bytes(512))])
        with pytest.raises(ReadOnlyError):
            chain.discard(0, 512)


@pytest.mark.parametrize("offset,length", [(SIZE - 512, 1024), (-512, 512), (SIZE, 512)])
def test_a_range_outside_the_disk_is_a_storage_error(three, offset, length):
    with open_chain(three[0]) as chain:
        with pytest.raises(StorageError, match="outside the disk"):
            chain.readv(offset, [memoryview(bytearray(length))])
        with pytest.raises(StorageError, match="outside the disk"):
            chain.writev(offset, [memoryview(bytearray(length))])


def test_empty_transfers_at_the_end_of_the_disk_do_nothing(three):
    with open_chain(three[0]) as chain:
        chain.readv(SIZE, [memoryview(bytearray(0))])
        chain.writev(SIZE, [memoryview(b"")])
        chain.discard(SIZE, 0)
        assert chain.images[0].allocated_blocks == 0


def test_identity_is_the_bases_uuid_create_whatever_the_leaf(three):
    with open_chain(three[0]) as chain:
        assert chain.identity == str(chain.images[-1].uuid)
    with open_chain(three[1]) as shorter:
        assert shorter.identity == str(shorter.images[-1].uuid)
    assert chain.identity == shorter.identity


def test_flush_puts_a_new_blocks_map_entry_and_count_on_disk(tmp_path):
    path = ops.create_image(str(tmp_path / "d.vdi"), SIZE)
    chain = open_chain(path)
    chain.writev(2 * MiB, [memoryview(b"\x44" * 512)])
    chain.flush()
    raw = Path(path).read_bytes()  # while the chain still holds the file
    header = VDIHEADER1PLUS.parse(raw[72:])
    assert raw[header.offBlocks + 8 : header.offBlocks + 12] == bytes(4)  # block 2 -> slot 0
    assert header.cBlocksAllocated == 1
    chain.close()
    chain.close()  # idempotent


def test_chain_of_images_given_directly_must_be_linked(tmp_path):
    a = RawImage.create(str(tmp_path / "a.img"), SIZE)
    b = VdiImage.create(str(tmp_path / "b.vdi"), SIZE)
    with pytest.raises(StorageError, match="is a base image"):
        Chain([b, a])
    a.close()
    b.close()


@pytest.fixture
def raw(tmp_path) -> str:
    path = str(tmp_path / "disk.img")
    RawImage.create(path, SIZE).close()
    return path


def test_a_raw_chain_reads_and_writes_in_one_step_with_the_same_checks(raw):
    """A raw leaf (every byte at its own offset) skips the resolved map: scattered
    pieces across a block edge round-trip, and the range and read-only checks hold."""
    pieces = [bytes([n]) * length for n, length in enumerate((512, 3, 4096, 509), 1)]
    offset = MiB - 4096
    with open_chain(raw) as chain:
        chain.writev(offset, [memoryview(p) for p in pieces])
        buffers = [memoryview(bytearray(len(p))) for p in pieces]
        chain.readv(offset, buffers)
        assert [bytes(b) for b in buffers] == pieces
        for bad_offset, length in [(SIZE - 512, 1024), (-512, 512), (SIZE, 512)]:
            with pytest.raises(StorageError, match="outside the disk"):
                chain.readv(bad_offset, [memoryview(bytearray(length))])
            with pytest.raises(StorageError, match="outside the disk"):
                chain.writev(bad_offset, [memoryview(bytearray(length))])
        chain.readv(SIZE, [memoryview(bytearray(0))])
        chain.writev(SIZE, [memoryview(b"")])
    assert read(raw, offset, 5120) == b"".join(pieces)
    with (
        open_chain(raw, read_only=True) as chain,
        pytest.raises(ReadOnlyError, match="medium is read-only"),
    ):
        chain.writev(0, [memoryview(bytes(512))])
