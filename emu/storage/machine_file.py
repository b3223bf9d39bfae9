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
import stat
import uuid
from dataclasses import dataclass, field
from typing import Any

from emu.storage.errors import StorageError
from emu.storage.media import MediumType
from emu.storage.ownership import MACHINE_FILE, diff_path

SCHEMA = "ahci-emu machine"
VERSION = 1
MAX_SIZE = 16 << 20  # a machine file this large was not written by ahci-emu
PORTS = 32  # AHCI allows 32 ports per HBA


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
    # Diffs this machine made that no state names (dropped by the last change, or
    # being created by an unfinished one): their files are the machine's to delete.
    discard: list[uuid.UUID] = field(default_factory=list)

    def children(self, medium: uuid.UUID) -> list[uuid.UUID]:
        """The registered diffs whose parent is ``medium``."""
        return [u for u, rec in self.media.items() if rec.parent == medium]

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
            "discard": [str(u) for u in self.discard],
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
        except KeyError as exc:
            raise MachineFileError(f"{where}: malformed machine file (no {exc})") from None
        except (TypeError, ValueError, AttributeError) as exc:
            raise MachineFileError(f"{where}: malformed machine file ({exc})") from None
        problem = config.inconsistency()
        if problem:
            raise MachineFileError(f"{where}: inconsistent machine file: {problem}")
        return config

    @classmethod
    def _parse(cls, obj: dict[str, Any]) -> "MachineConfig":
        media = {
            _uuid(u): MediumRecord(
                _path(r["path"]),
                _str(r["format"]),
                MediumType(_str(r["type"])),
                _uuid_or_none(r["parent"]),
            )
            for u, r in _dict(obj["media"]).items()
        }
        attachments = {_port(p): _attachment(a) for p, a in _dict(obj["attachments"]).items()}
        current = _dict(obj["current"])
        snapshots = {}
        for s in _list(obj["snapshots"]):
            snap = Snapshot(
                _uuid(s["uuid"]),
                _str(s["name"]),
                _str(s["description"]),
                _str(s["time"]),
                _uuid_or_none(s["parent"]),
                {
                    _port(p): SnapshotAttachment(**vars(_attachment(a)), image=_uuid(a["image"]))
                    for p, a in _dict(s["attachments"]).items()
                },
            )
            if snap.uuid in snapshots:
                raise ValueError(f"two snapshots have the UUID {snap.uuid}")
            snapshots[snap.uuid] = snap
        pending = obj.get("pending")
        return cls(
            uuid=_uuid(obj["uuid"]),
            name=_str(obj["name"]),
            media=media,
            attachments=attachments,
            current_snapshot=_uuid_or_none(current["snapshot"]),
            leaves={_port(p): _uuid(u) for p, u in _dict(current["leaves"]).items()},
            snapshots=snapshots,
            pending=None
            if pending is None
            else PendingDelete(
                _uuid(_dict(pending)["delete_snapshot"]),
                [
                    Merge(
                        _port(m["port"]),
                        _str(m["direction"]),
                        _uuid(m["source"]),
                        _uuid(m["target"]),
                    )
                    for m in _list(pending["merges"])
                ],
            ),
            discard=[_uuid(u) for u in _list(obj.get("discard", []))],
        )

    def inconsistency(self) -> str | None:
        """The first broken cross-reference, or None when the configuration is sound.

        Linear in the size of the configuration, however long its chains are.
        """
        for u, rec in self.media.items():
            if rec.format not in ("raw", "vdi") or (rec.parent and rec.format != "vdi"):
                return f"medium {u} has a bad format {rec.format!r}"
            if rec.parent is not None and rec.path != diff_path(u):
                return (
                    f"differencing image {u} is at {rec.path!r}; a machine keeps its "
                    f"diffs at {diff_path(u)!r} only"
                )
        broken = _broken_link({u: r.parent for u, r in self.media.items()})
        if broken is not None:
            u, missing = broken
            if missing is None:
                return f"medium {u} is its own ancestor"
            return f"medium {u} has an unregistered ancestor {missing}"
        if set(self.attachments) != set(self.leaves):
            return "attachments and current leaves name different ports"
        bases = self._bases()
        for port, att in self.attachments.items():
            problem = _attachment_problem(f"port {port}", att, self.leaves[port], self, bases)
            if problem:
                return problem
        broken = _broken_link({u: s.parent for u, s in self.snapshots.items()})
        if broken is not None:
            u, missing = broken
            name = self.snapshots[u].name
            if missing is None:
                return f"snapshot {name!r} is its own ancestor"
            return f"snapshot {name!r} has an unknown parent {missing}"
        names: set[str] = set()
        for snap in self.snapshots.values():
            if snap.name in names:
                return f"two snapshots are named {snap.name!r}"
            names.add(snap.name)
            for port, att in snap.attachments.items():
                what = f"snapshot {snap.name!r} port {port}"
                problem = _attachment_problem(what, att, att.image, self, bases)
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
        for u in self.discard:
            if u in self.media:
                return f"medium {u} is both registered and to be discarded"
        return None

    def _bases(self) -> dict[uuid.UUID, uuid.UUID]:
        """Each medium's base, every link followed once (the links are known sound)."""
        bases: dict[uuid.UUID, uuid.UUID] = {}
        for start in self.media:
            walked = []
            node: uuid.UUID | None = start
            while node is not None and node not in bases:
                walked.append(node)
                parent = self.media[node].parent
                if parent is None:
                    bases[node] = node
                node = parent
            base = bases[walked[-1] if node is None else node]
            for u in walked:
                bases[u] = base
        return bases


def _attachment_problem(
    what: str,
    att: Attachment,
    image: uuid.UUID,
    config: MachineConfig,
    bases: dict[uuid.UUID, uuid.UUID],
) -> str | None:
    if att.medium not in config.media or image not in config.media:
        return f"{what} names an unregistered medium"
    if config.media[att.medium].type is not att.type:
        return f"{what} is {att.type} but its medium is {config.media[att.medium].type}"
    if bases[image] != att.medium:
        return f"{what}: image {image} is not derived from medium {att.medium}"
    return None


def _broken_link(
    parents: dict[uuid.UUID, uuid.UUID | None],
) -> tuple[uuid.UUID, uuid.UUID | None] | None:
    """The first node whose parent links leave ``parents`` (with the missing parent) or
    loop (with None); each link is followed once."""
    sound: set[uuid.UUID] = set()
    for start in parents:
        walked: dict[uuid.UUID, None] = {}
        node: uuid.UUID | None = start
        while node is not None and node not in sound:
            if node in walked:
                return node, None
            walked[node] = None
            parent = parents[node]
            if parent is not None and parent not in parents:
                return node, parent
            node = parent
        sound.update(walked)
    return None


def read(folder: str) -> MachineConfig:
    """Load and validate a folder's machine file; any damage is a MachineFileError."""
    return read_with_bytes(folder)[0]


def read_with_bytes(folder: str) -> tuple[MachineConfig, bytes]:
    """:func:`read`, with the file's bytes (to put back if a change fails part way)."""
    path = os.path.join(folder, MACHINE_FILE)
    try:
        # O_NONBLOCK: a FIFO put in its place must not hang the open
        fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK)
        try:
            if not stat.S_ISREG(os.fstat(fd).st_mode):
                raise MachineFileError(f"{path}: not a regular file")
            with os.fdopen(os.dup(fd), "rb") as f:
                data = f.read(MAX_SIZE + 1)
        finally:
            os.close(fd)
    except FileNotFoundError:
        raise MachineFileError(f"{folder}: not a machine folder (no {MACHINE_FILE})") from None
    except OSError as exc:
        raise MachineFileError(f"{path}: cannot read: {exc.strerror}") from None
    if len(data) > MAX_SIZE:
        raise MachineFileError(f"{path}: larger than {MAX_SIZE >> 20} MiB; not a machine file")
    try:
        obj = json.loads(data.decode("utf-8"), object_pairs_hook=_no_duplicates)
    except RecursionError:
        raise MachineFileError(f"{path}: not valid JSON (nested too deeply)") from None
    except ValueError as exc:  # also JSONDecodeError, UnicodeDecodeError, huge integers
        raise MachineFileError(f"{path}: not valid JSON ({exc})") from None
    return MachineConfig.from_json(obj, path), data


def write(folder: str, config: MachineConfig) -> bytes:
    """Replace the folder's machine file atomically (the commit point).

    Refuses a configuration that :func:`read` would refuse. Raises only before
    the rename, so on an error the old file is in place. The caller then fsyncs
    the folder (:func:`fsync_dir`) to make the rename durable. Returns the bytes written.
    """
    path = os.path.join(folder, MACHINE_FILE)
    problem = config.inconsistency()
    if problem:
        raise MachineFileError(f"{path}: not written, it would be inconsistent: {problem}")
    data = (json.dumps(config.to_json(), indent=2) + "\n").encode()
    write_bytes(folder, data)
    return data


def write_bytes(folder: str, data: bytes) -> None:
    """Replace the folder's machine file atomically with ``data`` (as :func:`write`)."""
    path = os.path.join(folder, MACHINE_FILE)
    tmp = path + ".tmp"
    try:
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_NOFOLLOW, 0o644)
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


def _no_duplicates(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    """A JSON object, refusing a key given twice (which value would win is a guess)."""
    obj: dict[str, Any] = {}
    for key, value in pairs:
        if key in obj:
            raise ValueError(f"the key {key!r} appears twice in one object")
        obj[key] = value
    return obj


def _dict(value: Any) -> dict[str, Any]:
    if not isinstance(value, dict):
        raise TypeError(f"expected an object, found {type(value).__name__}")
    return value


def _list(value: Any) -> list[Any]:
    if not isinstance(value, list):
        raise TypeError(f"expected a list, found {type(value).__name__}")
    return value


def _str(value: Any) -> str:
    """A string the host can encode (as a file name is: UTF-8, undecodable bytes escaped)."""
    if not isinstance(value, str):
        raise TypeError(f"expected a string, found {type(value).__name__}")
    value.encode("utf-8", "surrogateescape")  # a lone surrogate raises UnicodeEncodeError
    return value


def _path(value: Any) -> str:
    """A medium path: a non-empty string without NUL (no file name can hold one)."""
    path = _str(value)
    if not path or "\0" in path:
        raise ValueError(f"bad medium path {path!r}")
    return path


def _port(value: Any) -> int:
    """A port number, as a JSON key (a string of digits) or an integer, 0..PORTS-1."""
    port = value
    if isinstance(value, str) and value.isascii() and value.isdigit() and len(value) <= 2:
        port = int(value)
    if type(port) is not int or not 0 <= port < PORTS:
        raise ValueError(f"bad port {value!r} (ports are 0..{PORTS - 1})")
    return port


def _uuid(value: Any) -> uuid.UUID:
    return uuid.UUID(_str(value))


def _uuid_or_none(value: Any) -> uuid.UUID | None:
    return None if value is None else _uuid(value)


def _attachment_json(a: Attachment) -> dict[str, Any]:
    return {"medium": str(a.medium), "type": str(a.type), "autoreset": a.autoreset}


def _attachment(a: Any) -> Attachment:
    a = _dict(a)
    if not isinstance(a["autoreset"], bool):
        raise TypeError("autoreset must be true or false")
    return Attachment(_uuid(a["medium"]), MediumType(_str(a["type"])), a["autoreset"])
