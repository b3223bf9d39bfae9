"""The report of a run: the machine line and one markdown table, as README shows them.

``python -m bench`` prints this report at the end of a run and ``--markdown FILE``
writes it, so a full run's report can be pasted into README as it is.
"""

from __future__ import annotations

import math

HEADER = ["workload", "ours", "QEMU", "ratio", "target", "met"]
LEGEND = (
    "ratio: per-op rows, ours' speed over QEMU's (higher is better); start-to-exit rows, "
    "ours' time over QEMU's (lower is better); chain rows, the per-read cost over depth 1; "
    "suite_n2, the serial time over the `-n 2` time. Per-op times are the guest's own "
    "(TSC around its command loop); `unstable`: the samples spread over half the median."
)


def _number(value: object) -> float | None:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return None
    return None if math.isnan(value) else float(value)


def cell(figure: dict | None, unit: str) -> str:
    """One machine's figure: per-op rows as time per command with the speed after it."""
    if figure is None:
        return "n/a"
    value = _number(figure.get("value"))
    per_op = _number(figure.get("per_op_us"))
    if value is None:
        text = "-"
    elif unit in ("ops/s", "MB/s") and per_op is not None:
        text = f"{per_op:.2f} us/op ({value:,.0f} {unit})"
    elif unit == "us/read":
        text = f"{value:.2f} us/read"
    elif unit == "ms":
        text = f"{value:.1f} ms"
    elif unit == "s":
        text = f"{value:.2f} s"
    else:
        text = f"{value:,.1f} {unit}"
    if figure.get("stable") is False:
        text += " unstable"
    return text


def table_rows(results: list[dict]) -> list[list[str]]:
    """The header and a row for every workload's result (a failed one says FAILED)."""
    rows = [HEADER]
    for r in results:
        if "error" in r:
            rows.append([r["name"], "FAILED", "", "", "", ""])
            continue
        ratio = "-" if r["ratio"] is None else f"{r['ratio']:.2f}x"
        target = r["target"]
        rows.append(
            [
                r["name"],
                cell(r["ours"], r["unit"]),
                cell(r["qemu"], r["unit"]),
                ratio,
                target["text"] if target else "",
                ("yes" if target["met"] else "NO") if target else "",
            ]
        )
    return rows


def render_markdown(rows: list[list[str]]) -> str:
    out = ["| " + " | ".join(rows[0]) + " |", "|" + "---|" * len(rows[0])]
    out += ["| " + " | ".join(row) + " |" for row in rows[1:]]
    return "\n".join(out)


def machine_line(info: dict, method: dict, mode: str, seconds: float) -> str:
    """Where, when and how the figures were measured, in one paragraph."""
    load_start, load_end = info["load_start"][0], info["load_end"][0]
    load_max = max(info.get("load_max", 0.0), load_start, load_end)
    qemu = f"QEMU {info['qemu']} (TCG)" if info.get("qemu") else "no QEMU"
    how = (
        "Full run of `python -m bench`"
        if mode == "full"
        else "Quick run of `python -m bench --quick` (a smoke run: too few repetitions to compare)"
    )
    return (
        f"{how} at {info['date']} on {info['cpu']}, "
        f"{info['cores']} cores, load average {load_start:.2f} at the start, "
        f"{load_max:.2f} at most and {load_end:.2f} at the end; {qemu}, Python {info['python']}, "
        f"Unicorn {info['unicorn']}, TSC {method['tsc_mhz']:.1f} MHz. Each figure is the "
        f"median of {method['reps']} runs (start to exit: {method['boot_reps']}; "
        f"Linux: {method['linux_reps']}), interleaved between the machines; "
        f"{seconds / 60:.1f} minutes in all."
    )


def render_report(info: dict, method: dict, mode: str, seconds: float, results: list) -> str:
    """The machine line, the table and its legend: the markdown README carries."""
    table = render_markdown(table_rows(results))
    return f"{machine_line(info, method, mode, seconds)}\n\n{table}\n\n{LEGEND}\n"
