"""The `ahci-emu` command: a thin dispatcher over emu.commands.*."""

import argparse
import importlib
import sys

from emu import __version__
from emu.errors import EmuError

COMMANDS = ("run", "image", "vm", "linux")


def build_parser(argv: list[str] | None = None) -> argparse.ArgumentParser:
    """The parser; given ``argv``, only the command it names is imported (a command's
    module may pull in heavy imports, and every guest run pays for start-up)."""
    parser = argparse.ArgumentParser(
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


def main(argv: list[str] | None = None) -> int:
    if argv is None:
        argv = sys.argv[1:]
    try:
        args = build_parser(argv).parse_args(argv)
        return args.handler(args)
    except EmuError as exc:
        print(f"ahci-emu: error: {exc}", file=sys.stderr)
        return exc.exit_status
    except KeyboardInterrupt:
        print("ahci-emu: error: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
