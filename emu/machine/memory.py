"""Guest RAM: one host buffer shared by Unicorn (mem_map_ptr) and the devices (memoryview)."""

import ctypes
import mmap
from typing import Protocol

from emu.machine.errors import MachineError

PAGE_SIZE = 0x1000
# RAM is contiguous from 0 and must stay below q35's PCI hole (MMCONFIG at 0xB0000000).
MAX_RAM = 0xB0000000


class HostBusError(Exception):
    """A DMA address is not backed by RAM: a bus master gets a host bus error (the AHCI
    HBA reports a host bus fatal error)."""


class HostMemory(Protocol):
    """What a bus-mastering device needs of host memory."""

    mem: memoryview  # all of RAM, from guest-physical address 0

    def view(self, address: int, length: int) -> memoryview:
        """Writable view of [address, address+length); HostBusError if not RAM."""


class GuestMemory:
    """Guest-physical RAM from address 0; devices DMA through :meth:`view`."""

    def __init__(self, size: int) -> None:
        if size <= 0 or size % (1 << 20) or size > MAX_RAM:
            raise MachineError(
                f"memory size must be a whole number of MiB from 1 to {MAX_RAM >> 20} MiB"
            )
        self.size = size
        self._map = mmap.mmap(-1, size, flags=mmap.MAP_PRIVATE | mmap.MAP_ANONYMOUS)
        self.mem = memoryview(self._map)
        self.host_address = ctypes.addressof(ctypes.c_char.from_buffer(self._map))

    def view(self, address: int, length: int) -> memoryview:
        """The RAM bytes [address, address+length) as a writable view; HostBusError if not RAM."""
        if address < 0 or length < 0 or address + length > self.size:
            raise HostBusError(f"DMA to 0x{address:x}+0x{length:x} is outside guest RAM")
        return self.mem[address : address + length]

    def read(self, address: int, length: int) -> bytes:
        return bytes(self.view(address, length))

    def write(self, address: int, data: bytes) -> None:
        self.view(address, len(data))[:] = data
