"""The machine file (``machine.json``): a machine folder's whole configuration.

One declaration of the layout, as data classes, read and written as indented
JSON so that a person can read it. Every UUID is a string in the file and a
:class:`uuid.UUID` here; every medium path is relative to the machine folder.
The file is replaced atomically (temporary file, fsync, rename, fsync of the
folder), so a reader sees either the old or the new configuration, never a mix:
that rename is the commit point of every machine operation.
"""

import contextlib
import json
import os
import uuid
from dataclasses import dataclass, field
from typing import Any

from emu.storage.errors import StorageError
from emu.storage.media import MediumType

MACHINE_FILE = "machine.json"
SCHEMA = "ahci-emu machine"
VERSION = 1


class MachineFileError(StorageError):
    """The machine file is missing, unreadable, of an unknown version, or inconsistent."""


@dataclass
class MediumRecord:
    """One registered image: a base the user attached, or a diff the machine made."""

    path: str  # relative to the machine folder
    format: str  # "raw" or "vdi"
    type: MediumType  # diffs are "normal", as in VirtualBox
    parent: uuid.UUID | None = None


@dataclass
class Attachment:
    """A disk on a port: which base medium, of which type."""

    medium: uuid.UUID  # the base medium
    type: MediumType
    autoreset: bool


@dataclass
class SnapshotAttachment(Attachment):
    """An attachment as a snapshot recorded it, with the image it pointed to."""

    image: uuid.UUID  # frozen leaf (types in snapshots) or the base itself (others)


@dataclass
class Snapshot:
    """One node of the snapshot tree."""

    uuid: uuid.UUID
    name: str
    description: str
    time: str  # ISO 8601, UTC
    parent: uuid.UUID | None
    attachments: dict[int, SnapshotAttachment]


@dataclass
class Merge:
    """One image merge of a snapshot deletion.

    forward: ``source`` is the snapshot's image, merged into its only child ``target``.
    backward: ``source`` is that only child, merged into the image ``target``.
    """

    port: int
    direction: str  # "forward" or "backward"
    source: uuid.UUID
    target: uuid.UUID


@dataclass
class PendingDelete:
    """A snapshot deletion whose image merges had started (see ``Machine.open``)."""

    snapshot: uuid.UUID
    merges: list[Merge]


@dataclass
class MachineConfig:
    """Everything ``machine.json`` holds."""

    uuid: uuid.UUID
    name: str
    media: dict[uuid.UUID, MediumRecord] = field(default_factory=dict)
    attachments: dict[int, Attachment] = field(default_factory=dict)
    current_snapshot: uuid.UUID | None = None
    leaves: dict[int, uuid.UUID] = field(default_factory=dict)
    snapshots: dict[uuid.UUID, Snapshot] = field(default_factory=dict)
    pending: PendingDelete | None = None

    def children(self, medium: uuid.UUID) -> list[uuid.UUID]:
        """The registered diffs whose parent is ``medium``."""
        return [u for u, rec in self.media.items() if rec.parent == medium]

    def base_of(self, medium: uuid.UUID) -> uuid.UUID:
        """Walk parent links up to the base medium."""
        while (parent := self.media[medium].parent) is not None:
            medium = parent
        return medium

    def to_json(self) -> dict[str, Any]:
        """The file's JSON object."""
        return {
            "schema": SCHEMA,
            "version": VERSION,
            "uuid": str(self.uuid),
            "name": self.name,
            "media": {
                str(u): {
                    "path": r.path,
                    "format": r.format,
                    "type": str(r.type),
                    "parent": _opt(r.parent),
                }
                for u, r in self.media.items()
            },
            "attachments": {
                str(p): _attachment_json(a) for p, a in sorted(self.attachments.items())
            },
            "current": {
                "snapshot": _opt(self.current_snapshot),
                "leaves": {str(p): str(u) for p, u in sorted(self.leaves.items())},
            },
            "snapshots": [
                {
                    "uuid": str(s.uuid),
                    "name": s.name,
                    "description": s.description,
                    "time": s.time,
                    "parent": _opt(s.parent),
                    "attachments": {
                        str(p): {**_attachment_json(a), "image": str(a.image)}
                        for p, a in sorted(s.attachments.items())
                    },
                }
                for s in self.snapshots.values()
            ],
            "pending": None
            if self.pending is None
            else {
                "delete_snapshot": str(self.pending.snapshot),
                "merges": [
                    {
                        "port": m.port,
                        "direction": m.direction,
                        "source": str(m.source),
                        "target": str(m.target),
                    }
                    for m in self.pending.merges
                ],
            },
        }

    @classmethod
    def from_json(cls, obj: Any, where: str) -> "MachineConfig":
        """Parse and validate the file's JSON object; ``where`` names it in errors."""
        if not isinstance(obj, dict) or obj.get("schema") != SCHEMA:
            raise MachineFileError(f"{where}: not an ahci-emu machine file")
        version = obj.get("version")
        if version != VERSION:
            raise MachineFileError(
                f"{where}: machine file version {version!r} is not supported "
                f"(this ahci-emu reads version {VERSION})"
            )
        try:
            config = cls._parse(obj)
        except (KeyError, TypeError, ValueError, AttributeError) as exc:
            raise MachineFileError(f"{where}: malformed machine file ({exc!r})") from None
        problem = config.inconsistency()
        if problem:
            raise MachineFileError(f"{where}: inconsistent machine file: {problem}")
        return config

    @classmethod
    def _parse(cls, obj: dict[str, Any]) -> "MachineConfig":
        media = {
            uuid.UUID(u): MediumRecord(
                str(r["path"]), str(r["format"]), MediumType(r["type"]), _uuid_or_none(r["parent"])
            )
            for u, r in obj["media"].items()
        }
        attachments = {int(p): _attachment(a) for p, a in obj["attachments"].items()}
        current = obj["current"]
        snapshots = {}
        for s in obj["snapshots"]:
            snap = Snapshot(
                uuid.UUID(s["uuid"]),
                str(s["name"]),
                str(s["description"]),
                str(s["time"]),
                _uuid_or_none(s["parent"]),
                {
                    int(p): SnapshotAttachment(**vars(_attachment(a)), image=uuid.UUID(a["image"]))
                    for p, a in s["attachments"].items()
                },
            )
            snapshots[snap.uuid] = snap
        pending = obj.get("pending")
        return cls(
            uuid=uuid.UUID(obj["uuid"]),
            name=str(obj["name"]),
            media=media,
            attachments=attachments,
            current_snapshot=_uuid_or_none(current["snapshot"]),
            leaves={int(p): uuid.UUID(u) for p, u in current["leaves"].items()},
            snapshots=snapshots,
            pending=None
            if pending is None
            else PendingDelete(
                uuid.UUID(pending["delete_snapshot"]),
                [
                    Merge(
                        int(m["port"]),
                        str(m["direction"]),
                        uuid.UUID(m["source"]),
                        uuid.UUID(m["target"]),
                    )
                    for m in pending["merges"]
                ],
            ),
        )

    def inconsistency(self) -> str | None:
        """The first broken cross-reference, or None when the configuration is sound."""
        for u, rec in self.media.items():
            if rec.format not in ("raw", "vdi") or (rec.parent and rec.format != "vdi"):
                return f"medium {u} has a bad format {rec.format!r}"
            seen = {u}
            while rec.parent is not None:
                if rec.parent not in self.media:
                    return f"medium {u} has an unregistered ancestor {rec.parent}"
                if rec.parent in seen:
                    return f"medium {u} is its own ancestor"
                seen.add(rec.parent)
                rec = self.media[rec.parent]
        if set(self.attachments) != set(self.leaves):
            return "attachments and current leaves name different ports"
        for port, att in self.attachments.items():
            problem = self._attachment_problem(f"port {port}", att, self.leaves[port])
            if problem:
                return problem
        for snap in self.snapshots.values():
            if snap.parent is not None and snap.parent not in self.snapshots:
                return f"snapshot {snap.name!r} has an unknown parent {snap.parent}"
            for port, att in snap.attachments.items():
                problem = self._attachment_problem(
                    f"snapshot {snap.name!r} port {port}", att, att.image
                )
                if problem:
                    return problem
        if self.current_snapshot is not None and self.current_snapshot not in self.snapshots:
            return f"current snapshot {self.current_snapshot} is unknown"
        if self.pending is not None:
            if self.pending.snapshot not in self.snapshots:
                return f"the pending deletion names an unknown snapshot {self.pending.snapshot}"
            for m in self.pending.merges:
                if m.direction not in ("forward", "backward") or not {m.source, m.target} <= set(
                    self.media
                ):
                    return f"the pending deletion has a bad merge {m}"
        return None

    def _attachment_problem(self, what: str, att: Attachment, image: uuid.UUID) -> str | None:
        if att.medium not in self.media or image not in self.media:
            return f"{what} names an unregistered medium"
        if self.media[att.medium].type is not att.type:
            return f"{what} is {att.type} but its medium is {self.media[att.medium].type}"
        if self.base_of(image) != att.medium:
            return f"{what}: image {image} is not derived from medium {att.medium}"
        return None


def read(folder: str) -> MachineConfig:
    """Load and validate a folder's machine file."""
    path = os.path.join(folder, MACHINE_FILE)
    try:
        with open(path, encoding="utf-8") as f:
            obj = json.load(f)
    except FileNotFoundError:
        raise MachineFileError(f"{folder}: not a machine folder (no {MACHINE_FILE})") from None
    except OSError as exc:
        raise MachineFileError(f"{path}: cannot read: {exc.strerror}") from None
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise MachineFileError(f"{path}: not valid JSON ({exc})") from None
    return MachineConfig.from_json(obj, path)


def write(folder: str, config: MachineConfig) -> None:
    """Replace the folder's machine file atomically (the commit point).

    Raises only before the rename, so on an error the old file is in place.
    The caller then fsyncs the folder (:func:`fsync_dir`) to make the rename durable.
    """
    path = os.path.join(folder, MACHINE_FILE)
    tmp = path + ".tmp"
    data = (json.dumps(config.to_json(), indent=2) + "\n").encode()
    try:
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
        try:
            os.write(fd, data)
            os.fsync(fd)
        finally:
            os.close(fd)
        os.replace(tmp, path)
    except OSError as exc:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise MachineFileError(f"{path}: cannot write: {exc.strerror}") from None


def fsync_dir(folder: str) -> None:
    """Make renames, creations and deletions in ``folder`` durable."""
    try:
        fd = os.open(folder, os.O_RDONLY | os.O_DIRECTORY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)
    except OSError as exc:
        raise MachineFileError(f"{folder}: cannot sync: {exc.strerror}") from None


def _opt(u: uuid.UUID | None) -> str | None:
    return None if u is None else str(u)


def _uuid_or_none(s: Any) -> uuid.UUID | None:
    return None if s is None else uuid.UUID(s)


def _attachment_json(a: Attachment) -> dict[str, Any]:
    return {"medium": str(a.medium), "type": str(a.type), "autoreset": a.autoreset}


def _attachment(a: dict[str, Any]) -> Attachment:
    if not isinstance(a["autoreset"], bool):
        raise TypeError("autoreset must be true or false")
    return Attachment(uuid.UUID(a["medium"]), MediumType(a["type"]), a["autoreset"])
