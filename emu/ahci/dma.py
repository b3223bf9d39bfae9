"""What the HBA needs of host memory: views of guest-physical ranges, or a bus error."""

from typing import Protocol


class HostBusError(Exception):
    """A DMA address is not backed by RAM: the HBA reports a host bus fatal error."""


class HostMemory(Protocol):
    mem: memoryview  # all of RAM, from guest-physical address 0

    def view(self, address: int, length: int) -> memoryview:
        """Writable view of [address, address+length); HostBusError if not RAM."""
