"""Smoke test of the benchmark runner: `python -m bench --quick` end to end.

Checks that every workload ran and produced a positive figure for ours, and
for QEMU wherever QEMU takes part, plus the machine description. Timings and
targets are not checked (noise must not fail the suite). QEMU missing: skipped
locally, a failure under CI=true, as the oracle tests do.
"""

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
QEMU = "qemu-system-x86_64"


def require_qemu() -> None:
    if shutil.which(QEMU) is None:
        if os.environ.get("CI") == "true":
            pytest.fail(f"{QEMU} is not installed, and CI must run the benchmarks against it")
        pytest.skip(f"{QEMU} is not installed")


def positive(figure) -> bool:
    value = figure.get("value") if isinstance(figure, dict) else None
    return isinstance(value, (int, float)) and value > 0


@pytest.mark.timeout(240)
def test_quick_run_reports_every_workload(tmp_path):
    require_qemu()
    sys.path.insert(0, str(ROOT))
    from bench.workloads import BENCH_GUESTS, GROUPS, WORKLOADS

    out = tmp_path / "latest.json"
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(ROOT), env.get("PYTHONPATH")]))
    proc = subprocess.run(
        [
            sys.executable,
            "-m",
            "bench",
            "--quick",
            "--json",
            str(out),
            "--markdown",
            str(tmp_path / "report.md"),
            "--workdir",
            str(tmp_path / "work"),
        ],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=230,
        check=False,
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr
    doc = json.loads(out.read_text())
    assert doc["mode"] == "quick"
    machine = doc["machine"]
    assert machine["cpu"] and machine["cores"] >= 1
    assert machine["python"] and machine["unicorn"] and machine["qemu"]

    results = {r["name"]: r for r in doc["workloads"]}
    assert sorted(results) == sorted(WORKLOADS)
    with_qemu = {n for g in GROUPS if g.needs_qemu for n in g.names}
    for name, result in results.items():
        assert "error" not in result, result
        assert positive(result["ours"]), (name, result["ours"])
        if name in with_qemu:
            assert positive(result["qemu"]), (name, result["qemu"])
            assert result["ratio"] is not None and result["ratio"] > 0, (name, result)
        else:
            assert result["qemu"] is None
    for name in ("read_4k_qd1", "ncq_4k_qd32", "seq_read_128k"):
        for guest_name in BENCH_GUESTS:
            assert isinstance(results[f"{name}@{guest_name}"]["target"]["met"], bool), name
    for name in ("chain_d64", "boot_hello"):
        assert isinstance(results[name]["target"]["met"], bool), name
    # Per-op figures are the guest's own timing: a positive median, never a negative cost.
    for name, result in results.items():
        if "per_op_us" in (result["ours"] or {}):
            assert result["ours"]["per_op_us"] > 0, name
            assert isinstance(result["ours"]["stable"], bool), name
    # The report (machine line, one table) is printed, in the JSON and in --markdown's file.
    report = (tmp_path / "report.md").read_text()
    assert report in proc.stdout and doc["report_markdown"] == report
    assert report.startswith("Quick run of `python -m bench --quick` ")
    assert f"{machine['cores']} cores, load average " in report.splitlines()[0]
    for name in WORKLOADS:
        assert f"\n| {name} | " in report


def test_guest_failure_is_a_failed_run(tmp_path):
    """A guest that reports errors makes the runner's check fail (exit 1), never a timing."""
    sys.path.insert(0, str(ROOT))
    from bench.machines import Ours, RunFailed, guest
    from bench.workloads import check_bench

    ours = Ours()
    disk = tmp_path / "small.img"
    disk.write_bytes(bytes(1 << 20))
    # A region past the end of the 1 MiB disk: the guest refuses it (exit 2).
    run = ours.run(guest("bench"), "count=4 lba=4096", disk)
    assert run.exit_code == 2
    with pytest.raises(RunFailed):
        check_bench(run, ours, 4)
    run = ours.run(guest("bench"), "count=4 op=write", disk)
    assert check_bench(run, ours, 4) > 0  # the guest's timing of its 4 commands


def test_a_crashing_workload_is_reported_and_the_others_still_run(tmp_path, monkeypatch, capsys):
    """A workload that raises (any exception) is one FAILED row and exit status 1; the
    workloads after it still run and their figures are in the JSON."""
    sys.path.insert(0, str(ROOT))
    import bench.__main__ as runner
    from bench.workloads import Group, Result

    def broken(_ctx):
        raise ImportError("cannot import name 'x'")

    def fine(_ctx):
        return [Result("fine", "a workload that works", "ms", {"value": 1.0}, None)]

    groups = [Group("broken", ("broken",), broken, False), Group("fine", ("fine",), fine, False)]
    monkeypatch.setattr(runner, "selected_groups", lambda _only, _quick=False: groups)
    out = tmp_path / "results.json"
    status = runner.main(["--quick", "--no-qemu", "--json", str(out)])
    assert status == 1
    doc = json.loads(out.read_text())
    rows = {r["name"]: r for r in doc["workloads"]}
    assert "ImportError" in rows["broken"]["error"]
    assert rows["fine"]["ours"] == {"value": 1.0}
    assert "broken" in capsys.readouterr().out
