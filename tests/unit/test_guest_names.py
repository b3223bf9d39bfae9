"""GUEST: a path when it has a slash or names a regular file, else a built-in guest name."""

import os
import subprocess
import sys
from pathlib import Path

import pytest

from emu.errors import EmuError
from emu.guests import builtin_guests, guest_images_dir, resolve_guest

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture
def decoys(tmp_path, monkeypatch):
    """A working directory holding a folder named demo, a junk file named hello and a
    folder named pci: names of built-in guests that are not guests."""
    (tmp_path / "demo").mkdir()
    (tmp_path / "hello").write_text("not a guest\n")
    (tmp_path / "pci").mkdir()
    monkeypatch.chdir(tmp_path)
    return tmp_path


def builtin(name: str) -> str:
    return str(guest_images_dir() / f"{name}.elf")


def test_no_guest_is_the_builtin_default_even_beside_a_file_of_its_name(decoys):
    (decoys / "demo").rmdir()
    (decoys / "demo").write_text("not a guest\n")
    notes = []
    assert resolve_guest(None, notes.append) == builtin("demo")
    assert notes == []


def test_a_folder_never_hides_a_builtin_guest(decoys):
    notes = []
    assert resolve_guest("demo", notes.append) == builtin("demo")
    assert resolve_guest("pci", notes.append) == builtin("pci")
    assert resolve_guest(None, notes.append) == builtin("demo")
    assert notes == []


def test_a_regular_file_is_used_and_the_builtin_named(decoys):
    notes = []
    assert resolve_guest("hello", notes.append) == "hello"
    assert notes == [f"note: using the file ./hello; the built-in guest is {builtin('hello')}"]


def test_a_path_with_a_slash_is_always_a_path(decoys):
    notes = []
    assert resolve_guest("./hello", notes.append) == "./hello"
    assert notes == []
    with pytest.raises(EmuError, match="demo/: no such guest file"):
        resolve_guest("demo/")
    with pytest.raises(EmuError, match="nothere/hello: no such guest file"):
        resolve_guest("nothere/hello")


def test_an_unknown_name_lists_the_builtin_guests(decoys):
    with pytest.raises(EmuError) as exc:
        resolve_guest("nosuch")
    assert "no such guest file or built-in guest" in str(exc.value)
    assert ", ".join(builtin_guests()) in str(exc.value)
    assert {"demo", "hello", "bench", "pcidump", "gen"} <= set(builtin_guests())


def ahci_emu(cwd: Path, *args: str) -> subprocess.CompletedProcess:
    env = {
        **os.environ,
        "PYTHONPATH": os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")]),
    }
    return subprocess.run(
        [sys.executable, "-m", "emu.cli", *args],
        capture_output=True,
        text=True,
        cwd=cwd,
        env=env,
        timeout=120,
        check=False,
    )


def test_run_and_vm_run_boot_builtins_beside_decoys(decoys):
    for args in (("run",), ("run", "demo"), ("run", "pci")):
        proc = ahci_emu(decoys, *args)
        assert proc.returncode == 0, (args, proc.stderr)
        assert proc.stderr == ""
    assert (
        ahci_emu(
            decoys, "image", "create", "disk.img", "--size", "1M", "--format", "raw"
        ).returncode
        == 0
    )
    assert ahci_emu(decoys, "vm", "create", "vm").returncode == 0
    assert (
        ahci_emu(decoys, "vm", "attach", "vm", "--port", "0", "--medium", "disk.img").returncode
        == 0
    )
    proc = ahci_emu(decoys, "vm", "run", "vm", "demo")
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.startswith("ahci-emu demo guest\n")
    assert "port 0 capacity: 2048 sectors (1 MiB)" in proc.stdout


def test_the_file_wins_and_the_note_says_so(decoys):
    proc = ahci_emu(decoys, "run", "hello")
    assert proc.returncode == 1
    assert proc.stderr.splitlines() == [
        f"ahci-emu: note: using the file ./hello; the built-in guest is {builtin('hello')}",
        "ahci-emu: error: hello: not an ELF file",
    ]
    proc = ahci_emu(decoys, "run", builtin("hello"))  # what the note says to run instead
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.startswith("hello from an ahci-emu guest\n")
