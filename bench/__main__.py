"""Benchmark runner: ahci-emu side by side with QEMU q35 on the same guest and disk.

    python -m bench                     every workload, full counts (a few minutes)
    python -m bench --quick             fewer counts and repetitions (under a minute)
    python -m bench --only 'read_4k_qd1@*' --only 'chain*'
    python -m bench --only '*@bench_msi'
    python -m bench --json out.json     (default: bench/results/latest.json)
    python -m bench --list              the workload names

Prints a table (ours, QEMU, ratio, target) and writes the same as JSON with
the machine it ran on. The exit status is 0 whatever the timings say (targets
are reported, not enforced: noise must not fail CI); it is 1 only when a run
itself failed (a guest reported errors, a process crashed or timed out).
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
from bench.machines import Ours, RunFailed, find_qemu, machine_info
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
        help="repetitions per count / per boot (default: 5 and 10; quick: 2 and 3)",
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


# ---- formatting ---------------------------------------------------------------------


def fmt_value(value: object, unit: str) -> str:
    if not isinstance(value, (int, float)) or (isinstance(value, float) and math.isnan(value)):
        return "-"
    if unit == "ops/s":
        return f"{value:,.0f}"
    if unit in ("us/read",):
        return f"{value:.2f} us"
    if unit == "ms":
        return f"{value:.1f} ms"
    if unit == "s":
        return f"{value:.2f} s"
    return f"{value:,.1f}"


def cell(figure: dict | None, unit: str) -> str:
    if figure is None:
        return "n/a"
    text = fmt_value(figure.get("value"), unit)
    if "per_op_us" in figure and unit in ("ops/s", "MB/s"):
        text += f" ({figure['per_op_us']:.2f} us/op)"
    if figure.get("stable") is False:
        text += " unstable"
    return text


def table_rows(results: list[dict]) -> list[list[str]]:
    rows = [["workload", "unit", "ours", "QEMU", "ratio", "target", "met"]]
    for r in results:
        if "error" in r:
            rows.append([r["name"], "", "FAILED", "", "", "", ""])
            continue
        ratio = "-" if r["ratio"] is None else f"{r['ratio']:.2f}x"
        target = r["target"]
        rows.append(
            [
                r["name"],
                r["unit"],
                cell(r["ours"], r["unit"]),
                cell(r["qemu"], r["unit"]),
                ratio,
                target["text"] if target else "",
                ("yes" if target["met"] else "NO") if target else "",
            ]
        )
    return rows


def render_table(rows: list[list[str]]) -> str:
    widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]))]
    lines = []
    for n, row in enumerate(rows):
        lines.append("  ".join(c.ljust(w) for c, w in zip(row, widths, strict=True)).rstrip())
        if n == 0:
            lines.append("  ".join("-" * w for w in widths))
    return "\n".join(lines)


def render_markdown(rows: list[list[str]]) -> str:
    out = ["| " + " | ".join(rows[0]) + " |", "|" + "---|" * len(rows[0])]
    out += ["| " + " | ".join(row) + " |" for row in rows[1:]]
    return "\n".join(out)


# ---- running --------------------------------------------------------------------------


def run(args: argparse.Namespace) -> int:
    plan = Plan.make(args.quick, args.reps)
    ours = Ours()
    qemu = None if args.no_qemu else find_qemu(args.qemu)
    if qemu is None and not args.no_qemu:
        print("bench: qemu-system-x86_64 not found: measuring ours only", file=sys.stderr)
    info = machine_info(ours, qemu)
    print(
        f"machine: {info['cpu']}, {info['cores']} cores; Python {info['python']}, "
        f"Unicorn {info['unicorn']}, QEMU {info['qemu'] or 'absent'}"
    )
    print(f"mode: {'quick' if plan.quick else 'full'}; ours: {info['ours_command']}")
    results: list[dict] = []
    failed = False
    start = time.perf_counter()
    with tempfile.TemporaryDirectory(prefix="ahci-bench-") as tmp:
        workdir = args.workdir or Path(tmp)
        workdir.mkdir(parents=True, exist_ok=True)
        ctx = Context(plan, workdir, ours, qemu)
        for group in selected_groups(args.only, plan.quick):
            t0 = time.perf_counter()
            print(f"  {group.name} ...", end="", flush=True, file=sys.stderr)
            try:
                group_results: list[Result] = group.run(ctx)
            except (RunFailed, OSError) as exc:
                failed = True
                print(f" FAILED\nbench: {group.name}: {exc}", file=sys.stderr)
                results += [{"name": n, "error": str(exc)} for n in group.names]
                continue
            print(f" {time.perf_counter() - t0:.1f} s", file=sys.stderr)
            results += [r.as_dict() for r in group_results]
    elapsed = time.perf_counter() - start
    rows = table_rows(results)
    print()
    print(render_table(rows))
    print(
        "ratio: ops/s and MB/s rows: ours speed / QEMU speed (higher is better); ms rows: "
        "ours time / QEMU time (lower is better);\n       chain rows: per-read cost / depth 1; "
        "suite_n2: serial time / -n 2 time.\nfigures: medians of the repetitions; per-op "
        "times are the guest's own (TSC around its command loop); 'unstable': the "
        "samples spread too far"
    )
    targets = [r["target"] for r in results if r.get("target")]
    met = sum(t["met"] for t in targets)
    print(
        f"\ntargets met: {met}/{len(targets)}; {elapsed:.1f} s in all"
        + ("; timings are reported only, never fail the run" if met < len(targets) else "")
    )
    document = {
        "generated": datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds"),
        "mode": "quick" if plan.quick else "full",
        "seconds": elapsed,
        "machine": info,
        "method": {
            "per_op": "median over reps of the guest's own timing of its command loop "
            "(host TSC ticks read by the guest before the first and after the last "
            f"command, at {tsc_hz() / 1e6:.1f} MHz), repetitions interleaved between "
            f"machines; 'unstable' when (max - min) / median > {UNSTABLE_SPREAD}",
            "whole_run": "median over boot_reps of process start to exit, wall clock",
            "reps": plan.reps,
            "boot_reps": plan.boot_reps,
            "counts": plan.counts,
        },
        "workloads": results,
        "table_markdown": render_markdown(rows),
    }
    args.json.parent.mkdir(parents=True, exist_ok=True)
    args.json.write_text(json.dumps(_clean(document), indent=2, allow_nan=False) + "\n")
    print(f"results: {args.json}")
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
