"""Benchmark runner: ahci-emu side by side with QEMU q35 on the same guest and disk.

    python -m bench                     every workload, Linux boot included (5-10 min)
    python -m bench --markdown FILE     ... and write the report to FILE for README
    python -m bench --reps 3            fewer repetitions of every figure: faster
    python -m bench --quick             a smoke run (about a minute, no Linux boot)
    python -m bench --only 'read_4k_qd1@*' --only 'chain*'
    python -m bench --only '*@bench_msi'
    python -m bench --json out.json     (default: bench/results/latest.json)
    python -m bench --list              the workload names

Prints the report (bench/report.py: the machine line and one markdown table of
ours, QEMU, ratio and target) and writes every sample as JSON with the machine
it ran on; progress goes to stderr. The exit status is 0 whatever the timings
say (targets are reported, not enforced: noise must not fail CI); it is 1 only
when a run itself failed (a guest reported errors, a process crashed or timed out).
"""

from __future__ import annotations

import argparse
import datetime
import fnmatch
import json
import math
import sys
import tempfile
import time
from pathlib import Path

from bench.clock import tsc_hz
from bench.linux import LINUX_GROUP
from bench.linux import REPS as LINUX_REPS
from bench.machines import Ours, RunFailed, find_qemu, load_average, machine_info
from bench.report import render_report
from bench.workloads import GROUPS, UNSTABLE_SPREAD, WORKLOADS, Context, Plan, Result

# Linux boots take tens of seconds: in full runs and --only, never in --quick.
ALL_GROUPS = (*GROUPS, LINUX_GROUP)
ALL_WORKLOADS = (*WORKLOADS, *LINUX_GROUP.names)

DEFAULT_JSON = Path(__file__).resolve().parent / "results" / "latest.json"


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="python -m bench",
        description="Benchmarks of ahci-emu side by side with QEMU q35 (TCG).",
    )
    parser.add_argument(
        "--quick",
        action="store_true",
        help="fewer counts and repetitions: a smoke run in under a minute",
    )
    parser.add_argument(
        "--only",
        action="append",
        default=[],
        metavar="NAME",
        help="run only this workload (a name or a glob, e.g. 'chain*'; "
        "repeatable); workloads measured together run together",
    )
    parser.add_argument(
        "--json",
        type=Path,
        default=DEFAULT_JSON,
        metavar="PATH",
        help=f"where to write the results (default: {DEFAULT_JSON})",
    )
    parser.add_argument(
        "--reps",
        type=int,
        metavar="N",
        help="repetitions of every figure, per-op runs and boots (default: 5 and 10, "
        "Linux at most 3; quick: 2 and 3): fewer is faster, more is steadier",
    )
    parser.add_argument(
        "--qemu", metavar="PATH", help="the qemu-system-x86_64 to compare with (default: from PATH)"
    )
    parser.add_argument("--no-qemu", action="store_true", help="measure ours only")
    parser.add_argument(
        "--workdir",
        type=Path,
        metavar="DIR",
        help="keep the disk images here (default: a temporary folder)",
    )
    parser.add_argument(
        "--markdown",
        type=Path,
        metavar="FILE",
        help="also write the report (machine line, table, legend) to FILE, as README shows it",
    )
    parser.add_argument("--list", action="store_true", help="list the workloads and exit")
    args = parser.parse_args(argv)
    if args.reps is not None and args.reps < 1:
        parser.error("--reps must be at least 1")
    for pattern in args.only:
        if not any(fnmatch.fnmatchcase(name, pattern) for name in ALL_WORKLOADS) and not any(
            g.name == pattern for g in ALL_GROUPS
        ):
            parser.error(f"--only {pattern}: no such workload (see --list)")
    return args


def selected_groups(only: list[str], quick: bool = False):
    if not only:
        return list(GROUPS) if quick else list(ALL_GROUPS)
    return [
        g
        for g in ALL_GROUPS
        if any(
            g.name == pattern or any(fnmatch.fnmatchcase(n, pattern) for n in g.names)
            for pattern in only
        )
    ]


# ---- running --------------------------------------------------------------------------


def run(args: argparse.Namespace) -> int:
    plan = Plan.make(args.quick, args.reps)
    ours = Ours()
    qemu = None if args.no_qemu else find_qemu(args.qemu)
    if qemu is None and not args.no_qemu:
        print("bench: qemu-system-x86_64 not found: measuring ours only", file=sys.stderr)
    info = machine_info(ours, qemu)
    print(
        f"machine: {info['cpu']}, {info['cores']} cores, load average "
        f"{info['load_start'][0]:.2f}; Python {info['python']}, Unicorn {info['unicorn']}, "
        f"QEMU {info['qemu'] or 'absent'}",
        file=sys.stderr,
    )
    print(
        f"mode: {'quick' if plan.quick else 'full'}; ours: {info['ours_command']}", file=sys.stderr
    )
    results: list[dict] = []
    failed = False
    start = time.perf_counter()
    with tempfile.TemporaryDirectory(prefix="ahci-bench-") as tmp:
        workdir = args.workdir or Path(tmp)
        workdir.mkdir(parents=True, exist_ok=True)
        ctx = Context(plan, workdir, ours, qemu)
        loads = [info["load_start"][0]]  # the 1-minute load average after every group
        for group in selected_groups(args.only, plan.quick):
            t0 = time.perf_counter()
            print(f"  {group.name} ...", end="", flush=True, file=sys.stderr)
            try:
                group_results: list[Result] = group.run(ctx)
            except Exception as exc:  # one broken workload must not lose the others' figures
                failed = True
                what = str(exc) if isinstance(exc, (RunFailed, OSError)) else repr(exc)
                print(f" FAILED\nbench: {group.name}: {what}", file=sys.stderr)
                results += [{"name": n, "error": what} for n in group.names]
            else:
                print(f" {time.perf_counter() - t0:.1f} s", file=sys.stderr)
                results += [r.as_dict() for r in group_results]
            loads.append(load_average()[0])
    elapsed = time.perf_counter() - start
    info["load_end"] = load_average()
    info["load_max"] = max(loads)
    method = {
        "per_op": "median over reps of the guest's own timing of its command loop "
        "(host TSC ticks read by the guest before the first and after the last "
        "command), repetitions interleaved between machines; 'unstable' when "
        f"(max - min) / median > {UNSTABLE_SPREAD}",
        "whole_run": "median over boot_reps of process start to exit, wall clock",
        "tsc_mhz": tsc_hz() / 1e6,
        "reps": plan.reps,
        "boot_reps": plan.boot_reps,
        "linux_reps": min(plan.boot_reps, LINUX_REPS),
        "counts": plan.counts,
    }
    mode = "quick" if plan.quick else "full"
    report = render_report(info, method, mode, elapsed, results)
    print()
    print(report)
    targets = [r["target"] for r in results if r.get("target")]
    met = sum(t["met"] for t in targets)
    print(
        f"targets met: {met}/{len(targets)}; {elapsed:.1f} s in all"
        + ("; timings are reported only, never fail the run" if met < len(targets) else "")
    )
    document = {
        "generated": datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds"),
        "mode": mode,
        "seconds": elapsed,
        "machine": info,
        "method": method,
        "workloads": results,
        "report_markdown": report,
    }
    args.json.parent.mkdir(parents=True, exist_ok=True)
    args.json.write_text(json.dumps(_clean(document), indent=2, allow_nan=False) + "\n")
    print(f"results: {args.json}")
    if args.markdown is not None:
        args.markdown.parent.mkdir(parents=True, exist_ok=True)
        args.markdown.write_text(report)
        print(f"report: {args.markdown}")
    return 1 if failed else 0


def _clean(obj: object) -> object:
    if isinstance(obj, float) and not math.isfinite(obj):
        return None
    if isinstance(obj, dict):
        return {k: _clean(v) for k, v in obj.items()}
    if isinstance(obj, list):
        return [_clean(v) for v in obj]
    return obj


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    if args.list:
        for group in ALL_GROUPS:
            print(
                f"{group.name}: {', '.join(group.names)}"
                + ("" if group.needs_qemu else " (ours only)")
            )
        return 0
    return run(args)


if __name__ == "__main__":
    sys.exit(main())
