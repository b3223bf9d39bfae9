"""`ahci-emu linux`: fetch Debian's kernel and busybox, build test initramfs images."""

import argparse
import sys
from pathlib import Path

from emu.linuxkit.initramfs import DEFAULT_MODULES, build_initramfs
from emu.linuxkit.material import ENV, cache_dir, fetch, load

EPILOG = f"""\
The material lives in ${ENV} (default: $XDG_CACHE_HOME/ahci-emu/linux, else
~/.cache/ahci-emu/linux). `fetch` needs a Debian system with apt (run as root,
after `apt-get update`) and depmod (package kmod).

example:
  ahci-emu linux fetch
  ahci-emu linux initrd initrd.cpio --script test.sh
  ahci-emu run "$(ahci-emu linux info --kernel)" --initrd initrd.cpio \\
      --disk disk.vdi --append console=ttyS0
"""

DEFAULT_SCRIPT = """\
for disk in /sys/block/sd*; do
  [ -e "$disk" ] || { echo "no disk found"; exit 1; }
  echo "${disk##*/}: $(cat "$disk/device/model") $(cat "$disk/size") sectors"
done
"""


def register(subparsers: argparse._SubParsersAction) -> None:
    """Add the `linux` command and its sub-commands."""
    parser = subparsers.add_parser(
        "linux",
        help="get a Linux kernel and busybox, build test initramfs images",
        description="Linux guests: Debian's stock kernel and busybox-static from apt, and "
        "initramfs images that load the AHCI driver and run a shell script.",
        epilog=EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    actions = parser.add_subparsers(dest="linux_command", metavar="ACTION", required=True)

    get = actions.add_parser(
        "fetch",
        help="download and unpack the current linux-image-amd64 kernel and busybox-static",
    )
    get.set_defaults(handler=_fetch)

    info = actions.add_parser("info", help="where the fetched kernel, modules and busybox are")
    info.add_argument("--kernel", action="store_true", help="print only the kernel's path")
    info.set_defaults(handler=_info)

    initrd = actions.add_parser(
        "initrd",
        help="build a test initramfs: busybox, the module stack, /init and a script",
        description="Build a newc cpio initramfs. Its /init loads the modules (each with "
        "what it needs, from modules.dep), waits for the disks, runs the script, prints "
        "dmesg and ends the run with the script's exit status through port 0xF4.",
    )
    initrd.add_argument("out", metavar="OUT", type=Path, help="the initramfs file to write")
    initrd.add_argument(
        "--script",
        type=Path,
        metavar="FILE",
        help="shell script (busybox sh) to run (default: list the disks)",
    )
    initrd.add_argument(
        "--disks", type=int, default=1, metavar="N", help="disks /init waits for (default: 1)"
    )
    initrd.add_argument(
        "--module",
        action="append",
        metavar="NAME",
        help=f"a module to load with what it needs (repeatable; default: "
        f"{', '.join(DEFAULT_MODULES)})",
    )
    initrd.set_defaults(handler=_initrd)


def _fetch(args: argparse.Namespace) -> int:
    material = fetch(cache_dir(), log=lambda line: print(line, file=sys.stderr))
    print(material.describe())
    return 0


def _info(args: argparse.Namespace) -> int:
    material = load()
    print(material.kernel if args.kernel else material.describe())
    return 0


def _initrd(args: argparse.Namespace) -> int:
    from emu.errors import EmuError

    material = load()
    try:
        script = args.script.read_text() if args.script else DEFAULT_SCRIPT
    except (OSError, UnicodeDecodeError) as exc:
        raise EmuError(f"{args.script}: cannot read the script ({exc})") from None
    if args.disks < 0:
        raise EmuError("--disks must be 0 or more")
    try:
        stack = build_initramfs(
            material, script, args.out, disks=args.disks, modules=args.module or DEFAULT_MODULES
        )
    except OSError as exc:
        raise EmuError(f"{args.out}: {exc.strerror}") from None
    print(f"{args.out}: busybox, {len(stack)} modules ({' '.join(m.name for m in stack)})")
    return 0
