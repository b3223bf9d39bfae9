"""Write VDI chains straight to files, fast (no fsync), for tests of deep and wide chains.

Each file is laid out as :class:`emu.storage.vdi.VdiImage` lays out new files;
the data area is sparse except for the first sector of an allocated block.
"""

import os
import struct
from pathlib import Path
from uuid import UUID, uuid4

from emu.storage.vdi import VDIHEADER1PLUS, VdiImage

MiB = 1 << 20
_NIL = UUID(int=0)


def tag_sector(layer: int) -> bytes:
    """The first sector of the block a layer of :func:`write_chain` allocates."""
    return struct.pack("<I", layer) * 128


def write_chain(
    folder: Path, depth: int, *, size: int = 4 * MiB, data_layers: set[int] = frozenset()
) -> list[Path]:
    """``depth`` VDIs named l0000.vdi (the base) ... each a diff of the one before.

    Layer ``k`` in ``data_layers`` allocates block ``k % blocks`` (slot 0), whose
    first sector is :func:`tag_sector` ``(k)``. Returns the paths, base first.
    """
    template = folder / ".template.vdi"
    VdiImage.create(str(template), size).close()
    raw = template.read_bytes()
    template.unlink()
    pre, hdr = raw[:72], VDIHEADER1PLUS.parse(raw[72:])
    blocks = hdr.cBlocks
    paths = []
    parent_create = parent_modify = _NIL
    for layer in range(depth):
        hdr.u32Type = 1 if layer == 0 else 4
        hdr.uuidCreate, hdr.uuidModify = uuid4(), uuid4()
        hdr.uuidLinkage, hdr.uuidParentModify = parent_create, parent_modify
        entries = [0xFFFFFFFF] * blocks
        has_data = layer in data_layers
        if has_data:
            entries[layer % blocks] = 0
        hdr.cBlocksAllocated = int(has_data)
        path = folder / f"l{layer:04d}.vdi"
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o644)
        try:
            os.pwrite(fd, pre + VDIHEADER1PLUS.build(hdr), 0)
            os.pwrite(fd, struct.pack(f"<{blocks}I", *entries), hdr.offBlocks)
            if has_data:
                os.pwrite(fd, tag_sector(layer), hdr.offData)
            os.ftruncate(fd, hdr.offData + (MiB if has_data else 0))
        finally:
            os.close(fd)
        paths.append(path)
        parent_create, parent_modify = hdr.uuidCreate, hdr.uuidModify
    return paths
