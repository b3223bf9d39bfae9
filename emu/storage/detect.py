"""Open an image file as raw or VDI, told apart by content.

A file is a VDI if it carries the VDI signature, or the pre-header text
("<<< ... Disk Image >>>"), or its name ends in ``.vdi``; such a file is then
validated as a VDI (so a VDI with a damaged signature is refused, never
mistaken for a raw disk). Anything else is raw.
"""

import os

from emu.storage.image import Image, read_head
from emu.storage.raw import RawImage

# The VDI pre-header (VDICore.h VDIPREHEADER): 64 bytes of text, then u32Signature.
# Checked here by hand so that telling a raw disk apart needs no construct import
# (emu.storage.vdi, which declares the layouts, is imported only for a VDI).
VDI_SIGNATURE = 0xBEDA107F
_SIGNATURE_OFFSET = 64


def looks_like_vdi(head: bytes) -> bool:
    """Whether the first bytes of a file claim to be a VDI (signature or pre-header text)."""
    signature = head[_SIGNATURE_OFFSET : _SIGNATURE_OFFSET + 4]
    if len(signature) == 4 and int.from_bytes(signature, "little") == VDI_SIGNATURE:
        return True
    return head.startswith(b"<<< ") and b"Disk Image >>>" in head[:64]


def is_vdi(path: str) -> bool:
    """Whether ``path`` is to be opened as a VDI."""
    if path.lower().endswith(".vdi"):
        return True
    return looks_like_vdi(read_head(path, _SIGNATURE_OFFSET + 4))


def open_image(path: str, *, read_only: bool = False) -> Image:
    """Open one image file (no parents): a VdiImage or a RawImage."""
    path = os.path.abspath(path)
    if is_vdi(path):
        from emu.storage.vdi import VdiImage

        return VdiImage.open(path, read_only=read_only)
    return RawImage(path, read_only=read_only)
