"""`ahci-emu image ...`: the worked example of the README, exit statuses, one-line errors."""

import json
from pathlib import Path

import pytest

from emu.commands.image import ImageCommandError, parse_size
from emu.storage.chain import open_chain

MiB = 1 << 20


def test_worked_example_create_diff_write_info_check_convert(tmp_path, image_cli, monkeypatch):
    monkeypatch.chdir(tmp_path)
    assert image_cli("create", "base.vdi", "--size", "64M")[0] == 0
    (tmp_path / "Snapshots").mkdir()
    status, out, _ = image_cli("diff", "base.vdi", "Snapshots/s1.vdi")
    assert status == 0 and "differencing image of" in out
    with open_chain("Snapshots/s1.vdi") as chain:
        chain.writev(MiB, [memoryview(b"hello, disk\n" * 512)])
    status, out, _ = image_cli("info", "Snapshots/s1.vdi")
    assert status == 0
    assert "format: vdi (differencing)" in out and "virtual size: 64 MiB (67108864 bytes)" in out
    assert "allocated: 1 MiB" in out and "chain (leaf first):" in out
    assert str(tmp_path / "base.vdi") in out
    status, out, _ = image_cli("info", "Snapshots/s1.vdi", "--output", "json")
    info = json.loads(out)
    assert [image["type"] for image in info["chain"]] == ["differencing", "normal"]
    assert info["uuid_linkage"] == info["chain"][1]["uuid"]
    status, out, _ = image_cli("check", "Snapshots/s1.vdi")
    assert (status, out.strip()) == (0, "No errors were found on 2 image(s).")
    status, out, _ = image_cli("convert", "Snapshots/s1.vdi", "flat.img", "-O", "raw")
    assert status == 0
    flat = Path("flat.img").read_bytes()
    assert len(flat) == 64 * MiB and flat[MiB : MiB + 12] == b"hello, disk\n"


SIZES = [("512", 512), ("64K", 65536), ("64M", 64 * MiB), ("1G", 1 << 30), ("2MiB", 2 * MiB)]


@pytest.mark.parametrize("text,size", SIZES)
def test_sizes_take_binary_suffixes(text, size):
    assert parse_size(text) == size


@pytest.mark.parametrize("text", ["", "12Q", "1.5G", "-1M", "100", "0"])
def test_bad_sizes_are_refused(text):
    with pytest.raises(ImageCommandError):
        parse_size(text)


def test_errors_are_one_line_with_status_1(tmp_path, image_cli):
    bad = tmp_path / "bad.vdi"
    bad.write_bytes(b"not an image" * 100)
    for argv in (
        ["info", str(bad)],
        ["create", str(tmp_path / "x.vdi"), "--size", "12Q"],
        ["check", str(tmp_path / "missing.vdi")],
        ["convert", str(bad), str(tmp_path / "y.img"), "-O", "raw"],
        ["merge", str(bad)],
    ):
        status, out, err = image_cli(*argv)
        assert status == 1 and out == ""
        assert err.count("\n") == 1 and err.startswith("ahci-emu: error: ")
        assert "Traceback" not in err


def test_check_prints_problems_and_exits_2_or_3(tmp_path, image_cli):
    path = tmp_path / "d.vdi"
    image_cli("create", str(path), "--size", "4M")
    with open(path, "ab") as f:
        f.write(bytes(MiB))
    status, out, _ = image_cli("check", str(path))
    assert status == 3 and out.startswith("leak: ") and "0 corruption(s), 1 leak(s)" in out
    raw = bytearray(path.read_bytes())
    raw[0x100000:0x100004] = (7).to_bytes(4, "little")  # block 0 -> slot 7, past the end
    path.write_bytes(raw)
    status, out, _ = image_cli("check", str(path))
    assert status == 2 and "corruption: " in out


def test_merge_writes_the_child_into_its_parent_and_can_delete_it(tmp_path, image_cli):
    base, child = tmp_path / "base.vdi", tmp_path / "child.vdi"
    image_cli("create", str(base), "--size", "2M", "--variant", "fixed")
    image_cli("diff", str(base), str(child))
    with open_chain(str(child)) as chain:
        chain.writev(0, [memoryview(b"\xab" * 512)])
    status, out, _ = image_cli("merge", str(child), "--delete")
    assert status == 0 and f"into {base}" in out and not child.exists()
    with open_chain(str(base), read_only=True) as chain:
        buf = bytearray(512)
        chain.readv(0, [memoryview(buf)])
    assert buf == b"\xab" * 512


def test_compact_reports_the_space_saved(tmp_path, image_cli):
    path = tmp_path / "d.vdi"
    image_cli("create", str(path), "--size", "4M")
    with open_chain(str(path)) as chain:
        chain.writev(0, [memoryview(b"\x01" * 2 * MiB)])
        chain.discard(0, 2 * MiB)  # still allocated, now all zeros
    status, out, _ = image_cli("compact", str(path))
    assert status == 0 and "2 MiB smaller" in out
    assert image_cli("check", str(path))[0] == 0


def test_raw_images_are_created_with_the_format_option(tmp_path, image_cli):
    path = tmp_path / "d.img"
    status, out, _ = image_cli("create", str(path), "--size", "1M", "--format", "raw")
    assert status == 0 and path.stat().st_size == MiB
    status, out, _ = image_cli("info", str(path))
    assert "format: raw" in out and "uuid" not in out
