"""The unpacked-kernel cache: a kernel is decompressed once, a damaged entry is redone,
and the cache never makes a load fail."""

import hashlib
import lzma
import os

from bzimages import make_vmlinux

from emu.machine import vmlinux_cache

VMLINUX = make_vmlinux(bytes(range(256)) * 64)
PAYLOAD = lzma.compress(VMLINUX, format=lzma.FORMAT_XZ)


class Unpacker:
    def __init__(self) -> None:
        self.calls = 0

    def __call__(self, payload: bytes) -> bytes:
        self.calls += 1
        return lzma.decompress(payload)


def test_a_kernel_is_unpacked_once_and_then_read_back(tmp_path):
    unpack = Unpacker()
    first = vmlinux_cache.unpacked(PAYLOAD, unpack, tmp_path, min_payload=0)
    second = vmlinux_cache.unpacked(PAYLOAD, unpack, tmp_path, min_payload=0)
    assert first == second == VMLINUX
    assert unpack.calls == 1
    assert [p.suffix for p in tmp_path.iterdir()] == [".vmlinux"]  # no temporary left


def test_a_damaged_entry_is_unpacked_afresh_and_replaced(tmp_path):
    vmlinux_cache.unpacked(PAYLOAD, Unpacker(), tmp_path, min_payload=0)
    (entry,) = tmp_path.iterdir()
    raw = bytearray(entry.read_bytes())
    raw[100] ^= 0xFF  # one flipped bit in the kernel
    entry.write_bytes(bytes(raw))
    unpack = Unpacker()
    assert vmlinux_cache.unpacked(PAYLOAD, unpack, tmp_path, min_payload=0) == VMLINUX
    assert unpack.calls == 1
    entry.write_bytes(entry.read_bytes()[:-3])  # cut short
    assert vmlinux_cache.unpacked(PAYLOAD, unpack, tmp_path, min_payload=0) == VMLINUX
    assert unpack.calls == 2
    assert vmlinux_cache.unpacked(PAYLOAD, unpack, tmp_path, min_payload=0) == VMLINUX
    assert unpack.calls == 2  # repaired


def test_small_kernels_are_not_kept(tmp_path):
    unpack = Unpacker()
    for _ in range(2):
        assert vmlinux_cache.unpacked(PAYLOAD, unpack, tmp_path) == VMLINUX
    assert unpack.calls == 2
    assert list(tmp_path.iterdir()) == []


def test_an_unusable_cache_folder_only_costs_the_unpacking(tmp_path):
    blocked = tmp_path / "file"
    blocked.write_bytes(b"not a folder")
    unpack = Unpacker()
    for _ in range(2):
        assert vmlinux_cache.unpacked(PAYLOAD, unpack, blocked / "cache", min_payload=0) == VMLINUX
    assert unpack.calls == 2
    assert blocked.read_bytes() == b"not a folder"


def test_the_folder_follows_xdg_cache_home(tmp_path, monkeypatch):
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path))
    assert vmlinux_cache.cache_dir() == tmp_path / "ahci-emu" / "vmlinux"


def test_the_cache_keeps_the_most_recently_used_kernels_and_nothing_it_did_not_write(
    tmp_path, monkeypatch
):
    monkeypatch.setattr(vmlinux_cache, "KEEP", 2)
    foreign = tmp_path / "notes.txt"
    foreign.write_text("mine")
    lookalike = tmp_path / ("0" * 64 + ".vmlinux")
    lookalike.symlink_to(foreign)
    payloads = [lzma.compress(make_vmlinux(bytes([n]) * 4096)) for n in range(3)]
    names = [hashlib.sha256(p).hexdigest() + ".vmlinux" for p in payloads]
    for when, payload, name in zip((100, 200), payloads[:2], names[:2], strict=True):
        vmlinux_cache.unpacked(payload, Unpacker(), tmp_path, min_payload=0)
        os.utime(tmp_path / name, (when, when))
    # Using the first kernel again makes it the most recent; the second is then evicted.
    vmlinux_cache.unpacked(payloads[0], Unpacker(), tmp_path, min_payload=0)
    vmlinux_cache.unpacked(payloads[2], Unpacker(), tmp_path, min_payload=0)
    kept = {p.name for p in tmp_path.iterdir() if not p.is_symlink() and p.suffix == ".vmlinux"}
    assert kept == {names[0], names[2]}
    assert foreign.read_text() == "mine" and lookalike.is_symlink()


def test_a_killed_runs_old_temporary_is_removed_and_a_fresh_one_is_not(tmp_path):
    old = tmp_path / ".unpacking-old"
    fresh = tmp_path / ".unpacking-fresh"
    old.write_bytes(b"x")
    fresh.write_bytes(b"x")
    os.utime(old, (1, 1))
    vmlinux_cache.unpacked(PAYLOAD, Unpacker(), tmp_path, min_payload=0)
    assert not old.exists() and fresh.exists()
