"""PCI: configuration mechanism #1 and a generic type-0 configuration space.

A function's 256 bytes are backed by ``config`` with a write mask per byte
(``wmask``) and a write-one-to-clear mask (``w1cmask``). BARs answer the sizing
protocol (write all ones, read back the size mask); the command register's I/O
and memory bits gate decoding, and a BAR write moves the device's window.
"""

import struct
from collections.abc import Callable
from dataclasses import dataclass, field

# Type-0 header offsets (PCI Local Bus 3.0, 6.1).
VENDOR_ID = 0x00
DEVICE_ID = 0x02
COMMAND = 0x04
STATUS = 0x06
REVISION_ID = 0x08
CLASS_PROG = 0x09
CACHE_LINE_SIZE = 0x0C
LATENCY_TIMER = 0x0D
HEADER_TYPE = 0x0E
BAR0 = 0x10
SUBSYSTEM_VENDOR_ID = 0x2C
SUBSYSTEM_ID = 0x2E
CAPABILITIES_POINTER = 0x34
INTERRUPT_LINE = 0x3C
INTERRUPT_PIN = 0x3D

COMMAND_IO = 0x0001
COMMAND_MEMORY = 0x0002
COMMAND_BUS_MASTER = 0x0004
COMMAND_PARITY = 0x0040
COMMAND_SERR = 0x0100
COMMAND_INTX_DISABLE = 0x0400
COMMAND_WRITABLE = (
    COMMAND_IO
    | COMMAND_MEMORY
    | COMMAND_BUS_MASTER
    | COMMAND_PARITY
    | COMMAND_SERR
    | COMMAND_INTX_DISABLE
)
STATUS_CAP_LIST = 0x0010
STATUS_W1C = 0xF900  # parity, signalled/received aborts, SERR: write one to clear

CAP_ID_PM = 0x01
CAP_ID_MSI = 0x05
CAP_ID_SATA = 0x12

# Power management capability (PCI Bus Power Management 1.2, 3.2): PMC at +2, PMCS at +4.
PMCS_POWER_STATE = 0x0003
PMCS_PME_ENABLE = 0x0100
PMCS_PME_STATUS = 0x8000
D0, D3HOT = 0, 3


@dataclass
class Bar:
    """A base address register: ``io`` or 32-bit memory, of a power-of-two ``size``.

    ``on_move`` is told the decoded address (None while not decoded).
    """

    size: int
    io: bool = False
    on_move: Callable[[int | None], None] = field(default=lambda _base: None)

    @property
    def mask(self) -> int:
        return (~(self.size - 1) & 0xFFFFFFFF) | (0x1 if self.io else 0x0)


class PciFunction:
    """One PCI function's configuration space."""

    def __init__(
        self,
        vendor: int,
        device: int,
        class_code: int,
        *,
        revision: int = 0,
        subsystem: tuple[int, int] = (0, 0),
        header_type: int = 0,
        command: int = 0,
        interrupt_pin: int = 0,
        interrupt_line: int = 0,
    ) -> None:
        self.config = bytearray(256)
        self.wmask = bytearray(256)
        self.w1cmask = bytearray(256)
        self.bars: dict[int, Bar] = {}
        struct.pack_into("<HH", self.config, VENDOR_ID, vendor, device)
        struct.pack_into("<I", self.config, REVISION_ID, (class_code << 8) | revision)
        self.config[HEADER_TYPE] = header_type
        struct.pack_into("<HH", self.config, SUBSYSTEM_VENDOR_ID, *subsystem)
        self.config[INTERRUPT_LINE] = interrupt_line
        self.config[INTERRUPT_PIN] = interrupt_pin
        self._set_mask(COMMAND, 2, COMMAND_WRITABLE)
        self._set_mask(STATUS, 2, STATUS_W1C, self.w1cmask)
        struct.pack_into("<H", self.config, COMMAND, command)
        self.wmask[CACHE_LINE_SIZE] = 0xFF
        self.wmask[LATENCY_TIMER] = 0xFF if header_type & 0x7F == 0 else 0
        self.wmask[INTERRUPT_LINE] = 0xFF
        self._cap_link = CAPABILITIES_POINTER  # the byte that will point to the next capability
        self._cap_free = 0x40  # capabilities start after the type-0 header
        self._pmcs: int | None = None  # offset of PMCS when there is a PM capability

    def _set_mask(self, offset: int, size: int, value: int, mask: bytearray | None = None) -> None:
        (self.wmask if mask is None else mask)[offset : offset + size] = value.to_bytes(
            size, "little"
        )

    def u16(self, offset: int) -> int:
        return self.config[offset] | self.config[offset + 1] << 8

    def u32(self, offset: int) -> int:
        return int.from_bytes(self.config[offset : offset + 4], "little")

    def add_bar(self, index: int, bar: Bar, address: int = 0) -> None:
        """Install BAR ``index`` with an initial (firmware-assigned) ``address``."""
        offset = BAR0 + 4 * index
        self.bars[index] = bar
        self._set_mask(offset, 4, bar.mask & ~(0x3 if bar.io else 0xF))
        struct.pack_into("<I", self.config, offset, (address & bar.mask) | (1 if bar.io else 0))

    def add_capability(
        self, cap_id: int, body: bytes, wmask: bytes = b"", offset: int | None = None
    ) -> int:
        """Append a capability (``body`` follows the id and next bytes) at ``offset``
        (default: the next free dword); returns its offset."""
        if offset is None:
            offset = (self._cap_free + 3) & ~3
        self.config[offset] = cap_id
        self.config[offset + 2 : offset + 2 + len(body)] = body
        self.wmask[offset + 2 : offset + 2 + len(wmask)] = wmask
        self.config[self._cap_link] = offset
        self.config[STATUS] |= STATUS_CAP_LIST
        self._cap_link = offset + 1
        self._cap_free = max(self._cap_free, offset + 2 + len(body))
        return offset

    def add_power_management(self, offset: int, pmc: int, pmcs: int) -> None:
        """A power management capability at ``offset``: read-only capabilities ``pmc``,
        control/status ``pmcs`` whose PowerState (D0 or D3hot; a write of D1 or D2 is
        discarded) and PME_En are writable and PME_Status is write-one-to-clear. In
        D3hot the function decodes configuration cycles only (its BARs are off)."""
        self.add_capability(CAP_ID_PM, struct.pack("<HH", pmc, pmcs), offset=offset)
        self._pmcs = offset + 4
        self._set_mask(self._pmcs, 2, PMCS_POWER_STATE | PMCS_PME_ENABLE)
        self._set_mask(self._pmcs, 2, PMCS_PME_STATUS, self.w1cmask)

    @property
    def power_state(self) -> int:
        """D0 (also without a PM capability) or D3HOT."""
        return D0 if self._pmcs is None else self.u16(self._pmcs) & PMCS_POWER_STATE

    def preset(self, values: dict[int, bytes]) -> None:
        """Fill device-specific (read-only) registers, e.g. as firmware left them."""
        for offset, data in values.items():
            self.config[offset : offset + len(data)] = data

    def find_capability(self, cap_id: int) -> int | None:
        offset = self.config[CAPABILITIES_POINTER] if self.config[STATUS] & STATUS_CAP_LIST else 0
        while offset:
            if self.config[offset] == cap_id:
                return offset
            offset = self.config[offset + 1]
        return None

    @property
    def command(self) -> int:
        return self.u16(COMMAND)

    def read(self, offset: int, size: int) -> int:
        return int.from_bytes(self.config[offset : offset + size], "little")

    def write(self, offset: int, size: int, value: int) -> None:
        state = self.power_state
        for i in range(size):
            byte = (value >> (8 * i)) & 0xFF
            pos = offset + i
            wmask, w1c = self.wmask[pos], self.w1cmask[pos]
            old = self.config[pos]
            self.config[pos] = ((old & ~wmask) | (byte & wmask)) & ~(byte & w1c) & 0xFF
        if self.power_state not in (D0, D3HOT):  # D1, D2: unsupported, the write is dropped
            self.config[self._pmcs] = (self.config[self._pmcs] & ~PMCS_POWER_STATE) | state
        if (offset < BAR0 + 24 and offset + size > COMMAND) or self.power_state != state:
            self.update_decoding()

    def bar_address(self, index: int) -> int | None:
        """Where BAR ``index`` decodes now: None when decoding is off, the function is in
        D3hot, the BAR is zero, or it holds its own size mask (mid-sizing)."""
        bar = self.bars[index]
        enabled = self.command & (COMMAND_IO if bar.io else COMMAND_MEMORY)
        enabled = enabled and self.power_state == D0
        raw = self.u32(BAR0 + 4 * index)
        address = raw & bar.mask & ~(0x3 if bar.io else 0xF)
        if not enabled or address == 0 or raw == bar.mask:
            return None
        return address

    def update_decoding(self) -> None:
        for index, bar in self.bars.items():
            bar.on_move(self.bar_address(index))


class PciHost:
    """Configuration mechanism #1 on ports 0xCF8 (address) and 0xCFC..0xCFF (data), bus 0."""

    ADDRESS_PORT = 0xCF8
    DATA_PORT = 0xCFC

    def __init__(self) -> None:
        self.functions: dict[tuple[int, int], PciFunction] = {}
        self.address = 0

    def attach(self, device: int, function: int, fn: PciFunction) -> None:
        self.functions[(device, function)] = fn

    def _target(self) -> tuple[PciFunction | None, int]:
        if not self.address & 0x80000000 or (self.address >> 16) & 0xFF != 0:
            return None, 0
        device, function = (self.address >> 11) & 0x1F, (self.address >> 8) & 0x7
        return self.functions.get((device, function)), self.address & 0xFC

    def read_address(self, offset: int, size: int) -> int:
        if size != 4:  # only dword accesses reach CONFIG_ADDRESS
            return (1 << (8 * size)) - 1
        return self.address

    def write_address(self, offset: int, size: int, value: int) -> None:
        if size == 4:
            self.address = value & 0x80FFFFFC

    def read_data(self, offset: int, size: int) -> int:
        fn, register = self._target()
        if fn is None:
            return (1 << (8 * size)) - 1
        return fn.read(register + offset, size)

    def write_data(self, offset: int, size: int, value: int) -> None:
        fn, register = self._target()
        if fn is not None:
            fn.write(register + offset, size, value)
