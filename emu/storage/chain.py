"""A chain of images as one block device: leaf -> parent -> ... -> base.

A block is read from the first image of the chain that has it (ALLOCATED), as
zeros if an image on the way says ZERO, and as zeros if none has it. So that a
request costs the same whatever the chain's depth, the chain keeps a resolved
map, one entry per block: where the block's data is (file descriptor, file
offset, image) or None for zeros. It is built on open and updated block by
block as the leaf allocates or zeroes blocks.

Opening costs O(depth), not O(depth x blocks): the resolved map is filled in as
blocks are first used.

Open files: the leaf stays open; of the parents, at most
:func:`open_parents_limit` (an eighth of ``ulimit -n``, at least 8, after raising
the soft limit toward the hard one if the chain needs it) keep a descriptor (and
their shared lock), the most recently read. The others are parked (see
:meth:`emu.storage.vdi.VdiImage.park`): parents without data first, as they are
never read; a parked parent is reopened when a read needs it,
and refused if it changed meanwhile. So a chain's depth is not bounded by the
open-files limit (``ulimit -n``), only chains deeper than that limit + 1 leave
some parents unlocked, and reads cost the same at any depth once resolved.

Writes go to the leaf only. A write into a block the leaf does not have
allocates it there whole: the parts of the block the write does not cover are
copied from the chain first (copy-on-write). If that block would hold only
zeros, nothing is allocated: the leaf records a zero block instead (a ZERO
entry in a diff, hiding the parent), as VirtualBox does. A discard of a whole
block makes the leaf's block read as zeros the same way (or, if the leaf has
the block already, deallocates its data in place); a partial one writes zeros.

Locks: the leaf is locked exclusively when writable, shared when the chain is
read-only; parents are always opened read-only with shared locks, so siblings
(several diffs of one base) can be used at once while nobody writes the base.

Finding parents: a VDI stores its parent's uuidCreate (uuidLinkage), not its
path. :func:`find_parent` looks the UUID up in the ``registry`` given (the
machine folder's media registry), then searches the ``.vdi`` files of the
child's directory, then of the directory above it (VirtualBox's layout: diffs
in ``DIR/Snapshots/``, the base in ``DIR``), for the one file whose uuidCreate
matches. Two matching files in one directory are an error, not a guess. Only
regular files are read (a FIFO named ``x.vdi`` is skipped, never waited on), and
a :class:`FolderScans` reads each folder's headers once for a whole chain.
"""

import contextlib
import heapq
import itertools
import os
import resource
from collections import OrderedDict
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING
from uuid import UUID

from emu.storage.detect import open_image
from emu.storage.errors import (
    ImageFormatError,
    LinkageError,
    MediumError,
    ParentNotFoundError,
    ReadOnlyError,
    StorageError,
)
from emu.storage.image import (
    BLOCK_SIZE,
    IOV_MAX,
    ZEROS,
    BlockState,
    Closing,
    Image,
    is_zero,
    read_exact,
)
from emu.storage.raw import RawImage

if TYPE_CHECKING:  # emu.storage.vdi (and construct) load only when a VDI is involved
    from emu.storage.vdi import VdiImage, VdiScan

_SHIFT = BLOCK_SIZE.bit_length() - 1
_UNRESOLVED = object()  # a block not in the resolved map yet
_MASK = BLOCK_SIZE - 1

_Location = tuple[Image, int] | None  # (image, file offset of the block) or zeros
_BlockHandler = Callable[[int, int, list[memoryview], int], None]

MAX_OPEN_PARENTS = 512  # per chain, whatever the open-files limit


def open_parents_limit(wanted: int = 0) -> int:
    """How many parents of one chain keep their file open (and locked): an eighth of
    the soft open-files limit, at least 8 and at most MAX_OPEN_PARENTS (128 under the
    usual 1024), so that several disks fit and chains up to that depth never reopen a
    file. If ``wanted`` parents would need more and the hard limit allows it, the soft
    limit is raised first (to eight times ``wanted`` at most), as an unprivileged
    process may: files are then parked only where ``ulimit -Hn`` leaves no room."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft == resource.RLIM_INFINITY:
        return MAX_OPEN_PARENTS
    need = min(wanted, MAX_OPEN_PARENTS) * 8
    if need > soft and (hard == resource.RLIM_INFINITY or hard > soft):
        raised = need if hard == resource.RLIM_INFINITY else min(hard, need)
        with contextlib.suppress(ValueError, OSError):  # e.g. above fs.nr_open
            resource.setrlimit(resource.RLIMIT_NOFILE, (raised, hard))
            soft = raised
    return max(8, min(MAX_OPEN_PARENTS, soft // 8))


class OpenParents:
    """The parents of a chain that hold a descriptor, least recently used first.

    Admitting one more than the limit parks another: one without data if there is
    such (it is never read), else the least recently used. By default the limit is
    :func:`open_parents_limit`, asked again (it may raise the soft open-files limit)
    before anything is parked.
    """

    def __init__(self, limit: int | None = None) -> None:
        self._fixed = limit is not None
        self._limit = open_parents_limit() if limit is None else limit
        self._parked = False
        self._idle: OrderedDict[VdiImage, None] = OrderedDict()  # open, without data
        self._busy: OrderedDict[VdiImage, None] = OrderedDict()  # open, with data; LRU first

    @property
    def all_open(self) -> bool:
        """No parent was ever parked: descriptors need no bookkeeping per read."""
        return not self._parked

    def admit(self, image: "VdiImage") -> None:
        """Count an open parent in (parking another if too many are open)."""
        (self._busy if image.allocated_blocks else self._idle)[image] = None
        count = len(self._idle) + len(self._busy)
        if count > self._limit and not self._fixed:
            self._limit = open_parents_limit(count)
        if count > self._limit:
            idle = (self._idle or self._busy).popitem(last=False)[0]
            idle.park()
            self._parked = True

    def fd(self, image: "VdiImage") -> int:
        """The descriptor of a parent with data, reopening it if it was parked."""
        if image in self._busy:
            self._busy.move_to_end(image)
            return image.fd
        fd = image.fd  # reopens (and re-locks) it
        self.admit(image)
        return fd


class Chain(Closing):
    """Images leaf first, each the parent of the one before; a BlockDevice.

    ``open_parents`` are the parents open so far (by :func:`open_chain`); by default
    every parent given is open and counted in.
    """

    def __init__(self, images: Sequence[Image], open_parents: OpenParents | None = None) -> None:
        if not images:
            raise StorageError("a chain needs at least one image")
        for child, parent in itertools.pairwise(images):
            check_link(child, parent)
            if not parent.read_only:
                raise StorageError(f"{parent.path}: a parent in a chain must be open read-only")
        if images[-1].parent_uuid is not None:
            raise LinkageError(
                f"{images[-1].path}: its parent {{{images[-1].parent_uuid}}} is not in the chain"
            )
        self._images = tuple(images)
        self._leaf = images[0]
        self._size = self._leaf.size
        self.warnings = [w for c, p in itertools.pairwise(images) if (w := _stale(c, p))]
        if open_parents is None:
            open_parents = OpenParents()
            for parent in images[1:]:
                open_parents.admit(parent)
        self._parents = open_parents
        self._where: dict[int, _Location] = {}  # block -> location, filled in on first use
        # A raw leaf has no parents and holds every block at its own offset.
        self._raw = isinstance(self._leaf, RawImage)

    # ---- BlockDevice --------------------------------------------------------

    @property
    def size(self) -> int:
        return self._size

    @property
    def read_only(self) -> bool:
        return self._leaf.read_only

    @property
    def identity(self) -> str:
        """The base image's uuidCreate (its path for a raw file): the medium a guest sees,
        so its serial number stays the same across snapshots, restores and resets."""
        base = self._images[-1]
        return base.path if base.uuid is None else str(base.uuid)

    @property
    def images(self) -> tuple[Image, ...]:
        """The chain's images, leaf first."""
        return self._images

    def readv(self, offset: int, buffers: Sequence[memoryview]) -> None:
        # The common cases, one preadv: a raw disk (every byte at its own offset), or
        # pieces within one block whose place is resolved.
        n = len(buffers[0]) if len(buffers) == 1 else sum(map(len, buffers))
        if self._raw and offset >= 0 and offset + n <= self._size and len(buffers) <= IOV_MAX:
            try:
                if os.preadv(self._leaf.fd, buffers, offset) == n:
                    return
            except OSError:
                pass  # the general path below reports it
        within = offset & _MASK
        if within + n <= BLOCK_SIZE and 0 <= offset < self._size and offset + n <= self._size:
            loc = self._where.get(offset >> _SHIFT, _UNRESOLVED)
            if loc is _UNRESOLVED:
                loc = self._where_is(offset >> _SHIFT)
            if loc is None:
                for buf in buffers:
                    buf[:] = ZEROS[: len(buf)]
                return
            image = loc[0]
            try:
                fd = image.fd if image is self._leaf else self._fd(image)
                if len(buffers) <= IOV_MAX and os.preadv(fd, buffers, loc[1] + within) == n:
                    return
            except (OSError, StorageError):
                pass  # the general path below reports it
        self._transfer(offset, buffers, self._read_block)

    def writev(self, offset: int, buffers: Sequence[memoryview]) -> None:
        if self._raw and offset >= 0 and offset + sum(map(len, buffers)) <= self._size:
            self._leaf.write_at(offset, buffers)  # refuses a read-only medium as below
            return
        self._check_writable()
        if len(buffers) == 1:  # an in-place write within one block of the leaf
            n = len(buffers[0])
            within = offset & _MASK
            if within + n <= BLOCK_SIZE and 0 <= offset < self._size and offset + n <= self._size:
                loc = self._where_is(offset >> _SHIFT)
                if loc is not None and loc[0] is self._leaf:
                    self._leaf.write_at(loc[1] + within, buffers)
                    return
        self._transfer(offset, buffers, self._write_block)

    def discard(self, offset: int, length: int) -> None:
        """Zero a range: whole blocks become zero blocks of the leaf, partial ones get zeros."""
        self._check_writable()
        self._check_range(offset, length)
        zeros = [ZEROS] * (length >> _SHIFT) + [ZEROS[: length & _MASK]]
        for index, within, pieces, nbytes in _split(offset, zeros):
            if within == 0 and nbytes == self._block_length(index):
                self._leaf.zero_block(index)
                self._where[index] = self._locate(index)
            elif self._where_is(index) is not None:  # else it reads as zeros already
                self._write_block(index, within, pieces, nbytes)

    def flush(self) -> None:
        self._leaf.flush()  # the only image a chain writes

    def close(self) -> None:
        """Flush the leaf and close every image (idempotent)."""
        close_all(self._images)

    # ---- introspection ------------------------------------------------------

    def sources(self, offset: int, length: int) -> list[tuple[int, int, str | None]]:
        """Which file serves each part of a range: (offset, length, path or None for zeros)."""
        self._check_range(offset, length)
        runs: list[tuple[int, int, str | None]] = []
        pos, end = offset, offset + length
        while pos < end:
            index = pos >> _SHIFT
            stop = min(end, (index + 1) << _SHIFT)
            loc = self._where_is(index)
            path = None if loc is None else loc[0].path
            if runs and runs[-1][2] == path:
                runs[-1] = (runs[-1][0], runs[-1][1] + stop - pos, path)
            else:
                runs.append((pos, stop - pos, path))
            pos = stop
        return runs

    def data_blocks(self) -> Iterator[int]:
        """Indexes of the blocks some image of the chain has data for, ascending (a
        superset of the blocks that read as anything but zeros)."""
        last = -1
        for index in heapq.merge(*(image.stored_blocks(zeros=False) for image in self._images)):
            if index != last:
                last = index
                yield index

    # ---- internals ------------------------------------------------------------

    def _where_is(self, index: int) -> _Location:
        """Where block ``index`` is read from (resolved on its first use)."""
        try:
            return self._where[index]
        except KeyError:
            loc = self._where[index] = self._locate(index)
            return loc

    def _locate(self, index: int) -> _Location:
        """Walk the chain for one block (on its first use and when the leaf changes it)."""
        for image in self._images:
            state = image.block_state(index)
            if state is BlockState.ALLOCATED:
                return (image, image.block_offset(index))
            if state is BlockState.ZERO:
                return None
        return None

    def _fd(self, image: Image) -> int:
        if image is self._leaf or self._parents.all_open:
            return image.fd
        return self._parents.fd(image)

    def _transfer(self, offset: int, buffers: Sequence[memoryview], handler: _BlockHandler) -> None:
        self._check_range(offset, sum(len(b) for b in buffers))
        for index, within, pieces, nbytes in _split(offset, buffers):
            handler(index, within, pieces, nbytes)

    def _read_block(self, index: int, within: int, pieces: list[memoryview], nbytes: int) -> None:
        loc = self._where_is(index)
        if loc is None:
            for piece in pieces:
                piece[:] = ZEROS[: len(piece)]
        else:
            read_exact(self._fd(loc[0]), pieces, loc[1] + within, loc[0].path)

    def _write_block(self, index: int, within: int, pieces: list[memoryview], nbytes: int) -> None:
        leaf = self._leaf
        loc = self._where_is(index)
        if loc is not None and loc[0] is leaf:
            leaf.write_at(loc[1] + within, pieces)
            return
        length = self._block_length(index)
        if within == 0 and nbytes == length:
            data = pieces
        else:  # copy-on-write: the block as the chain has it, then the new bytes
            view = memoryview(bytearray(BLOCK_SIZE))
            if loc is not None:
                read_exact(self._fd(loc[0]), [view[:length]], loc[1], loc[0].path)
            pos = within
            for piece in pieces:
                view[pos : pos + len(piece)] = piece
                pos += len(piece)
            data = [view]
        if all(is_zero(piece) for piece in data):  # as VirtualBox: a zero block, no data
            leaf.zero_block(index)
            self._where[index] = self._locate(index)
        else:
            self._where[index] = (leaf, leaf.allocate_block(index, data))

    def _block_length(self, index: int) -> int:
        """Bytes of the virtual disk in block ``index`` (less than a block at the end)."""
        return min(BLOCK_SIZE, self._size - (index << _SHIFT))

    def _check_range(self, offset: int, length: int) -> None:
        if offset < 0 or length < 0 or offset + length > self._size:
            raise StorageError(
                f"{self._leaf.path}: range {offset}+{length} is outside the disk "
                f"({self._size} bytes)"
            )

    def _check_writable(self) -> None:
        if self._leaf.read_only:
            raise ReadOnlyError(f"{self._leaf.path}: medium is read-only")


def open_chain(
    leaf_path: str,
    *,
    read_only: bool = False,
    registry: Mapping[UUID, str] | None = None,
    scans: "FolderScans | None" = None,
) -> Chain:
    """Open ``leaf_path`` and its parents (found as :func:`find_parent` says) as a Chain.

    Nothing is written: a refused open leaves every file as it was.
    """
    images: list[Image] = []
    parents = OpenParents()
    scans = FolderScans() if scans is None else scans
    try:
        image = open_image(leaf_path, read_only=read_only)
        images.append(image)
        seen = {_file_id(image.path)}
        while image.parent_uuid is not None:
            path = find_parent(image.path, image.parent_uuid, registry, scans)
            if _file_id(path) in seen:
                raise LinkageError(f"{image.path}: the chain loops back to {path}")
            image = open_image(path, read_only=True)
            images.append(image)
            seen.add(_file_id(path))
            check_link(images[-2], image)
            parents.admit(image)
        return Chain(images, parents)
    except BaseException:
        for opened in images:
            opened.close()
        raise


def _file_id(path: str) -> tuple[int, int]:
    """(device, inode): the same file under any name (one stat, cheaper than realpath)."""
    try:
        st = os.stat(path)
    except OSError as exc:
        raise MediumError(f"{path}: cannot open: {exc.strerror}") from None
    return st.st_dev, st.st_ino


class FolderScans:
    """The ``.vdi`` files of the folders searched so far, by uuidCreate and uuidLinkage,
    so that one command reads each folder's headers once, whatever the chain's depth."""

    def __init__(self) -> None:
        self._folders: dict[str, _Folder] = {}

    def lookup(self, directory: str, uuid: UUID) -> tuple[list[str], list[str]]:
        """(the paths in ``directory`` with that uuidCreate, the problems of its .vdi
        files that have no readable UUID)."""
        folder = self._folder(directory)
        return folder.by_uuid.get(uuid, []), folder.damaged

    def children(self, directory: str, uuid: UUID) -> list[str]:
        """The paths in ``directory`` whose uuidLinkage is ``uuid``."""
        return self._folder(directory).by_parent.get(uuid, [])

    def _folder(self, directory: str) -> "_Folder":
        if directory not in self._folders:
            folder = self._folders[directory] = _Folder({}, {}, [])
            for path, create, linkage, problem in _scan_vdis(directory):
                if create is None:
                    folder.damaged.append(problem or f"{path}: not a VDI")
                    continue
                folder.by_uuid.setdefault(create, []).append(path)
                if linkage is not None:
                    folder.by_parent.setdefault(linkage, []).append(path)
        return self._folders[directory]


@dataclass
class _Folder:
    by_uuid: dict[UUID, list[str]]
    by_parent: dict[UUID, list[str]]
    damaged: list[str]  # the problems of .vdi files without a readable uuidCreate


def find_parent(
    child_path: str,
    parent_uuid: UUID,
    registry: Mapping[UUID, str] | None = None,
    scans: FolderScans | None = None,
) -> str:
    """The path of the image whose uuidCreate is ``parent_uuid`` (see the module doc).

    If no file has it but a ``.vdi`` file searched has a damaged header, the parent
    is reported as possibly that corrupt file (ImageFormatError), not as missing.
    """
    if registry is not None and parent_uuid in registry:
        return os.path.abspath(registry[parent_uuid])
    scans = FolderScans() if scans is None else scans
    child_path = os.path.abspath(child_path)
    here = os.path.dirname(child_path)
    dirs = [here] if os.path.dirname(here) == here else [here, os.path.dirname(here)]
    damaged: list[str] = []
    for directory in dirs:
        candidates, problems = scans.lookup(directory, parent_uuid)
        found = [path for path in candidates if path != child_path]
        if len(found) > 1:
            raise LinkageError(
                f"{child_path}: its parent {{{parent_uuid}}} is ambiguous: "
                f"{found[0]} and {found[1]} both have that uuidCreate"
            )
        if found:
            return found[0]
        damaged += problems
    if damaged:
        raise ImageFormatError(
            f"{child_path}: parent image {{{parent_uuid}}} not found intact; a .vdi file "
            f"beside it is corrupt and may be it: {damaged[0]}"
        )
    where = " or ".join(dirs)
    registered = "" if registry is None else " and the media registry does not list it"
    raise ParentNotFoundError(
        f"{child_path}: parent image {{{parent_uuid}}} not found: no .vdi file in "
        f"{where} has that uuidCreate{registered}"
    )


def _scan_vdis(directory: str) -> list[tuple[str, UUID | None, UUID | None, str | None]]:
    """(path, uuidCreate, uuidLinkage, header problem) of each regular .vdi file in
    ``directory``, sorted by name (see :func:`emu.storage.vdi.read_uuids`)."""
    from emu.storage.vdi import read_uuids

    try:
        with os.scandir(directory) as entries:
            paths = sorted(
                e.path for e in entries if e.name.lower().endswith(".vdi") and _is_regular(e)
            )
    except OSError:
        return []
    return [(path, *read_uuids(path)) for path in paths]


def _is_regular(entry: os.DirEntry) -> bool:
    try:
        return entry.is_file()
    except OSError:
        return False


def check_link(child: "Image | VdiScan", parent: "Image | VdiScan") -> None:
    """Refuse a parent that is not the image the child was made from (LinkageError)."""
    if child.parent_uuid is None:
        raise LinkageError(f"{child.path}: is a base image, yet {parent.path} follows it")
    if parent.uuid != child.parent_uuid:
        raise LinkageError(
            f"{child.path}: its parent must have uuidCreate {{{child.parent_uuid}}} "
            f"(uuidLinkage), but {parent.path} has {{{parent.uuid}}}"
        )
    if parent.size != child.size:
        raise LinkageError(
            f"{child.path}: size {child.size} differs from its parent's "
            f"({parent.size}, {parent.path})"
        )


def _stale(child: Image, parent: Image) -> str | None:
    """A warning if the parent changed since the diff was made (uuidParentModify)."""
    expected = child.parent_modify_uuid
    if expected is None or expected == parent.modify_uuid:
        return None
    return (
        f"{child.path}: its parent {parent.path} was modified after the diff was made "
        f"(uuidParentModify {{{expected}}}, the parent's uuidModify {{{parent.modify_uuid}}})"
    )


def _split(
    offset: int, buffers: Sequence[memoryview]
) -> Iterator[tuple[int, int, list[memoryview], int]]:
    """Cut a buffer list at block boundaries: (block index, offset in block, pieces, bytes)."""
    index, within = offset >> _SHIFT, offset & _MASK
    room = BLOCK_SIZE - within
    pieces: list[memoryview] = []
    nbytes = 0
    for buf in buffers:
        view = memoryview(buf)
        if view.format != "B":
            view = view.cast("B")
        while len(view):
            take = min(len(view), room - nbytes)
            pieces.append(view if take == len(view) else view[:take])
            view = view[take:]
            nbytes += take
            if nbytes == room:
                yield index, within, pieces, nbytes
                index, within, room, pieces, nbytes = index + 1, 0, BLOCK_SIZE, [], 0
    if pieces:
        yield index, within, pieces, nbytes


def close_all(closables: Iterable) -> None:
    """Close each of ``closables`` (images or chains); the first StorageError is raised
    once all are closed, so one failing file does not leave the others open."""
    errors = []
    for item in closables:
        try:
            item.close()
        except StorageError as exc:
            errors.append(exc)
    if errors:
        raise errors[0]
