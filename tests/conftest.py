"""Shared fixtures: paths of the checkout and a builder for tiny multiboot guests."""

import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "tests" / "unit" / "machine"))


@pytest.fixture
def make_guest(tmp_path):
    """Write a tiny multiboot ELF (see elfmaker) to a file and return its path."""
    from elfmaker import make_elf

    counter = iter(range(1000))

    def build(code: bytes = b"", *, raw: bytes | None = None, **kwargs) -> str:
        path = tmp_path / f"guest{next(counter)}.elf"
        path.write_bytes(raw if raw is not None else make_elf(code, **kwargs))
        return str(path)

    return build
