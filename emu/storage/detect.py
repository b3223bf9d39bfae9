"""Open an image file as raw or VDI, told apart by content.

A file is a VDI if it carries the VDI signature, or the pre-header text
("<<< ... Disk Image >>>"), or its name ends in ``.vdi``; such a file is then
validated as a VDI (so a VDI with a damaged signature is refused, never
mistaken for a raw disk). Anything else is raw.
"""

import os

from emu.storage.errors import MediumError
from emu.storage.image import Image
from emu.storage.raw import RawImage
from emu.storage.vdi import HEADER1PLUS_SIZE, VdiImage, looks_like_vdi


def is_vdi(path: str) -> bool:
    """Whether ``path`` is to be opened as a VDI."""
    if path.lower().endswith(".vdi"):
        return True
    try:
        with open(path, "rb") as f:
            head = f.read(HEADER1PLUS_SIZE)
    except OSError as exc:
        raise MediumError(f"{path}: cannot open: {exc.strerror}") from None
    return looks_like_vdi(head)


def open_image(path: str, *, read_only: bool = False) -> Image:
    """Open one image file (no parents): a VdiImage or a RawImage."""
    path = os.path.abspath(path)
    if is_vdi(path):
        return VdiImage.open(path, read_only=read_only)
    return RawImage(path, read_only=read_only)
