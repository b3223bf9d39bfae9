"""VDI files we write are read by qemu-img; files qemu-img writes are read by us.

These run the real qemu-img / qemu-io (a missing tool fails under CI=true).
"""

import json
from pathlib import Path

import pytest

from emu.storage import ops
from emu.storage.chain import open_chain
from emu.storage.vdi import VDIHEADER1PLUS

MiB = 1 << 20
SIZE = 5 * MiB


def read_all(path: str) -> bytes:
    with open_chain(path, read_only=True) as chain:
        buf = bytearray(chain.size)
        chain.readv(0, [memoryview(buf)])
    return bytes(buf)


def fill(path: str, data, writes) -> bytes:
    """Write (offset, length) pieces of pseudo-random data; return the whole disk as written."""
    with open_chain(path) as chain:
        content = bytearray(chain.size)
        for seed, (offset, length) in enumerate(writes):
            chunk = data(seed, length)
            chain.writev(offset, [memoryview(chunk)])
            content[offset : offset + length] = chunk
    return bytes(content)


WRITES = [(0, 64 * 1024), (MiB - 512, 1024), (3 * MiB + 4096, MiB + 8192)]


@pytest.mark.parametrize("variant", ["dynamic", "fixed"])
def test_qemu_img_info_check_compare_and_convert_accept_our_vdi(tmp_path, data, qemu_img, variant):
    path = str(tmp_path / "ours.vdi")
    ops.create_image(path, SIZE, variant=variant)
    content = fill(path, data, WRITES)
    info = qemu_img("info", "--output=json", path)
    assert info.returncode == 0, info.stderr
    facts = json.loads(info.stdout)
    assert (facts["format"], facts["virtual-size"]) == ("vdi", SIZE)
    check = qemu_img("check", path)
    assert check.returncode == 0, check.stdout + check.stderr
    raw = tmp_path / "expected.raw"
    raw.write_bytes(content)
    compare = qemu_img("compare", "-f", "vdi", "-F", "raw", path, str(raw))
    assert compare.returncode == 0, compare.stdout + compare.stderr
    converted = tmp_path / "converted.raw"
    assert qemu_img("convert", "-f", "vdi", "-O", "raw", path, str(converted)).returncode == 0
    assert converted.read_bytes() == content


def test_qemu_img_checks_our_image_clean_after_discards_merge_and_compact(tmp_path, data, qemu_img):
    base = str(tmp_path / "base.vdi")
    ops.create_image(base, SIZE)
    fill(base, data, WRITES)
    with open_chain(base) as chain:
        chain.discard(0, MiB)  # a whole allocated block
        chain.discard(3 * MiB + 4096, 4096)  # part of one
    diff = ops.create_diff(base, str(tmp_path / "diff.vdi"))
    fill(diff, data, [(2 * MiB, 3 * MiB)])
    ops.merge(diff)
    expected = read_all(diff)
    assert qemu_img("check", base).returncode == 0
    ops.compact(base)
    assert qemu_img("check", base).returncode == 0
    converted = tmp_path / "c.raw"
    assert qemu_img("convert", "-O", "raw", base, str(converted)).returncode == 0
    assert converted.read_bytes() == expected


@pytest.mark.parametrize("options", [[], ["-o", "static=on"]], ids=["dynamic", "static"])
def test_we_read_what_qemu_io_wrote_into_a_qemu_img_vdi(tmp_path, qemu_img, qemu_io, options):
    path = str(tmp_path / "q.vdi")
    assert qemu_img("create", "-f", "vdi", *options, path, "3M").returncode == 0
    result = qemu_io("-f", "vdi", "-c", "write -P 0xab 0 64k", "-c", "write -P 0xcd 2M 4k", path)
    assert result.returncode == 0, result.stderr
    expected = bytearray(3 * MiB)
    expected[: 64 * 1024] = b"\xab" * (64 * 1024)
    expected[2 * MiB : 2 * MiB + 4096] = b"\xcd" * 4096
    assert read_all(path) == expected
    assert ops.check(path).exit_code == 0


def test_we_read_a_qemu_img_convert_of_a_raw_disk(tmp_path, data, qemu_img):
    raw = tmp_path / "src.raw"
    content = bytearray(4 * MiB + 512)
    content[100_000:300_000] = data(1, 200_000)
    content[-4096:] = data(2, 4096)
    raw.write_bytes(content)
    path = str(tmp_path / "q.vdi")
    assert qemu_img("convert", "-f", "raw", "-O", "vdi", str(raw), path).returncode == 0
    assert read_all(path) == content


def test_we_write_into_a_qemu_made_vdi_and_keep_its_short_header(tmp_path, data, qemu_img, qemu_io):
    path = str(tmp_path / "q.vdi")
    qemu_img("create", "-f", "vdi", path, "4M")
    qemu_io("-f", "vdi", "-c", "write -P 0x11 1M 1M", path)
    content = bytearray(read_all(path))
    content[MiB + 10 : MiB + 20] = b"\xee" * 10
    content[3 * MiB : 3 * MiB + 512] = b"\xdd" * 512
    with open_chain(path) as chain:
        chain.writev(MiB + 10, [memoryview(b"\xee" * 10)])
        chain.writev(3 * MiB, [memoryview(b"\xdd" * 512)])
    header = VDIHEADER1PLUS.parse(Path(path).read_bytes()[72:])
    assert header.cbHeader == 0x180 and header.offBlocks == 0x200  # QEMU's layout, kept
    assert qemu_img("check", path).returncode == 0
    raw = tmp_path / "expected.raw"
    raw.write_bytes(content)
    assert qemu_img("compare", "-F", "raw", path, str(raw)).returncode == 0


def test_a_diff_over_a_qemu_made_base_reads_through_to_it(tmp_path, qemu_img, qemu_io):
    base = str(tmp_path / "q.vdi")
    qemu_img("create", "-f", "vdi", base, "2M")
    qemu_io("-f", "vdi", "-c", "write -P 0x42 0 1M", base)
    diff = ops.create_diff(base, str(tmp_path / "d.vdi"))
    with open_chain(diff) as chain:
        chain.writev(512, [memoryview(b"\x00" * 512)])
    expected = bytearray(2 * MiB)
    expected[:MiB] = b"\x42" * MiB
    expected[512:1024] = bytes(512)
    assert read_all(diff) == expected
    assert qemu_img("check", base).returncode == 0  # the base was not written
