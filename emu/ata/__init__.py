"""The disk as ATA sees it: command set, IDENTIFY data, errors.

It knows nothing of AHCI: a host adapter hands it a :class:`TaskFile` and the
data buffers, and gets back a :class:`Completion`.
"""

from emu.ata.disk import AtaDisk
from emu.ata.errors import AtaError
from emu.ata.taskfile import Completion, Protocol, Request, TaskFile

__all__ = ["AtaDisk", "AtaError", "Completion", "Protocol", "Request", "TaskFile"]
