"""Machine folders: disks on ports, medium types applied at start, snapshots.

A machine is a folder::

    DIR/machine.json            the configuration (see machine_file.py)
    DIR/Snapshots/{UUID}.vdi    the differencing images the machine made

Base media stay where the user keeps them; the machine file records their
paths relative to the folder. Diffs are made, merged and deleted only here.

Every operation checks everything it can before it touches a file, so a
refused operation changes nothing. Then it creates new files, commits by
replacing ``machine.json`` (write a temporary file, fsync, rename), and only
then deletes files the new configuration no longer names. A crash before the
rename leaves the old machine plus unreferenced files in ``Snapshots/``; a
crash after it leaves the new machine plus files not yet deleted. Either way
``Machine.open`` finds a valid machine file and removes the unreferenced
``{UUID}.vdi`` files. Snapshot deletion also rewrites existing images (the
merge), so it first commits a "pending" record naming the merges; ``open``
finishes a pending deletion (each merge step can be repeated) before anything
else. See :meth:`Machine.snapshot_delete` for the merge direction.
"""

import contextlib
import copy
import datetime
import fcntl
import os
import re
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any
from uuid import UUID, uuid4

from emu.storage import machine_file, ops
from emu.storage.chain import Chain, open_chain
from emu.storage.errors import ImageLockedError, MediumError, StorageError
from emu.storage.image import Closing
from emu.storage.machine_file import (
    Attachment,
    MachineConfig,
    MediumRecord,
    Merge,
    PendingDelete,
    Snapshot,
    SnapshotAttachment,
)
from emu.storage.media import MediumType, check_type, open_shareable, probe
from emu.storage.vdi import VdiImage

SNAPSHOTS = "Snapshots"
PORTS = 32  # AHCI allows 32 ports per HBA
_DIFF_NAME = re.compile(r"^\{[0-9a-f]{8}(-[0-9a-f]{4}){3}-[0-9a-f]{12}\}\.vdi$")


class MachineError(StorageError):
    """A machine operation was refused; the message says why. Nothing was changed."""


class MachineLockedError(MachineError):
    """Another process has the machine folder open."""


@dataclass
class SnapshotNode:
    """A snapshot and its children, as :meth:`Machine.snapshot_list` returns them."""

    uuid: UUID
    name: str
    description: str
    time: str
    current: bool  # the snapshot the current state derives from
    children: list["SnapshotNode"] = field(default_factory=list)


@dataclass
class _Change:
    """A configuration being edited, and the files created for it so far."""

    config: MachineConfig
    created: list[str] = field(default_factory=list)


class Machine(Closing):
    """An open machine folder. Holds an exclusive lock on the folder until closed."""

    def __init__(
        self, folder: str, config: MachineConfig, lock_fd: int | None, read_only: bool
    ) -> None:
        self.folder = folder
        self._config = config
        self._lock_fd = lock_fd
        self._read_only = read_only
        self._devices: dict[int, Chain] = {}

    # ---- life cycle -------------------------------------------------------

    @classmethod
    def create(cls, folder: str, *, name: str | None = None) -> "Machine":
        """Make a new machine folder (the directory may exist, empty of a machine)."""
        folder = os.path.abspath(folder)
        try:
            os.makedirs(folder, exist_ok=True)
        except OSError as exc:
            raise MachineError(f"{folder}: cannot create: {exc.strerror}") from None
        lock_fd = _lock_folder(folder)
        try:
            if os.path.exists(os.path.join(folder, machine_file.MACHINE_FILE)):
                raise MachineError(f"{folder}: is already a machine folder")
            os.makedirs(os.path.join(folder, SNAPSHOTS), exist_ok=True)
            config = MachineConfig(uuid4(), name or os.path.basename(folder))
            machine_file.write(folder, config)
            machine_file.fsync_dir(folder)
        except BaseException:
            os.close(lock_fd)
            raise
        return cls(folder, config, lock_fd, read_only=False)

    @classmethod
    def open(cls, folder: str, *, read_only: bool = False) -> "Machine":
        """Open a machine folder; finish an interrupted snapshot deletion, drop stray diffs.

        ``read_only`` takes no lock and allows only queries (``info``, ``snapshot_list``).
        """
        folder = os.path.abspath(folder)
        if not os.path.isdir(folder):
            raise machine_file.MachineFileError(f"{folder}: not a machine folder")
        lock_fd = None if read_only else _lock_folder(folder)
        try:
            machine = cls(folder, machine_file.read(folder), lock_fd, read_only)
            if not read_only:
                machine._recover()
        except BaseException:
            if lock_fd is not None:
                os.close(lock_fd)
            raise
        return machine

    def close(self) -> None:
        """Close the disks and release the folder. Idempotent."""
        self.stop()
        if self._lock_fd is not None:
            os.close(self._lock_fd)
            self._lock_fd = None

    @property
    def uuid(self) -> UUID:
        """The machine's UUID."""
        return self._config.uuid

    @property
    def name(self) -> str:
        """The machine's name (the folder name unless given at creation)."""
        return self._config.name

    # ---- attachments ------------------------------------------------------

    def attach(
        self,
        port: int,
        medium_path: str,
        type: MediumType | str = MediumType.NORMAL,
        *,
        autoreset: bool = True,
    ) -> None:
        """Put a medium on a port as ``type``; register it; make its diff if the type needs one."""
        mtype = _medium_type(type)
        self._check_port(port)
        if port in self._config.attachments:
            raise MachineError(f"port {port} already has a disk; detach it first")
        path = os.path.realpath(medium_path)
        if not mtype.multi_user:
            _check_not_in_use(path)
        facts = probe(path)
        check_type(mtype, facts, medium_path)
        if not autoreset and mtype is not MediumType.IMMUTABLE:
            raise MachineError("autoreset applies to immutable media only")
        existing = self._find_medium(path, facts.uuid)
        if existing is not None:
            self._check_reuse(existing, mtype, medium_path)
        with self._change() as change:
            cfg = change.config
            medium = existing or facts.uuid or uuid4()
            if existing is None:
                rel = os.path.relpath(path, os.path.realpath(self.folder))
                cfg.media[medium] = MediumRecord(rel, facts.format, mtype)
            cfg.media[medium].type = mtype
            cfg.attachments[port] = Attachment(medium, mtype, autoreset)
            frozen = bool(cfg.children(medium)) or self._snapshot_images(cfg, medium)
            if mtype.diff_at_attach or (mtype is MediumType.NORMAL and frozen):
                cfg.leaves[port] = self._new_diff(change, medium)
            else:
                cfg.leaves[port] = medium

    def detach(self, port: int) -> None:
        """Take the disk off a port. The base file is kept; the attachment's current diff
        (its changes since the last snapshot, or all of a multiattach or immutable
        attachment's writes) is deleted, as VirtualBox deletes an implicit diff."""
        if port not in self._config.attachments:
            raise MachineError(f"port {port} has no disk")
        with self._change() as change:
            del change.config.attachments[port]
            del change.config.leaves[port]

    # ---- snapshots --------------------------------------------------------

    def snapshot_take(self, name: str, description: str = "") -> UUID:
        """Freeze each snapshotted attachment's leaf under a new empty diff; record the tree node.

        Write-through, shareable and read-only attachments are recorded (so a restore
        re-attaches them) but their contents are not part of the snapshot.
        """
        if not name.strip():
            raise MachineError("a snapshot needs a name")
        if any(s.name == name for s in self._config.snapshots.values()):
            raise MachineError(f"a snapshot named {name!r} already exists")
        for port, att in self._config.attachments.items():
            leaf = self._config.leaves[port]
            if att.type.in_snapshots and self._config.media[leaf].format != "vdi":
                raise MachineError(
                    f"port {port}: {self._config.media[leaf].path} is raw; snapshots need a "
                    "VDI (convert it, or attach it as writethrough to leave it out of snapshots)"
                )
        with self._change() as change:
            cfg = change.config
            snap = Snapshot(
                uuid4(),
                name,
                description,
                datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds"),
                cfg.current_snapshot,
                {},
            )
            for port, att in sorted(cfg.attachments.items()):
                frozen = cfg.leaves[port]
                snap.attachments[port] = SnapshotAttachment(
                    att.medium, att.type, att.autoreset, frozen
                )
                if att.type.in_snapshots:
                    cfg.leaves[port] = self._new_diff(change, frozen)
            cfg.snapshots[snap.uuid] = snap
            cfg.current_snapshot = snap.uuid
        return snap.uuid

    def snapshot_restore(self, name: str) -> None:
        """Go back to a snapshot: its attachments, each snapshotted one on a new empty diff.

        The current leaves are discarded (their files deleted). Write-through, shareable
        and read-only media are re-attached with their contents as they are now.
        Attachments made after the snapshot are detached, as the snapshot's
        configuration is restored (VirtualBox restores the whole machine settings).
        """
        snap = self._snapshot(name)
        with self._change() as change:
            cfg = change.config
            cfg.attachments = {}
            cfg.leaves = {}
            for port, att in snap.attachments.items():
                cfg.attachments[port] = Attachment(att.medium, att.type, att.autoreset)
                cfg.leaves[port] = (
                    self._new_diff(change, att.image) if att.type.in_snapshots else att.medium
                )
            cfg.current_snapshot = snap.uuid

    def snapshot_delete(self, name: str) -> None:
        """Remove a snapshot, merging its images so that no other state loses data.

        For each snapshotted attachment, the snapshot's image S (frozen when the
        snapshot was taken) is dealt with as VirtualBox's SessionMachine does:

        - S has no child: a diff is deleted; a base is kept as it is.
        - S has several children (a restore was followed by new work, so two states
          depend on S): refused, nothing changed.
        - S has one child C and S is a base (no parent): backward merge, C's blocks
          are written into S and C is deleted (C's children are re-linked to S).
        - S has one child C and S is a diff: the smaller file is merged into the
          larger one (Medium::i_queryPreferredMergeDirection; ties go forward):
          forward when size(S) <= size(C): S's blocks that C lacks go into C, C is
          re-linked to S's parent and S is deleted; backward otherwise, as above.

        Either way every remaining state (the current one, other snapshots) reads
        exactly as before, and the tree is re-linked: children of the snapshot
        become children of its parent.
        """
        snap = self._snapshot(name)
        merges = self._plan_delete(snap)
        if merges:
            with self._change() as change:
                change.config.pending = PendingDelete(snap.uuid, merges)
        self._finish_delete(snap.uuid, merges)

    def snapshot_list(self) -> list[SnapshotNode]:
        """The snapshot tree: root snapshots, each with its children, oldest first."""
        cfg = self._config
        nodes = {
            u: SnapshotNode(u, s.name, s.description, s.time, u == cfg.current_snapshot)
            for u, s in cfg.snapshots.items()
        }
        roots = []
        for u, s in cfg.snapshots.items():
            (roots if s.parent is None else nodes[s.parent].children).append(nodes[u])
        return roots

    # ---- running ----------------------------------------------------------

    def start(self) -> dict[int, Chain]:
        """Open every attachment's disk, applying medium types; port -> block device.

        Immutable attachments with autoreset get a new empty diff first (the old
        leaf file is deleted), so every start sees the state the attachment
        derives from; the diff is kept after the run until the next start.
        """
        if self._devices:
            raise MachineError("the machine is already started")
        resets = [p for p, a in self._config.attachments.items() if a.type.resets and a.autoreset]
        if resets:
            with self._change() as change:
                for port in resets:
                    leaf = change.config.leaves[port]
                    parent = change.config.media[leaf].parent
                    assert parent is not None  # an immutable attachment's leaf is a diff
                    change.config.leaves[port] = self._new_diff(change, parent)
        registry = self._registry()
        try:
            for port, att in sorted(self._config.attachments.items()):
                leaf = self._path(self._config.leaves[port])
                if att.type is MediumType.SHAREABLE:
                    self._devices[port] = open_shareable(leaf)
                else:
                    self._devices[port] = open_chain(
                        leaf, read_only=att.type is MediumType.READONLY, registry=registry
                    )
        except BaseException:
            self.stop()
            raise
        return dict(self._devices)

    def stop(self) -> None:
        """Flush and close the disks opened by :meth:`start`. Idempotent."""
        devices, self._devices = self._devices, {}
        errors = []
        for device in devices.values():
            try:
                device.close()
            except StorageError as exc:
                errors.append(exc)
        if errors:
            raise errors[0]

    # ---- queries ----------------------------------------------------------

    def info(self) -> dict[str, Any]:
        """A JSON-ready description: attachments with their chains, media, snapshots."""
        cfg = self._config
        current = cfg.snapshots.get(cfg.current_snapshot) if cfg.current_snapshot else None
        return {
            "folder": self.folder,
            "name": cfg.name,
            "uuid": str(cfg.uuid),
            "attachments": [
                {
                    "port": port,
                    "medium": str(att.medium),
                    "path": self._path(att.medium),
                    "type": str(att.type),
                    "autoreset": att.autoreset,
                    "chain": [self._path(u) for u in self._ancestry(cfg, cfg.leaves[port])],
                }
                for port, att in sorted(cfg.attachments.items())
            ],
            "media": [
                {
                    "uuid": str(u),
                    "path": rec.path,
                    "format": rec.format,
                    "type": str(rec.type),
                    "parent": None if rec.parent is None else str(rec.parent),
                }
                for u, rec in cfg.media.items()
            ],
            "current_snapshot": None if current is None else current.name,
            "snapshots": [_node_json(n) for n in self.snapshot_list()],
        }

    # ---- internals: configuration changes ---------------------------------

    @contextlib.contextmanager
    def _change(self) -> Iterator[_Change]:
        """Edit a copy of the configuration, commit it, then delete files it dropped."""
        if self._read_only:
            raise MachineError(f"{self.folder}: opened read-only")
        if self._devices:
            raise MachineError("the machine is started; stop it before changing it")
        change = _Change(copy.deepcopy(self._config))
        try:
            yield change
            doomed = self._collect(change.config)
            machine_file.write(self.folder, change.config)  # the commit point
        except BaseException:
            for path in change.created:
                _remove(path)
            raise
        self._config = change.config
        machine_file.fsync_dir(self.folder)
        for path in doomed:
            _remove(path)
        if doomed:
            machine_file.fsync_dir(os.path.join(self.folder, SNAPSHOTS))

    def _collect(self, cfg: MachineConfig) -> list[str]:
        """Unregister media nothing reaches; return the paths of such diffs to delete.

        Reachable: the ancestry of every current leaf and every snapshot image.
        Bases are the user's files and are only unregistered, never deleted.
        """
        live: set[UUID] = set()
        roots = list(cfg.leaves.values())
        roots += [a.image for s in cfg.snapshots.values() for a in s.attachments.values()]
        for root in roots:
            live.update(self._ancestry(cfg, root))
        doomed = []
        for u in [u for u in cfg.media if u not in live]:
            rec = cfg.media.pop(u)
            if rec.parent is not None:
                doomed.append(self._path_of(rec))
        return doomed

    def _new_diff(self, change: _Change, parent: UUID) -> UUID:
        """Create ``Snapshots/{UUID}.vdi`` as an empty child of ``parent``; register it."""
        folder = os.path.join(self.folder, SNAPSHOTS)
        os.makedirs(folder, exist_ok=True)
        tmp = os.path.join(folder, f".new-{uuid4()}.vdi")
        change.created.append(tmp)
        ops.create_diff(self._path_of(change.config.media[parent]), tmp)
        image = VdiImage.open(tmp, read_only=True)
        try:
            medium = image.uuid_create
        finally:
            image.close()
        rel = os.path.join(SNAPSHOTS, f"{{{medium}}}.vdi")
        os.rename(tmp, os.path.join(self.folder, rel))
        change.created[-1] = os.path.join(self.folder, rel)
        change.config.media[medium] = MediumRecord(rel, "vdi", MediumType.NORMAL, parent)
        return medium

    # ---- internals: snapshot deletion -------------------------------------

    def _plan_delete(self, snap: Snapshot) -> list[Merge]:
        """The merges deleting ``snap`` needs; refuse if an image has several children."""
        cfg = self._config
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
            parent = cfg.media[image].parent
            if parent is None:
                direction = "backward"
            else:
                s_size = os.path.getsize(self._path(image))
                c_size = os.path.getsize(self._path(child))
                direction = "backward" if s_size > c_size else "forward"
            source, target = (image, child) if direction == "forward" else (child, image)
            merges.append(Merge(port, direction, source, target))
        return merges

    def _finish_delete(self, snapshot: UUID, merges: list[Merge]) -> None:
        """Run (or re-run) the merges, then commit the tree without the snapshot."""
        for merge in merges:
            self._run_merge(merge)
        with self._change() as change:
            cfg = change.config
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

    def _run_merge(self, merge: Merge) -> None:
        """One merge step of a snapshot deletion; ops' merges can be repeated after a crash."""
        source, target = merge.source, merge.target
        if merge.direction == "forward":
            # the image (source) into its only child; the child keeps its uuidModify,
            # so the child's own children stay validly linked
            ops.merge_into_child(self._path(source), self._path(target))
        else:
            # the only child (source) into the image (target), whose content changes:
            # the child's children are re-linked to the image
            ops.merge(self._path(source), registry=self._registry())
            for grandchild in self._config.children(source):
                ops.relink(self._path(grandchild), self._path(target))

    # ---- internals: lookups and checks ------------------------------------

    def _recover(self) -> None:
        """Finish a pending snapshot deletion and remove files the machine does not name."""
        pending = self._config.pending
        if pending is not None:
            self._finish_delete(pending.snapshot, pending.merges)
        named = {os.path.normpath(self._path_of(r)) for r in self._config.media.values()}
        folder = os.path.join(self.folder, SNAPSHOTS)
        with contextlib.suppress(FileNotFoundError):
            for entry in os.listdir(folder):
                path = os.path.join(folder, entry)
                stray = entry.startswith(".new-") or _DIFF_NAME.match(entry)
                if stray and os.path.normpath(path) not in named:
                    _remove(path)
        _remove(os.path.join(self.folder, machine_file.MACHINE_FILE + ".tmp"))

    def _snapshot(self, name: str) -> Snapshot:
        for snap in self._config.snapshots.values():
            if snap.name == name or str(snap.uuid) == name:
                return snap
        raise MachineError(f"no snapshot named {name!r}")

    def _check_port(self, port: int) -> None:
        if not 0 <= port < PORTS:
            raise MachineError(f"port {port} does not exist (ports are 0..{PORTS - 1})")

    def _find_medium(self, path: str, medium: UUID | None) -> UUID | None:
        """The registered medium with this UUID or file, if any."""
        for u, rec in self._config.media.items():
            same_file = os.path.realpath(self._path_of(rec)) == path
            if u == medium and not same_file:
                raise MachineError(
                    f"{path}: has the UUID {u} of the registered medium {rec.path} "
                    "(a copy of it?); give the copy a new UUID first"
                )
            if same_file:
                return u
        return None

    def _check_reuse(self, medium: UUID, mtype: MediumType, shown: str) -> None:
        """Refuse to attach an already registered medium in a way that conflicts."""
        cfg = self._config
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
                raise MachineError(
                    f"{shown}: cannot change its type from {rec.type} to {mtype}: {why}"
                )
        ports = [p for p, a in cfg.attachments.items() if a.medium == medium]
        if ports and not mtype.multi_user:
            raise MachineError(
                f"{shown}: is already attached to port {ports[0]}; a {mtype} medium can be "
                "attached once (use multiattach, immutable, shareable or readonly)"
            )

    @staticmethod
    def _snapshot_images(cfg: MachineConfig, medium: UUID) -> bool:
        return any(
            a.image == medium for s in cfg.snapshots.values() for a in s.attachments.values()
        )

    @staticmethod
    def _ancestry(cfg: MachineConfig, medium: UUID) -> list[UUID]:
        """``medium`` and its parents, leaf first."""
        chain = [medium]
        while (parent := cfg.media[chain[-1]].parent) is not None:
            chain.append(parent)
        return chain

    def _registry(self) -> dict[UUID, str]:
        return {u: self._path_of(rec) for u, rec in self._config.media.items()}

    def _path(self, medium: UUID) -> str:
        return self._path_of(self._config.media[medium])

    def _path_of(self, rec: MediumRecord) -> str:
        return os.path.normpath(os.path.join(self.folder, rec.path))


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


def _medium_type(value: MediumType | str) -> MediumType:
    try:
        return MediumType(value)
    except ValueError:
        names = ", ".join(t.value for t in MediumType)
        raise MachineError(f"unknown medium type {value!r} (one of: {names})") from None


def _lock_folder(folder: str) -> int:
    """Lock the machine folder exclusively (flock on the directory itself)."""
    fd = os.open(folder, os.O_RDONLY | os.O_DIRECTORY)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        os.close(fd)
        raise MachineLockedError(f"{folder}: machine is in use by another process") from None
    return fd


def _check_not_in_use(path: str) -> None:
    """Refuse a medium another process has open (a running machine)."""
    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError as exc:
        raise MediumError(f"{path}: cannot open: {exc.strerror}") from None
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        raise ImageLockedError(f"{path}: in use by another machine") from None
    finally:
        os.close(fd)


def _remove(path: str) -> None:
    with contextlib.suppress(FileNotFoundError):
        os.unlink(path)


def _node_json(node: SnapshotNode) -> dict[str, Any]:
    return {
        "uuid": str(node.uuid),
        "name": node.name,
        "description": node.description,
        "time": node.time,
        "current": node.current,
        "children": [_node_json(c) for c in node.children],
    }
