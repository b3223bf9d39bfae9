"""Files a hostile or careless user leaves: refused or handled, never hanging, never changed.

Regression tests of issue 10 items 5, 7, 8, 9, 12 and 14 on the image stack.
"""

import hashlib
import json
import os
import socket
import struct
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
from vdi_files import MiB, tag_sector, write_chain

from emu.storage import ops
from emu.storage.chain import Chain, open_chain
from emu.storage.errors import ImageFormatError, MediumError, ParentNotFoundError, StorageError
from emu.storage.media import open_shareable
from emu.storage.vdi import MAX_BLOCKS, VDIHEADER1PLUS, VdiImage


def digest(*paths: Path) -> dict[str, str]:
    return {str(p): hashlib.sha256(Path(p).read_bytes()).hexdigest() for p in paths}


def patch_header(path: Path, **fields) -> None:
    raw = bytearray(path.read_bytes())
    hdr = VDIHEADER1PLUS.parse(raw[72:])
    hdr.update(fields)
    raw[72 : 72 + 0x190] = VDIHEADER1PLUS.build(hdr)
    path.write_bytes(raw)


def set_entry(path: Path, index: int, entry: int) -> None:
    raw = bytearray(path.read_bytes())
    at = VDIHEADER1PLUS.parse(raw[72:]).offBlocks + 4 * index
    raw[at : at + 4] = struct.pack("<I", entry)
    path.write_bytes(raw)


# ---- 7: a refused open changes no byte ---------------------------------------------


def test_a_refused_open_of_a_leaf_with_a_stale_count_leaves_it_byte_identical(tmp_path):
    base = Path(ops.create_image(str(tmp_path / "base.vdi"), 4 * MiB))
    leaf = Path(ops.create_diff(str(base), str(tmp_path / "leaf.vdi")))
    with open_chain(str(leaf)) as chain:
        chain.writev(0, [memoryview(b"\x07" * 512)])
    patch_header(leaf, cBlocksAllocated=3)  # as a crash between header and map writes leaves
    base.rename(tmp_path / "elsewhere.img")  # the parent is gone: the open is refused
    before = digest(leaf)
    with pytest.raises(ParentNotFoundError):
        open_chain(str(leaf))
    assert digest(leaf) == before


def test_closing_an_unmodified_writable_image_writes_nothing(tmp_path):
    path = Path(ops.create_image(str(tmp_path / "d.vdi"), 4 * MiB))
    set_entry(path, 1, 0)  # a map entry to data past the end: refused as corrupt
    before = digest(path)
    with pytest.raises(ImageFormatError, match="past the end of the file"):
        VdiImage.open(str(path))
    assert digest(path) == before


# ---- 8: bounded work on huge claims -------------------------------------------------


def test_a_16_tib_dynamic_vdi_is_ordinary(tmp_path):
    size = 16 << 40
    path = ops.create_image(str(tmp_path / "big.vdi"), size)
    with open_chain(path) as chain:
        chain.writev(size - 512, [memoryview(b"\xee" * 512)])
        chain.writev(0, [memoryview(b"\x11" * 512)])
    with open_chain(path, read_only=True) as chain:
        tail, head, middle = bytearray(512), bytearray(512), bytearray(512)
        chain.readv(size - 512, [memoryview(tail)])
        chain.readv(0, [memoryview(head)])
        chain.readv(size // 2, [memoryview(middle)])
    assert (tail, head, middle) == (b"\xee" * 512, b"\x11" * 512, bytes(512))
    assert ops.check(path).exit_code == 0
    assert ops.describe(path)[0].allocated == 2 * MiB


def test_whole_image_operations_on_a_16_tib_vdi_visit_only_its_stored_blocks(tmp_path, monkeypatch):
    size = 16 << 40
    base = ops.create_image(str(tmp_path / "big.vdi"), size)
    diff = ops.create_diff(base, str(tmp_path / "diff.vdi"))
    with open_chain(diff) as chain:
        chain.writev(size - 512, [memoryview(b"\xee" * 512)])
    located = []
    real = Chain._locate
    monkeypatch.setattr(Chain, "_locate", lambda self, i: located.append(i) or real(self, i))
    steps = []
    flat = ops.convert(
        diff,
        str(tmp_path / "flat.vdi"),
        fmt="vdi",
        progress=lambda done, total: steps.append((done, total)),
    )
    assert steps == [(size // MiB, size // MiB)]
    assert len(located) < 10
    with open_chain(flat, read_only=True) as chain:
        tail = bytearray(512)
        chain.readv(size - 512, [memoryview(tail)])
    assert tail == b"\xee" * 512 and ops.describe(flat)[0].allocated == MiB
    assert ops.merge(diff) == base
    assert ops.describe(base)[0].allocated == MiB
    assert ops.compact(base) >= 0


@pytest.mark.parametrize("size", ["4096T", "65537T", "99999999T"])
def test_create_refuses_a_size_above_the_limit_in_one_line(tmp_path, image_cli, size):
    status, out, err = image_cli("create", str(tmp_path / "d.vdi"), "--size", size)
    assert status == 1 and out == ""
    assert err.count("\n") == 1 and "64 TiB at most" in err
    assert not (tmp_path / "d.vdi").exists()


def test_a_raw_image_may_be_larger_than_a_vdi_up_to_what_lba48_addresses(tmp_path, image_cli):
    status, _, err = image_cli(
        "create", str(tmp_path / "d.img"), "--size", "99999999T", "--format", "raw"
    )
    assert status == 1 and err.count("\n") == 1 and "131072 TiB at most" in err


def claim(tmp_path: Path, blocks: int, *, stored: bool = False) -> Path:
    """A small VDI patched to claim ``blocks`` blocks, its file extended to hold the map
    it claims: sparse, or (``stored``) written as zeros. Every entry reads as slot 0."""
    path = Path(ops.create_image(str(tmp_path / "claim.vdi"), 4 * MiB))
    hdr = VDIHEADER1PLUS.parse(path.read_bytes()[72:])
    off_data = -(-(hdr.offBlocks + 4 * blocks) // 512) * 512
    patch_header(path, cBlocks=blocks, cbDisk=blocks * MiB, offData=off_data)
    if stored:
        with open(path, "r+b") as f:
            f.seek(hdr.offBlocks)
            f.write(bytes(off_data - hdr.offBlocks))
    os.truncate(path, off_data)
    return path


def test_a_block_count_above_the_limit_is_refused_from_the_header(tmp_path, image_cli):
    path = claim(tmp_path, MAX_BLOCKS + 1)
    before = digest(path)
    for argv in (["info", str(path)], ["check", str(path)]):
        _, out, err = image_cli(*argv)
        assert "64 TiB at most" in out + err
    with pytest.raises(ImageFormatError, match="64 TiB at most"):
        open_chain(str(path))
    assert digest(path) == before


def test_a_huge_map_in_a_sparse_file_is_refused_without_reading_it(tmp_path, monkeypatch):
    path = claim(tmp_path, MAX_BLOCKS)  # 64 TiB claimed in a 256 MiB sparse file
    monkeypatch.setattr(os, "preadv", None)  # the map is never read
    result = ops.check(str(path))
    assert result.exit_code == 2
    assert "block map is not stored in the file" in result.corruptions[0]
    with pytest.raises(ImageFormatError, match="block map is not stored in the file"):
        open_chain(str(path), read_only=True)


def test_a_stored_map_of_garbage_stops_after_a_bounded_number_of_problems(tmp_path):
    path = claim(tmp_path, 1 << 20, stored=True)  # 1 TiB claimed, a 4 MiB map of zeros
    result = ops.check(str(path))
    assert result.exit_code == 2
    assert len(result.corruptions) == 100
    assert "block 99 maps to slot 0" in result.corruptions[-1]
    with pytest.raises(ImageFormatError, match="block 0 maps to slot 0"):
        open_chain(str(path), read_only=True)


# ---- 9: non-regular files ---------------------------------------------------------


def special_files(tmp_path: Path) -> dict[str, str]:
    fifo = tmp_path / "fifo.vdi"
    os.mkfifo(fifo)
    raw_fifo = tmp_path / "fifo.img"
    os.mkfifo(raw_fifo)
    sock = socket.socket(socket.AF_UNIX)
    sock.bind(str(tmp_path / "sock.vdi"))
    sock.close()
    (tmp_path / "dir.vdi").mkdir()
    return {
        str(fifo): "FIFO",
        str(raw_fifo): "FIFO",
        str(tmp_path / "sock.vdi"): "socket",
        str(tmp_path / "dir.vdi"): "directory",
        "/dev/zero": "character device",
    }


@pytest.mark.timeout(60)
def test_non_regular_files_are_refused_at_once(tmp_path, image_cli):
    for path, kind in special_files(tmp_path).items():
        for read_only in (True, False):
            with pytest.raises(MediumError, match=f"is a {kind}, not an image file"):
                open_chain(path, read_only=read_only)
        for argv in (["info", path], ["check", path], ["convert", path, str(tmp_path / "o")]):
            status, _, err = image_cli(*argv, *(["-O", "raw"] if argv[0] == "convert" else []))
            assert status == 1 and f"is a {kind}" in err and err.count("\n") == 1, (argv, err)
    assert not (tmp_path / "o").exists()


@pytest.mark.timeout(60)
def test_a_fifo_named_vdi_beside_a_diff_does_not_stop_the_parent_search(tmp_path):
    base = ops.create_image(str(tmp_path / "base.vdi"), 4 * MiB)
    os.mkfifo(tmp_path / "a-fifo.vdi")
    (tmp_path / "Snapshots").mkdir()
    os.mkfifo(tmp_path / "Snapshots" / "0-fifo.vdi")
    diff = ops.create_diff(base, str(tmp_path / "Snapshots" / "s1.vdi"))
    with open_chain(diff) as chain:
        assert [i.path for i in chain.images] == [diff, base]
    assert ops.check(diff).exit_code == 0


# ---- 12: a corrupt parent is named as corrupt ----------------------------------------


@pytest.mark.parametrize(
    "damage, message",
    [
        ({"cbBlock": 4096}, "block size 4096 is not 1 MiB"),
        ({"cBlocks": 9}, "cBlocks 9 x block size"),
    ],
)
def test_a_parent_with_a_damaged_header_is_reported_corrupt(tmp_path, image_cli, damage, message):
    base = Path(ops.create_image(str(tmp_path / "base.vdi"), 4 * MiB))
    diff = ops.create_diff(str(base), str(tmp_path / "diff.vdi"))
    patch_header(base, **damage)
    status, out, _ = image_cli("check", diff)
    assert status == 2 and f"corruption: {base}: {message}" in out
    with pytest.raises(ImageFormatError, match=message):
        open_chain(diff)


def test_a_parent_without_its_signature_is_named_as_possibly_it(tmp_path, image_cli):
    base = Path(ops.create_image(str(tmp_path / "base.vdi"), 4 * MiB))
    diff = ops.create_diff(str(base), str(tmp_path / "diff.vdi"))
    raw = bytearray(base.read_bytes())
    raw[64:68] = b"\0\0\0\0"
    base.write_bytes(raw)
    status, out, _ = image_cli("check", diff)
    assert status == 2
    assert "not found intact" in out and f"{base}: bad signature" in out


# ---- 5: a shareable medium never allocates -------------------------------------------


def test_a_fixed_vdi_with_free_entries_is_refused_as_shareable_unchanged(tmp_path):
    path = tmp_path / "shared.vdi"
    ops.create_image(str(path), 4 * MiB, variant="fixed")
    set_entry(path, 2, 0xFFFFFFFF)  # another tool left a block unallocated
    before = digest(path)
    with pytest.raises(StorageError, match="1 of its 4 blocks are not allocated"):
        open_shareable(str(path))
    assert digest(path) == before
    assert ops.check(str(path)).exit_code == 3  # the slot is leaked, nothing is corrupt


def test_two_shareable_users_of_a_whole_fixed_vdi_write_in_place(tmp_path):
    path = str(tmp_path / "shared.vdi")
    ops.create_image(path, 4 * MiB, variant="fixed")
    with open_shareable(path) as one, open_shareable(path) as two:
        one.writev(0, [memoryview(b"\x01" * 512)])
        two.writev(MiB, [memoryview(b"\x02" * 512)])
        seen = bytearray(512)
        two.readv(0, [memoryview(seen)])
    assert seen == b"\x01" * 512
    assert ops.check(path).exit_code == 0


# ---- 14: deep and wide chains ------------------------------------------------------------

DEEP = textwrap.dedent(
    """
    import resource, sys
    from emu.storage.chain import Chain, open_chain
    from vdi_files import tag_sector
    resource.setrlimit(resource.RLIMIT_NOFILE, (64, 64))
    leaf, depth, blocks = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
    with open_chain(leaf) as chain:
        for _ in range(2):  # twice: parked parents are reopened
            for block in range(blocks):
                buf = bytearray(512)
                chain.readv(block << 20, [memoryview(buf)])
                print(block, buf[:4].hex(), buf[4:] == buf[:4] * 127)
        chain.writev(0, [memoryview(b"\\x55" * 512)])
    print(len(chain.images))
    """
)


def test_a_4096_deep_chain_opens_and_reads_under_64_open_files(tmp_path):
    depth, blocks = 4096, 4
    data_layers = set(range(0, depth, 37)) | {depth - 2}
    paths = write_chain(tmp_path, depth, data_layers=data_layers)
    result = subprocess.run(
        [sys.executable, "-c", DEEP, str(paths[-1]), str(depth), str(blocks)],
        capture_output=True,
        text=True,
        cwd=Path(__file__).parent,
    )
    assert result.returncode == 0, result.stderr
    lines = result.stdout.split("\n")
    for block in range(blocks):
        newest = max(k for k in data_layers if k % blocks == block)
        expected = f"{block} {tag_sector(newest)[:4].hex()} True"
        assert lines[block] == expected and lines[blocks + block] == expected
    assert lines[2 * blocks] == str(depth)


def test_parent_discovery_reads_a_folders_headers_once(tmp_path, monkeypatch):
    from emu.storage import vdi

    paths = write_chain(tmp_path, 800, size=MiB)
    write_chain_dir = tmp_path / "others"
    write_chain_dir.mkdir()
    for path in write_chain(write_chain_dir, 300, size=MiB):
        path.rename(tmp_path / f"x{path.name}")
    calls = []
    real = vdi.read_uuids
    monkeypatch.setattr(vdi, "read_uuids", lambda p: calls.append(p) or real(p))
    chain = ops.describe(str(paths[-1]))
    assert len(chain) == 800
    assert len(calls) == len(set(calls)) == 1100  # each header of the folder, once


# ---- 4: merge --delete never orphans a grandchild ------------------------------------


def test_merge_delete_refuses_a_child_with_children_and_changes_nothing(tmp_path, image_cli):
    base = ops.create_image(str(tmp_path / "base.vdi"), 4 * MiB)
    (tmp_path / "Snapshots").mkdir()
    child = ops.create_diff(base, str(tmp_path / "child.vdi"))
    with open_chain(child) as chain:
        chain.writev(0, [memoryview(b"\x01" * 512)])
    grandchild = ops.create_diff(child, str(tmp_path / "Snapshots" / "grandchild.vdi"))
    before = digest(base, child, grandchild)
    status, out, err = image_cli("merge", child, "--delete")
    assert (status, out) == (1, "")
    assert err.count("\n") == 1 and f"would orphan its differencing image {grandchild}" in err
    assert digest(base, child, grandchild) == before
    status, _, _ = image_cli("merge", str(tmp_path / "Snapshots" / "grandchild.vdi"), "--delete")
    assert status == 0 and not Path(grandchild).exists()
    status, _, _ = image_cli("merge", child, "--delete")
    assert status == 0 and not Path(child).exists()
    with open_chain(base, read_only=True) as chain:
        buf = bytearray(512)
        chain.readv(0, [memoryview(buf)])
    assert buf == b"\x01" * 512


# ---- issue 9: a machine's diff is found through the machine's registry ------------------


def test_image_commands_find_a_machine_diffs_parent_through_its_registry(tmp_path, image_cli):
    from emu.storage.vm import Machine

    base = ops.create_image(str(tmp_path / "disk.vdi"), 4 * MiB)  # beside the folder
    with Machine.create(str(tmp_path / "vm")) as vm:
        vm.attach(0, base)
        vm.snapshot_take("s1")
    (leaf,) = (tmp_path / "vm" / "Snapshots").glob("*.vdi")
    status, out, _ = image_cli("info", str(leaf))
    assert status == 0 and f"  {base} (normal" in out
    status, out, _ = image_cli("check", str(leaf))
    assert status == 0 and "No errors were found on 2 image(s)." in out
    status, _, _ = image_cli("convert", str(leaf), str(tmp_path / "flat.img"), "-O", "raw")
    assert status == 0 and (tmp_path / "flat.img").stat().st_size == 4 * MiB


# ---- issue 9: info says when a block map is corrupt -------------------------------------


def test_info_on_a_sound_header_over_a_corrupt_map_says_corrupt(tmp_path, image_cli):
    base = Path(ops.create_image(str(tmp_path / "base.vdi"), 4 * MiB))
    with open_chain(str(base)) as chain:
        chain.writev(0, [memoryview(b"\x01" * 512)])
    diff = ops.create_diff(str(base), str(tmp_path / "diff.vdi"))
    set_entry(base, 3, 0)  # blocks 0 and 3 share slot 0
    status, out, _ = image_cli("info", diff)
    assert status == 0
    assert f"corrupt: true: {base} (see `ahci-emu image check {diff}`)" in out
    assert f"  {base} (normal, 1 MiB allocated, corrupt)" in out
    status, out, _ = image_cli("info", diff, "--output", "json")
    info = json.loads(out)
    assert [i["corrupt"] for i in info["chain"]] == [False, True]
    assert image_cli("check", diff)[0] == 2


# ---- the same through `ahci-emu run` ---------------------------------------------------


def run_demo(disk: Path) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "emu.cli", "run", "demo", "--disk", str(disk), "--timeout", "30"],
        capture_output=True,
        text=True,
        timeout=60,
    )


@pytest.mark.parametrize("case", ["missing parent", "fifo", "huge sparse map"])
def test_a_refused_run_is_one_line_at_once_and_changes_no_byte(tmp_path, case):
    if case == "missing parent":
        base = Path(ops.create_image(str(tmp_path / "base.vdi"), 4 * MiB))
        disk = Path(ops.create_diff(str(base), str(tmp_path / "leaf.vdi")))
        patch_header(disk, cBlocksAllocated=1)  # stale: the run must not rewrite it
        base.unlink()
        fragment = "not found"
    elif case == "fifo":
        disk = tmp_path / "disk.vdi"
        os.mkfifo(disk)
        fragment = "is a FIFO, not an image file"
    else:
        disk = claim(tmp_path, MAX_BLOCKS)
        fragment = "block map is not stored in the file"
    before = digest(disk) if disk.is_file() else {}
    proc = run_demo(disk)
    assert proc.returncode == 1 and proc.stdout == ""
    assert proc.stderr.count("\n") == 1 and fragment in proc.stderr, proc.stderr
    assert (digest(disk) if disk.is_file() else {}) == before
