"""`ahci-emu image`: create, inspect, check, convert, merge and compact disk images."""

import argparse
import json
import os
import re
import sys

from emu.errors import EmuError
from emu.storage import ops
from emu.storage.ownership import check_output

EPILOG = """\
formats: vdi (VirtualBox 1.1: dynamic, fixed, differencing) and raw.
A differencing image finds its parent by UUID: through the media registry of
the machine folder it is in (FOLDER/machine.json), else among the .vdi files of
its own directory, then of the directory above (VirtualBox's Snapshots/ layout).

example:
  ahci-emu image create base.vdi --size 64M
  ahci-emu image diff base.vdi Snapshots/s1.vdi
  ahci-emu image info Snapshots/s1.vdi
  ahci-emu image check Snapshots/s1.vdi
  ahci-emu image convert Snapshots/s1.vdi flat.raw -O raw
"""

_UNITS = {"": 1, "K": 1 << 10, "M": 1 << 20, "G": 1 << 30, "T": 1 << 40}
_SIZE = re.compile(r"^\s*(\d+)\s*([KMGT]?)(?:I?B)?\s*$", re.IGNORECASE)


class ImageCommandError(EmuError):
    """A bad argument to an image command."""


def register(subparsers: argparse._SubParsersAction) -> None:
    """Add the `image` command and its sub-commands."""
    parser = subparsers.add_parser(
        "image",
        help="create, inspect, check, convert, merge and compact disk images",
        description="Work on raw and VDI disk images and chains of differencing images.",
        epilog=EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    actions = parser.add_subparsers(dest="image_command", metavar="ACTION", required=True)

    create = actions.add_parser("create", help="make a new base image")
    create.add_argument("file", metavar="FILE")
    create.add_argument(
        "--size", required=True, help="virtual size: bytes or with K, M, G, T (1024-based)"
    )
    create.add_argument("--format", choices=["vdi", "raw"], default="vdi")
    create.add_argument(
        "--variant",
        choices=["dynamic", "fixed"],
        default="dynamic",
        help="dynamic grows as written; fixed is allocated up front",
    )
    create.set_defaults(handler=_create)

    diff = actions.add_parser("diff", help="make an empty differencing image of a VDI")
    diff.add_argument("parent", metavar="PARENT")
    diff.add_argument("child", metavar="CHILD")
    diff.set_defaults(handler=_diff)

    info = actions.add_parser("info", help="show format, sizes, UUIDs and the parent chain")
    info.add_argument("file", metavar="FILE")
    info.add_argument("--output", choices=["text", "json"], default="text")
    info.set_defaults(handler=_info)

    check = actions.add_parser(
        "check", help="check an image and its parents (exit 0 clean, 2 corrupt, 3 leaks)"
    )
    check.add_argument("file", metavar="FILE")
    check.set_defaults(handler=_check)

    convert = actions.add_parser("convert", help="flatten an image and its parents into a new one")
    convert.add_argument("src", metavar="SRC")
    convert.add_argument("dst", metavar="DST")
    convert.add_argument("-O", dest="format", choices=["raw", "vdi"], required=True)
    convert.add_argument("--variant", choices=["dynamic", "fixed"], default="dynamic")
    convert.set_defaults(handler=_convert)

    merge = actions.add_parser("merge", help="write a differencing image's data into its parent")
    merge.add_argument("child", metavar="CHILD")
    merge.add_argument(
        "--delete",
        action="store_true",
        help="remove CHILD afterwards; refused (nothing merged) if CHILD has differencing "
        "images of its own",
    )
    merge.set_defaults(handler=_merge)

    compact = actions.add_parser("compact", help="rewrite a VDI without unused or zero blocks")
    compact.add_argument("file", metavar="FILE")
    compact.set_defaults(handler=_compact)


def parse_size(text: str) -> int:
    """A size like 512, 64K, 64M, 1G or 2GiB, in bytes; a positive multiple of 512."""
    match = _SIZE.match(text)
    if not match:
        raise ImageCommandError(f"invalid size {text!r} (use bytes or a K, M, G, T suffix)")
    size = int(match.group(1)) * _UNITS[match.group(2).upper()]
    if size <= 0 or size % 512:
        raise ImageCommandError(f"size {text} is not a positive multiple of 512 bytes")
    return size


def _create(args: argparse.Namespace) -> int:
    size = parse_size(args.size)
    check_output(args.file, "image create")
    path = ops.create_image(args.file, size, fmt=args.format, variant=args.variant)
    print(f"created {path} ({args.format}, {args.variant}, {_human(size)})")
    return 0


def _diff(args: argparse.Namespace) -> int:
    check_output(args.child, "image diff")
    path = ops.create_diff(args.parent, args.child)
    print(f"created {path} (differencing image of {os.path.abspath(args.parent)})")
    return 0


def _info(args: argparse.Namespace) -> int:
    chain = ops.describe(args.file, registry=ops.machine_registry(args.file))
    if args.output == "json":
        print(json.dumps({**chain[0].as_dict(), "chain": [i.as_dict() for i in chain]}, indent=2))
        return 0
    leaf = chain[0]
    print(f"image: {leaf.path}")
    print(f"format: {leaf.format}" + (f" ({leaf.type})" if leaf.format == "vdi" else ""))
    print(f"virtual size: {_human(leaf.size)} ({leaf.size} bytes)")
    print(f"allocated: {_human(leaf.allocated)} ({leaf.allocated} bytes in this file)")
    print(f"disk size: {_human(leaf.disk_size)}")
    for label, value in [
        ("uuid", leaf.uuid),
        ("modify uuid", leaf.uuid_modify),
        ("parent uuid", leaf.uuid_linkage),
        ("parent modify uuid", leaf.uuid_parent_modify),
    ]:
        if value is not None:
            print(f"{label}: {value}")
    if len(chain) > 1:
        print("chain (leaf first):")
        for image in chain:
            corrupt = ", corrupt" if image.corrupt else ""
            print(f"  {image.path} ({image.type}, {_human(image.allocated)} allocated{corrupt})")
    for image in chain:
        if image.corrupt:  # as qemu-img info's "corrupt: true"
            print(f"corrupt: true: {image.path} (see `ahci-emu image check {args.file}`)")
    return 0


def _check(args: argparse.Namespace) -> int:
    result = ops.check(args.file, registry=ops.machine_registry(args.file))
    for label, messages in [
        ("error", result.errors),
        ("corruption", result.corruptions),
        ("leak", result.leaks),
        ("warning", result.warnings),
    ]:
        for message in messages:
            print(f"{label}: {message}")
    if result.exit_code == 0:
        print(f"No errors were found on {len(result.images)} image(s).")
    else:
        print(
            f"{len(result.corruptions)} corruption(s), {len(result.leaks)} leak(s), "
            f"{len(result.errors)} error(s) in {len(result.images)} image(s)."
        )
    return result.exit_code


def _convert(args: argparse.Namespace) -> int:
    check_output(args.dst, "image convert")
    path = ops.convert(
        args.src,
        args.dst,
        fmt=args.format,
        variant=args.variant,
        registry=ops.machine_registry(args.src),
        progress=_progress_bar("converting"),
    )
    print(f"converted {os.path.abspath(args.src)} to {path} ({args.format}, {args.variant})")
    return 0


def _merge(args: argparse.Namespace) -> int:
    if args.delete and (kids := ops.children(args.child)):
        more = f" and {len(kids) - 1} more" if len(kids) > 1 else ""
        raise ImageCommandError(
            f"{os.path.abspath(args.child)}: not merged: --delete would orphan its differencing "
            f"image {kids[0]}{more}; merge or delete that first, or merge without --delete"
        )
    parent = ops.merge(args.child, progress=_progress_bar("merging"))
    print(f"merged {os.path.abspath(args.child)} into {parent}")
    if args.delete:
        try:
            os.unlink(args.child)
        except OSError as exc:
            raise ImageCommandError(f"{args.child}: cannot delete: {exc.strerror}") from None
        print(f"deleted {os.path.abspath(args.child)}")
    return 0


def _compact(args: argparse.Namespace) -> int:
    saved = ops.compact(args.file, progress=_progress_bar("compacting"))
    print(f"compacted {os.path.abspath(args.file)}: {_human(saved)} smaller")
    return 0


def _progress_bar(label: str) -> ops.Progress | None:
    """A one-line progress bar on stderr, only when stderr is a terminal."""
    if not sys.stderr.isatty():
        return None
    shown = [-1]

    def show(done: int, total: int) -> None:
        percent = 100 * done // total
        if percent != shown[0]:
            shown[0] = percent
            bar = "#" * (percent * 30 // 100)
            end = "\n" if done == total else ""
            sys.stderr.write(f"\r{label} [{bar:<30}] {percent:3d}%{end}")
            sys.stderr.flush()

    return show


def _human(n: int) -> str:
    for unit in ("bytes", "KiB", "MiB", "GiB", "TiB"):
        if n < 1024 or unit == "TiB":
            break
        n /= 1024
    return f"{n:g} {unit}" if unit == "bytes" else f"{n:.4g} {unit}"
