"""The workloads, how each is measured, and the targets.

Method (the same for both machines):

- Per-operation cost: a bench guest runs a workload ``count`` times and
  reports ``tsc=``, the host time-stamp counter's advance over its command
  loop alone (bench/clock.py). So boot, set-up and exit are not in it, and a
  host busy before or after the loop does not move it. Each machine runs it
  ``reps`` times, repetitions interleaved between the machines (in rotated
  order, so no machine always runs first); the figure is the median per-op
  time, with the minimum and every sample kept in the JSON. A figure whose
  samples spread more than ``UNSTABLE_SPREAD`` (max - min over the median)
  is marked unstable: the host was too busy for it to mean much.
- Every bench guest (BENCH_GUESTS: the same workload through different
  driver styles) runs the per-operation workloads on both machines.
- Whole-run time (boot to exit): the median (and best) of several process
  runs of a small guest, wall clock.
- A test suite: a generated pytest file of N tests, each booting ``hello`` in
  the test process (``emu.cli.main(["run", "hello"])``), timed serially and with
  ``pytest -n 2``.

Every run is checked: exit status 0 and, for a bench guest, a summary line
with every command done, no errors and a positive ``tsc``. A run that fails
ends the workload with an error (the runner exits non-zero); timings never do.
"""

from __future__ import annotations

import math
import os
import random
import re
import shutil
import statistics
import subprocess
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from bench.clock import tsc_hz
from bench.machines import REPO, Machine, Ours, Qemu, Run, RunFailed, guest

DISK_SIZE = 64 << 20  # the data disk and the chains' virtual size
CHAIN_BLOCK = 1 << 20  # VDI block size
CHAIN_DATA_BLOCKS = 48  # blocks holding data in every chain (the rest read as zeros)
CHAIN_DEPTHS = (1, 8, 64)
SUMMARY = re.compile(
    r"^bench guest=(\S+) .*\bcount=(\d+) done=(\d+) errors=(\d+) tsc=(\d+)\s*$", re.M
)
# The bench guests, one per driver style (firmware/guests/bench*.c).
BENCH_GUESTS = ("bench", "bench_osdev", "bench_bios", "bench_msi")
UNSTABLE_SPREAD = 0.5


@dataclass(frozen=True)
class Plan:
    """How much to measure: repetitions and the command count of each workload."""

    quick: bool
    reps: int
    boot_reps: int
    suite_guests: int
    suite_reps: int
    counts: dict[str, int]

    @classmethod
    def make(cls, quick: bool, reps: int | None = None) -> Plan:
        if quick:
            counts = {
                "read_4k_qd1": 500,
                "ncq_4k_qd32": 1024,
                "seq_read_128k": 200,
                "write_4k_flush": 50,
                "chain": 500,
            }
            return cls(True, reps or 2, reps or 3, 20, 1, counts)
        # Sized so that a full run, Linux boots included, takes 5-10 minutes on 2 cores:
        # each guest-timed loop still lasts 0.1-1 s, far above the TSC's resolution.
        counts = {
            "read_4k_qd1": 10000,
            "ncq_4k_qd32": 16384,
            "seq_read_128k": 2500,
            "write_4k_flush": 250,
            "chain": 10000,
        }
        return cls(False, reps or 5, reps or 10, 50, 1, counts)


@dataclass
class Context:
    plan: Plan
    workdir: Path
    ours: Ours
    qemu: Qemu | None
    log: Callable[[str], None] = lambda _msg: None
    _data: Path | None = field(default=None, init=False)

    def data_disk(self, machine: Machine) -> Path:
        """This machine's own copy of the data disk (64 MiB of pseudo-random bytes)."""
        if self._data is None:
            self._data = self.workdir / "data.img"
            rng = random.Random(0xA1C1)
            with open(self._data, "wb") as f:
                for _ in range(DISK_SIZE >> 20):
                    f.write(rng.randbytes(1 << 20))
        copy = self.workdir / f"data-{machine.name}.img"
        if not copy.exists():
            shutil.copyfile(self._data, copy)
        return copy


# ---- one workload's result ------------------------------------------------------


@dataclass
class Target:
    text: str
    met: bool


@dataclass
class Result:
    name: str
    title: str
    unit: str  # of `ours` / `qemu` values
    ours: dict[str, object] | None
    qemu: dict[str, object] | None
    ratio: float | None = None
    ratio_kind: str | None = None
    target: Target | None = None
    note: str | None = None

    def as_dict(self) -> dict[str, object]:
        return {
            "name": self.name,
            "title": self.title,
            "unit": self.unit,
            "ours": self.ours,
            "qemu": self.qemu,
            "ratio": self.ratio,
            "ratio_kind": self.ratio_kind,
            "target": None
            if self.target is None
            else {"text": self.target.text, "met": self.target.met},
            "note": self.note,
        }


# ---- measuring --------------------------------------------------------------------


def check_bench(run: Run, machine: Machine, count: int) -> int:
    """The bench guest exited 0 after doing all ``count`` commands without an error;
    returns its ``tsc`` (counter ticks over the command loop)."""
    match = SUMMARY.search(run.output)
    if (
        run.exit_code != 0
        or match is None
        or match.group(2, 3, 4) != (str(count), str(count), "0")
        or (count and int(match.group(5)) <= 0)
    ):
        raise RunFailed(
            f"{machine.name}: bench count={count} failed (guest exit {run.exit_code}):\n"
            f"{run.output.strip()}\n{run.errors.strip()}".rstrip()
        )
    return int(match.group(5))


def check_exit0(run: Run, machine: Machine, what: str) -> None:
    if run.exit_code != 0:
        raise RunFailed(
            f"{machine.name}: {what} failed (guest exit {run.exit_code}):\n"
            f"{run.output.strip()}\n{run.errors.strip()}".rstrip()
        )


@dataclass
class Probe:
    """One machine running one bench guest's workload on one disk."""

    machine: Machine
    guest: str
    append: str
    disk: Path

    def per_op_us(self, count: int) -> float:
        """Microseconds per command, timed by the guest around its command loop."""
        run = self.machine.run(guest(self.guest), f"{self.append} count={count}", self.disk)
        return check_bench(run, self.machine, count) / tsc_hz() / count * 1e6


def figure(samples: list[float]) -> dict:
    """The median of ``samples`` (per-op microseconds) with its spread and stability."""
    median = statistics.median(samples)
    spread = (max(samples) - min(samples)) / median
    return {
        "per_op_us": median,
        "per_op_us_min": min(samples),
        "spread": spread,
        "stable": spread <= UNSTABLE_SPREAD,
        "samples_us": samples,
    }


def per_op(probes: dict[str, Probe], count: int, reps: int) -> dict[str, dict]:
    """Per-command cost of each probe (see the module doc), repetitions interleaved."""
    samples: dict[str, list[float]] = {key: [] for key in probes}
    keys = list(probes)
    for rep in range(reps):
        shift = rep % len(keys)  # rotate: no probe always runs first or last
        for key in keys[shift:] + keys[:shift]:
            samples[key].append(probes[key].per_op_us(count))
    return {key: {**figure(values), "count": count} for key, values in samples.items()}


def _speed(fig: dict, unit: str, bytes_per_op: int) -> dict:
    us = fig["per_op_us"]
    value = bytes_per_op / us if unit == "MB/s" else 1e6 / us  # bytes per us = MB/s
    return {"value": value, **fig}


def _ratio(a: float | None, b: float | None) -> float | None:
    if a is None or b is None or math.isnan(a) or math.isnan(b) or b <= 0:
        return None
    return a / b


# ---- the workloads ----------------------------------------------------------------


@dataclass(frozen=True)
class Workload:
    """A per-operation workload that every bench guest runs on both machines."""

    name: str
    title: str
    append: str
    unit: str
    bytes_per_op: int
    target: float | None  # ours / QEMU speed at least this
    guests: tuple[str, ...] = BENCH_GUESTS

    def run(self, ctx: Context, guest_name: str) -> list[Result]:
        probes = {"ours": Probe(ctx.ours, guest_name, self.append, ctx.data_disk(ctx.ours))}
        if ctx.qemu is not None:
            probes["qemu"] = Probe(ctx.qemu, guest_name, self.append, ctx.data_disk(ctx.qemu))
        figures = per_op(probes, ctx.plan.counts[self.name], ctx.plan.reps)
        ours = _speed(figures["ours"], self.unit, self.bytes_per_op)
        qemu = _speed(figures["qemu"], self.unit, self.bytes_per_op) if "qemu" in figures else None
        ratio = _ratio(ours["value"], qemu["value"] if qemu else None)
        target = None
        if self.target is not None:
            text = f"ours >= {self.target:g}x QEMU {self.unit}"
            target = Target(text, ratio is not None and ratio >= self.target)
        return [
            Result(
                f"{self.name}@{guest_name}",
                f"{self.title}, guest {guest_name}",
                self.unit,
                ours,
                qemu,
                ratio,
                f"speed: ours / QEMU {self.unit}",
                target,
                None if ctx.qemu else "QEMU not installed",
            )
        ]


PER_OP_WORKLOADS = (
    Workload(
        "read_4k_qd1",
        "4 KiB random read, QD1 (READ DMA EXT)",
        "op=read bs=4096 pattern=rand",
        "ops/s",
        4096,
        8,
    ),
    Workload(
        "ncq_4k_qd32",
        "4 KiB random read, QD32 (NCQ)",
        "op=ncq bs=4096 qd=32 pattern=rand",
        "ops/s",
        4096,
        2,
    ),
    Workload(
        "seq_read_128k",
        "128 KiB sequential read, QD1",
        "op=read bs=131072 pattern=seq",
        "MB/s",
        131072,
        4,
    ),
    Workload(
        "write_4k_flush",
        "4 KiB random write + FLUSH CACHE EXT",
        "op=write bs=4096 pattern=rand flush=1",
        "ops/s",
        4096,
        None,
        ("bench",),  # the other drivers do not flush
    ),
)


def build_chain(folder: Path, depth: int) -> Path:
    """base.vdi + (depth - 1) diffs in ``folder``; the leaf's path.

    The first CHAIN_DATA_BLOCKS blocks hold data, block b in layer b % depth
    (layer 0 is the base), so every chain serves the same share of reads from
    files (the rest from unallocated blocks, as zeros) and a deep chain serves
    them from all over its depth.
    """
    from emu.storage import ops
    from emu.storage.chain import open_chain

    folder.mkdir(parents=True, exist_ok=True)
    rng = random.Random(depth)
    registry: dict = {}  # uuid -> path: building need not search the folder for parents
    path = ops.create_image(str(folder / "base.vdi"), DISK_SIZE)
    for level in range(depth):
        if level:
            path = ops.create_diff(path, str(folder / f"diff{level:02d}.vdi"))
        with open_chain(path, registry=registry) as chain:
            registry[chain.images[0].uuid] = path
            blocks = [b for b in range(CHAIN_DATA_BLOCKS) if b % depth == level]
            for block in blocks:
                chain.writev(block * CHAIN_BLOCK, [memoryview(rng.randbytes(CHAIN_BLOCK))])
    return Path(path)


def chain(ctx: Context) -> list[Result]:
    append = "op=read bs=4096 pattern=rand"
    probes = {}
    for depth in CHAIN_DEPTHS:
        leaf = build_chain(ctx.workdir / f"chain{depth}", depth)
        probes[depth] = Probe(ctx.ours, "bench", append, leaf)
    figures = per_op(probes, ctx.plan.counts["chain"], ctx.plan.reps)
    base = figures[1]["per_op_us"]
    results = []
    for depth in CHAIN_DEPTHS:
        fig = figures[depth]
        ours = {"value": fig["per_op_us"], "ops_per_s": 1e6 / fig["per_op_us"], **fig}
        ratio = _ratio(fig["per_op_us"], base)
        target = None
        if depth == 64:
            target = Target(
                "depth 64 <= 1.05x depth 1 per read", ratio is not None and ratio <= 1.05
            )
        results.append(
            Result(
                f"chain_d{depth}",
                f"4 KiB random read, QD1, VDI chain of depth {depth}",
                "us/read",
                ours,
                None,
                ratio,
                "cost: depth N / depth 1 per read",
                target,
                "ours only (QEMU does not open VDI diff chains by UUID)",
            )
        )
    return results


def wall_times(
    machines: Sequence[Machine], reps: int, run_checked: Callable[[Machine], Run], unit: str
) -> dict[str, dict]:
    """Process start-to-exit time of each machine, ``reps`` runs each, interleaved:
    the median (``value``, in ``unit``: "ms" or "s"), the best, the spread and every
    sample. ``run_checked`` runs one machine once and checks how it ended."""
    samples: dict[str, list[float]] = {m.name: [] for m in machines}
    for _ in range(reps):
        for machine in machines:
            samples[machine.name].append(run_checked(machine).seconds)
    scale = {"ms": 1e3, "s": 1.0}[unit]
    figures = {}
    for key, values in samples.items():
        fig = figure([v * scale for v in values])
        figures[key] = {
            "value": fig["per_op_us"],  # (the median, in `unit`)
            f"best_{unit}": fig["per_op_us_min"],
            "spread": fig["spread"],
            "stable": fig["stable"],
            "samples_s": values,
        }
    return figures


def _boot(ctx: Context, name: str, guest_name: str, with_disk: bool, target: float | None):
    def run_checked(machine: Machine) -> Run:
        run = machine.run(guest(guest_name), "", ctx.data_disk(machine) if with_disk else None)
        check_exit0(run, machine, guest_name)
        return run

    machines: list[Machine] = [ctx.ours] + ([ctx.qemu] if ctx.qemu else [])
    figures = wall_times(machines, ctx.plan.boot_reps, run_checked, "ms")
    ours, qemu = figures["ours"], figures.get("qemu")
    ratio = _ratio(ours["value"], qemu["value"] if qemu else None)
    tgt = None
    if target is not None:
        tgt = Target(f"ours <= {target:g}x QEMU time", ratio is not None and ratio <= target)
    disk_note = " on a 64 MiB raw disk" if with_disk else ""
    return [
        Result(
            name,
            f"{guest_name}: process start to exit{disk_note}",
            "ms",
            ours,
            qemu,
            ratio,
            "time: ours / QEMU (lower is better)",
            tgt,
            None if ctx.qemu else "QEMU not installed",
        )
    ]


def boot_hello(ctx: Context) -> list[Result]:
    return _boot(ctx, "boot_hello", "hello", False, 0.6)


def boot_demo(ctx: Context) -> list[Result]:
    return _boot(ctx, "boot_demo", "demo", True, None)


SUITE_TEST = '''\
"""Generated by bench: {n} tests, each booting the hello guest in this process."""

import pytest

from emu.cli import main


@pytest.mark.parametrize("index", range({n}))
def test_hello(index, tmp_path):
    assert main(["run", "hello", "--serial", str(tmp_path / "com1.txt")]) == 0
'''


def suite(ctx: Context) -> list[Result]:
    n = ctx.plan.suite_guests
    folder = ctx.workdir / "suite"
    folder.mkdir(exist_ok=True)
    test = folder / "test_hello_suite.py"
    test.write_text(SUITE_TEST.format(n=n))
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(REPO), env.get("PYTHONPATH")]))
    env.pop("PYTEST_ADDOPTS", None)
    env.pop("PYTEST_XDIST_WORKER", None)
    base = [
        sys.executable,
        "-m",
        "pytest",
        "-q",
        "-p",
        "no:cacheprovider",
        "-o",
        "addopts=",
        str(test),
    ]
    variants = {"serial": base, "n2": [*base, "-n", "2"]}
    samples: dict[str, list[float]] = {key: [] for key in variants}
    for _ in range(ctx.plan.suite_reps):
        for key, cmd in variants.items():
            start = time.perf_counter()
            proc = subprocess.run(
                cmd,
                cwd=folder,
                env=env,
                capture_output=True,
                text=True,
                check=False,
                stdin=subprocess.DEVNULL,
            )
            seconds = time.perf_counter() - start
            if proc.returncode != 0 or f"{n} passed" not in proc.stdout:
                raise RunFailed(
                    f"suite ({key}) failed:\n{proc.stdout[-3000:]}{proc.stderr[-2000:]}"
                )
            samples[key].append(seconds)
    serial, parallel = min(samples["serial"]), min(samples["n2"])
    note = f"ours only; {n} tests, each `ahci-emu run hello` in-process (emu.cli.main)"
    return [
        Result(
            "suite_serial",
            f"{n}-guest pytest suite, serial",
            "s",
            {
                "value": serial,
                "guests": n,
                "per_guest_ms": serial / n * 1e3,
                "samples_s": samples["serial"],
            },
            None,
            None,
            None,
            None,
            note,
        ),
        Result(
            "suite_n2",
            f"{n}-guest pytest suite, pytest -n 2",
            "s",
            {
                "value": parallel,
                "guests": n,
                "per_guest_ms": parallel / n * 1e3,
                "samples_s": samples["n2"],
            },
            None,
            _ratio(serial, parallel),
            "speed-up: serial time / -n 2 time",
            None,
            note,
        ),
    ]


@dataclass(frozen=True)
class Group:
    """A measurement producing one or more workloads (measured together, interleaved)."""

    name: str
    names: tuple[str, ...]
    run: Callable[[Context], list[Result]]
    needs_qemu: bool


def _per_op_group(workload: Workload, guest_name: str) -> Group:
    name = f"{workload.name}@{guest_name}"
    return Group(name, (name,), lambda ctx: workload.run(ctx, guest_name), True)


GROUPS: Sequence[Group] = (
    *(_per_op_group(w, g) for w in PER_OP_WORKLOADS for g in w.guests),
    Group("chain", tuple(f"chain_d{d}" for d in CHAIN_DEPTHS), chain, False),
    Group("boot_hello", ("boot_hello",), boot_hello, True),
    Group("boot_demo", ("boot_demo",), boot_demo, True),
    Group("suite", ("suite_serial", "suite_n2"), suite, False),
)

WORKLOADS: tuple[str, ...] = tuple(n for g in GROUPS for n in g.names)
