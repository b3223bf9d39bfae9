"""A machine folder's committed state: each change a transaction, recovery after a crash.

A change edits a copy of the configuration (machine_plan.py checks it). Then:

1. The new configuration is validated and every diff it drops is checked
   against the ownership rules (ownership.py). A refusal here changes nothing.
2. If the change creates diffs, their UUIDs are committed first as ``discard``
   (the intent): a crash from here on leaves files the machine knows as its own.
3. The diffs are created (``Snapshots/.new-{UUID}.vdi``, renamed when whole).
4. The new configuration is committed by replacing ``machine.json`` (write a
   temporary file, fsync, rename), with the dropped diffs as ``discard``.
5. The dropped diffs' files are deleted.

A failure in 3 or 4 deletes what was created and puts the old ``machine.json``
back byte for byte. ``recover`` (at every writable open) deletes the files of
``discard`` that are still there. Snapshot deletion also rewrites existing
images (the merges), so it first commits a "pending" record naming them;
``recover`` finishes a pending deletion (each merge can be repeated) first.
"""

import contextlib
import copy
from collections.abc import Iterator
from dataclasses import dataclass, field
from uuid import UUID, uuid4

from emu.storage import machine_file, machine_plan, ops
from emu.storage.errors import MachineError, StorageError
from emu.storage.machine_file import MachineConfig, MediumRecord, Merge, PendingDelete
from emu.storage.media import MediumType
from emu.storage.ownership import MachineFiles, diff_path
from emu.storage.vdi import VdiImage


@dataclass
class Change:
    """A configuration being edited, and the diffs it will create (new UUID, parent)."""

    config: MachineConfig
    creates: list[tuple[UUID, UUID]] = field(default_factory=list)

    def new_diff(self, parent: UUID) -> UUID:
        """Register a new empty diff of ``parent``; its file is made at the commit."""
        medium = uuid4()
        self.config.media[medium] = MediumRecord(
            diff_path(medium), "vdi", MediumType.NORMAL, parent
        )
        self.creates.append((medium, parent))
        return medium


class MachineStore:
    """The committed configuration of a machine folder and the files it owns."""

    @classmethod
    def create(cls, folder: str, config: MachineConfig) -> "MachineStore":
        """Write a new machine's file and its Snapshots folder."""
        store = cls(folder, config, b"")
        store.files.snapshots_folder()
        store._data = machine_file.write(folder, config)
        machine_file.fsync_dir(folder)
        return store

    def __init__(self, folder: str, config: MachineConfig, data: bytes) -> None:
        self.folder = folder
        self.files = MachineFiles(folder)
        self._config = config
        self._data = data  # the committed file's bytes

    @property
    def config(self) -> MachineConfig:
        """The committed configuration (read it; change it through :meth:`change`)."""
        return self._config

    def path(self, medium: UUID) -> str:
        """The absolute path of a registered medium."""
        return self.files.path(self._config.media[medium].path)

    def registry(self) -> dict[UUID, str]:
        """Every registered medium's absolute path, for parent lookups."""
        return {u: self.files.path(rec.path) for u, rec in self._config.media.items()}

    @contextlib.contextmanager
    def change(self) -> Iterator[Change]:
        """Edit a copy of the configuration and commit it (module doc, steps 1-5)."""
        change = Change(copy.deepcopy(self._config))
        yield change
        cfg = change.config
        dropped = machine_plan.collect(cfg)
        problem = cfg.inconsistency()
        if problem:
            raise MachineError(f"refused: the machine would be inconsistent: {problem}")
        old = self._config.media
        doomed = [self.files.deletable(u, old[u].path) for u in dropped if u in old]
        with contextlib.ExitStack() as parents:
            # open every new diff's parent first: a missing, locked or damaged one is
            # refused before anything is written
            bases = [
                parents.enter_context(
                    VdiImage.open(self.files.path(cfg.media[parent].path), read_only=True)
                )
                for _, parent in change.creates
            ]
            if change.creates:
                self.files.snapshots_folder()
            targets = [self.files.new_diff(u) for u, _ in change.creates]
            data = self._commit(change, bases, targets, dropped)
        self._config, self._data = cfg, data
        machine_file.fsync_dir(self.folder)
        for path in doomed:
            self.files.remove(path)
        if doomed:
            machine_file.fsync_dir(self.files.snapshots)

    def recover(self) -> None:
        """Finish a pending snapshot deletion; delete the discarded diffs still present."""
        pending = self._config.pending
        if pending is not None:
            self.finish_delete(pending.snapshot, pending.merges)
        leftovers = self.files.leftovers(self._config.discard)
        for path in leftovers:
            self.files.remove(path)
        if leftovers:
            machine_file.fsync_dir(self.files.snapshots)

    def delete_snapshot(self, snapshot: UUID, merges: list[Merge]) -> None:
        """Commit the intent (if there are merges), merge, commit the tree without it."""
        if merges:
            with self.change() as change:
                change.config.pending = PendingDelete(snapshot, merges)
        self.finish_delete(snapshot, merges)

    def finish_delete(self, snapshot: UUID, merges: list[Merge]) -> None:
        """Run (or re-run) a deletion's merges, then commit the tree without the snapshot."""
        for merge in merges:
            self._run_merge(merge)
        with self.change() as change:
            machine_plan.drop_snapshot(change.config, snapshot, merges)

    def _run_merge(self, merge: Merge) -> None:
        """One merge step of a snapshot deletion; ops' merges can be repeated after a crash."""
        source, target = merge.source, merge.target
        if merge.direction == "forward":
            # the image (source) into its only child; the child keeps its uuidModify,
            # so the child's own children stay validly linked
            ops.merge_into_child(self.path(source), self.path(target))
        else:
            # the only child (source) into the image (target), whose content changes:
            # the child's children are re-linked to the image
            ops.merge(self.path(source), registry=self.registry())
            for grandchild in self._config.children(source):
                ops.relink(self.path(grandchild), self.path(target))

    def _commit(
        self,
        change: Change,
        bases: list[VdiImage],
        targets: list[tuple[str, str]],
        dropped: list[UUID],
    ) -> bytes:
        """Steps 2-4: the intent, the new diffs, the commit; undone on any failure."""
        created: list[str] = []
        try:
            if change.creates:
                intent = copy.copy(self._config)
                intent.discard = [u for u, _ in change.creates]
                machine_file.write(self.folder, intent)
            for (medium, _), base, (temp, final) in zip(
                change.creates, bases, targets, strict=True
            ):
                created.append(temp)
                VdiImage.create(temp, base.size, parent=base, uuid_create=medium).close()
                self.files.rename(temp, final)
                created[-1] = final
            change.config.discard = dropped
            return machine_file.write(self.folder, change.config)  # the commit point
        except BaseException:
            self._undo(created, wrote_intent=bool(change.creates))
            raise

    def _undo(self, created: list[str], *, wrote_intent: bool) -> None:
        """After a failed commit: delete what was created, put the old file back."""
        for path in created:
            with contextlib.suppress(StorageError):
                self.files.remove(path)
        if wrote_intent:
            with contextlib.suppress(StorageError):
                machine_file.write_bytes(self.folder, self._data)
