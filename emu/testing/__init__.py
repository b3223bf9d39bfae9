"""Test kit for suites that boot guests on ahci-emu: disks, machines, runs, results.

The pytest plugin (:mod:`emu.testing.plugin`, registered as ``ahci_emu``)
gives these to tests as fixtures; they work without pytest too::

    from emu.testing import Rig
    rig = Rig("/tmp/work")
    base = rig.image("base.vdi", "4M")
    rig.fill(base, 0, 64, 1)                      # generation 1 on LBA 0..63
    top = rig.diff(base)
    run = rig.run("gen", top, ops=["write:32:32:2", "check:0:32:1", "check:32:32:2"])
    assert run.passed, run
"""

from emu.testing.gen import (
    MAX_GENERATION,
    UNRECOGNISED,
    GenRange,
    classify,
    expected,
    lost_generations,
    marker,
    markers,
    read_generations,
    runs,
    write_generation,
)
from emu.testing.results import Check, GuestRun, gen_lines, parse_checks, parse_trace
from emu.testing.rig import Rig, Vm, cli_command, cli_env, qemu_command, qemu_path

__all__ = [
    "MAX_GENERATION",
    "UNRECOGNISED",
    "Check",
    "GenRange",
    "GuestRun",
    "Rig",
    "Vm",
    "classify",
    "cli_command",
    "cli_env",
    "expected",
    "gen_lines",
    "lost_generations",
    "marker",
    "markers",
    "parse_checks",
    "parse_trace",
    "qemu_command",
    "qemu_path",
    "read_generations",
    "runs",
    "write_generation",
]
