"""The committed guest images match their sources and rebuild byte for byte."""

from __future__ import annotations

import hashlib
import importlib.util
import json
import os
import shutil
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
FIRMWARE = REPO / "firmware"
IMAGES = REPO / "guest_images"


def _load_build_module():
    spec = importlib.util.spec_from_file_location("firmware_build", FIRMWARE / "build.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module
    spec.loader.exec_module(module)
    return module


build = _load_build_module()


def _manifest() -> list[dict[str, str]]:
    return json.loads((IMAGES / "manifest.json").read_text())


def _entries() -> dict[str, dict[str, str]]:
    return {entry["name"]: entry for entry in _manifest()}


def test_manifest_well_formed():
    manifest = _manifest()
    names = [entry["name"] for entry in manifest]
    assert names == sorted(set(names)), "manifest must be sorted with unique names"
    for entry in manifest:
        assert set(entry) == {"name", "elf_sha256", "source_sha256"}, entry


def test_every_guest_has_image_and_entry():
    sources = build.guest_names(FIRMWARE)
    assert sources, "no guests in firmware/guests"
    assert sorted(_entries()) == sources
    for name in sources:
        assert (IMAGES / f"{name}.elf").is_file(), f"guest_images/{name}.elf missing"


@pytest.mark.parametrize("name", sorted(_entries()))
def test_elf_matches_manifest(name):
    data = (IMAGES / f"{name}.elf").read_bytes()
    assert hashlib.sha256(data).hexdigest() == _entries()[name]["elf_sha256"]
    assert data[:4] == b"\x7fELF" and data[4] == 1, "not an ELF32 file"


@pytest.mark.parametrize("name", sorted(_entries()))
def test_sources_unchanged_since_build(name):
    recorded = _entries()[name]["source_sha256"]
    assert build.source_hash(FIRMWARE, name) == recorded, (
        f"firmware sources of {name!r} changed since guest_images/ was built: "
        "run `make -C firmware` and commit the result"
    )


def test_source_hash_covers_lib_and_flags(tmp_path, monkeypatch):
    """Changing any library file, or the flags, changes every guest's hash."""
    copy = tmp_path / "fw"
    shutil.copytree(FIRMWARE, copy, ignore=shutil.ignore_patterns("build", "__pycache__"))
    name = build.guest_names(copy)[0]
    before = build.source_hash(copy, name)
    (copy / "lib" / "io.h").write_text((copy / "lib" / "io.h").read_text() + "\n")
    after_lib = build.source_hash(copy, name)
    assert after_lib != before
    monkeypatch.setattr(build, "CFLAGS", (*build.CFLAGS, "-DEXTRA"))
    assert build.source_hash(copy, name) != after_lib


def test_rebuild_is_reproducible():
    problem = build.toolchain_problem()
    if problem:
        if os.environ.get("CI") == "true":
            pytest.fail(f"cannot rebuild guests under CI: {problem}")
        pytest.skip(problem)
    differences = build.check_reproducible(FIRMWARE, IMAGES)
    assert not differences, "\n".join(differences)
