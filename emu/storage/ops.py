"""Whole-image operations: create, diff, merge, convert, compact, check, describe.

Every operation takes paths, opens what it needs with the right locks, and
leaves the files closed. Long ones (merge, convert, compact) report progress
through an optional ``progress(done, total)`` callback, counted in blocks.

Merges copy blocks only; they delete no file. The machine folder (or the
``image merge`` command) decides what happens to the image merged away.
Both merges can be repeated after a crash and end in the same state.
"""

import os
from collections.abc import Callable, Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from uuid import UUID, uuid4

from emu.storage.chain import FolderScans, check_link, find_parent, open_chain
from emu.storage.detect import is_vdi
from emu.storage.errors import (
    ImageFormatError,
    LinkageError,
    MediumError,
    ParentNotFoundError,
    StorageError,
)
from emu.storage.image import BLOCK_SIZE, BlockState, Image, fsync_dir, is_zero
from emu.storage.raw import RawImage
from emu.storage.vdi import ImageType, VdiImage, VdiScan, scan

Progress = Callable[[int, int], None]


@dataclass
class CheckResult:
    """What :func:`check` found, one message per problem, each naming its file.

    corruptions: data could be read wrongly (bad header, map entries past the end
    of the file or shared, broken linkage). leaks: space or counts an interrupted
    write left behind; harmless, ``compact`` (or the next change, for counts)
    repairs them. errors: the check could not be completed (a parent not found).
    warnings: worth knowing, not wrong (a parent modified after its diff was made).
    """

    corruptions: list[str] = field(default_factory=list)
    leaks: list[str] = field(default_factory=list)
    errors: list[str] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)
    images: list[str] = field(default_factory=list)  # the files checked, leaf first

    @property
    def exit_code(self) -> int:
        """As ``qemu-img check``: 1 incomplete, 2 corrupt, 3 leaks only, 0 clean."""
        if self.errors:
            return 1
        if self.corruptions:
            return 2
        return 3 if self.leaks else 0


@dataclass
class ImageInfo:
    """One image of a chain as ``image info`` shows it."""

    path: str
    format: str  # "vdi" or "raw"
    type: str  # "normal", "fixed", "differencing" or "raw"
    size: int  # virtual size
    allocated: int  # bytes of blocks with data in this file
    disk_size: int  # bytes the file occupies on the host
    uuid: UUID | None = None
    uuid_modify: UUID | None = None
    uuid_linkage: UUID | None = None
    uuid_parent_modify: UUID | None = None
    corrupt: bool = False  # the block map has problems: ``check`` tells which

    def as_dict(self) -> dict[str, object]:
        """JSON-ready: UUIDs as strings, absent ones as None."""
        return {k: str(v) if isinstance(v, UUID) else v for k, v in vars(self).items()}


# ---- creating -----------------------------------------------------------------


def create_image(path: str, size: int, *, fmt: str = "vdi", variant: str = "dynamic") -> str:
    """Create a base image: a VDI (dynamic or fixed) or a raw file (sparse or preallocated)."""
    if variant not in ("dynamic", "fixed"):
        raise StorageError(f"unknown variant {variant!r} (dynamic or fixed)")
    if fmt == "vdi":
        image: Image = VdiImage.create(path, size, variant=variant)
    elif fmt == "raw":
        image = RawImage.create(path, size, preallocate=variant == "fixed")
    else:
        raise StorageError(f"unknown image format {fmt!r} (vdi or raw)")
    image.close()
    return image.path


def create_diff(parent_path: str, child_path: str) -> str:
    """Create an empty differencing image of ``parent_path`` (a VDI) at ``child_path``."""
    with _open_vdi(parent_path, read_only=True) as parent:
        VdiImage.create(child_path, parent.size, parent=parent).close()
    return os.path.abspath(child_path)


def relink(diff_path: str, parent_path: str) -> None:
    """Make a diff the child of another image with the same data (after a merge)."""
    with _open_vdi(parent_path, read_only=True) as parent, _open_vdi(diff_path) as diff:
        if diff.size != parent.size:
            raise LinkageError(
                f"{diff.path}: size {diff.size} differs from {parent.path}'s ({parent.size})"
            )
        diff.track_modify = False
        diff.set_parent(parent.uuid_create, parent.uuid_modify)


def children(path: str) -> list[str]:
    """The differencing images made of ``path``, looked for where they would look for it:
    in its folder and in the folders just below it (a ``Snapshots/``)."""
    with _open_vdi(path, read_only=True) as image:
        uuid, me = image.uuid_create, os.fstat(image.fd)
    folder = os.path.dirname(image.path)
    try:
        with os.scandir(folder) as entries:
            below = sorted(e.path for e in entries if e.is_dir())
    except OSError:
        below = []
    scans = FolderScans()
    found = [p for d in [folder, *below] for p in scans.children(d, uuid)]
    return [p for p in found if not os.path.samestat(os.stat(p), me)]


def machine_registry(path: str) -> dict[UUID, str] | None:
    """The media registry of the machine folder an image lives in, if it does.

    A machine's diffs are in ``FOLDER/Snapshots/``, its base may be anywhere (README:
    beside the folder); the registry in ``FOLDER/machine.json`` (read, never written)
    says where. None for an image outside a machine folder.
    """
    from emu.storage import machine_file

    here = os.path.dirname(os.path.abspath(path))
    for folder in (here, os.path.dirname(here)):
        if os.path.isfile(os.path.join(folder, machine_file.MACHINE_FILE)):
            config = machine_file.read(folder)
            return {
                uuid: os.path.normpath(os.path.join(folder, record.path))
                for uuid, record in config.media.items()
            }
    return None


# ---- merging --------------------------------------------------------------------


def merge(
    child_path: str,
    *,
    registry: Mapping[UUID, str] | None = None,
    progress: Progress | None = None,
) -> str:
    """Merge a diff into its parent (backward); return the parent's path.

    The child's allocated and zero blocks are written into the parent, whose
    uuidModify changes. The child keeps reading the same and is re-linked to the
    changed parent; other children of the parent no longer read what they did
    (the caller re-links or drops them).
    """
    with _open_vdi(child_path) as child:
        if child.parent_uuid is None:
            raise StorageError(f"{child.path}: is a base image; there is nothing to merge it into")
        with _open_vdi(find_parent(child.path, child.parent_uuid, registry)) as parent:
            check_link(child, parent)
            for index in _blocks(child, progress):
                state = child.block_state(index)
                if state is BlockState.ALLOCATED:
                    _store(parent, index, _read_block(child, index))
                elif state is BlockState.ZERO:
                    parent.zero_block(index)
            parent.flush()
            child.track_modify = False
            child.set_parent(parent.uuid_create, parent.uuid_modify)
            return parent.path


def merge_into_child(parent_path: str, child_path: str, *, progress: Progress | None = None) -> str:
    """Merge a diff into its only child (forward); return the child's path.

    The parent's blocks the child lacks are copied into the child, which is then
    re-linked to the parent's parent (or becomes a base). The child reads the
    same before and after, so its uuidModify is kept. The parent is left as it
    was, for the caller to delete. Run again after completion, it does nothing.
    """
    with (
        _open_vdi(parent_path, read_only=True, exclusive=True) as parent,
        _open_vdi(child_path) as child,
    ):
        if parent.parent_uuid is not None and child.parent_uuid == parent.parent_uuid:
            return child.path  # merged already: the child links to the grandparent
        check_link(child, parent)
        child.track_modify = False
        for index in _blocks(parent, progress):
            if child.block_state(index) is BlockState.ABSENT:
                state = parent.block_state(index)
                if state is BlockState.ALLOCATED:
                    child.allocate_block(index, [_read_block(parent, index)])
                elif state is BlockState.ZERO:
                    child.zero_block(index)
        child.flush()  # the data first: until the re-link the old chain stays valid
        child.set_parent(parent.parent_uuid, parent.uuid_parent_modify)
        return child.path


# ---- converting and compacting ----------------------------------------------------


def convert(
    src_path: str,
    dst_path: str,
    *,
    fmt: str,
    variant: str = "dynamic",
    registry: Mapping[UUID, str] | None = None,
    progress: Progress | None = None,
) -> str:
    """Flatten the chain ending at ``src_path`` into a new base image ``dst_path``.

    Blocks that read as zeros are not written (they stay unallocated or sparse).
    """
    if os.path.lexists(dst_path):
        raise StorageError(f"{dst_path}: already exists")
    with open_chain(src_path, read_only=True, registry=registry) as source:
        dst_path = create_image(dst_path, source.size, fmt=fmt, variant=variant)
        try:
            with open_chain(dst_path) as target:
                buf = memoryview(bytearray(BLOCK_SIZE))
                for index in _progressing(source.data_blocks(), source.size, progress):
                    start = index * BLOCK_SIZE
                    piece = buf[: min(BLOCK_SIZE, source.size - start)]
                    source.readv(start, [piece])
                    if not is_zero(piece):
                        target.writev(start, [piece])
        except BaseException:
            os.unlink(dst_path)
            raise
    return dst_path


def compact(path: str, *, progress: Progress | None = None) -> int:
    """Rewrite a dynamic or differencing VDI without unused or all-zero blocks.

    All-zero blocks become unallocated in a base and ZERO in a diff (which must
    keep hiding the parent). The new file is written beside the old one and
    renamed over it, so a crash leaves one or the other. UUIDs are kept.
    Returns the bytes the file shrank by.
    """
    with _open_vdi(path, read_only=True, exclusive=True) as image:
        if image.image_type is ImageType.FIXED:
            raise StorageError(f"{image.path}: a fixed image is preallocated; convert it instead")
        folder, name = os.path.split(image.path)
        tmp = os.path.join(folder, f".{name}.compact-{uuid4().hex[:8]}")
        try:
            with VdiImage.create_empty_copy(tmp, image) as copy:
                for index in _blocks(image, progress):
                    state = image.block_state(index)
                    data = _read_block(image, index) if state is BlockState.ALLOCATED else None
                    if data is not None and not is_zero(data):
                        copy.allocate_block(index, [data])
                    elif state is not BlockState.ABSENT:
                        copy.zero_block(index)  # a ZERO entry in a diff, nothing in a base
            before = os.fstat(image.fd).st_size
            after = os.path.getsize(tmp)
            os.replace(tmp, image.path)
        except BaseException:
            if os.path.exists(tmp):
                os.unlink(tmp)
            raise
        fsync_dir(image.path)
    return before - after


# ---- checking and describing ------------------------------------------------------------


def check(path: str, *, registry: Mapping[UUID, str] | None = None) -> CheckResult:
    """Check an image and its parents: headers, block maps, linkage (see CheckResult)."""
    result = CheckResult()
    walk = _Walk(path, registry)
    try:
        for image_path, info in walk:
            result.images.append(image_path)
            if info is not None:
                result.corruptions += [f"{image_path}: {m}" for m in info.corruptions]
                result.leaks += [f"{image_path}: {m}" for m in info.leaks]
    except ParentNotFoundError as exc:
        result.errors.append(str(exc))
    except (ImageFormatError, LinkageError) as exc:
        result.corruptions.append(str(exc))
    except MediumError as exc:
        if not result.images:
            raise  # the image itself cannot be read: nothing was checked
        result.errors.append(str(exc))
    result.warnings = walk.warnings
    return result


def describe(path: str, *, registry: Mapping[UUID, str] | None = None) -> list[ImageInfo]:
    """Facts about an image and each of its parents, leaf first."""
    infos = []
    for image_path, info in _Walk(path, registry):
        disk_size = os.stat(image_path).st_blocks * 512
        if info is None:
            size = os.path.getsize(image_path)
            infos.append(ImageInfo(image_path, "raw", "raw", size, size, disk_size))
        else:
            infos.append(
                ImageInfo(
                    image_path,
                    "vdi",
                    str(info.image_type),
                    info.size,
                    info.allocated_blocks * BLOCK_SIZE,
                    disk_size,
                    info.uuid_create,
                    info.uuid_modify,
                    info.uuid_linkage if info.parent_uuid else None,
                    info.uuid_parent_modify if info.parent_uuid else None,
                    corrupt=bool(info.corruptions),
                )
            )
    return infos


class _Walk:
    """Iterate (path, VdiScan or None for raw) from ``path`` to its base.

    Raises on the first image that cannot be read or is not its child's parent;
    collects ``warnings`` about parents modified after their diffs were made.
    """

    def __init__(self, path: str, registry: Mapping[UUID, str] | None) -> None:
        self._path = os.path.abspath(path)
        self._registry = registry
        self._scans = FolderScans()
        self.warnings: list[str] = []

    def __iter__(self) -> Iterator[tuple[str, VdiScan | None]]:
        path, child, seen = self._path, None, []
        while True:
            if is_vdi(path):
                info: VdiScan | None = scan(path)
            else:
                RawImage(path, read_only=True).close()
                info = None
            if child is not None:
                if info is None:
                    raise LinkageError(
                        f"{child.path}: its parent {{{child.parent_uuid}}} must be a VDI, "
                        f"but {path} is raw"
                    )
                check_link(child, info)
                stale = child.parent_modify_uuid
                if stale is not None and stale != info.modify_uuid:
                    self.warnings.append(
                        f"{child.path}: its parent {path} was modified after the diff was made"
                    )
            yield path, info
            if info is None or info.parent_uuid is None:
                return
            seen.append(os.path.realpath(path))
            path = find_parent(path, info.parent_uuid, self._registry, self._scans)
            if os.path.realpath(path) in seen:
                raise LinkageError(f"{info.path}: the chain loops back to {path}")
            child = info


# ---- helpers --------------------------------------------------------------------------


def _open_vdi(path: str, *, read_only: bool = False, exclusive: bool | None = None) -> VdiImage:
    if not is_vdi(path):
        raise StorageError(f"{path}: is not a VDI image (only VDIs have differencing images)")
    return VdiImage.open(path, read_only=read_only, exclusive=exclusive)


def _blocks(image: VdiImage, progress: Progress | None) -> Iterator[int]:
    """Indexes of the blocks ``image`` has an entry for (data or ZERO), with progress."""
    return _progressing(image.stored_blocks(), image.size, progress)


def _progressing(indexes: Iterable[int], size: int, progress: Progress | None) -> Iterator[int]:
    """``indexes`` (ascending block indexes of a disk of ``size`` bytes), reporting progress
    in blocks of the disk after each and at the end; empty stretches cost nothing."""
    total, done = -(-size // BLOCK_SIZE), 0
    for index in indexes:
        yield index
        done = index + 1
        if progress:
            progress(done, total)
    if progress and done != total:
        progress(total, total)


def _read_block(image: VdiImage, index: int) -> memoryview:
    """A whole allocated block of ``image`` as a new buffer."""
    data = memoryview(bytearray(BLOCK_SIZE))
    image.read_at(image.block_offset(index), [data])
    return data


def _store(image: VdiImage, index: int, data: memoryview) -> None:
    """Write a whole block into ``image``, in place or newly allocated."""
    if image.block_state(index) is BlockState.ALLOCATED:
        image.write_at(image.block_offset(index), [data])
    else:
        image.allocate_block(index, [data])
