"""Where the committed guest images live, and resolving a guest name to a file."""

from importlib import resources
from pathlib import Path

from emu.errors import EmuError

DEFAULT_GUEST = "hello"


def guest_images_dir() -> Path:
    """The directory of built guests: installed with the package, or the checkout's."""
    try:
        return Path(str(resources.files("emu.guest_images")))
    except ModuleNotFoundError:  # running from a source checkout
        return Path(__file__).resolve().parent.parent / "guest_images"


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
