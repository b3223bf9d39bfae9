"""ATA command failures, each carrying the Completion the device reports for it.

Status values are QEMU's (hw/ide/core.c): a command that succeeds ends with
DRDY|DSC (50h), one that fails with DRDY|ERR (41h) and the reason in the error
register. ACS-3 leaves status bit 4 undefined ("N/A") in both cases.
"""

from emu.ata.taskfile import (
    ERROR_ABRT,
    ERROR_IDNF,
    ERROR_UNC,
    STATUS_DRDY,
    STATUS_DSC,
    STATUS_ERR,
    Completion,
)

STATUS_GOOD = STATUS_DRDY | STATUS_DSC
STATUS_FAILED = STATUS_DRDY | STATUS_ERR

GOOD = Completion(STATUS_GOOD)  # how most commands end; shared, never modified


class AtaError(Exception):
    """A command ended in error; ``completion`` is what the device reports."""

    def __init__(self, completion: Completion) -> None:
        super().__init__(f"ATA status {completion.status:#04x} error {completion.error:#04x}")
        self.completion = completion

    @classmethod
    def abrt(cls, lba: int = 0, device: int = 0) -> "AtaError":
        """Command aborted: unsupported command or parameter, write refused."""
        return cls(Completion(STATUS_FAILED, ERROR_ABRT, lba, 0, device))

    @classmethod
    def idnf(cls, lba: int, device: int = 0) -> "AtaError":
        """ID not found: the addressed range lies (partly) past the last sector."""
        return cls(Completion(STATUS_FAILED, ERROR_IDNF, lba, 0, device))

    @classmethod
    def unc(cls, lba: int, device: int = 0) -> "AtaError":
        """Uncorrectable data: the medium could not be read."""
        return cls(Completion(STATUS_FAILED, ERROR_UNC, lba, 0, device))
