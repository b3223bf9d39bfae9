"""The `ahci-emu` command's entry point: the console script and ``python -m emu.cli``.

It imports nothing that is not loaded already, save the tiny emu.interrupt, and
installs that SIGINT handler as the first thing it does, so that a Ctrl-C at any moment
after Python starts running ahci-emu's code, even while the command's modules are
still loading, ends with the one line "ahci-emu: error: interrupted" and status 130.
The command itself (parser, dispatch, error lines) is emu.commands.dispatch.
Once the command has unwound, the process ends at once with its status (atexit
handlers run, stdout and stderr are flushed), without the interpreter's teardown,
unless a profiler or tracer is active or a non-daemon thread still runs.
"""

import _signal  # what `signal` wraps: loaded with the interpreter, so importing it is free
import contextlib
import os
import sys

from emu import interrupt

COMMANDS = ("run", "image", "vm", "linux")
INTERRUPTED = 130  # 128 + SIGINT, as a shell reports a command Ctrl-C stopped


def main(argv: list[str] | None = None) -> int:
    """Run the command ``argv`` and return its exit status.

    Without ``argv`` this is the process's entry point: it runs this process's
    arguments, takes over SIGINT first (see emu.interrupt), owns stdout, and
    ignores Ctrl-C once the outcome is known, while the process exits.
    """
    entry = argv is None
    status: int | None = None  # None: interrupted
    try:
        try:
            if entry:
                _take_interrupts()
            from emu.commands.dispatch import run_command

            status = run_command(sys.argv[1:] if entry else argv, owns_stdout=entry)
        except KeyboardInterrupt:
            status = None
        if entry:
            _ignore_interrupts()
    except KeyboardInterrupt:  # a second Ctrl-C while the first was being handled
        status = None
        if entry:
            _ignore_interrupts()
    if entry and interrupt.take_seen():
        status = None  # a Ctrl-C that Python dropped after the run still counts
    if status is not None:
        if entry and _nothing_left_to_finalize():
            _exit(status)  # the interpreter's teardown would cost a run ~15% of its CPU
        return status
    with contextlib.suppress(OSError, ValueError):  # stderr gone: the status says it
        sys.stderr.write("ahci-emu: error: interrupted\n")
        sys.stderr.flush()
    if entry:
        _exit(INTERRUPTED)
    return INTERRUPTED


def _take_interrupts() -> None:
    _signal.signal(_signal.SIGINT, interrupt.on_sigint)
    sys.unraisablehook = interrupt.quiet_unraisable


def _ignore_interrupts() -> None:
    while True:
        try:  # a Ctrl-C still pending is raised by signal.signal itself: then again
            _signal.signal(_signal.SIGINT, _signal.SIG_IGN)
            return
        except KeyboardInterrupt:
            continue


def _nothing_left_to_finalize() -> bool:
    """The command has unwound, and nothing needs the interpreter's own teardown: no
    profiler or tracer is waiting to write its report, and no non-daemon thread runs
    (an ordinary exit would wait for it). Files and disks are closed by the commands
    themselves; registered atexit handlers still run (:func:`_exit`)."""
    if sys.getprofile() is not None or sys.gettrace() is not None:
        return False
    threading = sys.modules.get("threading")
    if threading is None:
        return True
    main = threading.main_thread()
    return all(t.daemon for t in threading.enumerate() if t is not main)


def _exit(status: int) -> None:
    """End the process now with ``status``, after the atexit handlers and a flush of
    stdout and stderr. Also the end of an interrupted run: CPython 3.11 ends a process
    whose code saw a KeyboardInterrupt inside exec() of a string (as dataclasses and
    namedtuple do while their modules load) by killing itself with SIGINT at exit, even
    when the interrupt was handled; there is nothing left to clean up here (the command
    has unwound)."""
    import atexit  # built in: no file to load

    with contextlib.suppress(Exception):
        atexit._run_exitfuncs()
    for stream in (sys.stdout, sys.stderr):
        with contextlib.suppress(OSError, ValueError, AttributeError):
            stream.flush()
    os._exit(status)


if __name__ == "__main__":
    sys.exit(main())
