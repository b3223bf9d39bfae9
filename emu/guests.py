"""Where the committed guest images live, and resolving a GUEST argument to a file.

The rule, the same for every command that takes a guest: GUEST is a path when it
contains a slash or names an existing regular file; otherwise it is the name of a
built-in guest. A directory never counts as a guest file, so a machine folder named
``demo`` does not hide the built-in ``demo``; no GUEST at all is always the built-in
default guest.
"""

import os
from collections.abc import Callable
from pathlib import Path

from emu.errors import EmuError

DEFAULT_GUEST = "demo"


def guest_images_dir() -> Path:
    """The directory of built guests: installed with the package as emu/guest_images,
    or the checkout's top-level guest_images/ when running from source."""
    package = Path(__file__).resolve().parent
    installed = package / "guest_images"
    return installed if installed.is_dir() else package.parent / "guest_images"


def builtin_guests() -> list[str]:
    """The names of the built-in guests, sorted."""
    return sorted(p.stem for p in guest_images_dir().glob("*.elf"))


def resolve_guest(name_or_path: str | None, note: Callable[[str], None] | None = None) -> str:
    """The guest file GUEST stands for (see the module's rule); no GUEST is the default.

    When GUEST names both a regular file here and a built-in guest, the file is used
    and ``note`` (if given) is told so, with the built-in's path to use instead.
    """
    if name_or_path is None:  # the built-in default, whatever the working folder holds
        return _builtin(DEFAULT_GUEST)
    if "/" in name_or_path or os.sep in name_or_path:
        if not os.path.isfile(name_or_path):
            raise EmuError(f"{name_or_path}: no such guest file")
        return name_or_path
    if os.path.isfile(name_or_path):
        builtin = guest_images_dir() / f"{name_or_path}.elf"
        if note is not None and builtin.is_file():
            note(f"note: using the file ./{name_or_path}; the built-in guest is {builtin}")
        return name_or_path
    return _builtin(name_or_path)


def _builtin(name: str) -> str:
    image = guest_images_dir() / f"{name}.elf"
    if not image.is_file():
        known = ", ".join(builtin_guests())
        raise EmuError(f"{name}: no such guest file or built-in guest (built-in: {known})")
    return str(image)


def guest_kind(path: str) -> str:
    """The kind of guest file: "linux" for a bzImage, "multiboot" for an ELF (the
    multiboot loader checks the rest), told apart by header as QEMU's -kernel does;
    EmuError for anything else."""
    from emu.machine.bzimage_magic import is_bzimage

    try:
        with open(path, "rb") as f:
            head = f.read(0x400)
    except OSError as exc:
        raise EmuError(f"{path}: {exc.strerror}") from exc
    if is_bzimage(head):
        return "linux"
    if head.startswith(b"\x7fELF"):
        return "multiboot"
    raise EmuError(f"{path}: neither a multiboot ELF nor a Linux bzImage")
