"""The Linux workload of `python -m bench`: listed, left out of --quick, and run once."""

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from emu.testing.linux_plugin import require_material

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))


def test_listed_and_not_part_of_quick_runs():
    from bench.__main__ import selected_groups

    assert "linux_boot" in [g.name for g in selected_groups([])]
    assert "linux_boot" not in [g.name for g in selected_groups([], quick=True)]
    assert [g.name for g in selected_groups(["linux*"], quick=True)] == ["linux_boot"]


@pytest.mark.timeout(600)
def test_one_boot_on_each_machine(tmp_path):
    from test_bench_smoke import require_qemu

    require_qemu()
    require_material()
    out = tmp_path / "linux.json"
    paths = [str(ROOT), os.environ.get("PYTHONPATH")]
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, paths))}
    proc = subprocess.run(
        [sys.executable, "-m", "bench", "--only", "linux_boot", "--reps", "1", "--json", str(out),
         "--workdir", str(tmp_path / "work")],
        cwd=ROOT, env=env, capture_output=True, text=True, timeout=590, check=False,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stdout + proc.stderr
    (result,) = json.loads(out.read_text())["workloads"]
    assert result["name"] == "linux_boot"
    assert result["qemu"]["value"] > 0 and len(result["qemu"]["samples_s"]) == 1
    assert result["ours"]["value"] > 0 and result["ratio"] > 0
    assert isinstance(result["target"]["met"], bool)
