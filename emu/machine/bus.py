"""The I/O-port bus and the MMIO bus: where devices claim ranges, and what answers the rest.

Nothing-decodes accesses behave as on a PC (open bus): reads return all ones,
writes are dropped. Each is reported once on stderr; under ``strict`` the first
one stops the run instead (the board turns the recorded :class:`StrayAccess`
into the run's result).
"""

import sys
from collections.abc import Callable
from typing import Protocol, TextIO

from emu.machine.errors import StrayAccess
from emu.machine.memory import PAGE_SIZE

ReadFn = Callable[[int, int], int]  # (offset in the range, size in bytes) -> value
WriteFn = Callable[[int, int, int], None]  # (offset in the range, size, value)


class StrayPolicy(Protocol):
    def stray(self, what: str) -> None: ...


class StrayReporter:
    """Reports each stray access once; under ``strict`` records the first and asks to stop."""

    def __init__(
        self,
        strict: bool,
        stop: Callable[[], None],
        eip: Callable[[], int],
        stream: TextIO | None = None,
    ) -> None:
        self.strict = strict
        self._stop = stop
        self._eip = eip
        self._stream = stream
        self._seen: set[str] = set()
        self.error: StrayAccess | None = None

    def stray(self, what: str) -> None:
        if what in self._seen:
            return
        self._seen.add(what)
        message = f"{what} decoded by nothing (EIP=0x{self._eip():08x})"
        if self.strict:
            if self.error is None:
                self.error = StrayAccess(f"stray access: {message}")
                self._stop()
        else:
            print(f"ahci-emu: warning: {message}; open bus", file=self._stream or sys.stderr)


class PortBus:
    """x86 I/O ports 0..0xFFFF; a device claims a range with read/write handlers."""

    def __init__(self, reporter: StrayPolicy) -> None:
        self._handlers: dict[int, tuple[int, ReadFn, WriteFn]] = {}
        self._reporter = reporter

    def register(self, base: int, length: int, read: ReadFn, write: WriteFn) -> None:
        for port in range(base, base + length):
            if port in self._handlers:
                raise ValueError(f"I/O port 0x{port:x} is claimed twice")
            self._handlers[port] = (base, read, write)

    def unregister(self, base: int, length: int) -> None:
        for port in range(base, base + length):
            self._handlers.pop(port, None)

    def read(self, port: int, size: int) -> int:
        entry = self._handlers.get(port)
        if entry is None:
            self._reporter.stray(f"I/O port read of 0x{port:04x}")
            return (1 << (8 * size)) - 1
        base, read, _ = entry
        return read(port - base, size)

    def write(self, port: int, size: int, value: int) -> None:
        entry = self._handlers.get(port)
        if entry is None:
            self._reporter.stray(f"I/O port write of 0x{port:04x}")
            return
        base, _, write = entry
        write(port - base, size, value)


class MmioRegion:
    """A device's window in the physical address space; mapped while ``base`` is set."""

    def __init__(self, name: str, size: int, read: ReadFn, write: WriteFn) -> None:
        if size <= 0 or size % PAGE_SIZE:
            raise ValueError(f"MMIO region {name}: size must be a multiple of 4 KiB")
        self.name = name
        self.size = size
        self.read = read
        self.write = write
        self.base: int | None = None


class MmioBus:
    """Maps MMIO regions into Unicorn with ``mmio_map`` (never memory hooks: they slow
    every guest access) and answers accesses to unmapped physical pages as open bus."""

    def __init__(self, uc, ram_size: int, reporter: StrayPolicy) -> None:
        self._uc = uc
        self._ram_size = ram_size
        self._reporter = reporter
        self._regions: list[MmioRegion] = []
        self._open_pages: set[int] = set()

    def add(self, region: MmioRegion, base: int | None) -> None:
        self._regions.append(region)
        self.move(region, base)

    def move(self, region: MmioRegion, base: int | None) -> None:
        """Map ``region`` at ``base`` (None: stop decoding it). A base that overlaps RAM
        or another region is not decoded, as a conflicting BAR on a real bus."""
        if base == region.base:
            return
        if region.base is not None:
            self._uc.mem_unmap(region.base, region.size)
            region.base = None
        if base is None or base % PAGE_SIZE or base + region.size > 1 << 32:
            return
        if base < self._ram_size or any(
            r.base is not None and base < r.base + r.size and r.base < base + region.size
            for r in self._regions
        ):
            self._reporter.stray(f"{region.name} placed over RAM or another device at 0x{base:x}")
            return
        for page in range(base, base + region.size, PAGE_SIZE):
            if page in self._open_pages:
                self._open_pages.discard(page)
                self._uc.mem_unmap(page, PAGE_SIZE)
        self._uc.mmio_map(
            base,
            region.size,
            lambda _uc, off, size, _ud: region.read(off, size),
            None,
            lambda _uc, off, size, value, _ud: region.write(off, size, value),
            None,
        )
        region.base = base

    def open_bus(self, address: int, is_write: bool) -> bool:
        """Decode an access nothing claims: map the page as open bus and let it retry."""
        page = address & ~(PAGE_SIZE - 1)
        kind = "store to" if is_write else "load from"
        self._reporter.stray(f"{kind} physical address 0x{address:08x}")
        if page >= 1 << 32 or page in self._open_pages:
            return False
        self._open_pages.add(page)
        self._uc.mmio_map(page, PAGE_SIZE, _read_ones, None, _drop, None)
        return True


def _read_ones(_uc, _offset: int, size: int, _ud) -> int:
    return (1 << (8 * size)) - 1


def _drop(_uc, _offset: int, _size: int, _value: int, _ud) -> None:
    return None
