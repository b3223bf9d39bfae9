"""The `ahci-emu` command as a user meets it: exit statuses, messages, never a traceback."""

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from elfmaker import SPIN, exit_with, putc

ROOT = Path(__file__).resolve().parents[2]


def ahci_emu(*args: str, timeout: float = 30) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "emu.cli", *args],
        capture_output=True,
        text=True,
        timeout=timeout,
        cwd=ROOT,
        check=False,
    )


def assert_one_line_error(proc: subprocess.CompletedProcess, fragment: str) -> None:
    assert proc.returncode != 0
    assert "Traceback" not in proc.stderr
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1, proc.stderr
    assert lines[0].startswith("ahci-emu: error: ")
    assert fragment in lines[0]


def test_runs_a_guest_and_exits_with_its_code(make_guest):
    proc = ahci_emu("run", make_guest(putc("x") + exit_with(9)))
    assert (proc.returncode, proc.stdout) == (9, "x")


def test_default_run_is_demo_on_a_scratch_disk():
    proc = ahci_emu("run")
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.startswith("ahci-emu demo guest\n")
    assert "port 0 capacity: 131072 sectors (64 MiB)\n" in proc.stdout
    assert "ok 3 - read it back: same bytes\n" in proc.stdout


def test_builtin_guest_by_name_and_append_reach_the_guest():
    proc = ahci_emu("run", "hello", "--append", "k=v")
    assert proc.returncode == 0
    assert "args: k=v\n" in proc.stdout


def test_serial_output_goes_to_a_file(tmp_path):
    out = tmp_path / "serial.txt"
    proc = ahci_emu("run", "hello", "--serial", str(out))
    assert proc.returncode == 0
    assert proc.stdout == ""
    assert out.read_text().startswith("hello from an ahci-emu guest\n")


def test_timeout_exits_124_with_a_clear_message(make_guest):
    proc = ahci_emu("run", make_guest(SPIN), "--timeout", "0.5")
    assert proc.returncode == 124
    assert_one_line_error(proc, "0.5 s budget")


def test_strict_stray_access_exits_125(make_guest):
    proc = ahci_emu("run", make_guest(b"\xe4\x80" + exit_with(0)), "--strict")
    assert proc.returncode == 125
    assert_one_line_error(proc, "I/O port read of 0x0080")


@pytest.mark.parametrize(
    ("args", "fragment"),
    [
        (("run", "/nonexistent/guest.elf"), "no such guest file"),
        (("run", "nosuchguest"), "no such guest file or built-in guest"),
        (("run", "README.md"), "neither a multiboot ELF nor a Linux bzImage"),
        (("run", "hello", "--memory", "0"), "memory size"),
        (("run", "hello", "--timeout", "-1"), "--timeout must be positive"),
        (("run", "hello", "--serial", "/nonexistent/dir/x"), "cannot write"),
    ],
)
def test_bad_input_is_one_line_and_nonzero(args, fragment):
    assert_one_line_error(ahci_emu(*args), fragment)


def test_elf_without_multiboot_header_is_refused(make_guest):
    from elfmaker import make_elf

    assert_one_line_error(
        ahci_emu("run", make_guest(raw=make_elf(b"\x90", header=bytes(12)))), "no multiboot header"
    )


def test_help_explains_every_run_option():
    text = ahci_emu("run", "--help").stdout
    for option in ("--memory", "--append", "--timeout", "--serial", "--strict", "124"):
        assert option in text


def test_ctrl_c_stops_a_spinning_guest_cleanly(make_guest):
    # The guest prints one byte before it spins; unbuffered, so once the test has read
    # it the guest is surely running (however slow the start on a loaded machine).
    proc = subprocess.Popen(
        [sys.executable, "-m", "emu.cli", "run", make_guest(putc("r") + SPIN)],
        cwd=ROOT,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env={**os.environ, "PYTHONUNBUFFERED": "1"},
    )
    assert proc.stdout.read(1) == "r"
    time.sleep(0.2)
    os.kill(proc.pid, signal.SIGINT)
    _, err = proc.communicate(timeout=10)
    assert proc.returncode == 130
    assert "Traceback" not in err
    assert err.strip() == "ahci-emu: error: interrupted"
