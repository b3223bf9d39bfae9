"""bench/engine_alone.py runs every workload to completion (no speed is checked)."""

import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))

from bench import engine_alone  # noqa: E402


def test_every_workload_completes_and_is_reported(capsys):
    assert engine_alone.main(["--count", "8", "--reps", "1"]) == 0
    out = capsys.readouterr().out
    for name in engine_alone.WORKLOADS:
        line = next(line for line in out.splitlines() if line.startswith(name))
        assert "us/command" in line and "Python" in line
