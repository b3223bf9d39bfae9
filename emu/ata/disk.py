"""The disk as ATA sees it: decodes task files, executes commands on a BlockDevice.

A host adapter calls :meth:`AtaDisk.decode` (which raises :class:`AtaError`
for a command that fails before any data moves), then :meth:`AtaDisk.execute`
with buffers covering :attr:`Request.nbytes`. ``execute`` never raises for
anything a guest can send: failures come back as error completions.

Addressing. 28-bit commands use COUNT(7:0) (0 means 256) and LBA(27:0), with
LBA(27:24) taken from DEVICE(3:0); the other bits of the adapter's 48-bit LBA
and 16-bit COUNT are ignored. EXT commands use LBA(47:0) and COUNT(15:0)
(0 means 65536); FPDMA commands take the count from FEATURE(15:0). The LBA
bit (DEVICE bit 6) is not looked at: every address is an LBA (CHS addressing
is obsolete since ATA8-ACS).

Errors. A range reaching past the last sector fails with IDNF before anything
is transferred. A read the medium cannot serve fails with UNC; a write, flush
or trim the backing store refuses (read-only medium, host I/O error) fails with
ABRT. Read, write and verify errors report the command's first LBA (for
verify, the first LBA of the failing 64 KiB chunk) as "the LBA of the first
unrecoverable error", with LBA(27:24) also in DEVICE(3:0) for 28-bit commands;
a bad TRIM entry reports that entry's LBA; other aborts report LBA 0.

Short buffers. When the buffers hold fewer bytes than ``nbytes``, a sector
command transfers only the whole sectors that fit, from its first LBA; bytes
of a trailing partial sector are neither filled nor written. IDENTIFY and
READ LOG EXT fill what fits; DATA SET MANAGEMENT uses the whole 8-byte entries
that fit. The completion is the one the command would have had for what it
did; the adapter, which knows both lengths, reports the shortfall itself.
Bytes beyond ``nbytes`` are never touched.
"""

import struct
import sys
from collections.abc import Callable, Sequence
from typing import NamedTuple

from emu.ata.commands import (
    DEVICE_FUA,
    DSM_TRIM,
    FEATURE_DISABLE_READ_LOOK_AHEAD,
    FEATURE_DISABLE_WRITE_CACHE,
    FEATURE_ENABLE_READ_LOOK_AHEAD,
    FEATURE_ENABLE_WRITE_CACHE,
    FEATURE_SET_TRANSFER_MODE,
    LOG_DIRECTORY,
    LOG_NCQ_COMMAND_ERROR,
    NCQ_TAG_MASK,
    NCQ_TAG_SHIFT,
    Command,
)
from emu.ata.errors import GOOD, STATUS_GOOD, AtaError
from emu.ata.faults import DiskFaults
from emu.ata.identify import (
    DEFAULT_FIRMWARE,
    DEFAULT_MODEL,
    MAX_MULTIPLE,
    MAX_MWDMA_MODE,
    MAX_PIO_MODE,
    MAX_UDMA_MODE,
    IdentifyData,
    serial_for,
)
from emu.ata.taskfile import STATUS_DRDY, Completion, Protocol, Request, TaskFile
from emu.storage.blockdev import SECTOR_SIZE, BlockDevice
from emu.storage.errors import MediumError, StorageError

_LBA28_COMMANDS = frozenset(
    {
        Command.READ_SECTORS,
        Command.WRITE_SECTORS,
        Command.READ_MULTIPLE,
        Command.WRITE_MULTIPLE,
        Command.READ_DMA,
        Command.WRITE_DMA,
        Command.READ_VERIFY_SECTORS,
    }
)
_QUEUED_COMMANDS = frozenset({Command.READ_FPDMA_QUEUED, Command.WRITE_FPDMA_QUEUED})
_SECTOR_READS = frozenset(
    {
        Command.READ_SECTORS,
        Command.READ_SECTORS_EXT,
        Command.READ_MULTIPLE,
        Command.READ_MULTIPLE_EXT,
        Command.READ_DMA,
        Command.READ_DMA_EXT,
        Command.READ_FPDMA_QUEUED,
    }
)
_SECTOR_WRITES = frozenset(
    {
        Command.WRITE_SECTORS,
        Command.WRITE_SECTORS_EXT,
        Command.WRITE_MULTIPLE,
        Command.WRITE_MULTIPLE_EXT,
        Command.WRITE_DMA,
        Command.WRITE_DMA_EXT,
        Command.WRITE_FPDMA_QUEUED,
    }
)
_VERIFIES = frozenset({Command.READ_VERIFY_SECTORS, Command.READ_VERIFY_SECTORS_EXT})
_DEVICE_LBA = 0x40
_VERIFY_CHUNK = 64 * 1024

# QEMU ends the power management commands with DRDY alone (they lack its SET_DSC flag).
_STATUS_POWER = STATUS_DRDY
# EXECUTE DEVICE DIAGNOSTIC: diagnostic code 01h (device 0 passed) and the ATA
# device signature (COUNT 01h, LBA 000001h).
_DIAGNOSTIC_PASSED = 0x01

# NCQ Command Error log (SATA 3.x 13.7.4): NQ|TAG, reserved, STATUS, ERROR,
# LBA(23:0), DEVICE, LBA(47:24), reserved, COUNT; byte 511 is a checksum.
_NCQ_ERROR_ENTRY = struct.Struct("<BxBB3sB3sxH")
_LBA_RANGE_ENTRY = struct.Struct("<Q")  # DSM: LBA(47:0) | length(15:0) << 48
_LOG_PAGES = {LOG_DIRECTORY: 1, LOG_NCQ_COMMAND_ERROR: 1}


# The plain sector transfers a host adapter may run through decode_transfer() and
# transfer() rather than decode() and execute(): (queued, write).
_TRANSFERS = {
    Command.READ_DMA_EXT: (False, False),
    Command.WRITE_DMA_EXT: (False, True),
    Command.READ_FPDMA_QUEUED: (True, False),
    Command.WRITE_FPDMA_QUEUED: (True, True),
}


# What a plain transfer's task file says besides its LBA, by (command, COUNT, FEATURES):
# drivers send the same few, so decode_transfer derives each once.
_SHAPES: dict[tuple[int, int, int], tuple[int, int, int | None, bool]] = {}
_SHAPES_KEPT = 4096
# Plain transfers address 48 bits: their first LBA is the task file's LBA, whatever the
# other fields, so a shape holds for every LBA.
assert not _TRANSFERS.keys() & _LBA28_COMMANDS


def _transfer_shape(command: int, count: int, features: int) -> tuple[int, int, int | None, bool]:
    """(sectors, bytes, NCQ tag or None, write) of a plain transfer, remembered."""
    queued, write = _TRANSFERS[command]
    _, sectors = _extent_of(command, 0, count, features, 0)
    shape = (sectors, sectors * SECTOR_SIZE, _ncq_tag(count) if queued else None, write)
    if len(_SHAPES) >= _SHAPES_KEPT:
        _SHAPES.clear()
    _SHAPES[command, count, features] = shape
    return shape


def _extent_of(command: int, lba: int, count: int, features: int, device: int) -> tuple[int, int]:
    """(first LBA, sector count) of a sector command, by its addressing mode."""
    if command in _LBA28_COMMANDS:
        return (lba & 0xFFFFFF) | (device & 0x0F) << 24, (count & 0xFF) or 0x100
    if command in _QUEUED_COMMANDS:
        return lba, features or 0x10000
    return lba, count or 0x10000


def _extent(tf: TaskFile) -> tuple[int, int]:
    return _extent_of(tf.command, tf.lba, tf.count, tf.features, tf.device)


def _ncq_tag(count: int) -> int:
    """The tag of READ/WRITE FPDMA QUEUED: COUNT(7:3)."""
    return count >> NCQ_TAG_SHIFT & NCQ_TAG_MASK


def sector_range(tf: TaskFile) -> tuple[int, int]:
    """(first LBA, sectors) a read, verify or write addresses; (0, 0) for other commands."""
    command = tf.command
    if command in _SECTOR_READS or command in _VERIFIES or command in _SECTOR_WRITES:
        return _extent(tf)
    return 0, 0


def transfers_data(tf: TaskFile) -> bool:
    """Does ``tf``'s command move data (so its PRDT must describe some)?"""
    entry = _COMMANDS.get(tf.command)
    return entry is not None and entry.protocol not in (Protocol.NON_DATA, Protocol.DIAGNOSTIC)


def _error_device(command: int, lba: int) -> int:
    """The DEVICE field of an error completion: LBA(27:24) in bits 3:0 for 28-bit commands."""
    if command in _LBA28_COMMANDS:
        return _DEVICE_LBA | (lba >> 24 & 0x0F)
    return _DEVICE_LBA


def _unreadable(command: int, lba: int) -> AtaError:
    """The medium could not serve a read of ``command`` from ``lba``: UNC."""
    return AtaError.unc(lba, _error_device(command, lba))


def _clip(buffers: Sequence[memoryview], limit: int) -> list[memoryview]:
    """The leading ``limit`` bytes of ``buffers`` (which must hold at least that many)."""
    clipped = []
    for buf in buffers:
        if limit <= 0:
            break
        if len(buf) > limit:
            buf = buf[:limit]
        clipped.append(buf)
        limit -= len(buf)
    return clipped


def _whole_sectors(buffers: Sequence[memoryview], nbytes: int) -> tuple[list[memoryview], int]:
    """Buffers not holding exactly ``nbytes``: the whole sectors that fit, and their size."""
    limit = min(sum(map(len, buffers)), nbytes) // SECTOR_SIZE * SECTOR_SIZE
    return _clip(buffers, limit), limit


def _copy_out(data: memoryview, buffers: Sequence[memoryview], nbytes: int) -> None:
    """Copy ``data`` into ``buffers``, at most ``nbytes`` bytes."""
    pos, end = 0, min(len(data), nbytes)
    for buf in buffers:
        n = min(len(buf), end - pos)
        if n <= 0:
            break
        buf[:n] = data[pos : pos + n]
        pos += n


def _log_directory() -> memoryview:
    """General Purpose Log Directory: word 0 is the GPL version, word N the page count of log N."""
    page = bytearray(SECTOR_SIZE)
    struct.pack_into("<H", page, 0, 0x0001)
    for address, pages in _LOG_PAGES.items():
        if address != LOG_DIRECTORY:
            struct.pack_into("<H", page, 2 * address, pages)
    return memoryview(page).toreadonly()


class AtaDisk:
    """An ATA hard disk of 512-byte sectors on top of a :class:`BlockDevice`.

    ``serial`` defaults to a hash of the medium's identity. ``write_cache`` is the
    volatile write cache's power-on setting (SET FEATURES 02h/82h switch it).
    ``faults`` injects the run's "ata" faults (None: the disk never fails on its own).
    """

    def __init__(
        self,
        dev: BlockDevice,
        *,
        model: str = DEFAULT_MODEL,
        firmware: str = DEFAULT_FIRMWARE,
        serial: str | None = None,
        write_cache: bool = True,
        faults: DiskFaults | None = None,
    ) -> None:
        self._dev = dev
        self._write_cache_default = write_cache
        self._faults = faults
        self._sectors = dev.size // SECTOR_SIZE
        self._identify = IdentifyData(
            self._sectors,
            model=model,
            serial=serial_for(dev.identity) if serial is None else serial,
            firmware=firmware,
        )
        self._log_directory = _log_directory()
        self._scratch = memoryview(bytearray(_VERIFY_CHUNK))
        self._host_failures: set[str] = set()  # kinds of host write failures reported
        self.reset()

    def reset(self) -> None:
        """Return to the power-on settings, as after a COMRESET.

        READ/WRITE MULTIPLE enabled with 16 sectors (QEMU's default), the write
        cache as configured (enabled by default), read look-ahead enabled, Ultra
        DMA mode 6 selected, and the NCQ Command Error log cleared.
        """
        self._multiple = MAX_MULTIPLE
        self._write_cache = self._write_cache_default
        self._look_ahead = True
        self._identify.set_multiple(self._multiple)
        self._identify.set_cache(write_cache=self._write_cache, look_ahead=True)
        self._identify.set_dma_mode(mwdma=None, udma=MAX_UDMA_MODE)
        self._ncq_log = memoryview(bytes(SECTOR_SIZE))

    def decode(self, tf: TaskFile) -> Request:
        """What ``tf``'s command needs; raises AtaError if it fails before moving data."""
        entry = _COMMANDS.get(tf.command)
        if entry is None:
            raise AtaError.abrt()
        return entry.decode(self, tf, entry.protocol)

    def execute(self, req: Request, buffers: Sequence[memoryview]) -> Completion:
        """Run a decoded command with its data buffers (byte memoryviews, in order)."""
        try:
            if self._faults is not None:
                self._inject(req, buffers)
            return _COMMANDS[req.taskfile.command].execute(self, req, buffers)
        except AtaError as err:
            return self._failed(req.tag, err)

    def decode_transfer(
        self, command: int, features: int, lba: int, count: int, device: int
    ) -> tuple[int, int, int | None, bool] | None:
        """The lean decode of READ/WRITE DMA EXT and READ/WRITE FPDMA QUEUED on a disk with
        no faults armed, when the command is in range: (first LBA, bytes, NCQ tag or None,
        write), as :meth:`decode`'s Request has them. None for any other command and for
        one out of range: :meth:`decode` it, which reports the error."""
        shape = _SHAPES.get((command, count, features))
        if shape is None:
            if command not in _TRANSFERS:
                return None
            shape = _transfer_shape(command, count, features)
        sectors, nbytes, tag, write = shape
        if lba + sectors > self._sectors or self._faults is not None:
            return None
        return lba, nbytes, tag, write

    def transfer(
        self,
        command: int,
        lba: int,
        buffers: Sequence[memoryview],
        tag: int | None,
        write: bool,
        device: int,
    ) -> Completion:
        """Run a command :meth:`decode_transfer` accepted, with ``buffers`` holding exactly
        its bytes: what :meth:`execute` does for it."""
        try:
            if write:
                self._write(command, lba, buffers, tag is not None and device & DEVICE_FUA)
            else:
                self._read(command, lba, buffers)
        except AtaError as err:
            return self._failed(tag, err)
        return GOOD

    def _failed(self, tag: int | None, err: AtaError) -> Completion:
        """A command failed with ``err``: a queued one goes in the NCQ Command Error log."""
        if tag is not None:
            self._record_ncq_error(tag, err.completion)
        return err.completion

    def _inject(self, req: Request, buffers: Sequence[memoryview]) -> None:
        """Raise the error an injected fault gives this command, if one fires."""
        command = req.taskfile.command
        if command in _SECTOR_WRITES:
            kind = "write"
        elif command in _SECTOR_READS:
            kind = "read"
        else:
            kind = ""  # verify moves no data; other commands address no sectors
        error = self._faults.inject(req, sector_range(req.taskfile), kind, self._dev, buffers)
        if error is not None:
            done = error.completion
            device = _error_device(req.taskfile.command, done.lba)
            raise AtaError(Completion(done.status, done.error, done.lba, done.count, device))

    def flush_cache(self) -> None:
        """Make what the write cache holds durable (the end of a run does it)."""
        self._dev.flush()

    def read_sources(self, req: Request) -> list[tuple[int, int, str | None]] | None:
        """For a read, which file serves each byte range (the block device's
        ``sources``: (offset, length, path or None for zeros)); None otherwise."""
        if req.taskfile.command not in _SECTOR_READS:
            return None
        return self._dev.sources(req.lba * SECTOR_SIZE, req.nbytes)

    # -- decoding -----------------------------------------------------------

    def _check_range(self, tf: TaskFile, lba: int, count: int) -> None:
        if lba + count > self._sectors:
            raise AtaError.idnf(lba, _error_device(tf.command, lba))

    def _decode_sectors(self, tf: TaskFile, protocol: Protocol) -> Request:
        lba, count = _extent(tf)
        self._check_range(tf, lba, count)
        return Request(tf, protocol, count * SECTOR_SIZE, None, lba, count)

    def _decode_multiple(self, tf: TaskFile, protocol: Protocol) -> Request:
        if not self._multiple:
            raise AtaError.abrt()
        req = self._decode_sectors(tf, protocol)
        req.drq_block = self._multiple * SECTOR_SIZE
        return req

    def _decode_verify(self, tf: TaskFile, protocol: Protocol) -> Request:
        lba, count = _extent(tf)
        self._check_range(tf, lba, count)
        return Request(tf, protocol, 0, None, lba, count)

    def _decode_queued(self, tf: TaskFile, protocol: Protocol) -> Request:
        tag = _ncq_tag(tf.count)
        lba, count = _extent(tf)
        try:
            self._check_range(tf, lba, count)
        except AtaError as err:
            self._record_ncq_error(tag, err.completion)
            raise
        return Request(tf, protocol, count * SECTOR_SIZE, tag, lba, count)

    def _decode_identify(self, tf: TaskFile, protocol: Protocol) -> Request:
        return Request(tf, protocol, SECTOR_SIZE)

    def _decode_read_log(self, tf: TaskFile, protocol: Protocol) -> Request:
        address = tf.lba & 0xFF
        page = (tf.lba >> 8 & 0xFF) | (tf.lba >> 24 & 0xFF00)  # LBA(15:8), LBA(39:32)
        pages = _LOG_PAGES.get(address, 0)
        if not tf.count or page + tf.count > pages:
            raise AtaError.abrt()
        return Request(tf, protocol, tf.count * SECTOR_SIZE)

    def _decode_trim(self, tf: TaskFile, protocol: Protocol) -> Request:
        if not tf.features & DSM_TRIM or not tf.count:
            raise AtaError.abrt()
        return Request(tf, protocol, tf.count * SECTOR_SIZE)

    def _decode_non_data(self, tf: TaskFile, protocol: Protocol) -> Request:
        return Request(tf, protocol)

    # -- execution ----------------------------------------------------------

    def _execute_read(self, req: Request, buffers: Sequence[memoryview]) -> Completion:
        nbytes = req.nbytes
        if sum(map(len, buffers)) != nbytes:
            buffers, nbytes = _whole_sectors(buffers, nbytes)
        if nbytes:
            self._read(req.taskfile.command, req.lba, buffers)
        return GOOD

    def _execute_write(self, req: Request, buffers: Sequence[memoryview]) -> Completion:
        tf = req.taskfile
        if sum(map(len, buffers)) != req.nbytes:
            buffers, _ = _whole_sectors(buffers, req.nbytes)
        self._write(tf.command, req.lba, buffers, req.tag is not None and tf.device & DEVICE_FUA)
        return GOOD

    def _read(self, command: int, lba: int, buffers: Sequence[memoryview]) -> None:
        """Fill ``buffers`` from ``lba`` on; UNC if the medium cannot serve them."""
        try:
            self._dev.readv(lba * SECTOR_SIZE, buffers)
        except StorageError:
            raise _unreadable(command, lba) from None

    def _write(self, command: int, lba: int, buffers: Sequence[memoryview], fua: int) -> None:
        """Write ``buffers`` (possibly none) from ``lba`` on, through to the medium when the
        write cache is off or ``fua``; ABRT if the backing store refuses."""
        try:
            if buffers:
                self._dev.writev(lba * SECTOR_SIZE, buffers)
            if fua or not self._write_cache:
                self._dev.flush()
        except StorageError as exc:
            self._say_host_failure(exc)
            raise AtaError.abrt(lba, _error_device(command, lba)) from None

    def _execute_verify(self, req: Request, buffers: Sequence[memoryview]) -> Completion:
        tf = req.taskfile
        lba, count = req.lba, req.count
        chunk = len(self._scratch) // SECTOR_SIZE
        while count:
            n = min(count, chunk)
            try:
                self._dev.readv(lba * SECTOR_SIZE, [self._scratch[: n * SECTOR_SIZE]])
            except StorageError:
                raise AtaError.unc(lba, _error_device(tf.command, lba)) from None
            lba += n
            count -= n
        return GOOD

    def _execute_identify(self, req: Request, buffers: Sequence[memoryview]) -> Completion:
        _copy_out(self._identify.data, buffers, req.nbytes)
        return GOOD

    def _execute_read_log(self, req: Request, buffers: Sequence[memoryview]) -> Completion:
        log = self._ncq_log if req.taskfile.lba & 0xFF else self._log_directory
        _copy_out(log, buffers, req.nbytes)
        return GOOD

    def _execute_trim(self, req: Request, buffers: Sequence[memoryview]) -> Completion:
        """Validate every LBA range entry, then discard the ranges, merging adjacent ones."""
        total = sum(map(len, buffers))
        limit = min(total, req.nbytes) // _LBA_RANGE_ENTRY.size * _LBA_RANGE_ENTRY.size
        ranges: list[list[int]] = []
        for (entry,) in _LBA_RANGE_ENTRY.iter_unpack(b"".join(_clip(buffers, limit))):
            length = entry >> 48
            if not length:
                continue
            lba = entry & 0xFFFF_FFFF_FFFF
            if lba + length > self._sectors:
                raise AtaError.abrt(lba)
            if ranges and ranges[-1][1] == lba:
                ranges[-1][1] += length
            else:
                ranges.append([lba, lba + length])
        for start, end in ranges:
            try:
                self._dev.discard(start * SECTOR_SIZE, (end - start) * SECTOR_SIZE)
            except StorageError as exc:
                self._say_host_failure(exc)
                raise AtaError.abrt(start) from None
        return GOOD

    def _execute_flush(self, req: Request, buffers: Sequence[memoryview]) -> Completion:
        self._flush()
        return GOOD

    def _flush(self) -> None:
        try:
            self._dev.flush()
        except StorageError as exc:
            self._say_host_failure(exc)
            raise AtaError.abrt() from None

    def _say_host_failure(self, exc: StorageError) -> None:
        """A write the host failed (disk full, EIO, ...) is ABRT to the guest and one line
        on stderr naming the file, once per disk and kind of failure; a refusal by
        design (a read-only medium) is the guest's business and says nothing."""
        if isinstance(exc, MediumError):
            kind = str(exc).rpartition(": ")[2]
            if kind not in self._host_failures:
                self._host_failures.add(kind)
                print(f"ahci-emu: warning: a guest write failed: {exc}", file=sys.stderr)

    def _execute_set_features(self, req: Request, buffers: Sequence[memoryview]) -> Completion:
        tf = req.taskfile
        subcommand = tf.features & 0xFF
        if subcommand == FEATURE_SET_TRANSFER_MODE:
            self._set_transfer_mode(tf.count & 0xFF)
            return GOOD
        if subcommand == FEATURE_ENABLE_WRITE_CACHE:
            self._write_cache = True
        elif subcommand == FEATURE_DISABLE_WRITE_CACHE:
            self._flush()  # what the cache held becomes durable first
            self._write_cache = False
        elif subcommand == FEATURE_ENABLE_READ_LOOK_AHEAD:
            self._look_ahead = True
        elif subcommand == FEATURE_DISABLE_READ_LOOK_AHEAD:
            self._look_ahead = False
        else:
            raise AtaError.abrt()
        self._identify.set_cache(write_cache=self._write_cache, look_ahead=self._look_ahead)
        return GOOD

    def _set_transfer_mode(self, value: int) -> None:
        """SET FEATURES 03h: COUNT(7:3) is the transfer type, COUNT(2:0) the mode."""
        kind, mode = value >> 3, value & 0x07
        pio_default = kind == 0b00000 and mode <= 1  # with IORDY, or IORDY disabled
        pio_flow_control = kind == 0b00001 and mode <= MAX_PIO_MODE
        if pio_default or pio_flow_control:  # a PIO mode deselects the DMA mode (as QEMU)
            self._identify.set_dma_mode(mwdma=None, udma=None)
        elif kind == 0b00100 and mode <= MAX_MWDMA_MODE:
            self._identify.set_dma_mode(mwdma=mode, udma=None)
        elif kind == 0b01000 and mode <= MAX_UDMA_MODE:
            self._identify.set_dma_mode(mwdma=None, udma=mode)
        else:  # single-word DMA (obsolete), reserved types, unsupported modes
            raise AtaError.abrt()

    def _execute_set_multiple(self, req: Request, buffers: Sequence[memoryview]) -> Completion:
        sectors = req.taskfile.count & 0xFF
        if sectors > MAX_MULTIPLE or sectors & (sectors - 1):
            raise AtaError.abrt()
        self._multiple = sectors
        self._identify.set_multiple(sectors)
        return GOOD

    def _execute_check_power_mode(self, req: Request, buffers: Sequence[memoryview]) -> Completion:
        return Completion(STATUS_GOOD, count=0xFF)  # FFh: active or idle

    def _execute_power(self, req: Request, buffers: Sequence[memoryview]) -> Completion:
        """STANDBY/IDLE (IMMEDIATE), SLEEP: accepted; the disk stays active."""
        return Completion(_STATUS_POWER)

    def _execute_diagnostic(self, req: Request, buffers: Sequence[memoryview]) -> Completion:
        return Completion(STATUS_GOOD, _DIAGNOSTIC_PASSED, lba=0x000001, count=0x01)

    def _record_ncq_error(self, tag: int, completion: Completion) -> None:
        """Fill the NCQ Command Error log with a failed queued command (NQ = 0)."""
        page = bytearray(SECTOR_SIZE)
        lba = (completion.lba & 0xFFFF_FFFF_FFFF).to_bytes(6, "little")
        _NCQ_ERROR_ENTRY.pack_into(
            page,
            0,
            tag & NCQ_TAG_MASK,
            completion.status,
            completion.error,
            lba[:3],
            completion.device,
            lba[3:],
            completion.count,
        )
        page[-1] = -sum(page) & 0xFF
        self._ncq_log = memoryview(bytes(page))


class _Entry(NamedTuple):
    decode: Callable[[AtaDisk, TaskFile, Protocol], Request]
    execute: Callable[[AtaDisk, Request, Sequence[memoryview]], Completion]
    protocol: Protocol


def _table() -> dict[int, _Entry]:
    d = AtaDisk
    non_data, pio_in, pio_out = Protocol.NON_DATA, Protocol.PIO_IN, Protocol.PIO_OUT
    dma_in, dma_out = Protocol.DMA_IN, Protocol.DMA_OUT
    read, write = d._execute_read, d._execute_write
    return {
        Command.DATA_SET_MANAGEMENT: _Entry(d._decode_trim, d._execute_trim, dma_out),
        Command.READ_SECTORS: _Entry(d._decode_sectors, read, pio_in),
        Command.READ_SECTORS_EXT: _Entry(d._decode_sectors, read, pio_in),
        Command.READ_DMA_EXT: _Entry(d._decode_sectors, read, dma_in),
        Command.READ_MULTIPLE_EXT: _Entry(d._decode_multiple, read, pio_in),
        Command.READ_LOG_EXT: _Entry(d._decode_read_log, d._execute_read_log, pio_in),
        Command.WRITE_SECTORS: _Entry(d._decode_sectors, write, pio_out),
        Command.WRITE_SECTORS_EXT: _Entry(d._decode_sectors, write, pio_out),
        Command.WRITE_DMA_EXT: _Entry(d._decode_sectors, write, dma_out),
        Command.WRITE_MULTIPLE_EXT: _Entry(d._decode_multiple, write, pio_out),
        Command.READ_VERIFY_SECTORS: _Entry(d._decode_verify, d._execute_verify, non_data),
        Command.READ_VERIFY_SECTORS_EXT: _Entry(d._decode_verify, d._execute_verify, non_data),
        Command.READ_FPDMA_QUEUED: _Entry(d._decode_queued, read, Protocol.FPDMA_IN),
        Command.WRITE_FPDMA_QUEUED: _Entry(d._decode_queued, write, Protocol.FPDMA_OUT),
        Command.EXECUTE_DEVICE_DIAGNOSTIC: _Entry(
            d._decode_non_data, d._execute_diagnostic, Protocol.DIAGNOSTIC
        ),
        Command.READ_MULTIPLE: _Entry(d._decode_multiple, read, pio_in),
        Command.WRITE_MULTIPLE: _Entry(d._decode_multiple, write, pio_out),
        Command.SET_MULTIPLE_MODE: _Entry(d._decode_non_data, d._execute_set_multiple, non_data),
        Command.READ_DMA: _Entry(d._decode_sectors, read, dma_in),
        Command.WRITE_DMA: _Entry(d._decode_sectors, write, dma_out),
        Command.STANDBY_IMMEDIATE: _Entry(d._decode_non_data, d._execute_power, non_data),
        Command.IDLE_IMMEDIATE: _Entry(d._decode_non_data, d._execute_power, non_data),
        Command.STANDBY: _Entry(d._decode_non_data, d._execute_power, non_data),
        Command.IDLE: _Entry(d._decode_non_data, d._execute_power, non_data),
        Command.CHECK_POWER_MODE: _Entry(d._decode_non_data, d._execute_check_power_mode, non_data),
        Command.SLEEP: _Entry(d._decode_non_data, d._execute_power, non_data),
        Command.FLUSH_CACHE: _Entry(d._decode_non_data, d._execute_flush, non_data),
        Command.FLUSH_CACHE_EXT: _Entry(d._decode_non_data, d._execute_flush, non_data),
        Command.IDENTIFY_DEVICE: _Entry(d._decode_identify, d._execute_identify, pio_in),
        Command.SET_FEATURES: _Entry(d._decode_non_data, d._execute_set_features, non_data),
    }


_COMMANDS = _table()
