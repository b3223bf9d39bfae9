"""VDI images, VirtualBox's format version 1.1: normal (dynamic), fixed and differencing.

File layout (VirtualBox's VDICore.h)::

    0            VDIPREHEADER    szFileInfo text, u32Signature 0xBEDA107F, u32Version 1.1
    72           VDIHEADER1PLUS  cbHeader bytes: 0x190 as VirtualBox writes it (with the
                                 LCHS geometry), or 0x180 (VDIHEADER1, as QEMU writes it)
    offBlocks    the block map   cBlocks little-endian u32 entries: the slot of the block's
                                 data, 0xFFFFFFFF FREE (absent), 0xFFFFFFFE ZERO
    offData      the data        slot s at offData + s * cbBlock

New files get both offsets aligned to 1 MiB (VDI_DATA_ALIGN) as VirtualBox does.
FREE reads through to the parent in a diff and as zeros in a base; ZERO reads as
zeros and never falls through.

Crash safety. Data slots are appended after the highest slot in use (or fill
a gap another tool left), so a new block's slot never holds anything a map entry
still points at. A new block's
data is written at once; its map entry is recorded in memory and written by
:meth:`VdiImage.flush` (and ``close``) in this order:

1. the header (cBlocksAllocated counting the new blocks, a new uuidModify),
2. fsync: the data and the header are durable,
3. each new map entry, one 4-byte pwrite,
4. fsync.

So a map entry only ever reaches the disk after the data it points at, whether
the process is killed or the machine loses power, and cBlocksAllocated is never
below the number of entries on disk (VirtualBox and QEMU allocate the next block
at slot cBlocksAllocated, so a stale count can only make them skip slots).
A crash leaves at worst data slots no entry points at and a count above the
map's: :func:`scan` reports both as leaks; the first change to the image after
it is opened rewrites the count (opening alone writes nothing, so a refused open
leaves the file as it was), and new blocks reuse the slots.
A write into a block already allocated is in place; a flush fsyncs it.

uuidModify changes at the first change to an image after it is opened (as
VirtualBox does), and reaches the file with the next flush.

Bounded loading. The header is checked against the file before the map is read:
at most :data:`MAX_BLOCKS` entries, inside the file, and stored (no sparse hole
where the map is). The map is then read into an ``array`` and checked at memory
speed (see :func:`_scan_map`), so a 16 TiB image (a 64 MiB map) opens in a
fraction of a second and a hostile one costs no more than the bytes it holds.
"""

import contextlib
import functools
import itertools
import math
import os
import struct
import sys
from array import array
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from enum import StrEnum
from uuid import UUID, uuid4

from construct import Adapter, Bytes, Container, Int32ul, Int64ul, Struct

from emu.storage.blockdev import SECTOR_SIZE
from emu.storage.errors import ImageFormatError, MediumError, ReadOnlyError, StorageError
from emu.storage.image import (
    BLOCK_SIZE,
    ZEROS,
    BlockState,
    Closing,
    check_size,
    fsync,
    fsync_dir,
    lock_file,
    open_locked,
    punch_hole,
    read_exact,
    read_head,
    write_exact,
)


class _UuidAdapter(Adapter):
    """An RTUUID: 16 bytes, the first three fields little-endian."""

    def _decode(self, obj: bytes, context: object, path: str) -> UUID:
        return UUID(bytes_le=obj)

    def _encode(self, obj: UUID, context: object, path: str) -> bytes:
        return obj.bytes_le


RTUUID = _UuidAdapter(Bytes(16))

VDIDISKGEOMETRY = Struct(
    "cCylinders" / Int32ul,
    "cHeads" / Int32ul,
    "cSectors" / Int32ul,
    "cbSector" / Int32ul,
)

VDIPREHEADER = Struct(
    "szFileInfo" / Bytes(64),
    "u32Signature" / Int32ul,
    "u32Version" / Int32ul,
)

VDIHEADER1PLUS = Struct(
    "cbHeader" / Int32ul,
    "u32Type" / Int32ul,
    "fFlags" / Int32ul,
    "szComment" / Bytes(256),
    "offBlocks" / Int32ul,
    "offData" / Int32ul,
    "LegacyGeometry" / VDIDISKGEOMETRY,
    "u32Dummy" / Int32ul,
    "cbDisk" / Int64ul,
    "cbBlock" / Int32ul,
    "cbBlockExtra" / Int32ul,
    "cBlocks" / Int32ul,
    "cBlocksAllocated" / Int32ul,
    "uuidCreate" / RTUUID,
    "uuidModify" / RTUUID,
    "uuidLinkage" / RTUUID,
    "uuidParentModify" / RTUUID,
    "LCHSGeometry" / VDIDISKGEOMETRY,  # VDIHEADER1 ends before this field
)

VDIIMAGEBLOCKPOINTER = Int32ul

FILE_INFO = b"<<< Oracle VM VirtualBox Disk Image >>>\n"
SIGNATURE = 0xBEDA107F
VERSION = 0x00010001
HEADER1_SIZE = 0x180
HEADER1PLUS_SIZE = VDIHEADER1PLUS.sizeof()  # 0x190
DATA_ALIGN = 1 << 20
BLOCK_FREE = 0xFFFFFFFF
BLOCK_ZERO = 0xFFFFFFFE

MAX_BLOCKS = 1 << 26
MAX_SIZE = MAX_BLOCKS * BLOCK_SIZE  # 64 TiB: the largest VDI made or opened (a 256 MiB map)

_PRE_SIZE = VDIPREHEADER.sizeof()
_NIL = UUID(int=0)
_UUID_START = _PRE_SIZE + sum(  # the file offset of uuidCreate (0x188), then uuidModify
    field.sizeof()  # and uuidLinkage
    for field in itertools.takewhile(lambda f: f.name != "uuidCreate", VDIHEADER1PLUS.subcons)
)
_UUIDS_END = _UUID_START + 48
_PRE_MAGIC = struct.pack("<II", SIGNATURE, VERSION)  # u32Signature, u32Version
_HEADER_PARSER = VDIHEADER1PLUS.compile()  # 3x faster: a chain of thousands opens in < 1 s


class ImageType(StrEnum):
    """The VDI image types this implementation reads and writes (u32Type 1, 2, 4)."""

    NORMAL = "normal"  # a dynamic base
    FIXED = "fixed"  # a preallocated base
    DIFF = "differencing"

    @property
    def code(self) -> int:
        """The u32Type value."""
        return _TYPE_CODES[self]


_TYPE_CODES = {ImageType.NORMAL: 1, ImageType.FIXED: 2, ImageType.DIFF: 4}
_TYPES_BY_CODE = {code: kind for kind, code in _TYPE_CODES.items()}


class _Identity:
    """The identity part of the Image interface, from the VDI's four UUIDs and type."""

    image_type: ImageType
    uuid_create: UUID
    uuid_modify: UUID
    uuid_linkage: UUID
    uuid_parent_modify: UUID

    @property
    def uuid(self) -> UUID:
        return self.uuid_create

    @property
    def parent_uuid(self) -> UUID | None:
        return self.uuid_linkage if self.image_type is ImageType.DIFF else None

    @property
    def modify_uuid(self) -> UUID:
        return self.uuid_modify

    @property
    def parent_modify_uuid(self) -> UUID | None:
        """uuidParentModify of a diff, None when unknown (nil) or not a diff."""
        pm = self.uuid_parent_modify
        return pm if self.image_type is ImageType.DIFF and pm != _NIL else None


@dataclass
class VdiScan(_Identity):
    """A VDI's identity and what is wrong with its block map (see :func:`scan`)."""

    path: str
    image_type: ImageType
    size: int
    uuid_create: UUID
    uuid_modify: UUID
    uuid_linkage: UUID
    uuid_parent_modify: UUID
    allocated_blocks: int
    corruptions: list[str]
    leaks: list[str]


@dataclass
class _Loaded:
    """A parsed header and block map, with the map's problems and allocation state."""

    hdr: Container
    block_map: array
    corruptions: list[str]
    leaks: list[str]
    count: int  # entries pointing at data
    next_slot: int  # one past the highest slot in use
    used: bytearray  # one byte per possible slot (cBlocks): 1 where an entry points


class VdiImage(_Identity, Closing):
    """An open VDI file: header, block map and the I/O a chain needs.

    Open with :meth:`open` or :meth:`create`. ``track_modify`` may be set to False
    by edits that leave the data a chain reads through this image unchanged
    (a forward merge, a compaction): uuidModify then stays as it is.
    """

    block_size = BLOCK_SIZE

    def __init__(self, path: str, fd: int, read_only: bool, loaded: _Loaded) -> None:
        self.path = path
        self._fd = fd  # -1 when parked or closed
        self._parked_as: tuple[bytes, int] | None = None  # (header bytes, file size) at park
        self._closed = False
        self._read_only = read_only
        self._hdr = loaded.hdr
        self._map = loaded.block_map
        self._count = loaded.count
        self._next_slot = loaded.next_slot
        self._used = loaded.used
        self._hole = 0  # no unused slot below this one (the search for a free slot starts here)
        self._pending: set[int] = set()  # blocks whose map entry is not on disk yet
        self._data_dirty = False
        self._header_dirty = False  # a stale cBlocksAllocated is rewritten with the next change
        self._touched = False
        self.track_modify = True

    # ---- opening and creating -------------------------------------------

    @classmethod
    def open(
        cls, path: str, *, read_only: bool = False, exclusive: bool | None = None
    ) -> "VdiImage":
        """Open and validate a VDI; refuse a malformed one with ImageFormatError.

        The lock is exclusive for a writable image and shared for a read-only one,
        unless ``exclusive`` says otherwise (a read-only open that must keep writers out).
        A writable image under a shared lock (a shareable medium) must have every block
        allocated: several writers could not share the allocation of new blocks.
        Opening writes nothing; the file changes only with the first change to the image.
        """
        path = os.path.abspath(path)
        if exclusive is None:
            exclusive = not read_only
        fd = open_locked(path, read_only=read_only, exclusive=exclusive)
        try:
            loaded = _load(fd, path, max_problems=1)
            if loaded.corruptions:
                raise ImageFormatError(f"{path}: {loaded.corruptions[0]}")
            if not read_only and not exclusive and loaded.count != loaded.hdr.cBlocks:
                missing = loaded.hdr.cBlocks - loaded.count
                raise StorageError(
                    f"{path}: {missing} of its {loaded.hdr.cBlocks} blocks are not allocated; "
                    "a medium written by several users at once needs every block allocated "
                    "(no block map to update): convert it with --variant fixed"
                )
        except BaseException:
            os.close(fd)
            raise
        return cls(path, fd, read_only, loaded)

    @classmethod
    def create(
        cls,
        path: str,
        size: int,
        *,
        variant: str = "dynamic",
        parent: "VdiImage | None" = None,
        uuid_create: UUID | None = None,
    ) -> "VdiImage":
        """Create a new VDI (a differencing child of ``parent`` if given) and open it.

        ``uuid_create`` is for a caller that must record the UUID before the file exists.
        """
        check_size(size, MAX_SIZE, "a VDI")
        if variant not in ("dynamic", "fixed"):
            raise StorageError(f"unknown VDI variant {variant!r} (dynamic or fixed)")
        kind = ImageType.FIXED if variant == "fixed" else ImageType.NORMAL
        linkage = parent_modify = _NIL
        if parent is not None:
            if variant != "dynamic":
                raise StorageError(f"{path}: a differencing image is always dynamic")
            if size != parent.size:
                raise StorageError(
                    f"{path}: size {size} differs from its parent's ({parent.size}, {parent.path})"
                )
            kind, linkage, parent_modify = ImageType.DIFF, parent.uuid_create, parent.uuid_modify
        hdr = _new_header(
            size,
            kind,
            uuid_create=uuid_create,
            uuid_linkage=linkage,
            uuid_parent_modify=parent_modify,
        )
        return cls._create_file(path, hdr)

    @classmethod
    def create_empty_copy(cls, path: str, source: "VdiImage") -> "VdiImage":
        """A new file with ``source``'s header (UUIDs, type, size, comment, geometry), no data.

        Laid out as :meth:`create` lays out files; ``track_modify`` is off.
        """
        old = source.header
        hdr = _new_header(
            source.size,
            source.image_type,
            uuid_create=source.uuid_create,
            uuid_modify=source.uuid_modify,
            uuid_linkage=source.uuid_linkage,
            uuid_parent_modify=source.uuid_parent_modify,
        )
        kept = ["fFlags", "szComment", "LegacyGeometry"]
        if old.cbHeader >= HEADER1PLUS_SIZE:
            kept.append("LCHSGeometry")
        hdr.update({name: old[name] for name in kept})
        image = cls._create_file(path, hdr)
        image.track_modify = False
        return image

    @classmethod
    def _create_file(cls, path: str, hdr: Container) -> "VdiImage":
        """Write a new file with header ``hdr`` and an empty (or, fixed, full) map; open it."""
        fixed = hdr.u32Type == ImageType.FIXED.code
        if fixed:
            block_map = array("I", range(hdr.cBlocks))
        else:
            block_map = array("I", [BLOCK_FREE]) * hdr.cBlocks
        data_size = hdr.cBlocks * BLOCK_SIZE if fixed else 0
        path = os.path.abspath(path)
        try:
            fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_EXCL, 0o644)
        except OSError as exc:
            raise StorageError(f"{path}: cannot create: {exc.strerror}") from None
        try:
            lock_file(fd, path, exclusive=True)
            _write_layout(fd, path, hdr, block_map)
            os.ftruncate(fd, hdr.offData + data_size)
            if fixed:
                _preallocate(fd, hdr.offData, data_size)
            fsync(fd, path)
            fsync_dir(path)
            loaded = _load(fd, path, max_problems=1)
        except BaseException:
            os.close(fd)
            os.unlink(path)
            raise
        return cls(path, fd, False, loaded)

    # ---- identity ---------------------------------------------------------

    @property
    def fd(self) -> int:
        """The open descriptor; a parked image is reopened (see :meth:`park`)."""
        if self._fd < 0 and not self._closed:
            self._reopen()
        return self._fd

    def park(self) -> None:
        """Close a read-only image's descriptor, and so release its lock, until ``fd`` is
        used again; the header and map stay in memory. The chain parks parents beyond the
        few it keeps open, so a chain's depth is not bounded by the open-files limit."""
        if self._read_only and self._fd >= 0:
            try:
                self._parked_as = _file_head(self._fd)
            except OSError:
                self._parked_as = None  # the reopen checks the header in full
            os.close(self._fd)
            self._fd = -1

    def _reopen(self) -> None:
        """Reopen a parked image; refuse it if it changed meanwhile (another uuidModify).

        A file whose header bytes and size are those it had when parked is taken as it
        is (the common case, and the cheap one: a chain deeper than its open-files budget
        reopens parents as it reads); any other is parsed and checked again."""
        fd = open_locked(self.path, read_only=True, exclusive=False)
        try:
            head, size = _file_head(fd)
            if (head, size) == self._parked_as:
                self._fd = fd
                return
            hdr = _parse_header(self.path, head, size)
        except OSError as exc:
            os.close(fd)
            raise MediumError(f"{self.path}: cannot read: {exc.strerror}") from None
        except BaseException:
            os.close(fd)
            raise
        if hdr.uuidModify != self._hdr.uuidModify or hdr.uuidCreate != self._hdr.uuidCreate:
            os.close(fd)
            raise MediumError(
                f"{self.path}: the image changed while a chain using it had it parked "
                f"(uuidModify {{{hdr.uuidModify}}}, was {{{self._hdr.uuidModify}}})"
            )
        self._fd = fd

    @property
    def read_only(self) -> bool:
        return self._read_only

    @property
    def size(self) -> int:
        """cbDisk: the virtual size in bytes."""
        return self._hdr.cbDisk

    @property
    def image_type(self) -> ImageType:
        return _TYPES_BY_CODE[self._hdr.u32Type]

    @property
    def uuid_create(self) -> UUID:
        return self._hdr.uuidCreate

    @property
    def uuid_modify(self) -> UUID:
        return self._hdr.uuidModify

    @property
    def uuid_linkage(self) -> UUID:
        """The parent's uuidCreate for a diff; the nil UUID for a base."""
        return self._hdr.uuidLinkage

    @property
    def uuid_parent_modify(self) -> UUID:
        """The parent's uuidModify when the diff was made; nil for a base."""
        return self._hdr.uuidParentModify

    @property
    def allocated_blocks(self) -> int:
        """Blocks with data in this file."""
        return self._count

    @property
    def header(self) -> Container:
        """The parsed VDIHEADER1PLUS (read it; change the image through methods)."""
        return self._hdr

    # ---- blocks -------------------------------------------------------------

    def block_state(self, index: int) -> BlockState:
        entry = self._map[index]
        if entry < BLOCK_ZERO:
            return BlockState.ALLOCATED
        return BlockState.ZERO if entry == BLOCK_ZERO else BlockState.ABSENT

    def block_offset(self, index: int) -> int:
        return self._hdr.offData + self._map[index] * BLOCK_SIZE

    def stored_blocks(self, *, zeros: bool = True) -> Iterator[int]:
        """Indexes of the blocks with an entry in this image, ascending: ALLOCATED ones,
        and ZERO ones unless ``zeros`` is False. Parts of the map that are all FREE (or
        all ZERO, without ``zeros``) are skipped at memory speed, so a huge empty image
        costs next to nothing."""
        view = memoryview(self._map).cast("B")
        skip = (_FREE_PIECE,) if zeros else (_FREE_PIECE, _ZERO_PIECE)
        for start in range(0, len(self._map), _MAP_PIECE):
            piece = view[4 * start : 4 * (start + _MAP_PIECE)].tobytes()
            if any(piece == s[: len(piece)] for s in skip):
                continue
            for index in range(start, start + len(piece) // 4):
                entry = self._map[index]
                if entry < BLOCK_ZERO or (zeros and entry == BLOCK_ZERO):
                    yield index

    def read_at(self, offset: int, buffers: Sequence[memoryview]) -> None:
        read_exact(self.fd, buffers, offset, self.path)

    def write_at(self, offset: int, buffers: Sequence[memoryview]) -> None:
        self._check_writable()
        write_exact(self._fd, buffers, offset, self.path)
        self._data_dirty = True
        self._touch()

    def allocate_block(self, index: int, buffers: Sequence[memoryview]) -> int:
        self._check_writable()
        if self._map[index] < BLOCK_ZERO:
            raise StorageError(f"{self.path}: block {index} is already allocated")
        slot = self._used.find(0, self._hole, self._next_slot)  # a gap another tool left
        if slot < 0:
            slot = self._next_slot
        offset = self._hdr.offData + slot * BLOCK_SIZE
        total = sum(len(b) for b in buffers)
        if total < BLOCK_SIZE:
            buffers = [*buffers, ZEROS[: BLOCK_SIZE - total]]
        write_exact(self._fd, buffers, offset, self.path)
        self._used[slot] = 1
        self._hole = slot + 1
        self._next_slot = max(self._next_slot, slot + 1)
        self._map[index] = slot
        self._pending.add(index)
        self._count += 1
        self._data_dirty = True
        self._touch()
        return offset

    def zero_block(self, index: int) -> None:
        """Allocated: its data becomes zeros (a hole, or written zeros in a fixed image).

        Not allocated in a diff: the entry becomes ZERO. In a base, a block that is
        not allocated already reads as zeros.
        """
        self._check_writable()
        state = self.block_state(index)
        if state is BlockState.ALLOCATED:
            offset = self.block_offset(index)
            if self.image_type is ImageType.FIXED:
                write_exact(self._fd, [ZEROS], offset, self.path)
            else:
                punch_hole(self._fd, offset, BLOCK_SIZE, self.path)
            self._data_dirty = True
        elif state is BlockState.ABSENT and self.image_type is ImageType.DIFF:
            self._map[index] = BLOCK_ZERO
            self._pending.add(index)
        else:
            return
        self._touch()

    def set_parent(self, uuid_linkage: UUID | None, uuid_parent_modify: UUID) -> None:
        """Re-link a diff to another parent, or (``uuid_linkage`` None) make it a base."""
        self._check_writable()
        if self.image_type is not ImageType.DIFF:
            raise StorageError(f"{self.path}: is a {self.image_type} image, not a differencing one")
        if uuid_linkage is None:
            self._hdr.u32Type = ImageType.NORMAL.code
            self._hdr.uuidLinkage = self._hdr.uuidParentModify = _NIL
        else:
            self._hdr.uuidLinkage = uuid_linkage
            self._hdr.uuidParentModify = uuid_parent_modify
        self._header_dirty = True

    # ---- durability -----------------------------------------------------------

    def flush(self) -> None:
        """Make written data durable, then the map entries pointing at it (see module doc)."""
        if self._read_only:
            return
        metadata = self._header_dirty or bool(self._pending)
        if not (metadata or self._data_dirty):
            return
        if metadata:
            self._hdr.cBlocksAllocated = self._count
            header = VDIHEADER1PLUS.build(self._hdr)[: self._hdr.cbHeader]
            write_exact(self._fd, [memoryview(header)], _PRE_SIZE, self.path)
        fsync(self._fd, self.path)
        self._data_dirty = self._header_dirty = False
        if self._pending:
            for index in sorted(self._pending):
                entry = memoryview(VDIIMAGEBLOCKPOINTER.build(self._map[index]))
                write_exact(self._fd, [entry], self._hdr.offBlocks + 4 * index, self.path)
            fsync(self._fd, self.path)
            self._pending.clear()

    def close(self) -> None:
        if self._closed:
            return
        self._closed = True
        if self._fd < 0:  # parked: read-only, nothing to flush
            return
        try:
            self.flush()
        finally:
            os.close(self._fd)
            self._fd = -1

    def _check_writable(self) -> None:
        if self._read_only:
            raise ReadOnlyError(f"{self.path}: image is open read-only")

    def _touch(self) -> None:
        """The first change since opening gives the image a new uuidModify."""
        if not self._touched:
            self._touched = True
            if self.track_modify:
                self._hdr.uuidModify = uuid4()
                self._header_dirty = True


def scan(path: str, *, max_problems: int = 100) -> VdiScan:
    """Read a VDI's header and map under a shared lock, collecting map problems.

    Header problems (the map cannot be trusted at all) raise ImageFormatError. The
    map is checked until ``max_problems`` corruptions are found.
    """
    path = os.path.abspath(path)
    fd = open_locked(path, read_only=True, exclusive=False)
    try:
        loaded = _load(fd, path, max_problems=max_problems)
    finally:
        os.close(fd)
    hdr = loaded.hdr
    return VdiScan(
        path,
        _TYPES_BY_CODE[hdr.u32Type],
        hdr.cbDisk,
        hdr.uuidCreate,
        hdr.uuidModify,
        hdr.uuidLinkage,
        hdr.uuidParentModify,
        loaded.count,
        loaded.corruptions,
        loaded.leaks,
    )


def read_uuids(path: str) -> tuple[UUID | None, UUID | None, str | None]:
    """What a folder search needs of a file: (uuidCreate, uuidLinkage, header problem).

    Only the pre-header is checked: the UUIDs are given whenever the file has the VDI
    signature and is long enough to hold them, so that a parent with a damaged header
    is found (and then refused as corrupt when opened) rather than missed. uuidLinkage
    is None when nil. No lock is taken, and a non-regular file is refused without
    blocking. (None, None, problem): not a VDI, or unreadable.
    """
    try:
        head = read_head(path, _UUIDS_END)
    except StorageError as exc:
        return None, None, str(exc)
    if len(head) == _UUIDS_END and head[64:72] == _PRE_MAGIC:
        create, _, linkage = (
            UUID(bytes_le=head[at : at + 16]) for at in range(_UUID_START, _UUIDS_END, 16)
        )
        return create, (None if linkage == _NIL else linkage), None
    try:
        _parse_header(path, head, len(head))  # names what is wrong
    except ImageFormatError as exc:
        return None, None, str(exc)
    return None, None, f"{path}: header is truncated"


def _new_header(
    size: int,
    kind: ImageType,
    *,
    uuid_create: UUID | None = None,
    uuid_modify: UUID | None = None,
    uuid_linkage: UUID = _NIL,
    uuid_parent_modify: UUID = _NIL,
) -> Container:
    """A VDIHEADER1PLUS for a new file, laid out as VirtualBox lays it out."""
    blocks = math.ceil(size / BLOCK_SIZE)
    off_blocks = _align(_PRE_SIZE + HEADER1PLUS_SIZE, DATA_ALIGN)
    geometry = Container(cCylinders=0, cHeads=0, cSectors=0, cbSector=SECTOR_SIZE)
    return Container(
        cbHeader=HEADER1PLUS_SIZE,
        u32Type=kind.code,
        fFlags=0,
        szComment=bytes(256),
        offBlocks=off_blocks,
        offData=_align(off_blocks + 4 * blocks, DATA_ALIGN),
        LegacyGeometry=geometry,
        u32Dummy=0,
        cbDisk=size,
        cbBlock=BLOCK_SIZE,
        cbBlockExtra=0,
        cBlocks=blocks,
        cBlocksAllocated=blocks if kind is ImageType.FIXED else 0,
        uuidCreate=uuid_create or uuid4(),
        uuidModify=uuid_modify or uuid4(),
        uuidLinkage=uuid_linkage,
        uuidParentModify=uuid_parent_modify,
        LCHSGeometry=geometry,
    )


def _write_layout(fd: int, path: str, hdr: Container, block_map: array) -> None:
    """Write the pre-header, header and whole block map of a new file."""
    pre = Container(
        szFileInfo=FILE_INFO.ljust(64, b"\0"), u32Signature=SIGNATURE, u32Version=VERSION
    )
    head = VDIPREHEADER.build(pre) + VDIHEADER1PLUS.build(hdr)
    write_exact(fd, [memoryview(head)], 0, path)
    write_exact(fd, [memoryview(_map_bytes(block_map))], hdr.offBlocks, path)


# ---- parsing and validation -------------------------------------------------


def _load(fd: int, path: str, *, max_problems: int) -> _Loaded:
    """Parse the header (raising on header problems) and scan the block map.

    The map is read only once the header has been checked against the file: the
    map must lie within the file, be at most :data:`MAX_BLOCKS` entries, and be
    stored (a hole in the file where the map is means entries all reading as
    slot 0), so the work never exceeds what the file really holds.
    """
    try:
        size = os.fstat(fd).st_size
        head = os.pread(fd, _PRE_SIZE + HEADER1PLUS_SIZE, 0)
        hdr = _parse_header(path, head, size)
        _check_map_stored(fd, path, hdr)
        block_map = array("I", [0]) * hdr.cBlocks
        got = os.preadv(fd, [memoryview(block_map).cast("B")], hdr.offBlocks)
    except OSError as exc:
        raise MediumError(f"{path}: cannot read: {exc.strerror}") from None
    if got != 4 * hdr.cBlocks:
        raise ImageFormatError(f"{path}: the block map is truncated (the file shrank?)")
    if sys.byteorder == "big":
        block_map.byteswap()
    return _scan_map(hdr, block_map, size, max_problems)


def _check_map_stored(fd: int, path: str, hdr: Container) -> None:
    """Refuse a map of two or more entries with a hole in the file where it should be."""
    if hdr.cBlocks < 2:
        return
    map_end = hdr.offBlocks + 4 * hdr.cBlocks
    try:
        hole = os.lseek(fd, hdr.offBlocks, os.SEEK_HOLE)
    except OSError:
        return  # the filesystem does not tell holes: the scan finds the zeros
    if hole + 8 <= map_end:
        raise ImageFormatError(
            f"{path}: the block map is not stored in the file from offset {hole} on "
            f"(a sparse hole up to the map's end at {map_end}: its entries would all "
            "read as slot 0)"
        )


def _file_head(fd: int) -> tuple[bytes, int]:
    """The bytes of the pre-header and header, and the file's size (OSError as raised)."""
    return os.pread(fd, _PRE_SIZE + HEADER1PLUS_SIZE, 0), os.fstat(fd).st_size


def _parse_header(path: str, head: bytes, size: int) -> Container:
    """Parse and validate the pre-header and header; ImageFormatError names the problem."""

    def bad(problem: str) -> ImageFormatError:
        return ImageFormatError(f"{path}: {problem}")

    if len(head) < _PRE_SIZE:
        raise bad(f"file is too short for a VDI header ({size} bytes)")
    signature, version = struct.unpack_from("<II", head, 64)  # u32Signature, u32Version
    if signature != SIGNATURE:
        raise bad(f"bad signature 0x{signature:08x} (a VDI has 0x{SIGNATURE:08x})")
    if version != VERSION:
        major, minor = version >> 16, version & 0xFFFF
        raise bad(f"unsupported VDI version {major}.{minor} (only 1.1 is supported)")
    if len(head) < _PRE_SIZE + HEADER1_SIZE:
        raise bad(f"header is truncated (the file has {size} bytes)")
    hdr = _HEADER_PARSER.parse(head[_PRE_SIZE:].ljust(HEADER1PLUS_SIZE, b"\0"))
    if hdr.cbHeader not in (HEADER1_SIZE, HEADER1PLUS_SIZE):
        raise bad(f"cbHeader 0x{hdr.cbHeader:x} is wrong (a VDI 1.1 header has 0x180 or 0x190)")
    if len(head) < _PRE_SIZE + hdr.cbHeader:
        raise bad(f"header is truncated (the file has {size} bytes)")
    if hdr.u32Type not in _TYPES_BY_CODE:
        raise bad(f"unsupported image type {hdr.u32Type} (1 normal, 2 fixed, 4 differencing)")
    bs = hdr.cbBlock
    if bs == 0 or bs & (bs - 1):
        raise bad(f"block size {bs} is not a power of two")
    if bs != BLOCK_SIZE:
        raise bad(f"block size {bs} is not 1 MiB (the only block size supported)")
    if hdr.cbBlockExtra:
        raise bad(f"cbBlockExtra is {hdr.cbBlockExtra}, not 0 (per-block extra data)")
    disk = hdr.cbDisk
    if disk == 0 or disk % SECTOR_SIZE:
        raise bad(f"disk size {disk} is not a positive multiple of {SECTOR_SIZE}")
    if hdr.cBlocks != math.ceil(disk / bs):
        raise bad(
            f"cBlocks {hdr.cBlocks} x block size {bs} does not fit the disk size {disk} "
            f"(it needs {math.ceil(disk / bs)} blocks)"
        )
    if hdr.cBlocks > MAX_BLOCKS:
        raise bad(f"disk size {disk} is larger than a VDI may be ({MAX_SIZE >> 40} TiB at most)")
    if hdr.cBlocksAllocated > hdr.cBlocks:
        raise bad(f"cBlocksAllocated {hdr.cBlocksAllocated} exceeds cBlocks {hdr.cBlocks}")
    geometries = ["LegacyGeometry", "LCHSGeometry"][: 2 if hdr.cbHeader == HEADER1PLUS_SIZE else 1]
    for name in geometries:
        if hdr[name].cbSector != SECTOR_SIZE:
            raise bad(f"{name}.cbSector is {hdr[name].cbSector}, not {SECTOR_SIZE}")
    map_end = hdr.offBlocks + 4 * hdr.cBlocks
    if hdr.offBlocks < _PRE_SIZE + hdr.cbHeader or hdr.offBlocks % SECTOR_SIZE:
        raise bad(f"offBlocks 0x{hdr.offBlocks:x} overlaps the header or is not sector-aligned")
    if hdr.offData < map_end or hdr.offData % SECTOR_SIZE:
        raise bad(
            f"offData 0x{hdr.offData:x} overlaps the block map (which ends at 0x{map_end:x}) "
            "or is not sector-aligned"
        )
    if size < map_end:
        raise bad(f"file is truncated: {size} bytes, the block map ends at {map_end}")
    if hdr.uuidCreate == _NIL or hdr.uuidModify == _NIL:
        raise bad("uuidCreate or uuidModify is the nil UUID")
    kind = _TYPES_BY_CODE[hdr.u32Type]
    if kind is ImageType.DIFF and hdr.uuidLinkage == _NIL:
        raise bad("differencing image with a nil uuidLinkage (no parent)")
    if kind is not ImageType.DIFF and hdr.uuidLinkage != _NIL:
        raise bad(f"{kind} image has a parent (uuidLinkage {hdr.uuidLinkage}); only diffs have one")
    return hdr


def _scan_map(hdr: Container, block_map: array, size: int, max_problems: int) -> _Loaded:
    """Check every map entry against the file; classify problems as corruption or leak.

    Runs at memory speed on the maps real files have: pieces of the map that are all
    FREE, all ZERO or a run of consecutive slots (a fixed image) are taken whole; only
    the other pieces are looked at entry by entry. It stops after ``max_problems``
    corruptions, so a hostile map costs no more than a few of them.
    """
    blocks = hdr.cBlocks
    data_bytes = max(0, size - hdr.offData)
    slots_in_file = data_bytes // BLOCK_SIZE
    usable = min(blocks, slots_in_file)  # slots an entry may point at
    raw_map = memoryview(block_map).cast("B")  # native byte order, as the pieces below
    used = bytearray(blocks)
    corruptions: list[str] = []
    count = top = 0  # top: one past the highest slot in use
    for start in range(0, blocks, _MAP_PIECE):
        piece = raw_map[4 * start : 4 * (start + _MAP_PIECE)].tobytes()  # bytes compare fast
        n = len(piece) // 4
        if piece in (_FREE_PIECE[: 4 * n], _ZERO_PIECE[: 4 * n]):
            continue
        first = block_map[start]
        if (
            first + n <= usable
            and int.from_bytes(piece, sys.byteorder) == _ramp(n) + first * _lanes(n)
            and used.find(1, first, first + n) < 0
        ):  # slots first .. first+n-1, in order
            used[first : first + n] = b"\1" * n
            count += n
            top = max(top, first + n)
            continue
        for index in range(start, start + n):
            entry = block_map[index]
            if entry >= BLOCK_ZERO:
                continue
            if entry >= blocks:
                problem = f"block {index} maps to slot {entry}, beyond cBlocks {blocks}"
            elif entry >= slots_in_file:
                problem = (
                    f"block {index} maps to slot {entry} (offset "
                    f"{hdr.offData + entry * BLOCK_SIZE}), past the end of the file ({size} bytes)"
                )
            elif used[entry]:
                problem = f"blocks {block_map.index(entry)} and {index} both map to slot {entry}"
            else:
                used[entry] = 1
                count += 1
                top = max(top, entry + 1)
                continue
            corruptions.append(problem)
            if len(corruptions) >= max_problems:
                return _Loaded(hdr, block_map, corruptions, [], count, top, used)
    leaks = []
    unused = slots_in_file - count
    if unused:
        shown = _unused_slots(used, slots_in_file, 8)
        more = ", ..." if unused > len(shown) else ""
        leaks.append(
            f"{unused} data slot(s) no map entry points at (leaked): "
            + ", ".join(map(str, shown))
            + more
        )
    if data_bytes % BLOCK_SIZE:
        leaks.append(f"{data_bytes % BLOCK_SIZE} bytes of an incomplete block at the end (leaked)")
    if hdr.cBlocksAllocated != count:
        leaks.append(
            f"cBlocksAllocated is {hdr.cBlocksAllocated} but {count} blocks are "
            "allocated (a count an interrupted flush left; the next change rewrites it)"
        )
    return _Loaded(hdr, block_map, corruptions, leaks, count, top, used)


_MAP_PIECE = 1024  # map entries _scan_map takes at once
_FREE_PIECE = BLOCK_FREE.to_bytes(4, sys.byteorder) * _MAP_PIECE
_ZERO_PIECE = BLOCK_ZERO.to_bytes(4, sys.byteorder) * _MAP_PIECE


@functools.cache
def _lanes(n: int) -> int:
    """n u32 lanes of 1 as one integer, in the byte order of the map in memory."""
    return int.from_bytes(array("I", [1]) * n, sys.byteorder)


@functools.cache
def _ramp(n: int) -> int:
    """The u32 lanes 0, 1, ..., n-1 as one integer: with ``first * _lanes(n)`` added,
    the map piece of n entries pointing at the consecutive slots from ``first``."""
    return int.from_bytes(array("I", range(n)), sys.byteorder)


def _unused_slots(used: bytearray, slots_in_file: int, limit: int) -> list[int]:
    """The first ``limit`` slots below ``slots_in_file`` no entry points at."""
    found: list[int] = []
    slot = 0
    while len(found) < limit and slot < slots_in_file:
        slot = used.find(0, slot) if slot < len(used) else slot
        if slot < 0:
            slot = len(used)
            continue
        if slot < slots_in_file:
            found.append(slot)
        slot += 1
    return found


def _map_bytes(block_map: array) -> bytes:
    if sys.byteorder == "big":
        block_map = array("I", block_map)
        block_map.byteswap()
    return block_map.tobytes()


def _align(value: int, alignment: int) -> int:
    return -(-value // alignment) * alignment


def _preallocate(fd: int, offset: int, length: int) -> None:
    """Reserve a fixed image's data area; where the filesystem cannot, it stays sparse
    (and reads as zeros all the same)."""
    with contextlib.suppress(OSError):
        os.posix_fallocate(fd, offset, length)
