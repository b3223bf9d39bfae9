"""Ctrl-C in the first moments of a run: the one line and status 130, never a traceback
through ahci-emu's code, never an interrupt lost. No timing is asserted: each moment
only has to end in one of the outcomes that are allowed.

Before ahci-emu's first line runs, the interpreter is Python's: a SIGINT there kills it
(no handler yet), or ends it with Python's own KeyboardInterrupt report, or, when Python
drops it (site's .pth files, its import machinery's callbacks), lets the run start; the
spinning guest then meets its --timeout. README's "Exit status" says so.
"""

import re
import signal
import subprocess
import sys
import time
from collections import Counter
from pathlib import Path

import pytest
from elfmaker import SPIN

import emu

ROOT = Path(__file__).resolve().parents[2]
EMU_DIR = Path(emu.__file__).resolve().parent
ENTRY_MODULES = {"__init__.py", "cli.py", "interrupt.py"}  # what runs before main()
FRAME = re.compile(r'File "([^"]+)", line \d+, in (\S+)')
# Seconds after the process starts: Python's start-up, our imports, the board, the run.
MOMENTS = (0.0, 0.002, 0.005, 0.01, 0.02, 0.05, 0.1, 0.15, 0.2, 0.3, 0.4, 0.6)
INTERRUPTED = "ahci-emu: error: interrupted\n"


def commands() -> list[list[str]]:
    found = [[sys.executable, "-m", "emu.cli"]]
    script = Path(sys.executable).parent / "ahci-emu"
    if script.exists():
        found.append([str(script)])
    return found


def ours(path: str) -> bool:
    return Path(path).is_absolute() and Path(path).resolve().is_relative_to(EMU_DIR)


def site_interrupted(err: str) -> bool:
    """CPython's own report of a SIGINT while it imported site (and the .pth files of
    the environment), before any of ahci-emu's code ran."""
    return err.startswith("Fatal Python error: init_import_site:") and (
        "\nKeyboardInterrupt\n" in err
    )


def classify(status: int, out: str, err: str) -> str:
    """The outcome of one interrupted run; fails the test on any outcome not allowed."""
    frames = FRAME.findall(err)
    for k, (path, function) in enumerate(frames):
        if ours(path):
            # Only the entry modules' own import lines run before main() takes SIGINT
            # over; what they import then is the import machinery and emu.interrupt.
            assert Path(path).name in ENTRY_MODULES and function == "<module>", err
            for inner, _ in frames[k + 1 :]:
                assert inner.startswith("<frozen ") or ours(inner) or "__editable__" in inner, err
    if status == 130:
        assert (out, err) == ("", INTERRUPTED)
        return "interrupted"
    if status in (-signal.SIGINT, 1):  # Python's own start-up
        assert out == ""
        assert err == "" or err.rstrip().endswith("KeyboardInterrupt") or site_interrupted(err), err
        return "before ahci-emu started"
    if status == 124:  # Python dropped it before ahci-emu's first line, and said so
        assert "KeyboardInterrupt" in err
        assert re.search(r"\nahci-emu: error: guest still running after its 5 s budget .*\n$", err)
        return "dropped by Python"
    pytest.fail(f"status {status}\nstdout: {out!r}\nstderr: {err}")


@pytest.mark.parametrize("command", commands(), ids=lambda c: Path(c[-1]).name)
def test_ctrl_c_at_any_early_moment_is_one_line_and_130(make_guest, command):
    guest = make_guest(SPIN)
    outcomes = Counter()
    for moment in MOMENTS:
        proc = subprocess.Popen(
            [*command, "run", guest, "--timeout=5"],
            cwd=ROOT,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        time.sleep(moment)
        proc.send_signal(signal.SIGINT)
        out, err = proc.communicate(timeout=120)
        outcomes[classify(proc.returncode, out, err)] += 1
    print(dict(outcomes))  # which moments landed where: shown with -s, never asserted
