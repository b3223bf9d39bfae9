"""`ahci-emu run`: boot a guest on the board and exit with the status it writes to 0xF4."""

import argparse
import contextlib
import errno
import os
import sys
from collections.abc import Iterator, Sequence
from typing import IO, TYPE_CHECKING

from emu.errors import EmuError
from emu.guests import DEFAULT_GUEST, guest_kind, resolve_guest

if TYPE_CHECKING:  # each feature's modules load when a run uses it (start-up time)
    from emu.faults.plan import FaultPlan
    from emu.storage.blockdev import BlockDevice

SCRATCH_DISK_SIZE = 64 << 20
MULTIBOOT_MEMORY_MIB = 128
LINUX_MEMORY_MIB = 256  # Debian's kernel and an initramfs with modules, with room to spare

MAX_TIMEOUT = 1_000_000.0  # seconds (11.6 days): any longer is a typo, not a budget

EPILOG = """\
exit status: the value the guest writes to the debug-exit port 0xF4;
123 when a Linux guest panics, 124 when the guest outlives --timeout,
125 on a stray access under --strict or a violation under --sanitize=strict,
126 on a CPU exception the guest does not handle, a triple fault or a halt it
cannot leave, 137 when an injected power cut ends the run, 130 on Ctrl-C or
SIGTERM, 2 on a bad option, option value or fault spec, 1 on any other error
(bad guest, kernel, initrd or disk file, an output that cannot be written, a
--serial or --trace FILE that is an image, locked, or a machine's file, a
libunicorn whose internals Linux guests need is not known).

fault specs (--fault, --faults FILE): KIND[:KEY=VALUE,...]; kinds media-error,
idnf, abrt, df, power-cut, stall, latency, link-loss; triggers port=N,
lba=FIRST-LAST, opcode=0xNN|read|write|flush|ncq, nth=N, p=PROBABILITY, times=N.
The README's "Fault injection" section has the whole vocabulary.
"""


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "run",
        help="boot a guest and run it to its exit",
        description="Boot a multiboot ELF32 guest or a Linux bzImage on the emulated board and "
        "run it until it writes its exit status to the debug-exit port. With no GUEST and no "
        "--disk, the "
        f"default guest ({DEFAULT_GUEST}) runs on a scratch 64 MiB disk in a temporary folder.",
        epilog=EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    add_guest_arguments(parser)
    parser.add_argument(
        "--disk",
        action="append",
        default=[],
        metavar="PATH",
        help="attach a disk image (raw, VDI, or a VDI diff whose parents are found beside "
        "it) to the next AHCI port (0, 1, ...); repeatable",
    )
    parser.set_defaults(handler=run)


def add_guest_arguments(parser: argparse.ArgumentParser) -> None:
    """GUEST and the options of a run, shared by `run` and `vm run`."""
    parser.add_argument(
        "guest",
        nargs="?",
        metavar="GUEST",
        help="multiboot ELF file or Linux bzImage (told apart by header), or the name of a "
        f"built-in guest (default: {DEFAULT_GUEST})",
    )
    parser.add_argument(
        "--memory",
        type=int,
        metavar="MiB",
        help=f"guest RAM in MiB (default: {MULTIBOOT_MEMORY_MIB}; {LINUX_MEMORY_MIB} for Linux)",
    )
    parser.add_argument(
        "--append", default="", metavar="STR", help="guest command line, as QEMU's -append"
    )
    parser.add_argument(
        "--initrd", metavar="FILE", help="initial ramdisk for a Linux guest, as QEMU's -initrd"
    )
    parser.add_argument(
        "--timeout",
        type=timeout_seconds,
        default=60.0,
        metavar="SECONDS",
        help="stop the guest after this long, exit status 124 (default: 60; "
        f"at most {MAX_TIMEOUT:,.0f})",
    )
    parser.add_argument(
        "--serial", metavar="FILE", help="write the guest's COM1 output to FILE instead of stdout"
    )
    parser.add_argument(
        "--trace",
        metavar="FILE",
        help="write one JSON line per AHCI command to FILE (reads from an image chain "
        "also record which image served each range)",
    )
    parser.add_argument(
        "--trace-regs",
        action="store_true",
        help="with --trace, also one line per AHCI register access",
    )
    parser.add_argument(
        "--strict",
        action="store_true",
        help="stop (exit status 125) at the first access to a port or address that nothing "
        "decodes, instead of answering it as open bus",
    )
    parser.add_argument(
        "--fault",
        action="append",
        default=[],
        metavar="SPEC",
        help="inject a fault, e.g. 'media-error:lba=100-107' (repeatable; see below)",
    )
    parser.add_argument(
        "--faults", metavar="FILE", help="inject the faults listed in a TOML or JSON file"
    )
    parser.add_argument(
        "--fault-seed",
        type=int,
        default=0,
        metavar="N",
        help="seed of every probabilistic fault trigger and of what a power cut keeps "
        "(default: 0; the same seed gives the same run)",
    )
    parser.add_argument(
        "--write-cache",
        choices=("on", "off"),
        default="on",
        help="the disks' volatile write cache at power-on (default: on; off: every "
        "completed write is durable)",
    )
    parser.add_argument(
        "--sanitize",
        nargs="?",
        const="report",
        choices=("report", "strict"),
        metavar="strict",
        help="report each AHCI rule the guest's driver breaks (once per rule and port); "
        "--sanitize=strict stops at the first (exit status 125)",
    )
    parser.add_argument(
        "--verbose",
        action="store_true",
        help="say on stderr each injected fault that fires",
    )


def timeout_seconds(text: str) -> float:
    """An argparse type: a finite, positive number of seconds up to MAX_TIMEOUT."""
    try:
        seconds = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a number of seconds: {text!r}") from None
    if not 0 < seconds <= MAX_TIMEOUT:  # NaN fails this too
        raise argparse.ArgumentTypeError(
            f"must be more than 0 and at most {MAX_TIMEOUT:,.0f} seconds, not {text}"
        )
    return seconds


def run(args: argparse.Namespace) -> int:
    faults = fault_plan(args)  # a bad spec is refused before any disk is opened
    with contextlib.ExitStack() as stack:
        paths = list(args.disk)
        if args.guest is None and not paths:
            paths.append(scratch_disk(stack))
        disks = []
        if paths:  # the image stack loads only for a run with disks
            from emu.storage.chain import open_chain

            disks = [stack.enter_context(open_chain(path)) for path in paths]
        return boot(args, disks, faults)


def boot(
    args: argparse.Namespace,
    disks: "Sequence[BlockDevice | None]",
    faults: "FaultPlan | None" = None,
) -> int:
    """Run ``args.guest`` with ``disks`` on ports 0, 1, ... (None: an empty port) and
    ``faults`` injected (from :func:`fault_plan`)."""
    from emu.machine.board import Board, BoardConfig

    guest = check_run_arguments(args)  # again: the disks are open now, their locks count
    linux = guest_kind(guest) == "linux"
    with contextlib.ExitStack() as stack:
        serial = stack.enter_context(open_output(args.serial, "wb", _stdout_bytes()))
        trace = stack.enter_context(open_output(args.trace, "w", None)) if args.trace else None
        if linux:
            from emu.machine.linux_board import LinuxBoard as board_class
        else:
            board_class = Board
        memory = args.memory
        if memory is None:
            memory = LINUX_MEMORY_MIB if linux else MULTIBOOT_MEMORY_MIB
        board = board_class(
            BoardConfig(
                memory_mib=memory,
                strict=args.strict,
                serial=serial,
                disks=disks,
                trace=trace,
                trace_registers=args.trace_regs,
                faults=faults,
                write_cache=args.write_cache == "on",
                sanitize=args.sanitize,
            )
        )
        if linux:
            board.load(guest, args.append, args.initrd)
        else:
            board.load(guest, args.append)
        try:
            return board.run(args.timeout) & 0xFF
        finally:
            board.flush_disks()  # what the guest wrote survives the run, flushed or not


def check_run_arguments(args: argparse.Namespace) -> str:
    """Refuse a run's bad arguments before anything starts; the guest's path.

    ``vm run`` calls it before the machine starts (a start may reset immutable
    diffs); :func:`boot` calls it again. ``args.guest`` becomes the resolved path,
    so a note on an ambiguous name is given once.
    """
    args.guest = resolve_guest(args.guest, note=_note)
    if guest_kind(args.guest) != "linux" and args.initrd is not None:
        raise EmuError("--initrd is for Linux guests; GUEST is a multiboot ELF")
    if args.trace_regs and not args.trace:
        raise EmuError("--trace-regs needs --trace FILE")
    for option, path in (("--serial", args.serial), ("--trace", args.trace)):
        if path is not None:
            from emu.storage.ownership import check_output

            check_output(path, option)
    return args.guest


def fault_plan(args: argparse.Namespace) -> "FaultPlan | None":
    """The faults of ``--fault`` and ``--faults``, or None when there are none."""
    if not args.fault and args.faults is None:
        return None
    from emu.faults.plan import FaultPlan
    from emu.faults.spec import load_faults, parse_fault

    faults = [parse_fault(spec) for spec in args.fault]
    if args.faults is not None:
        faults += load_faults(args.faults)
    if not faults:
        return None
    return FaultPlan(faults, args.fault_seed, verbose=args.verbose)


def scratch_disk(stack: contextlib.ExitStack) -> str:
    """A sparse 64 MiB raw disk in a temporary folder removed after the run."""
    import tempfile

    folder = stack.enter_context(tempfile.TemporaryDirectory(prefix="ahci-emu-"))
    path = os.path.join(folder, "scratch.img")
    with open(path, "wb") as f:
        f.truncate(SCRATCH_DISK_SIZE)
    return path


def _note(text: str) -> None:
    print(f"ahci-emu: {text}", file=sys.stderr)


@contextlib.contextmanager
def open_output(path: str | None, mode: str, default: IO | None) -> Iterator[IO | None]:
    """``path`` opened for writing (closed afterwards), or ``default`` when no path is given.
    A write that fails (full disk, I/O error) becomes an EmuError naming the output; a
    closed pipe stays BrokenPipeError, which the command ends on quietly."""
    if path is None:
        if default is None:
            yield None
            return
        yield _NamedOutput(default, "stdout")
        with _named_errors("stdout"):
            default.flush()
        return
    try:
        stream = open(path, mode)  # noqa: SIM115 - closed below
    except OSError as exc:
        raise EmuError(f"{path}: cannot write: {exc.strerror}") from exc
    try:
        yield _NamedOutput(stream, path)
    except BaseException:
        with contextlib.suppress(OSError):
            stream.close()
        raise
    with _named_errors(path):
        stream.close()  # what is still buffered is written here


def _stdout_bytes() -> IO:
    """stdout's byte stream; with stdout closed (``>&-``: Python has no sys.stdout), one
    whose writes fail as writes to a closed descriptor do, so only a run that prints
    fails (``stdout: cannot write: Bad file descriptor``, status 1), as ``cat`` would."""
    if sys.stdout is not None:
        return sys.stdout.buffer
    return _ClosedOutput()


class _ClosedOutput:
    """The output of a closed descriptor: every write fails with EBADF."""

    def write(self, data: bytes) -> int:
        raise OSError(errno.EBADF, os.strerror(errno.EBADF))

    def flush(self) -> None:
        pass


class _NamedOutput:
    """A write-only stream whose write errors say which output they hit."""

    def __init__(self, stream: IO, name: str) -> None:
        self._stream = stream
        self._name = name

    def write(self, data: bytes | str) -> int:
        with _named_errors(self._name):
            return self._stream.write(data)

    def flush(self) -> None:
        with _named_errors(self._name):
            self._stream.flush()


@contextlib.contextmanager
def _named_errors(name: str) -> Iterator[None]:
    try:
        yield
    except BrokenPipeError:
        raise
    except OSError as exc:
        if exc.filename is not None:
            raise  # not this output's error
        raise EmuError(f"{name}: cannot write: {exc.strerror or exc}") from exc
