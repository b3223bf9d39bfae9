"""`ahci-emu run`: boot a guest on the board and exit with the status it writes to 0xF4."""

import argparse
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
    serial = open_serial(args.serial)
    try:
        board = Board(BoardConfig(memory_mib=args.memory, strict=args.strict, serial=serial))
        board.load(guest, args.append)
        return board.run(args.timeout) & 0xFF
    finally:
        serial.flush()
        if serial is not sys.stdout.buffer:
            serial.close()


def open_serial(path: str | None):
    if path is None:
        return sys.stdout.buffer
    try:
        return open(path, "wb")  # closed by the caller
    except OSError as exc:
        raise EmuError(f"{path}: cannot write serial output: {exc.strerror}") from exc
