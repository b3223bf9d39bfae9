"""`ahci-emu run`: boot a guest on the board and exit with the status it writes to 0xF4."""

import argparse
import contextlib
import sys

from emu.errors import EmuError
from emu.guests import DEFAULT_GUEST, resolve_guest

EPILOG = """\
exit status: the value the guest writes to the debug-exit port 0xF4;
124 when the guest outlives --timeout, 125 on a stray access under --strict,
126 on a CPU exception the guest does not handle (or a halt it cannot leave),
130 on Ctrl-C, 1 on any other error (bad guest file, bad option).
"""


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "run",
        help="boot a guest and run it to its exit",
        description="Boot a multiboot ELF32 guest on the emulated board and run it until it "
        "writes its exit status to the debug-exit port.",
        epilog=EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument(
        "guest",
        nargs="?",
        metavar="GUEST",
        help=f"guest ELF file, or the name of a built-in guest (default: {DEFAULT_GUEST})",
    )
    parser.add_argument(
        "--memory", type=int, default=128, metavar="MiB", help="guest RAM in MiB (default: 128)"
    )
    parser.add_argument(
        "--append", default="", metavar="STR", help="guest command line, as QEMU's -append"
    )
    parser.add_argument(
        "--timeout",
        type=float,
        default=60.0,
        metavar="SECONDS",
        help="stop the guest after this long, exit status 124 (default: 60)",
    )
    parser.add_argument(
        "--serial", metavar="FILE", help="write the guest's COM1 output to FILE instead of stdout"
    )
    parser.add_argument(
        "--disk",
        action="append",
        default=[],
        metavar="PATH",
        help="attach a disk image to the next AHCI port (0, 1, ...); repeatable",
    )
    parser.add_argument(
        "--trace", metavar="FILE", help="write one JSON line per AHCI command to FILE"
    )
    parser.add_argument(
        "--trace-regs",
        action="store_true",
        help="with --trace, also one line per AHCI register access",
    )
    parser.add_argument(
        "--strict",
        action="store_true",
        help="stop (exit status 125) at the first access to a port or address "
        "that nothing decodes, instead of answering it as open bus",
    )
    parser.set_defaults(handler=run)


def run(args: argparse.Namespace) -> int:
    from emu.machine.board import Board, BoardConfig

    guest = resolve_guest(args.guest)
    if args.timeout <= 0:
        raise EmuError("--timeout must be positive")
    if args.trace_regs and not args.trace:
        raise EmuError("--trace-regs needs --trace FILE")
    with contextlib.ExitStack() as stack:
        disks = [stack.enter_context(open_disk(path)) for path in args.disk]
        serial = stack.enter_context(open_output(args.serial, "wb", sys.stdout.buffer))
        trace = stack.enter_context(open_output(args.trace, "w", None)) if args.trace else None
        board = Board(
            BoardConfig(
                memory_mib=args.memory,
                strict=args.strict,
                serial=serial,
                disks=disks,
                trace=trace,
                trace_registers=args.trace_regs,
            )
        )
        board.load(guest, args.append)
        try:
            return board.run(args.timeout) & 0xFF
        finally:
            for disk in disks:
                disk.flush()  # what the guest wrote survives the run, flushed or not


@contextlib.contextmanager
def open_disk(path: str):
    from emu.storage.raw import RawImage

    disk = RawImage(path)
    try:
        yield disk
    finally:
        disk.close()


@contextlib.contextmanager
def open_output(path: str | None, mode: str, default):
    """``path`` opened for writing (closed afterwards), or ``default`` when no path is given."""
    if path is None:
        yield default
        default.flush()
        return
    try:
        stream = open(path, mode)  # noqa: SIM115 - closed below
    except OSError as exc:
        raise EmuError(f"{path}: cannot write: {exc.strerror}") from exc
    with stream:
        yield stream
