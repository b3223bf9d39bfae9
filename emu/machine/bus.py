"""The I/O-port bus and the MMIO bus: where devices claim ranges, and what answers the rest.

Nothing-decodes accesses behave as on a PC (open bus): reads return all ones,
writes are dropped. Each is reported once on stderr; under ``strict`` the first
one stops the run instead (the board turns the recorded :class:`StrayAccess`
into the run's result).
"""

import ctypes
import sys
from collections.abc import Callable, Sequence
from typing import Protocol, TextIO

from unicorn import UcError
from unicorn.unicorn_py3.unicorn import uclib

from emu.machine.errors import RunStop, StrayAccess
from emu.machine.memory import PAGE_SIZE

ReadFn = Callable[[int, int], int]  # (offset in the range, size in bytes) -> value
WriteFn = Callable[[int, int, int], None]  # (offset in the range, size, value)
WordReaders = Sequence[Callable[[], int]]  # by offset >> 2: the 32-bit register's value
WordWriters = Sequence[Callable[[int], None]]  # by offset >> 2: write the 32-bit register

# Raw C callbacks for uc_mmio_map: the binding's own wrapper cost about twice as much
# per access (measured on the ABAR polling loop), and MMIO is the hot path. They leave
# out the trailing user-data pointer Unicorn passes (the caller cleans up arguments on
# x86-64 and AArch64, so a callee may ignore trailing ones): ctypes converts each
# declared one, and the read callback cost 0.36 us per access without it against
# 0.48-0.61 us with it (bare Unicorn loop).
_MMIO_READ = ctypes.CFUNCTYPE(ctypes.c_uint64, ctypes.c_void_p, ctypes.c_uint64, ctypes.c_uint)
_MMIO_WRITE = ctypes.CFUNCTYPE(
    None, ctypes.c_void_p, ctypes.c_uint64, ctypes.c_uint, ctypes.c_uint64
)


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
    """A device's window in the physical address space; mapped while ``base`` is set.

    ``words``, when given, is a pair of tables (:data:`WordReaders`, :data:`WordWriters`)
    that an aligned 32-bit access calls instead of ``read``/``write``, with the same
    effect and one Python call fewer. Setting ``read`` or ``write`` drops them (so a
    wrapper put there sees every access); the change takes effect when the region is
    next mapped."""

    def __init__(
        self,
        name: str,
        size: int,
        read: ReadFn,
        write: WriteFn,
        words: tuple[WordReaders, WordWriters] | None = None,
    ) -> None:
        if size <= 0 or size % PAGE_SIZE:
            raise ValueError(f"MMIO region {name}: size must be a multiple of 4 KiB")
        self.name = name
        self.size = size
        self._read = read
        self._write = write
        self.words = words
        self.base: int | None = None

    @property
    def read(self) -> ReadFn:
        return self._read

    @read.setter
    def read(self, read: ReadFn) -> None:
        self._read = read
        self.words = None

    @property
    def write(self) -> WriteFn:
        return self._write

    @write.setter
    def write(self, write: WriteFn) -> None:
        self._write = write
        self.words = None


class MmioBus:
    """Maps MMIO regions into Unicorn with ``uc_mmio_map`` (never memory hooks: they slow
    every guest access) and answers accesses to unmapped physical pages as open bus."""

    def __init__(
        self,
        uc,
        ram_size: int,
        reporter: StrayPolicy,
        on_device_error: Callable[[str], None],
        on_run_stop: Callable[[RunStop], None],
    ) -> None:
        self._uc = uc
        self._ram_size = ram_size
        self._reporter = reporter
        self._on_device_error = on_device_error
        self._on_run_stop = on_run_stop
        self._regions: list[MmioRegion] = []
        self._open_pages: set[int] = set()
        self._region_pages: set[int] = set()  # the pages the mapped regions cover
        self._callbacks: dict[int, tuple[object, object]] = {}  # base -> live C callbacks
        self._writing: tuple[int, int, int, int] | None = None  # (base, offset, size, value)
        self._replay: tuple[int, int, int, int] | None = None

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
            self._callbacks.pop(region.base, None)
            self._region_pages.difference_update(_pages(region.base, region.size))
            region.base = None
        if base is None or base % PAGE_SIZE or base + region.size > 1 << 32:
            return
        if base < self._ram_size or any(
            r.base is not None and base < r.base + r.size and r.base < base + region.size
            for r in self._regions
        ):
            self._reporter.stray(f"{region.name} placed over RAM or another device at 0x{base:x}")
            return
        for page in _pages(base, region.size):
            if page in self._open_pages:
                self._open_pages.discard(page)
                self._uc.mem_unmap(page, PAGE_SIZE)
                self._callbacks.pop(page, None)
        self._map(base, region.size, region.read, region.write, region.name, region.words)
        region.base = base
        self._region_pages.update(_pages(base, region.size))

    def _map(
        self,
        base: int,
        size: int,
        read: ReadFn,
        write: WriteFn,
        name: str,
        words: tuple[WordReaders, WordWriters] | None = None,
    ) -> None:
        """uc_mmio_map with raw callbacks. A device raises only :class:`RunStop`, to end the
        run on purpose (a power cut); any other exception stops the run with an internal
        error instead of vanishing inside ctypes. With ``words``, an aligned 32-bit access
        calls the tables (see :class:`MmioRegion`): one Python frame fewer per access, and
        the callback's frame the only one for a register read that is a getter in C."""
        fail, end = self._on_device_error, self._on_run_stop
        readers, writers = words if words is not None else (None, None)

        def on_read(_uc, offset, size):
            try:
                if readers is not None and size == 4 and not offset & 3:
                    return readers[offset >> 2]()
                return read(offset, size)
            except RunStop as stop:
                end(stop)
                return (1 << (8 * size)) - 1
            except Exception as exc:  # reported; the run stops
                fail(f"{name} read at +0x{offset:x} failed: {exc!r}")
                return (1 << (8 * size)) - 1

        def on_write(_uc, offset, size, value):
            access = (base, offset, size, value)
            if self._replay is not None:
                replayed, self._replay = self._replay == access, None
                if replayed:
                    return
            self._writing = access
            try:
                if writers is not None and size == 4 and not offset & 3:
                    writers[offset >> 2](value)
                else:
                    write(offset, size, value)
            except RunStop as stop:
                end(stop)
            except Exception as exc:  # reported; the run stops
                fail(f"{name} write at +0x{offset:x} failed: {exc!r}")
            finally:
                self._writing = None

        callbacks = (_MMIO_READ(on_read), _MMIO_WRITE(on_write))
        status = uclib.uc_mmio_map(
            self._uc._uch,
            base,
            size,
            ctypes.cast(callbacks[0], ctypes.c_void_p),
            None,
            ctypes.cast(callbacks[1], ctypes.c_void_p),
            None,
        )
        if status:
            raise UcError(status)
        self._callbacks[base] = callbacks

    def stop(self) -> None:
        """Stop the guest (at the end of its current block) so the run loop can act.

        A stop requested inside an MMIO store leaves EIP on that store, and Unicorn
        executes it again when the guest resumes: the repeat is recognised and
        dropped (see :attr:`replay_pending`), so the device sees each store once.
        """
        if self._writing is not None:
            self._replay = self._writing
        self._uc.emu_stop()

    @property
    def replay_pending(self) -> bool:
        """The guest stopped inside an MMIO store that it will execute again (and we drop)."""
        return self._replay is not None

    def forget_replay(self) -> None:
        """The store was stepped over (or never came back): drop no later write."""
        self._replay = None

    def decodes(self, page: int) -> bool:
        """Whether a region or an open-bus page answers at physical ``page``."""
        page &= ~(PAGE_SIZE - 1)
        return page in self._region_pages or page in self._open_pages

    def open_bus(self, address: int, is_write: bool) -> bool:
        """Decode an access nothing claims: map its page as open bus (reported once)."""
        page = address & ~(PAGE_SIZE - 1)
        kind = "store to" if is_write else "load from"
        self._reporter.stray(f"{kind} physical address 0x{address:08x}")
        if page >= 1 << 32 or page in self._open_pages:
            return False
        self._open_pages.add(page)
        self._map(page, PAGE_SIZE, _read_ones, _drop, "open bus")
        return True


def _pages(base: int, size: int) -> range:
    return range(base, base + size, PAGE_SIZE)


def _read_ones(_offset: int, size: int) -> int:
    return (1 << (8 * size)) - 1


def _drop(_offset: int, _size: int, _value: int) -> None:
    return None
