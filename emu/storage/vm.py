"""Machine folders: disks on ports, medium types applied at start, snapshots.

A machine is a folder::

    DIR/machine.json            the configuration (see machine_file.py)
    DIR/Snapshots/{UUID}.vdi    the differencing images the machine made

Base media stay where the user keeps them; the machine file records their
paths relative to the folder. Diffs are made, merged and deleted only here.

:class:`Machine` is the public face; the work is split by job:
machine_plan.py checks and edits the configuration (every refusal comes from
there, before any file is touched), machine_store.py commits each change as a
transaction and recovers after a crash, ownership.py decides which files the
machine may create and delete.
"""

import fcntl
import os
from contextlib import AbstractContextManager
from typing import Any
from uuid import UUID, uuid4

from emu.storage import machine_file
from emu.storage.chain import Chain, open_chain
from emu.storage.errors import (
    ImageLockedError,
    MachineError,
    MachineLockedError,
    MediumError,
    StorageError,
)
from emu.storage.image import Closing
from emu.storage.machine_file import Attachment, MachineConfig, MediumRecord
from emu.storage.machine_plan import (
    SnapshotNode,
    ancestry,
    check_port,
    check_reuse,
    find_medium,
    find_snapshot,
    is_snapshot_image,
    medium_type,
    new_snapshot,
    plan_delete,
    snapshot_tree,
)
from emu.storage.machine_store import Change, MachineStore
from emu.storage.media import MediumType, check_type, open_shareable, probe

__all__ = ["Machine", "MachineError", "MachineLockedError", "SnapshotNode"]


class Machine(Closing):
    """An open machine folder. Holds an exclusive lock on the folder until closed."""

    def __init__(
        self, folder: str, store: MachineStore, lock_fd: int | None, read_only: bool
    ) -> None:
        self.folder = folder
        self._store = store
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
            if os.path.lexists(os.path.join(folder, machine_file.MACHINE_FILE)):
                raise MachineError(f"{folder}: is already a machine folder")
            config = MachineConfig(uuid4(), name or os.path.basename(folder))
            store = MachineStore(folder, config, b"")
            store.files.snapshots_folder()
            data = machine_file.write(folder, config)
            machine_file.fsync_dir(folder)
        except BaseException:
            os.close(lock_fd)
            raise
        return cls(folder, MachineStore(folder, config, data), lock_fd, read_only=False)

    @classmethod
    def open(cls, folder: str, *, read_only: bool = False) -> "Machine":
        """Open a machine folder; finish an interrupted change (delete its leftover diffs,
        complete a snapshot deletion). ``read_only`` takes no lock and allows only
        queries (``info``, ``snapshot_list``)."""
        folder = os.path.abspath(folder)
        if not os.path.isdir(folder):
            raise machine_file.MachineFileError(f"{folder}: not a machine folder")
        lock_fd = None if read_only else _lock_folder(folder)
        try:
            store = MachineStore(folder, *machine_file.read_with_bytes(folder))
            if not read_only:
                store.recover()
        except BaseException:
            if lock_fd is not None:
                os.close(lock_fd)
            raise
        return cls(folder, store, lock_fd, read_only)

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

    @property
    def _config(self) -> MachineConfig:
        return self._store.config

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
        mtype = medium_type(type)
        check_port(port)
        cfg = self._config
        if port in cfg.attachments:
            raise MachineError(f"port {port} already has a disk; detach it first")
        path = os.path.realpath(medium_path)
        if not mtype.multi_user:
            _check_not_in_use(path)
        facts = probe(path)
        check_type(mtype, facts, medium_path)
        if not autoreset and mtype is not MediumType.IMMUTABLE:
            raise MachineError("autoreset applies to immutable media only")
        real_paths = {u: os.path.realpath(p) for u, p in self._store.registry().items()}
        existing = find_medium(cfg, real_paths, path, facts.uuid)
        if existing is not None:
            check_reuse(cfg, existing, mtype, medium_path)
        with self._change() as change:
            cfg = change.config
            medium = existing or facts.uuid or uuid4()
            if existing is None:
                rel = os.path.relpath(path, self._store.files.folder)
                cfg.media[medium] = MediumRecord(rel, facts.format, mtype)
            cfg.media[medium].type = mtype
            cfg.attachments[port] = Attachment(medium, mtype, autoreset)
            frozen = bool(cfg.children(medium)) or is_snapshot_image(cfg, medium)
            if mtype.diff_at_attach or (mtype is MediumType.NORMAL and frozen):
                cfg.leaves[port] = change.new_diff(medium)
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
        snap = new_snapshot(self._config, name, description)
        with self._change() as change:
            cfg = change.config
            for port, att in sorted(cfg.attachments.items()):
                if att.type.in_snapshots:
                    cfg.leaves[port] = change.new_diff(cfg.leaves[port])
            cfg.snapshots[snap.uuid] = snap
            cfg.current_snapshot = snap.uuid
        return snap.uuid

    def snapshot_restore(self, name: str) -> UUID:
        """Go back to a snapshot: its attachments, each snapshotted one on a new empty diff.

        The current leaves are discarded (their files deleted). Write-through, shareable
        and read-only media are re-attached with their contents as they are now.
        Attachments made after the snapshot are detached, as the snapshot's
        configuration is restored (VirtualBox restores the whole machine settings).
        """
        snap = find_snapshot(self._config, name)
        with self._change() as change:
            cfg = change.config
            cfg.attachments = {}
            cfg.leaves = {}
            for port, att in snap.attachments.items():
                cfg.attachments[port] = Attachment(att.medium, att.type, att.autoreset)
                cfg.leaves[port] = (
                    change.new_diff(att.image) if att.type.in_snapshots else att.medium
                )
            cfg.current_snapshot = snap.uuid
        return snap.uuid

    def snapshot_delete(self, name: str) -> int:
        """Remove a snapshot, merging its images so that no other state loses data;
        return the number of merges.

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
        snap = find_snapshot(self._config, name)
        merges = plan_delete(self._config, snap, self._file_size)
        self._check_writable()
        self._store.delete_snapshot(snap.uuid, merges)
        return len(merges)

    def snapshot_list(self) -> list[SnapshotNode]:
        """The snapshot tree: root snapshots, each with its children, oldest first."""
        return snapshot_tree(self._config)

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
                    change.config.leaves[port] = change.new_diff(parent)
        registry = self._store.registry()
        try:
            for port, att in sorted(self._config.attachments.items()):
                leaf = self._store.path(self._config.leaves[port])
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
                    "path": self._store.path(att.medium),
                    "type": str(att.type),
                    "autoreset": att.autoreset,
                    "chain": [self._store.path(u) for u in ancestry(cfg, cfg.leaves[port])],
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

    # ---- internals --------------------------------------------------------

    def _check_writable(self) -> None:
        if self._read_only:
            raise MachineError(f"{self.folder}: opened read-only")
        if self._devices:
            raise MachineError("the machine is started; stop it before changing it")

    def _change(self) -> AbstractContextManager[Change]:
        self._check_writable()
        return self._store.change()

    def _file_size(self, medium: UUID) -> int:
        return os.path.getsize(self._store.path(medium))


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


def _node_json(node: SnapshotNode) -> dict[str, Any]:
    return {
        "uuid": str(node.uuid),
        "name": node.name,
        "description": node.description,
        "time": node.time,
        "current": node.current,
        "children": [_node_json(c) for c in node.children],
    }
