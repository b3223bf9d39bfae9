"""Planning machine changes: checks and edits of a :class:`MachineConfig`, no file I/O.

Every refusal of a machine operation is raised here, from the configuration
alone, before a transaction (machine_store.py) touches any file.
"""

import datetime
from collections.abc import Callable
from dataclasses import dataclass, field
from uuid import UUID, uuid4

from emu.storage.errors import MachineError
from emu.storage.machine_file import PORTS, MachineConfig, Merge, Snapshot, SnapshotAttachment
from emu.storage.media import MediumType


@dataclass
class SnapshotNode:
    """A snapshot and its children, as :meth:`Machine.snapshot_list` returns them."""

    uuid: UUID
    name: str
    description: str
    time: str
    current: bool  # the snapshot the current state derives from
    children: list["SnapshotNode"] = field(default_factory=list)


def medium_type(value: MediumType | str) -> MediumType:
    """``value`` as a medium type; an unknown name is refused with the list of names."""
    try:
        return MediumType(value)
    except ValueError:
        names = ", ".join(t.value for t in MediumType)
        raise MachineError(f"unknown medium type {value!r} (one of: {names})") from None


def check_port(port: int) -> None:
    """Refuse a port the HBA does not have."""
    if not 0 <= port < PORTS:
        raise MachineError(f"port {port} does not exist (ports are 0..{PORTS - 1})")


def find_snapshot(cfg: MachineConfig, name: str) -> Snapshot:
    """The snapshot with this name or UUID."""
    for snap in cfg.snapshots.values():
        if snap.name == name or str(snap.uuid) == name:
            return snap
    raise MachineError(f"no snapshot named {name!r}")


def snapshot_tree(cfg: MachineConfig) -> list[SnapshotNode]:
    """The snapshot tree: root snapshots, each with its children, oldest first."""
    nodes = {
        u: SnapshotNode(u, s.name, s.description, s.time, u == cfg.current_snapshot)
        for u, s in cfg.snapshots.items()
    }
    roots = []
    for u, s in cfg.snapshots.items():
        (roots if s.parent is None else nodes[s.parent].children).append(nodes[u])
    return roots


def ancestry(cfg: MachineConfig, medium: UUID) -> list[UUID]:
    """``medium`` and its parents, leaf first."""
    chain = [medium]
    while (parent := cfg.media[chain[-1]].parent) is not None:
        chain.append(parent)
    return chain


def collect(cfg: MachineConfig) -> list[UUID]:
    """Unregister media nothing reaches; return those that are diffs (to be deleted).

    Reachable: the ancestry of every current leaf and every snapshot image.
    Bases are the user's files and are only unregistered, never deleted.
    """
    live: set[UUID] = set()
    roots = list(cfg.leaves.values())
    roots += [a.image for s in cfg.snapshots.values() for a in s.attachments.values()]
    for root in roots:
        node: UUID | None = root
        while node is not None and node not in live:
            live.add(node)
            node = cfg.media[node].parent
    dropped = [u for u in cfg.media if u not in live]
    return [u for u in dropped if cfg.media.pop(u).parent is not None]


def find_medium(
    cfg: MachineConfig, real_paths: dict[UUID, str], path: str, medium: UUID | None
) -> UUID | None:
    """The registered medium with this UUID or real path, if any; a copy is refused."""
    for u, real in real_paths.items():
        same_file = real == path
        if u == medium and not same_file:
            raise MachineError(
                f"{path}: has the UUID {u} of the registered medium {cfg.media[u].path} "
                "(a copy of it?); give the copy a new UUID first"
            )
        if same_file:
            return u
    return None


def check_reuse(cfg: MachineConfig, medium: UUID, mtype: MediumType, shown: str) -> None:
    """Refuse to attach an already registered medium in a way that conflicts."""
    rec = cfg.media[medium]
    if rec.type is not mtype:
        children = cfg.children(medium)
        users = [f"port {p}" for p, a in cfg.attachments.items() if a.medium == medium]
        users += [
            f"snapshot {s.name!r}"
            for s in cfg.snapshots.values()
            if any(a.medium == medium for a in s.attachments.values())
        ]
        if children or users:
            why = (
                f"it has {len(children)} differencing image(s)"
                if children
                else f"it is in use by {', '.join(users)}"
            )
            raise MachineError(f"{shown}: cannot change its type from {rec.type} to {mtype}: {why}")
    ports = [p for p, a in cfg.attachments.items() if a.medium == medium]
    if ports and not mtype.multi_user:
        raise MachineError(
            f"{shown}: is already attached to port {ports[0]}; a {mtype} medium can be "
            "attached once (use multiattach, immutable, shareable or readonly)"
        )


def is_snapshot_image(cfg: MachineConfig, medium: UUID) -> bool:
    """Whether a snapshot froze ``medium`` (so it may no longer be written)."""
    return any(a.image == medium for s in cfg.snapshots.values() for a in s.attachments.values())


def new_snapshot(cfg: MachineConfig, name: str, description: str) -> Snapshot:
    """A snapshot of the current attachments (images not frozen yet), after the checks."""
    if not name.strip():
        raise MachineError("a snapshot needs a name")
    if any(s.name == name for s in cfg.snapshots.values()):
        raise MachineError(f"a snapshot named {name!r} already exists")
    for port, att in cfg.attachments.items():
        leaf = cfg.media[cfg.leaves[port]]
        if att.type.in_snapshots and leaf.format != "vdi":
            raise MachineError(
                f"port {port}: {leaf.path} is raw; snapshots need a VDI (convert it, or "
                "attach it as writethrough to leave it out of snapshots)"
            )
    time = datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds")
    snap = Snapshot(uuid4(), name, description, time, cfg.current_snapshot, {})
    for port, att in sorted(cfg.attachments.items()):
        snap.attachments[port] = SnapshotAttachment(
            att.medium, att.type, att.autoreset, cfg.leaves[port]
        )
    return snap


def plan_delete(cfg: MachineConfig, snap: Snapshot, size: Callable[[UUID], int]) -> list[Merge]:
    """The merges deleting ``snap`` needs (see ``Machine.snapshot_delete``); refuse if an
    image has several children. ``size(medium)`` is the size of a medium's file."""
    merges = []
    for port, att in sorted(snap.attachments.items()):
        image = att.image
        if not att.type.in_snapshots:
            continue
        children = cfg.children(image)
        if len(children) > 1:
            raise MachineError(
                f"cannot delete snapshot {snap.name!r}: its image for port {port} "
                f"({cfg.media[image].path}) has {len(children)} children (states that "
                "were restored from it and changed since); delete the newer snapshots "
                "of one branch first"
            )
        if not children:
            continue
        child = children[0]
        if cfg.media[image].parent is None or size(image) > size(child):
            merges.append(Merge(port, "backward", child, image))
        else:
            merges.append(Merge(port, "forward", image, child))
    return merges


def drop_snapshot(cfg: MachineConfig, snapshot: UUID, merges: list[Merge]) -> None:
    """The configuration after ``snapshot``'s merges: the tree re-linked, images replaced."""
    snap = cfg.snapshots.pop(snapshot)
    for other in cfg.snapshots.values():
        if other.parent == snapshot:
            other.parent = snap.parent
    if cfg.current_snapshot == snapshot:
        cfg.current_snapshot = snap.parent
    for merge in merges:
        if merge.direction == "forward":
            # the image (source) is now unreachable, collected with its file
            cfg.media[merge.target].parent = cfg.media[merge.source].parent
        else:
            _replace_medium(cfg, merge.source, merge.target)
    cfg.pending = None


def _replace_medium(cfg: MachineConfig, old: UUID, new: UUID) -> None:
    """After a backward merge of ``old`` into its parent ``new``: point everything at ``new``."""
    for rec in cfg.media.values():
        if rec.parent == old:
            rec.parent = new
    for port, leaf in cfg.leaves.items():
        if leaf == old:
            cfg.leaves[port] = new
    for snap in cfg.snapshots.values():
        for att in snap.attachments.values():
            if att.image == old:
                att.image = new
