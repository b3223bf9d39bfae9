"""The unpacked-kernel cache: a kernel is decompressed once, a damaged entry is redone,
and the cache never makes a load fail."""

import lzma

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
