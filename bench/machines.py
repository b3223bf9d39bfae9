"""The two machines a benchmark compares, each started as its user starts it.

- ours: ``ahci-emu run GUEST --append ARGS --disk DISK``. The console script
  beside the running interpreter when there is one (an installed package, as a
  user runs it), else ``python -m emu.cli`` from this checkout.
- QEMU: ``qemu-system-x86_64 -machine q35,accel=tcg`` with the disk on the q35
  AHCI controller, as the machine contract (docs/machine.md) says. Its isa-debug-exit
  makes it exit with (N << 1) | 1 for the guest's N.

A run is timed from just before the process is started to just after it has
exited (wall clock), so it includes everything a user waits for.
"""

from __future__ import annotations

import datetime
import os
import platform
import re
import shutil
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
GUESTS = REPO / "guest_images"
QEMU_BINARY = "qemu-system-x86_64"
RUN_TIMEOUT = 300.0  # seconds; a benchmark run taking longer has gone wrong


class RunFailed(Exception):
    """A benchmark run did not end as it must (exit status, guest summary, timeout)."""


@dataclass
class Run:
    seconds: float
    exit_code: int | None  # the guest's exit code; None if it never wrote the debug exit
    output: str  # the guest's transcript (stdout)
    errors: str  # stderr


def guest(name: str) -> Path:
    """The committed guest image ``name``."""
    path = GUESTS / f"{name}.elf"
    if not path.is_file():
        raise RunFailed(f"{path}: no such guest (build it with `make -C firmware`)")
    return path


class Machine:
    """Runs a guest to its exit and times it."""

    name = "machine"

    def command(self, guest: Path, append: str, disk: Path | None) -> list[str]:
        raise NotImplementedError

    def guest_exit(self, status: int) -> int | None:
        raise NotImplementedError

    env: dict[str, str] | None = None

    def run(self, guest: Path, append: str = "", disk: Path | None = None) -> Run:
        cmd = self.command(guest, append, disk)
        start = time.perf_counter()
        try:
            proc = subprocess.run(
                cmd,
                stdin=subprocess.DEVNULL,
                capture_output=True,
                timeout=RUN_TIMEOUT,
                env=self.env,
                check=False,
            )
        except subprocess.TimeoutExpired as exc:
            raise RunFailed(f"{self.name}: timed out after {RUN_TIMEOUT:g} s: {cmd}") from exc
        seconds = time.perf_counter() - start
        return Run(
            seconds,
            self.guest_exit(proc.returncode),
            proc.stdout.decode(errors="replace"),
            proc.stderr.decode(errors="replace"),
        )


def ours_command() -> tuple[list[str], dict[str, str] | None]:
    """How a user starts ahci-emu here, and the environment it needs."""
    script = Path(sys.executable).parent / "ahci-emu"
    if script.is_file() and os.access(script, os.X_OK):
        return [str(script)], None
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(REPO), env.get("PYTHONPATH")]))
    return [sys.executable, "-m", "emu.cli"], env


class Ours(Machine):
    name = "ours"

    def __init__(self) -> None:
        self.base, self.env = ours_command()

    def command(self, guest: Path, append: str, disk: Path | None) -> list[str]:
        cmd = [*self.base, "run", str(guest), "--timeout", str(RUN_TIMEOUT)]
        if append:
            cmd += ["--append", append]
        if disk is not None:
            cmd += ["--disk", str(disk)]
        return cmd

    def guest_exit(self, status: int) -> int | None:
        return status if 0 <= status < 124 else None  # 124.. are the emulator's own

    def describe(self) -> str:
        return " ".join(self.base)


class Qemu(Machine):
    name = "qemu"

    def __init__(self, binary: str) -> None:
        self.binary = binary

    def command(self, guest: Path, append: str, disk: Path | None) -> list[str]:
        from emu.testing.rig import qemu_command

        return qemu_command(guest, append, [] if disk is None else [(0, disk)], self.binary)

    def guest_exit(self, status: int) -> int | None:
        return status >> 1 if status > 0 and status & 1 else None

    def version(self) -> str:
        try:
            out = subprocess.run(
                [self.binary, "--version"], capture_output=True, text=True, timeout=30, check=False
            ).stdout
        except (OSError, subprocess.SubprocessError):
            return "unknown"
        match = re.search(r"version (\S+)", out)
        return match.group(1) if match else out.strip().splitlines()[0]


def find_qemu(path: str | None = None) -> Qemu | None:
    binary = path or shutil.which(QEMU_BINARY)
    return Qemu(binary) if binary else None


def cpu_model() -> str:
    """The CPU's model name from /proc/cpuinfo, with its family and model numbers (a
    virtual machine's name can be as short as "AMD EPYC")."""
    fields: dict[str, str] = {}
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                key, _, value = line.partition(":")
                if not key.strip():
                    break  # the first CPU's block ends at its blank line
                fields.setdefault(key.strip(), value.strip())
    except OSError:
        pass
    name = fields.get("model name") or platform.processor() or "unknown"
    if "cpu family" in fields and "model" in fields:
        name += f" (family {fields['cpu family']}, model {fields['model']})"
    return name


def load_average() -> tuple[float, float, float]:
    """The host's 1, 5 and 15 minute load averages (zeros where the OS has none)."""
    try:
        return os.getloadavg()
    except OSError:
        return (0.0, 0.0, 0.0)


def machine_info(ours: Ours, qemu: Qemu | None) -> dict[str, object]:
    from importlib import metadata

    try:
        unicorn = metadata.version("unicorn")
    except metadata.PackageNotFoundError:
        unicorn = "unknown"
    return {
        "date": datetime.datetime.now(datetime.UTC).strftime("%Y-%m-%d %H:%M UTC"),
        "cpu": cpu_model(),
        "cores": os.cpu_count(),
        "load_start": load_average(),
        "platform": platform.platform(),
        "python": platform.python_version(),
        "unicorn": unicorn,
        "qemu": qemu.version() if qemu else None,
        "ours_command": ours.describe(),
        "qemu_command": qemu.binary if qemu else None,
    }
