"""The report `python -m bench` prints and `--markdown` writes, and README's copy of it.

No speed is asserted anywhere: these check the report's structure, and that README
carries a full run's report of every workload in that same shape.
"""

import re
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))

from bench.__main__ import ALL_WORKLOADS  # noqa: E402
from bench.machines import Run  # noqa: E402
from bench.report import HEADER, render_markdown, render_report  # noqa: E402
from bench.workloads import wall_times  # noqa: E402

INFO = {
    "date": "2026-12-03 13:05 UTC",
    "cpu": "AMD EPYC (family 23, model 49)",
    "cores": 2,
    "load_start": (1.5, 1.2, 1.0),
    "load_end": (3.25, 2.0, 1.1),
    "load_max": 4.75,
    "python": "3.11.7",
    "unicorn": "2.1.4",
    "qemu": "7.2.22",
}
METHOD = {"tsc_mhz": 2245.8, "reps": 5, "boot_reps": 10, "linux_reps": 3}


def per_op(per_op_us: float, stable: bool = True) -> dict:
    return {"value": 1e6 / per_op_us, "per_op_us": per_op_us, "stable": stable}


RESULTS = [
    {
        "name": "read_4k_qd1@bench",
        "unit": "ops/s",
        "ours": per_op(17.6),
        "qemu": per_op(18.66, stable=False),
        "ratio": 18.66 / 17.6,
        "target": {"text": "ours >= 8x QEMU ops/s", "met": False},
    },
    {
        "name": "chain_d64",
        "unit": "us/read",
        "ours": {"value": 17.1, "per_op_us": 17.1, "stable": True},
        "qemu": None,
        "ratio": 1.01,
        "target": {"text": "depth 64 <= 1.05x depth 1 per read", "met": True},
    },
    {"name": "boot_hello", "unit": "ms", "ours": {"value": 228.7}, "qemu": {"value": 94.1},
     "ratio": 2.43, "target": None},
    {"name": "linux_boot", "error": "qemu: Linux boot failed"},
]  # fmt: skip


def test_report_has_the_machine_line_and_one_row_a_workload():
    report = render_report(INFO, METHOD, "full", 425.0, RESULTS)
    line, table, legend = report.strip().split("\n\n")
    for fact in (
        "Full run of `python -m bench` at 2026-12-03 13:05 UTC",
        "AMD EPYC (family 23, model 49), 2 cores",
        "load average 1.50 at the start, 4.75 at most and 3.25 at the end",
        "QEMU 7.2.22 (TCG)",
        "median of 5 runs (start to exit: 10; Linux: 3)",
        "7.1 minutes in all",
    ):
        assert fact in line, fact
    rows = table.splitlines()
    assert rows[0] == "| " + " | ".join(HEADER) + " |"
    assert rows[2] == (
        "| read_4k_qd1@bench | 17.60 us/op (56,818 ops/s) | 18.66 us/op (53,591 ops/s) "
        "unstable | 1.06x | ours >= 8x QEMU ops/s | NO |"
    )
    assert (
        rows[3]
        == "| chain_d64 | 17.10 us/read | n/a | 1.01x | depth 64 <= 1.05x depth 1 per read | yes |"
    )
    assert rows[4] == "| boot_hello | 228.7 ms | 94.1 ms | 2.43x |  |  |"
    assert rows[5] == "| linux_boot | FAILED |  |  |  |  |"
    assert legend.startswith("ratio: ")


def test_quick_report_says_so():
    line = render_report(INFO, METHOD, "quick", 60.0, RESULTS).splitlines()[0]
    assert line.startswith("Quick run of `python -m bench --quick` (a smoke run")


def test_wall_times_interleave_the_machines_and_take_medians():
    order = []

    class Fake:
        def __init__(self, name, seconds):
            self.name, self.seconds = name, iter(seconds)

    def run_checked(machine):
        order.append(machine.name)
        return Run(next(machine.seconds), 0, "", "")

    machines = [Fake("ours", [0.3, 0.1, 0.2]), Fake("qemu", [1.0, 3.0, 2.0])]
    figures = wall_times(machines, 3, run_checked, "ms")
    assert order == ["ours", "qemu"] * 3
    assert round(figures["ours"]["value"], 6) == 200.0 and figures["ours"]["best_ms"] == 100.0
    assert figures["qemu"]["samples_s"] == [1.0, 3.0, 2.0]
    assert figures["qemu"]["stable"] is False  # (3 - 1) / 2 spreads over half the median


def test_readme_carries_a_full_runs_report_of_every_workload():
    readme = (ROOT / "README.md").read_text()
    section = readme.split("\n## Benchmarks\n", 1)[1].split("\n## ", 1)[0]
    assert re.search(
        r"^Full run of `python -m bench` at \d{4}-\d\d-\d\d \d\d:\d\d UTC on ", section, re.M
    )
    header = render_markdown([HEADER])
    assert header in section
    table = section.split(header, 1)[1].split("\n\n", 1)[0]
    names = [row.split(" | ")[0].lstrip("| ") for row in table.strip().splitlines()]
    assert names == list(ALL_WORKLOADS)
