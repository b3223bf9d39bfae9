"""`ahci-emu vm`: machine folders, disk attachments and snapshots."""

import argparse
import json
import os

from emu.commands.run import EPILOG as RUN_EPILOG
from emu.commands.run import add_guest_arguments, boot, fault_plan
from emu.errors import EmuError
from emu.guests import resolve_guest
from emu.storage.media import MediumType
from emu.storage.vm import Machine, SnapshotNode

EPILOG = """\
medium types (VirtualBox's special image write modes):
  normal        written directly until the first snapshot, then through diffs
  immutable     base never written; a diff reset at every start (--no-autoreset keeps it)
  writethrough  written directly, left out of snapshots
  shareable     fixed-size VDI or raw, written directly, usable by several machines
  multiattach   base never written; one diff per attachment, never reset
  readonly      never written; guest writes fail
"""


def register(subparsers: argparse._SubParsersAction) -> None:
    """Add the `vm` command and its sub-commands."""
    parser = subparsers.add_parser(
        "vm",
        help="create machine folders, attach disks, take and restore snapshots",
        description="Manage a machine folder: its disk attachments, medium types and "
        "snapshot tree (VirtualBox semantics).",
        epilog=EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    actions = parser.add_subparsers(dest="vm_command", metavar="ACTION", required=True)

    create = actions.add_parser("create", help="make a new machine folder")
    create.add_argument("dir", metavar="DIR")
    create.add_argument("--name", help="machine name (default: the folder name)")
    create.set_defaults(handler=_create)

    attach = actions.add_parser("attach", help="put a disk image on a port")
    attach.add_argument("dir", metavar="DIR")
    attach.add_argument("--port", type=int, required=True, metavar="N")
    attach.add_argument("--medium", required=True, metavar="FILE", help="raw or VDI base image")
    attach.add_argument(
        "--type",
        choices=[t.value for t in MediumType],
        default=MediumType.NORMAL.value,
        help="medium type (default: normal)",
    )
    attach.add_argument(
        "--no-autoreset",
        dest="autoreset",
        action="store_false",
        help="immutable only: keep the diff across starts",
    )
    attach.set_defaults(handler=_attach)

    detach = actions.add_parser("detach", help="take the disk off a port")
    detach.add_argument("dir", metavar="DIR")
    detach.add_argument("--port", type=int, required=True, metavar="N")
    detach.set_defaults(handler=_detach)

    snapshot = actions.add_parser("snapshot", help="take, restore, delete or list snapshots")
    snapshot.add_argument("dir", metavar="DIR")
    snapshot.add_argument("action", choices=["take", "restore", "delete", "list"])
    snapshot.add_argument("name", nargs="?", metavar="NAME", help="snapshot name (or UUID)")
    snapshot.add_argument("--description", default="", metavar="TEXT", help="for take")
    snapshot.set_defaults(handler=_snapshot)

    run = actions.add_parser(
        "run",
        help="boot a guest on the machine's disks",
        description="Start the machine (medium types applied: immutable diffs reset, "
        "multi-attach diffs per machine) and boot GUEST with each attachment on its port.",
        epilog=RUN_EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    run.add_argument("dir", metavar="DIR")
    add_guest_arguments(run)
    run.set_defaults(handler=_run)

    info = actions.add_parser("info", help="show attachments, chains and snapshots")
    info.add_argument("dir", metavar="DIR")
    info.add_argument("--output", choices=["text", "json"], default="text")
    info.set_defaults(handler=_info)


def _run(args: argparse.Namespace) -> int:
    args.guest = resolve_guest(args.guest)  # a missing guest is refused before the start
    faults = fault_plan(args)  # a bad spec is refused before the machine starts
    with Machine.open(args.dir) as machine:
        devices = machine.start()
        try:
            ports = max(devices, default=-1) + 1
            return boot(args, [devices.get(port) for port in range(ports)], faults)
        finally:
            machine.stop()


def _create(args: argparse.Namespace) -> int:
    with Machine.create(args.dir, name=args.name) as machine:
        print(f"created machine {machine.name!r} ({machine.uuid}) in {machine.folder}")
    return 0


def _attach(args: argparse.Namespace) -> int:
    with Machine.open(args.dir) as machine:
        machine.attach(args.port, args.medium, args.type, autoreset=args.autoreset)
        print(
            f"attached {os.path.abspath(args.medium)} to port {args.port} of machine "
            f"{machine.name!r} ({args.type})"
        )
    return 0


def _detach(args: argparse.Namespace) -> int:
    with Machine.open(args.dir) as machine:
        machine.detach(args.port)
        print(f"detached port {args.port} of machine {machine.name!r} (the base image is kept)")
    return 0


def _snapshot(args: argparse.Namespace) -> int:
    if args.action == "list":
        if args.name is not None:
            raise EmuError("snapshot list takes no NAME")
        with Machine.open(args.dir, read_only=True) as machine:
            lines = _tree_lines(machine.snapshot_list(), 0)
            for line in lines or [f"machine {machine.name!r} has no snapshots"]:
                print(line)
        return 0
    if args.name is None:
        raise EmuError(f"snapshot {args.action} needs a NAME")
    if args.description and args.action != "take":
        raise EmuError("--description goes with snapshot take")
    with Machine.open(args.dir) as machine:
        if args.action == "take":
            snap = machine.snapshot_take(args.name, args.description)
            print(f"snapshot {args.name!r} taken ({snap})")
        elif args.action == "restore":
            snap = machine.snapshot_restore(args.name)
            print(f"snapshot {args.name!r} restored ({snap})")
        else:
            merges = machine.snapshot_delete(args.name)
            print(f"snapshot {args.name!r} deleted ({merges} image merge(s))")
    return 0


def _info(args: argparse.Namespace) -> int:
    with Machine.open(args.dir, read_only=True) as machine:
        info = machine.info()
        tree = machine.snapshot_list()
    if args.output == "json":
        print(json.dumps(info, indent=2))
        return 0
    print(f"Machine:   {info['name']} ({info['uuid']})")
    print(f"Folder:    {info['folder']}")
    if not info["attachments"]:
        print("Disks:     none")
    for att in info["attachments"]:
        reset = "" if att["autoreset"] else ", no autoreset"
        print(f"Port {att['port']}:    {att['path']} ({att['type']}{reset})")
        if len(att["chain"]) > 1:
            print(f"           leaf {att['chain'][0]} ({len(att['chain']) - 1} diff(s) deep)")
    current = info["current_snapshot"]
    print(f"Snapshots: {'none' if not info['snapshots'] else 'current ' + repr(current)}")
    for line in _tree_lines(tree, 1):
        print(line)
    return 0


def _tree_lines(nodes: list[SnapshotNode], depth: int) -> list[str]:
    lines = []
    for node in nodes:
        mark = " *" if node.current else ""
        lines.append(f"{'   ' * depth}{node.name} ({node.time}, {node.uuid}){mark}")
        if node.description:
            lines.append(f"{'   ' * depth}  {node.description}")
        lines += _tree_lines(node.children, depth + 1)
    return lines
