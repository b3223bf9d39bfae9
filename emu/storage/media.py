"""Medium types: how an attached image is written, snapshotted and shared.

The six types of VirtualBox's "special image write modes" (user manual 5.4):

============ =========================== ========= =========== =============
type         writes go to                snapshots reset/start machines
============ =========================== ========= =========== =============
normal       the base, or the leaf diff  yes       no          one at a time
immutable    a diff (base never written) yes       yes¹        several
writethrough the base, directly          no        no          one at a time
shareable    the base, directly          no        no          several²
multiattach  a diff per attachment       yes       no          several
readonly     nowhere (ReadOnlyError)     no        no          several
============ =========================== ========= =========== =============

¹ unless the attachment's autoreset flag is off.
² fixed-size VDI or raw only (no block map to update). Opened for writing with
  a shared lock: every shareable user holds ``LOCK_SH`` on the file, so other
  shareable users may run at once while a normal/write-through user (``LOCK_EX``)
  may not. Coordinating the writes is the guests' business, as with a shared
  SCSI disk. Nothing is cached: a write is in the file when ``writev`` returns.
  A user's first write also gives the header a new uuidModify; as every block is
  allocated, the users' headers differ in nothing else, so that race is harmless.

A base medium never written (immutable, multiattach, readonly) is opened
read-only and so with a shared lock: several machines may use it at once.
"""

import uuid
from dataclasses import dataclass
from enum import StrEnum

from emu.storage.chain import Chain
from emu.storage.detect import open_image
from emu.storage.errors import StorageError
from emu.storage.raw import RawImage
from emu.storage.vdi import ImageType, VdiImage


class MediumTypeError(StorageError):
    """A medium cannot be used with the requested type (the message says why)."""


class MediumType(StrEnum):
    """How an attachment's medium is written and whether snapshots cover it."""

    NORMAL = "normal"
    IMMUTABLE = "immutable"
    WRITETHROUGH = "writethrough"
    SHAREABLE = "shareable"
    MULTIATTACH = "multiattach"
    READONLY = "readonly"

    @property
    def in_snapshots(self) -> bool:
        """Taking a snapshot freezes this attachment's leaf; restoring brings it back."""
        return self in (MediumType.NORMAL, MediumType.IMMUTABLE, MediumType.MULTIATTACH)

    @property
    def diff_at_attach(self) -> bool:
        """The base is never written: attaching creates the attachment's own diff."""
        return self in (MediumType.IMMUTABLE, MediumType.MULTIATTACH)

    @property
    def multi_user(self) -> bool:
        """May be attached to several ports or machines at once."""
        return self is not MediumType.NORMAL and self is not MediumType.WRITETHROUGH

    @property
    def resets(self) -> bool:
        """The leaf diff is discarded at machine start (unless autoreset is off)."""
        return self is MediumType.IMMUTABLE


@dataclass(frozen=True)
class MediumFacts:
    """What the image file itself says, read before a medium is registered."""

    format: str  # "raw" or "vdi"
    uuid: uuid.UUID | None  # the VDI's uuidCreate; None for raw
    parent: uuid.UUID | None  # the VDI's uuidLinkage when differencing
    fixed: bool  # every block allocated up front (raw, fixed VDI)


def probe(path: str) -> MediumFacts:
    """Read a medium's format, UUID, parent link and variant (opened read-only)."""
    image = open_image(path, read_only=True)
    try:
        if not isinstance(image, VdiImage):
            return MediumFacts("raw", None, None, True)
        return MediumFacts(
            "vdi", image.uuid_create, image.parent_uuid, image.image_type is ImageType.FIXED
        )
    finally:
        image.close()


def check_type(mtype: MediumType, facts: MediumFacts, path: str) -> None:
    """Refuse a type this image cannot have, with the reason."""
    if facts.parent is not None:
        if mtype is MediumType.IMMUTABLE:
            raise MediumTypeError(
                f"{path}: a differencing image cannot be an immutable base; "
                "merge it into its parent or convert it to a base image first"
            )
        raise MediumTypeError(
            f"{path}: is a differencing image; attach its base image (diffs belong "
            "to the machine that made them)"
        )
    if mtype is MediumType.SHAREABLE and not facts.fixed:
        raise MediumTypeError(
            f"{path}: shareable media must be fixed-size VDI or raw (a dynamic image's "
            "block map cannot be updated by two machines at once); convert it with "
            "--variant fixed"
        )
    if mtype.diff_at_attach and facts.format != "vdi":
        raise MediumTypeError(
            f"{path}: {mtype} needs a VDI base (differencing images link to their "
            "parent by UUID, which a raw file does not have); convert it to VDI first"
        )


def open_shareable(path: str) -> Chain:
    """Open a shareable (fixed VDI or raw) medium for writing under a shared lock (module doc)."""
    if probe(path).format == "raw":
        return Chain([RawImage(path, exclusive=False)])
    return Chain([VdiImage.open(path, read_only=False, exclusive=False)])
