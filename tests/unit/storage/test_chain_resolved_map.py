"""The chain's resolved block map (which image serves each block) stays true: after writes,
zero writes and discards into blocks whose reads fell through to a parent, across
snapshots, merges and immutable resets, and with parents parked under a small budget."""

import os
import random
import subprocess
import sys
import textwrap

import pytest

from emu.storage import ops, vdi
from emu.storage.chain import Chain, OpenParents, open_chain
from emu.storage.errors import MediumError
from emu.storage.vdi import VdiImage
from emu.storage.vm import Machine

MiB = 1 << 20
SIZE = 4 * MiB


def read(dev, offset: int = 0, length: int = SIZE) -> bytes:
    buf = bytearray(length)
    dev.readv(offset, [memoryview(buf)])
    return bytes(buf)


def write(dev, offset: int, payload: bytes) -> None:
    dev.writev(offset, [memoryview(bytearray(payload))])


@pytest.fixture
def three(tmp_path) -> list[str]:
    """base <- mid <- leaf: base has blocks 0-2, mid block 1, leaf nothing."""
    base = ops.create_image(str(tmp_path / "base.vdi"), SIZE)
    with open_chain(base) as chain:
        write(chain, 0, b"\xb0" * (3 * MiB))
    mid = ops.create_diff(base, str(tmp_path / "mid.vdi"))
    with open_chain(mid) as chain:
        write(chain, MiB, b"\x33" * MiB)
    leaf = ops.create_diff(mid, str(tmp_path / "leaf.vdi"))
    return [leaf, mid, base]


def test_writes_into_blocks_read_through_parents_are_read_back_from_the_leaf(three):
    leaf, mid, base = three
    with open_chain(leaf) as chain:
        assert read(chain) == b"\xb0" * MiB + b"\x33" * MiB + b"\xb0" * MiB + bytes(MiB)
        write(chain, 100, b"\x11" * 200)  # partial: copy-on-write from the base
        write(chain, MiB, b"\x22" * MiB)  # whole block over mid's
        write(chain, 3 * MiB + 4096, b"\x44" * 512)  # a block no image had
        expected = bytearray(b"\xb0" * MiB + b"\x22" * MiB + b"\xb0" * MiB + bytes(MiB))
        expected[100:300] = b"\x11" * 200
        expected[3 * MiB + 4096 : 3 * MiB + 4608] = b"\x44" * 512
        assert read(chain) == expected
        assert [path for _, _, path in chain.sources(0, SIZE)] == [leaf, base, leaf]
    with open_chain(leaf, read_only=True) as chain:
        assert read(chain) == expected  # the files hold what the map said
    with open_chain(mid, read_only=True) as chain:
        assert read(chain, MiB, MiB) == b"\x33" * MiB  # the parent was not written


def test_zero_writes_and_discards_after_a_fall_through_read_as_zeros(three):
    leaf, _, base = three
    with open_chain(leaf) as chain:
        assert read(chain, 0, 3 * MiB) != bytes(3 * MiB)
        write(chain, 0, bytes(MiB))  # a block of zeros: a ZERO entry, no data
        chain.discard(MiB, MiB)  # whole block: a ZERO entry hiding mid's
        chain.discard(2 * MiB + 512, 1024)  # partial: zeros written, the rest kept
        assert read(chain, 0, 2 * MiB) == bytes(2 * MiB)
        third = read(chain, 2 * MiB, MiB)
        assert third == b"\xb0" * 512 + bytes(1024) + b"\xb0" * (MiB - 1536)
        assert chain.sources(0, 2 * MiB) == [(0, 2 * MiB, None)]
        assert chain.images[0].block_state(0) is vdi.BlockState.ZERO
    with open_chain(leaf, read_only=True) as chain:
        assert read(chain, 0, 3 * MiB) == bytes(2 * MiB) + third
    with open_chain(base, read_only=True) as chain:
        assert read(chain, 0, MiB) == b"\xb0" * MiB


def test_random_reads_writes_and_discards_match_a_plain_model(three):
    rng = random.Random(11)
    with open_chain(three[0]) as chain:
        model = bytearray(read(chain))
        for _ in range(400):
            offset = rng.randrange(0, SIZE, 512)
            length = min(rng.choice([512, 4096, MiB, MiB + 512]), SIZE - offset)
            action = rng.choice(["read", "read", "write", "zeros", "discard"])
            if action == "read":
                assert read(chain, offset, length) == model[offset : offset + length]
            elif action == "discard":
                chain.discard(offset, length)
                model[offset : offset + length] = bytes(length)
            else:
                payload = bytes(length) if action == "zeros" else rng.randbytes(length)
                write(chain, offset, payload)
                model[offset : offset + length] = payload
        assert read(chain) == model
    with open_chain(three[0], read_only=True) as chain:
        assert read(chain) == model


def test_a_merge_after_reads_leaves_every_chain_reading_the_same(three):
    leaf, mid, _ = three
    with open_chain(leaf) as chain:
        write(chain, 2 * MiB, b"\x55" * 4096)
        before = read(chain)
    ops.merge(leaf)  # into mid; the leaf is re-linked to the changed mid
    with open_chain(leaf, read_only=True) as chain:
        assert read(chain) == before
    with open_chain(mid, read_only=True) as chain:
        assert read(chain) == before  # mid now holds the leaf's blocks too
    ops.merge(mid)  # into the base
    with open_chain(leaf, read_only=True) as chain:
        assert read(chain) == before


def test_snapshot_restore_reads_the_snapshots_data_not_what_was_read_after_it(tmp_path):
    base = ops.create_image(str(tmp_path / "disk.vdi"), SIZE)
    vm = Machine.create(str(tmp_path / "vm"))
    try:
        vm.attach(0, base)
        dev = vm.start()[0]
        write(dev, 0, b"\xaa" * 4096)
        assert read(dev, 0, 4096) == b"\xaa" * 4096
        vm.stop()
        vm.snapshot_take("one")
        dev = vm.start()[0]
        assert read(dev, 0, 4096) == b"\xaa" * 4096  # through the frozen diff
        write(dev, 0, b"\xbb" * 4096)
        assert read(dev, 0, 4096) == b"\xbb" * 4096
        vm.stop()
        vm.snapshot_restore("one")
        dev = vm.start()[0]
        assert read(dev, 0, 4096) == b"\xaa" * 4096
        vm.stop()
    finally:
        vm.close()


def test_an_immutable_disk_reads_its_base_again_after_the_reset(tmp_path):
    base = ops.create_image(str(tmp_path / "disk.vdi"), SIZE)
    with open_chain(base) as chain:
        write(chain, 0, b"\xcc" * MiB)
    vm = Machine.create(str(tmp_path / "vm"))
    try:
        vm.attach(0, base, "immutable")
        dev = vm.start()[0]
        assert read(dev, 0, 512) == b"\xcc" * 512
        write(dev, 0, b"\xdd" * 512)
        assert read(dev, 0, 512) == b"\xdd" * 512
        vm.stop()
        dev = vm.start()[0]  # a new empty diff: the write is gone
        assert read(dev, 0, MiB) == b"\xcc" * MiB
        vm.stop()
    finally:
        vm.close()


def _deep(tmp_path, depth: int) -> list[str]:
    """A chain where layer i has data in block i % 4 (a tag of the layer); leaf first."""
    path = ops.create_image(str(tmp_path / "l00.vdi"), SIZE)
    paths = [path]
    for level in range(depth):
        if level:
            path = ops.create_diff(path, str(tmp_path / f"l{level:02d}.vdi"))
            paths.append(path)
        with open_chain(path) as chain:
            write(chain, (level % 4) * MiB + level * 512, bytes([level + 1]) * 512)
    return paths[::-1]


def _open_with_budget(paths: list[str], budget: int) -> Chain:
    images = [VdiImage.open(paths[0], read_only=True)]
    images += [VdiImage.open(p, read_only=True) for p in paths[1:]]
    parents = OpenParents(budget)
    for image in images[1:]:
        parents.admit(image)
    return Chain(images, parents)


def test_parked_parents_are_reopened_and_read_correctly(tmp_path):
    paths = _deep(tmp_path, 12)
    with open_chain(paths[0], read_only=True) as chain:
        expected = read(chain)
    with _open_with_budget(paths, 2) as chain:
        assert sum(image._fd < 0 for image in chain.images) == 9  # 11 parents, 2 open
        rng = random.Random(3)
        for _ in range(300):
            level = rng.randrange(12)
            offset = (level % 4) * MiB + level * 512
            assert read(chain, offset, 512) == expected[offset : offset + 512]
        assert read(chain) == expected


def test_an_unchanged_parked_parent_is_reopened_without_parsing_its_header(tmp_path, monkeypatch):
    paths = _deep(tmp_path, 6)
    with _open_with_budget(paths, 1) as chain:
        monkeypatch.setattr(vdi, "_parse_header", lambda *a: pytest.fail("parsed again"))
        for level in range(6):
            offset = (level % 4) * MiB + level * 512
            assert read(chain, offset, 512) == bytes([level + 1]) * 512


def test_a_parent_changed_while_parked_is_refused(tmp_path):
    paths = _deep(tmp_path, 4)
    with _open_with_budget(paths, 1) as chain:
        parked = next(image for image in chain.images[1:] if image._fd < 0)
        level = len(paths) - 1 - chain.images.index(parked)
        with open_chain(parked.path) as writer:  # it changes (a new uuidModify)
            write(writer, 3 * MiB, b"\x77" * 512)
        with pytest.raises(MediumError, match="changed while a chain using it had it parked"):
            read(chain, (level % 4) * MiB + level * 512, 512)


RAISE_LIMIT = textwrap.dedent(
    """
    import resource
    from emu.storage.chain import open_parents_limit
    resource.setrlimit(resource.RLIMIT_NOFILE, (64, 4096))
    soft = lambda: resource.getrlimit(resource.RLIMIT_NOFILE)[0]
    print(open_parents_limit(), open_parents_limit(100), soft())
    resource.setrlimit(resource.RLIMIT_NOFILE, (64, 64))
    print(open_parents_limit(100), soft())
    """
)


def test_the_soft_open_files_limit_is_raised_only_as_far_as_needed_and_allowed():
    out = subprocess.run(
        [sys.executable, "-c", RAISE_LIMIT], capture_output=True, text=True, check=True
    ).stdout.split()
    assert out == ["8", "100", "800", "8", "64"]


def test_reads_through_a_parked_chain_touch_no_other_file(tmp_path):
    paths = _deep(tmp_path, 5)
    stamps = {p: os.stat(p).st_mtime_ns for p in paths}
    with _open_with_budget(paths, 1) as chain:
        read(chain)
    assert {p: os.stat(p).st_mtime_ns for p in paths} == stamps


def _scattered_read(chain, offset: int, lengths: list[int]) -> bytes:
    """Read ``sum(lengths)`` bytes from ``offset`` into separate buffers of ``lengths``."""
    buffers = [memoryview(bytearray(length)) for length in lengths]
    chain.readv(offset, buffers)
    return b"".join(bytes(buf) for buf in buffers)


@pytest.mark.parametrize("budget", [None, 2])
def test_reads_into_several_buffers_equal_one_read_of_the_same_range(tmp_path, budget):
    """A read into many buffers (a PRDT of many pieces) within one block takes one preadv
    of the block's image: through parents, parked or not, zero blocks, and block edges
    (reads across an edge take the general path) must read what one buffer reads."""
    paths = _deep(tmp_path, 12)
    with open_chain(paths[0], read_only=True) as chain:
        expected = read(chain)
    chain = (
        open_chain(paths[0], read_only=True) if budget is None else _open_with_budget(paths, budget)
    )
    with chain:
        rng = random.Random(11)
        for _ in range(300):
            lengths = [rng.choice((1, 2, 512, 4096, 7)) for _ in range(rng.randrange(1, 9))]
            total = sum(lengths)
            offset = rng.choice((rng.randrange(SIZE - total), MiB - total // 2, MiB - total))
            assert _scattered_read(chain, offset, lengths) == expected[offset : offset + total]
