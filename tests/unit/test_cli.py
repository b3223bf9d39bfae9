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


def test_the_quick_exit_still_runs_atexit_handlers_and_flushes_the_output(make_guest):
    code = (
        "import atexit, sys; from emu.cli import main; "
        "atexit.register(lambda: print('atexit ran', end='')); "
        f"sys.argv = ['ahci-emu', 'run', {make_guest(putc('x') + exit_with(9))!r}]; "
        "sys.exit(main())"
    )
    proc = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT, check=False
    )
    assert (proc.returncode, proc.stdout, proc.stderr) == (9, "xatexit ran", "")


def test_a_profiled_run_ends_normally_so_the_profile_is_written(make_guest, tmp_path):
    profile = tmp_path / "run.prof"
    guest = make_guest(putc("p") + exit_with(5))
    command = ["-m", "cProfile", "-o", str(profile), "-m", "emu.cli", "run", guest]
    proc = subprocess.run(
        [sys.executable, *command], capture_output=True, text=True, cwd=ROOT, check=False
    )
    assert (proc.stdout, proc.stderr) == ("p", "")  # (cProfile itself drops the status)
    assert profile.stat().st_size > 0


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
        (("run", "hello", "--serial", "/nonexistent/dir/x"), "cannot write"),
    ],
)
def test_bad_input_is_one_line_and_nonzero(args, fragment):
    proc = ahci_emu(*args)
    assert_one_line_error(proc, fragment)
    assert proc.returncode == 1


@pytest.mark.parametrize(
    ("args", "fragment"),
    [
        *(
            (("run", "hello", f"--timeout={value}"), "argument --timeout: must be more than 0")
            for value in ("inf", "-inf", "1e10", "nan", "0", "-1", "1000001")
        ),
        (("run", "hello", "--timeout", "soon"), "not a number of seconds: 'soon'"),
        (("run", "hello", "--bogus"), "unrecognized arguments: --bogus"),
        ((), "the following arguments are required: COMMAND"),
        (("vm", "snapshot", "x", "bogus"), "invalid choice: 'bogus'"),
        (("image", "create", "x.vdi"), "the following arguments are required: --size"),
    ],
)
def test_bad_options_exit_2_with_one_line(args, fragment):
    proc = ahci_emu(*args)
    assert_one_line_error(proc, fragment)
    assert proc.returncode == 2
    assert "--help" in proc.stderr  # it says where the usage is instead of printing it


def test_elf_without_multiboot_header_is_refused(make_guest):
    from elfmaker import make_elf

    assert_one_line_error(
        ahci_emu("run", make_guest(raw=make_elf(b"\x90", header=bytes(12)))), "no multiboot header"
    )


def test_help_explains_every_run_option():
    text = ahci_emu("run", "--help").stdout
    for option in ("--memory", "--append", "--timeout", "--serial", "--strict", "124"):
        assert option in text


@pytest.mark.parametrize(
    ("signum", "timeout"),
    [(signal.SIGINT, "60"), (signal.SIGTERM, "60"), (signal.SIGINT, "1000000")],
)
def test_a_signal_stops_a_spinning_guest_cleanly(make_guest, signum, timeout):
    # The guest prints one byte before it spins; unbuffered, so once the test has read
    # it the guest is surely running (however slow the start on a loaded machine).
    # The longest --timeout allowed must not keep the watchdog from waking up.
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "emu.cli",
            "run",
            make_guest(putc("r") + SPIN),
            f"--timeout={timeout}",
        ],
        cwd=ROOT,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env={**os.environ, "PYTHONUNBUFFERED": "1"},
    )
    assert proc.stdout.read(1) == "r"
    time.sleep(0.2)
    os.kill(proc.pid, signum)
    _, err = proc.communicate(timeout=30)
    assert proc.returncode == 130
    assert "Traceback" not in err
    assert err.strip() == "ahci-emu: error: interrupted"


def run_bytes(*args: bytes | str, **kwargs) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "emu.cli", *args],
        capture_output=True,
        timeout=60,
        cwd=ROOT,
        check=False,
        **kwargs,
    )


def test_command_line_bytes_that_are_not_utf8_reach_the_guest_as_given():
    proc = run_bytes("run", "hello", "--append", b"k=\xff\xfe")
    assert proc.returncode == 0, proc.stderr
    assert b"args: k=\xff\xfe\n" in proc.stdout


def test_a_guest_path_that_is_not_utf8_boots(tmp_path):
    guest = os.path.join(os.fsencode(tmp_path), b"guest\xff.elf")
    Path(os.fsdecode(guest)).write_bytes((ROOT / "guest_images" / "hello.elf").read_bytes())
    proc = run_bytes("run", guest)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.startswith(b"hello from an ahci-emu guest\n")


def test_a_closed_stdout_pipe_ends_quietly_with_141():
    proc = subprocess.Popen(
        [sys.executable, "-m", "emu.cli", "run", "hello"],
        cwd=ROOT,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    )
    proc.stdout.close()  # the reader is gone before the guest prints: as `| head -c0`
    _, err = proc.communicate(timeout=60)
    assert (proc.returncode, err) == (141, b"")


@pytest.mark.skipif(not os.path.exists("/dev/full"), reason="needs /dev/full")
def test_an_output_that_cannot_be_written_is_one_line_and_1():
    proc = ahci_emu("run", "hello", "--serial", "/dev/full")
    assert_one_line_error(proc, "/dev/full: cannot write: No space left on device")
    assert proc.returncode == 1
    with open("/dev/full", "w") as full:
        proc = subprocess.run(
            [sys.executable, "-m", "emu.cli", "run", "hello"],
            stdout=full,
            stderr=subprocess.PIPE,
            text=True,
            cwd=ROOT,
            timeout=60,
            check=False,
        )
    assert_one_line_error(proc, "stdout: cannot write: No space left on device")
    assert proc.returncode == 1


def _raise(exc: BaseException):
    def fail(*_args, **_kwargs):
        raise exc

    return fail


@pytest.mark.parametrize(
    ("exc", "status", "line"),
    [
        (RuntimeError("boom"), 70, "ahci-emu: error: internal error: RuntimeError: boom (at "),
        (ValueError("two\nlines"), 70, "ahci-emu: error: internal error: ValueError: two lines"),
        (PermissionError(13, "Permission denied", "/x"), 1, "ahci-emu: error: /x: Permission"),
        (MemoryError(), 1, "ahci-emu: error: out of memory"),
        (KeyboardInterrupt(), 130, "ahci-emu: error: interrupted"),
    ],
)
def test_any_exception_at_the_boundary_is_one_line(monkeypatch, capsys, exc, status, line):
    from emu import cli
    from emu.commands import run

    monkeypatch.setattr(run, "resolve_guest", _raise(exc))
    assert cli.main(["run", "hello"]) == status
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and err.startswith(line), err


def test_an_interrupt_python_wrapped_in_another_error_is_still_an_interrupt(monkeypatch, capsys):
    # Python 3.11 wraps what __set_name__ raises (a Ctrl-C landing while a class is made)
    # in a RuntimeError.
    from emu import cli
    from emu.commands import run

    try:
        raise RuntimeError("Error calling __set_name__") from KeyboardInterrupt()
    except RuntimeError as exc:
        wrapped = exc
    monkeypatch.setattr(run, "resolve_guest", _raise(wrapped))
    assert cli.main(["run", "hello"]) == 130
    assert capsys.readouterr().err == "ahci-emu: error: interrupted\n"


@pytest.mark.parametrize(
    ("prints", "status", "stderr"),
    [
        (True, 1, "ahci-emu: error: stdout: cannot write: Bad file descriptor\n"),
        (False, 7, ""),
    ],
)
def test_a_closed_stdout_fails_only_a_run_that_prints(make_guest, prints, status, stderr):
    guest = make_guest((putc("x") if prints else b"") + exit_with(7))
    proc = subprocess.run(
        ["sh", "-c", 'exec "$0" -m emu.cli run "$1" >&-', sys.executable, guest],
        capture_output=True,
        text=True,
        cwd=ROOT,
        timeout=60,
        check=False,
    )
    assert (proc.returncode, proc.stderr) == (status, stderr)
