"""Errors of the image stack. The ATA layer maps them to guest-visible status."""

from emu.errors import EmuError


class StorageError(EmuError):
    """Any failure of the image stack."""


class ImageFormatError(StorageError):
    """A file is not a valid image of its format (bad header, map, size, ...)."""


class LinkageError(StorageError):
    """A differencing image's parent is missing or is not the image it was made from."""


class ParentNotFoundError(LinkageError):
    """A differencing image's parent is neither in the registry nor next to it."""


class ImageLockedError(StorageError):
    """Another process holds the image open for writing."""


class ReadOnlyError(StorageError):
    """A write or discard was sent to a medium that is read-only."""


class MediumError(StorageError):
    """The host failed to read or write the backing file (EIO, ENOSPC, ...)."""


class MachineError(StorageError):
    """A machine operation was refused; the message says why. Nothing was changed."""


class MachineLockedError(MachineError):
    """Another process has the machine folder open."""
