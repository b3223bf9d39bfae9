"""Fixtures of the image-stack tests: data patterns, qemu tools, a CLI runner."""

import argparse
import hashlib
import os
import random
import shutil
import subprocess
import sys
from collections.abc import Callable

import pytest

from emu.errors import EmuError

MiB = 1 << 20


def _tool(name: str) -> str:
    """Path of a qemu tool; missing fails under CI=true and skips elsewhere."""
    path = shutil.which(name)
    if path:
        return path
    if os.environ.get("CI") == "true":
        pytest.fail(f"{name} is required when CI=true (install qemu-utils)")
    pytest.skip(f"{name} is not installed")


@pytest.fixture(scope="session")
def qemu_img() -> Callable[..., subprocess.CompletedProcess]:
    """Run qemu-img with arguments; returns the completed process (never raises)."""
    exe = _tool("qemu-img")
    return lambda *args: subprocess.run([exe, *args], capture_output=True, text=True)


@pytest.fixture(scope="session")
def qemu_io() -> Callable[..., subprocess.CompletedProcess]:
    """Run qemu-io with arguments; returns the completed process."""
    exe = _tool("qemu-io")
    return lambda *args: subprocess.run([exe, *args], capture_output=True, text=True)


@pytest.fixture
def data() -> Callable[[int, int], bytes]:
    """data(seed, n): n reproducible pseudo-random bytes."""
    return lambda seed, n: random.Random(seed).randbytes(n)


@pytest.fixture
def image_cli(capsys: pytest.CaptureFixture) -> Callable[..., tuple[int, str, str]]:
    """Run `ahci-emu image ...` in-process as emu.cli does; returns (status, stdout, stderr)."""
    from emu.commands import image

    def run(*argv: str) -> tuple[int, str, str]:
        parser = argparse.ArgumentParser(prog="ahci-emu")
        image.register(parser.add_subparsers(dest="command", required=True))
        args = parser.parse_args(["image", *argv])
        try:
            status = args.handler(args)
        except EmuError as exc:
            print(f"ahci-emu: error: {exc}", file=sys.stderr)
            status = exc.exit_status
        out, err = capsys.readouterr()
        return status, out, err

    return run


@pytest.fixture
def ahci_emu(monkeypatch, capsys) -> Callable[..., tuple[int, str, str]]:
    """Run ``ahci-emu ARGS...`` through the real entry point; return (status, stdout, stderr)."""
    from emu import cli

    if "vm" not in cli.COMMANDS:
        monkeypatch.setattr(cli, "COMMANDS", (*cli.COMMANDS, "vm"))

    def run(*argv: object) -> tuple[int, str, str]:
        status = cli.main([str(a) for a in argv])
        out, err = capsys.readouterr()
        return status, out, err

    return run


@pytest.fixture
def tree_state() -> Callable[[object], dict[str, tuple[str, int, str]]]:
    """tree_state(root): every entry under ``root`` (see :func:`_tree_state`)."""
    return _tree_state


def _tree_state(root: object) -> dict[str, tuple[str, int, str]]:
    """Every entry under ``root``: kind, mtime and content hash (a symlink's target), so
    that two states are equal only if no byte, file or link changed."""
    out = {}
    for folder, dirs, files in os.walk(root):
        for name in dirs + files:
            path = os.path.join(folder, name)
            st = os.lstat(path)
            if os.path.islink(path):
                out[path] = ("link", 0, os.readlink(path))
            elif os.path.isfile(path):
                with open(path, "rb") as f:
                    digest = hashlib.sha256(f.read()).hexdigest()
                out[path] = ("file", st.st_mtime_ns, digest)
            else:
                out[path] = ("dir", 0, "")
    return out
