"""Run one guest under QEMU q35 and under ahci-emu, and compare what each printed.

QEMU is the reference machine (docs/machine.md, the machine contract). Its
isa-debug-exit makes it exit with (N << 1) | 1 for a guest's N; we convert.
Lines may differ only where tests/oracle/differences.toml says so, with a reason.
"""

import os
import re
import shutil
import subprocess
import sys
import tomllib
from dataclasses import dataclass
from pathlib import Path

import pytest

from emu.testing.rig import qemu_command as rig_qemu_command

ORACLE_DIR = Path(__file__).resolve().parent
ROOT = ORACLE_DIR.parent.parent
GUESTS = ROOT / "guest_images"
QEMU = "qemu-system-x86_64"


@dataclass
class Run:
    transcript: str
    exit_code: int


def require_qemu() -> str:
    """QEMU's path; skip when it is missing, except under CI, where that is a failure."""
    path = shutil.which(QEMU)
    if path is None:
        if os.environ.get("CI") == "true":
            pytest.fail(f"{QEMU} is not installed, and CI must run the oracle")
        pytest.skip(f"{QEMU} is not installed")
    return path


def qemu_command(guest: Path, append: str = "", disks: tuple[Path, ...] = ()) -> list[str]:
    return rig_qemu_command(guest, append, list(enumerate(disks)), require_qemu())


def run_qemu(
    guest: Path, append: str = "", disks: tuple[Path, ...] = (), timeout: float = 60
) -> Run:
    proc = subprocess.run(
        qemu_command(guest, append, disks), capture_output=True, timeout=timeout, check=False
    )
    status = proc.returncode
    if status & 1 == 0:
        raise AssertionError(
            f"QEMU ended without the guest's debug exit (status {status}): "
            f"{proc.stderr.decode(errors='replace')}"
        )
    return Run(proc.stdout.decode(errors="replace"), status >> 1)


def run_ours(
    guest: Path, append: str = "", disks: tuple[Path, ...] = (), timeout: float = 60
) -> Run:
    cmd = [sys.executable, "-m", "emu.cli", "run", str(guest), "--timeout", str(timeout)]
    if append:
        cmd += ["--append", append]
    for disk in disks:
        cmd += ["--disk", str(disk)]
    proc = subprocess.run(cmd, capture_output=True, timeout=timeout + 10, check=False, cwd=ROOT)
    return Run(proc.stdout.decode(errors="replace"), proc.returncode)


def load_differences(path: Path = ORACLE_DIR / "differences.toml") -> list[dict]:
    entries = tomllib.loads(path.read_text()).get("difference", [])
    for entry in entries:
        missing = {"guests", "ours", "qemu", "reason"} - entry.keys()
        if missing:
            raise AssertionError(f"differences.toml entry {entry} lacks {sorted(missing)}")
    return entries


def _exit_code_counts_failures(run: Run) -> bool:
    """A test guest exits with its number of failed checks (capped at 100). Exit codes that
    differ only because each is its own ``not ok`` count are explained by those lines,
    which are compared one by one."""
    failed = sum(line.startswith("not ok ") for line in run.transcript.splitlines())
    return run.exit_code == min(failed, 100)


def unexplained(guest: str, ours: Run, theirs: Run, differences: list[dict]) -> list[str]:
    """Every way the two runs differ that differences.toml does not allow."""
    allowed = [d for d in differences if guest in d["guests"] or "*" in d["guests"]]
    problems = []
    if ours.exit_code != theirs.exit_code and not (
        _exit_code_counts_failures(ours) and _exit_code_counts_failures(theirs)
    ):
        problems.append(f"exit code: ours {ours.exit_code}, QEMU {theirs.exit_code}")
    our_lines, their_lines = ours.transcript.splitlines(), theirs.transcript.splitlines()
    if len(our_lines) != len(their_lines):
        problems.append(f"line count: ours {len(our_lines)}, QEMU {len(their_lines)}")
    for number, (mine, theirs_line) in enumerate(zip(our_lines, their_lines, strict=False), 1):
        if mine == theirs_line:
            continue
        if not any(
            re.fullmatch(d["ours"], mine) and re.fullmatch(d["qemu"], theirs_line) for d in allowed
        ):
            problems.append(f"line {number}: ours {mine!r}, QEMU {theirs_line!r}")
    return problems
