"""`ahci-emu run`: boot a guest on the board and exit with the status it writes to 0xF4."""

import argparse
import contextlib
import os
import sys
import tempfile
from collections.abc import Iterator, Sequence
from typing import IO

from emu.errors import EmuError
from emu.guests import DEFAULT_GUEST, guest_kind, resolve_guest
from emu.storage.blockdev import BlockDevice

SCRATCH_DISK_SIZE = 64 << 20
MULTIBOOT_MEMORY_MIB = 128
LINUX_MEMORY_MIB = 256  # Debian's kernel and an initramfs with modules, with room to spare

EPILOG = """\
exit status: the value the guest writes to the debug-exit port 0xF4;
123 when a Linux guest panics, 124 when the guest outlives --timeout,
125 on a stray access under --strict, 126 on a CPU exception the guest does not
handle, a triple fault or a halt it cannot leave, 130 on Ctrl-C, 1 on any other
error (bad guest, kernel, initrd or disk file, bad option, a libunicorn whose
internals Linux guests need is not known).
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
        type=float,
        default=60.0,
        metavar="SECONDS",
        help="stop the guest after this long, exit status 124 (default: 60)",
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


def run(args: argparse.Namespace) -> int:
    from emu.storage.chain import open_chain

    with contextlib.ExitStack() as stack:
        paths = list(args.disk)
        if args.guest is None and not paths:
            paths.append(scratch_disk(stack))
        disks = [stack.enter_context(open_chain(path)) for path in paths]
        return boot(args, disks)


def boot(args: argparse.Namespace, disks: Sequence[BlockDevice | None]) -> int:
    """Run ``args.guest`` with ``disks`` on ports 0, 1, ... (None: an empty port)."""
    from emu.machine.board import Board, BoardConfig

    guest = resolve_guest(args.guest)
    linux = guest_kind(guest) == "linux"
    if args.initrd is not None and not linux:
        raise EmuError("--initrd is for Linux guests; GUEST is a multiboot ELF")
    if args.timeout <= 0:
        raise EmuError("--timeout must be positive")
    if args.trace_regs and not args.trace:
        raise EmuError("--trace-regs needs --trace FILE")
    with contextlib.ExitStack() as stack:
        serial = stack.enter_context(open_output(args.serial, "wb", sys.stdout.buffer))
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
            )
        )
        if linux:
            board.load(guest, args.append, args.initrd)
        else:
            board.load(guest, args.append)
        try:
            return board.run(args.timeout) & 0xFF
        finally:
            for disk in disks:
                if disk is not None:
                    disk.flush()  # what the guest wrote survives the run, flushed or not


def scratch_disk(stack: contextlib.ExitStack) -> str:
    """A sparse 64 MiB raw disk in a temporary folder removed after the run."""
    folder = stack.enter_context(tempfile.TemporaryDirectory(prefix="ahci-emu-"))
    path = os.path.join(folder, "scratch.img")
    with open(path, "wb") as f:
        f.truncate(SCRATCH_DISK_SIZE)
    return path


@contextlib.contextmanager
def open_output(path: str | None, mode: str, default: IO | None) -> Iterator[IO | None]:
    """``path`` opened for writing (closed afterwards), or ``default`` when no path is given."""
    if path is None:
        yield default
        if default is not None:
            default.flush()
        return
    try:
        stream = open(path, mode)  # noqa: SIM115 - closed below
    except OSError as exc:
        raise EmuError(f"{path}: cannot write: {exc.strerror}") from exc
    with stream:
        yield stream
