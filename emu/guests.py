"""Where the committed guest images live, and resolving a guest name to a file."""

from pathlib import Path

from emu.errors import EmuError

DEFAULT_GUEST = "demo"


def guest_images_dir() -> Path:
    """The directory of built guests: installed with the package as emu/guest_images,
    or the checkout's top-level guest_images/ when running from source."""
    package = Path(__file__).resolve().parent
    installed = package / "guest_images"
    return installed if installed.is_dir() else package.parent / "guest_images"


def resolve_guest(name_or_path: str | None) -> str:
    """A path as given, or the committed guest of that name (``hello``, ``pci``, ...)."""
    if name_or_path is None:
        name_or_path = DEFAULT_GUEST
    path = Path(name_or_path)
    if path.exists() or path.suffix or "/" in name_or_path:
        if not path.is_file():
            raise EmuError(f"{name_or_path}: no such guest file")
        return name_or_path
    image = guest_images_dir() / f"{name_or_path}.elf"
    if not image.is_file():
        known = ", ".join(sorted(p.stem for p in guest_images_dir().glob("*.elf")))
        raise EmuError(f"{name_or_path}: no such guest file or built-in guest (built-in: {known})")
    return str(image)


def guest_kind(path: str) -> str:
    """"linux" for a bzImage, "multiboot" for an ELF (the multiboot loader checks the
    rest), as QEMU's -kernel tells them apart by header; EmuError for anything else."""
    from emu.machine.bzimage import is_bzimage

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
