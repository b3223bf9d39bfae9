"""Parse an `ahci-emu` command line, run the command, and turn whatever leaves it into an
exit status: one line on stderr for every failure, never a traceback (the table of
statuses is README.md's "Exit status")."""

import argparse
import contextlib
import importlib
import os
import signal
import sys

from emu import __version__
from emu.cli import COMMANDS
from emu.commands.parser import OneLineParser
from emu.errors import EmuError

CLOSED_PIPE = 128 + signal.SIGPIPE  # 141, as a shell reports a tool SIGPIPE stopped
INTERNAL_ERROR = 70  # EX_SOFTWARE (sysexits.h): an error the emulator did not foresee, a bug


def build_parser(argv: list[str] | None = None) -> argparse.ArgumentParser:
    """The parser; given ``argv``, only the command it names is imported (a command's
    module may pull in heavy imports, and every guest run pays for start-up)."""
    parser = OneLineParser(
        prog="ahci-emu",
        description="An emulated AHCI/SATA controller: boot small x86 test guests under "
        "Unicorn on disks made of raw or VDI differencing images.",
    )
    parser.add_argument("--version", action="version", version=f"%(prog)s {__version__}")
    subparsers = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    named = next((arg for arg in argv or () if not arg.startswith("-")), None)
    for name in [named] if named in COMMANDS else COMMANDS:
        importlib.import_module(f"emu.commands.{name}").register(subparsers)
    return parser


def run_command(argv: list[str], owns_stdout: bool) -> int:
    """Run ``argv`` and return its exit status. KeyboardInterrupt is left to the caller
    (emu.cli), which also catches it while this module is being imported."""
    if owns_stdout:  # file names that are not UTF-8 print as the bytes they are, as in ls
        with contextlib.suppress(AttributeError):
            sys.stdout.reconfigure(errors="surrogateescape")
    try:
        args = build_parser(argv).parse_args(argv)
        status = args.handler(args)
        if owns_stdout:
            _flush_stdout()
        return status
    except EmuError as exc:
        return fail(str(exc), exc.exit_status)
    except BrokenPipeError:  # the reader went away (`ahci-emu ... | head`): stop quietly
        if owns_stdout:
            _silence_stdout()
        return CLOSED_PIPE
    except OSError as exc:
        where = f"{exc.filename}: " if exc.filename else ""
        return fail(f"{where}{exc.strerror or exc}", 1)
    except MemoryError:
        return fail("out of memory", 1)
    except Exception as exc:
        if _raised_by_interrupt(exc):  # e.g. wrapped by Python while a class was made
            raise KeyboardInterrupt from exc
        import traceback  # only for a bug's one line: not loaded on every start

        frame = traceback.extract_tb(exc.__traceback__)[-1]  # a bug: still one line
        place = f"{os.path.basename(frame.filename)}:{frame.lineno}"
        return fail(f"internal error: {type(exc).__name__}: {exc} (at {place})", INTERNAL_ERROR)


def fail(message: str, status: int) -> int:
    """Print ``message`` as the command's one error line; return ``status``."""
    line = " ".join(message.splitlines())  # an exception's text may span lines
    with contextlib.suppress(OSError, ValueError):  # stderr gone: the status says it all
        print(f"ahci-emu: error: {line}", file=sys.stderr, flush=True)
    return status


def _flush_stdout() -> None:
    """What is still buffered for stdout goes out here: a closed pipe stays
    BrokenPipeError; any other failure (a full disk) names stdout. A closed stdout
    (``>&-``: Python has no sys.stdout) holds nothing."""
    if sys.stdout is None:
        return
    try:
        sys.stdout.flush()
    except BrokenPipeError:
        raise
    except OSError as exc:
        raise EmuError(f"stdout: cannot write: {exc.strerror or exc}") from exc


def _raised_by_interrupt(exc: BaseException) -> bool:
    while exc is not None:
        if isinstance(exc, KeyboardInterrupt):
            return True
        exc = exc.__cause__ or exc.__context__
    return False


def _silence_stdout() -> None:
    """Point stdout at /dev/null, so that Python's own flush at exit does not report the
    closed pipe once more."""
    with contextlib.suppress(OSError, ValueError):
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
