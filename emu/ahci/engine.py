"""The command engine of one AHCI port (AHCI 5): it fetches the commands the guest
issues in PxCI, runs them on the disk and posts what the device answers.

Every answer reaches the guest through :meth:`CommandEngine.post`, the one completion
path: the FIS lands in the received-FIS area, then PxTFD, PxCI, PxSACT and PxIS (and
with it the HBA's IS and interrupt) change together, as when an HBA receives a FIS.
A fatal PxIS bit halts the engine until software restarts the port (AHCI 6.2.2).

Commands run to completion inside the guest's write to PxCI, so the guest can never
see a command done before its data, FISes, PxTFD and PRDBC are in place.
"""

import struct
from enum import IntEnum
from typing import TYPE_CHECKING

from emu.ahci import fis, regs
from emu.ahci.cmdtable import (
    CFIS_OFFSET,
    HEADER,
    HEADER_SIZE,
    PRDBC,
    PRDBC_OFFSET,
    header_outside,
    parse_prdt,
    prdt_buffers,
    write_prdbc,
)
from emu.ata.disk import sector_range
from emu.ata.errors import GOOD, AtaError
from emu.ata.taskfile import (
    STATUS_BSY,
    STATUS_DRDY,
    STATUS_DRQ,
    Completion,
    Protocol,
    Request,
    TaskFile,
)
from emu.machine.memory import HostBusError, HostMemory

if TYPE_CHECKING:
    from collections.abc import Callable

    from emu.ahci.port import AhciPort

ABORTED = AtaError.abrt().completion
SRST_BUSY = Completion(STATUS_BSY)  # SRST asserted: BSY until it is released
_DATA_STATUS = STATUS_DRDY | STATUS_DRQ  # the status while PIO data moves


class Fis(IntEnum):
    """What the device sends to end (or answer) a command."""

    NONE = 0  # nothing: the HBA itself ends the command (overflow, bus error, SRST set)
    D2H = 1  # Register D2H FIS with I set
    D2H_QUIET = 2  # Register D2H FIS with I clear: a reset signature, an NCQ acceptance
    PIO_IN = 3  # PIO Setup FIS, device to host, I set; its E_Status ends the command
    PIO_OUT = 4  # PIO Setup FIS, host to device, then a Register D2H FIS
    SDB = 5  # Set Device Bits FIS with I set, completing the queued tags it names


_D2H = Fis.D2H
_D2H_QUIET = Fis.D2H_QUIET
_SDB = Fis.SDB
_IS_DHRS = regs.IS_DHRS
_IS_DPS = regs.IS_DPS
_IS_PSS = regs.IS_PSS
_IS_TFES = regs.IS_TFES
_IS_FATAL = regs.IS_FATAL
_CMD_ST = regs.CMD_ST
_CMD_CCS_MASK = regs.CMD_CCS_MASK
_CMD_CCS_SHIFT = regs.CMD_CCS_SHIFT
_read_h2d = fis.read_h2d
_TYPE_REG_H2D = fis.TYPE_REG_H2D
_H2D_C = fis.H2D_C
_HEADER = HEADER
_write_d2h = fis.write_d2h
_pack_prdbc = PRDBC.pack_into
# The FIS that ends a successful command, by protocol (indexed by Protocol's value):
# data-in PIO ends with its PIO Setup FIS's E_Status, no D2H FIS (SATA 11.7).
_ENDING = [Fis.D2H] * len(Protocol)
_ENDING[Protocol.PIO_IN] = Fis.PIO_IN
_ENDING[Protocol.PIO_OUT] = Fis.PIO_OUT
_PIO_OUT = Fis.PIO_OUT
_SDB_STATUS = 0x77  # the Status bits a Set Device Bits FIS carries (SATA 10.5.7)


def _table_outside(table: int) -> HostBusError:
    return HostBusError(f"command table at 0x{table:x} is outside guest RAM")


class CommandEngine:
    """Runs the commands of ``port``, whose registers it reads and updates."""

    def __init__(
        self, port: "AhciPort", memory: HostMemory, bus_master: "Callable[[], bool]"
    ) -> None:
        self.port = port
        self.memory = memory
        self._bus_master = bus_master
        self._walked: dict = {}  # PRDTs seen, by their bytes (cmdtable.prdt_buffers)
        self.reset()

    def reset(self) -> None:
        """HBA reset: nothing outstanding, no software reset in progress, not halted."""
        self.halted = False
        self._srst = False
        self._completed_tags = 0  # queued commands done, their SDB FIS not yet posted
        self.device_reset()

    def device_reset(self) -> None:
        """The device was reset (COMRESET, HBA reset, a link that comes back): a command
        it never answered (an injected stall, a lost link) is gone."""
        self.stalled = False  # the device holds a command it will never finish
        self._drop_held()

    def _drop_held(self) -> None:
        """Completions held back (injected latency) for commands that are gone."""
        self.busy = False  # a non-queued command's completion is held back
        faults = self.port.faults
        if faults is not None:
            faults.drop(self.port.index)

    def stop(self) -> None:
        """PxCMD.ST cleared or a COMRESET: the commands in PxCI and PxSACT are dropped
        (the port has cleared them) and a halted engine may run again."""
        self.halted = False
        self._drop_held()

    # -- the one completion path ---------------------------------------------------

    def post(
        self,
        area: memoryview | None,
        kind: Fis,
        done: Completion | None,
        slots: int = 0,
        bits: int = 0,
        tags: int = 0,
        transfer_count: int = 0,
    ) -> None:
        """The device answers with a FIS of ``kind`` carrying ``done``: post it (when FIS
        receive is on, ``area``), load PxTFD from it, clear ``slots`` in PxCI and ``tags``
        in PxSACT, and raise ``bits`` in PxIS with the bit of a FIS whose I bit is set
        (AHCI 3.3.5). ``done`` None leaves PxTFD alone; ``transfer_count`` is a PIO Setup
        FIS's (the last DRQ block's); a data-out PIO Setup FIS has its I bit when ``bits``
        has PSS. A fatal bit halts the engine."""
        port = self.port
        if kind is _D2H:  # the common case, first
            if area is not None:
                _write_d2h(area, done)
            port.tfd = done.status | done.error << 8
            bits |= _IS_DHRS
        elif kind is _D2H_QUIET:
            if area is not None:
                _write_d2h(area, done, False)
            port.tfd = done.status | done.error << 8
        elif kind is _SDB:
            if area is not None:
                fis.write_sdb(area, done.status, done.error, tags)
            port.tfd = (port.tfd & ~0xFF77) | (done.status & _SDB_STATUS) | done.error << 8
            bits |= regs.IS_SDBS
        elif kind is Fis.NONE:
            if done is not None:
                port.tfd = done.status | done.error << 8
        else:
            to_host = kind is Fis.PIO_IN
            if area is not None:
                fis.write_pio_setup(
                    area,
                    done,
                    to_host=to_host,
                    interrupt=to_host or bool(bits & _IS_PSS),
                    transfer_count=transfer_count,
                    status=_DATA_STATUS,
                )
                if not to_host:
                    _write_d2h(area, done)
            port.tfd = done.status | done.error << 8
            bits |= _IS_PSS if to_host else _IS_DHRS
        if slots:
            port.ci &= ~slots
        if tags:
            port.sact &= ~tags
        if bits:
            if bits & _IS_FATAL:
                self.halted = True
            port.raise_interrupt(bits)

    # -- running commands --------------------------------------------------------------

    def issue(self, value: int) -> None:
        """The guest wrote ``value`` to PxCI: commands issued to a stopped or empty port
        are ignored."""
        port = self.port
        if not port.cmd & _CMD_ST or port.disk is None or port.link_down:
            return
        issued = value & ~port.ci
        port.ci |= value
        if issued and port.faults is not None and port.faults.pending:
            port.faults.issued(issued.bit_count())  # may release held completions
        if issued and not self.halted:
            self._run_pending()

    def _run_pending(self) -> None:
        """Run the issued commands, lowest slot first, until none is left or one halts the
        port. Bus mastering and the FIS area are settled once for the whole write: the
        guest cannot change them while its PxCI write runs.

        When nothing watches or perturbs the commands, a plain sector transfer (READ/WRITE
        DMA EXT, READ/WRITE FPDMA QUEUED) that is in range, with a PRDT that covers it and
        (queued) its slot as tag, runs here without a task file or a request (the lean
        path); everything else goes to :meth:`_execute`, which reports every error."""
        port = self.port
        fault = port.rfis_fault
        if not self._bus_master():
            fault = "bus mastering is disabled in the PCI command register"
        if fault is not None:
            pending = port.ci
            self._host_bus_fatal((pending & -pending).bit_length() - 1, fault)
            return
        area = port.rfis
        memory = self.memory
        ram = memory.mem
        command_list = port.clbu << 32 | port.clb
        lean = port.observer is None and port.faults is None
        execute = self._execute
        unpack_header = _HEADER.unpack_from
        if lean:
            decode_transfer = port.disk.decode_transfer
            transfer = port.disk.transfer
            walked = self._walked
        # Queued commands the lean path took whose acceptance (a quiet D2H FIS, a DMA Setup
        # FIS) is not posted yet: the guest sees only the last of each, so one posting
        # serves them all, made before anything else reaches the FIS area, PxTFD or PxIS.
        accepted = 0
        setup = (0, 0, False)  # the DMA Setup FIS of the last one: tag, bytes, to host
        while True:
            pending = port.ci & ~accepted
            if not pending or self.halted or self.stalled or self.busy:
                break
            slot = (pending & -pending).bit_length() - 1
            port.cmd = (port.cmd & ~_CMD_CCS_MASK) | slot << _CMD_CCS_SHIFT
            header = command_list + slot * HEADER_SIZE
            try:
                try:
                    dw0, _prdbc, ctba, ctbau = unpack_header(ram, header)
                except (struct.error, OverflowError):
                    raise header_outside(header) from None
                table = ctbau << 32 | (ctba & ~0x7F)
                if not lean:
                    execute(slot, header, dw0 >> 16, table, area)
                    continue
                try:
                    kind, flags, command, features, lba, count, device, _ = _read_h2d(
                        ram, table + CFIS_OFFSET
                    )
                except (struct.error, OverflowError):
                    raise _table_outside(table) from None
                plain = None
                if kind == _TYPE_REG_H2D and flags & _H2D_C:
                    plain = decode_transfer(command, features, lba, count, device)
                if plain is not None:
                    first, nbytes, tag, write = plain
                    buffers, interrupt_on_piece = prdt_buffers(
                        memory, table, dw0 >> 16, nbytes, walked
                    )
                    if buffers is not None and tag == slot:
                        accepted |= 1 << slot
                        setup = (slot, nbytes, not write)
                        done = transfer(command, first, buffers, tag, write, device)
                        if done is GOOD:
                            self._completed_tags |= 1 << slot
                            continue
                if accepted:
                    self._accept(area, accepted, *setup)
                    accepted = 0
                if plain is None or buffers is None or (tag is not None and tag != slot):
                    execute(slot, header, dw0 >> 16, table, area)
                elif tag is None:
                    done = transfer(command, first, buffers, None, write, device)
                    self.complete(area, slot, header, done, nbytes, interrupt_on_piece)
                else:  # a queued transfer above failed: its error, after the batch's SDB
                    self._queued_done(area, slot, done)
            except HostBusError as exc:
                if accepted:  # PxCI as the full path has it when PxIS.HBFS is raised
                    self._accept(area, accepted, *setup)
                    accepted = 0
                self._host_bus_fatal(slot, str(exc))
        if accepted:
            self._accept(area, accepted, *setup)
        if self._completed_tags:
            self._post_completions(area)

    def _post_completions(self, area: memoryview | None) -> None:
        """One Set Device Bits FIS for every queued command finished in this PxCI write:
        its SActive field names them all (SATA 13.6.5), as a device that completes
        several commands at once sends it."""
        tags, self._completed_tags = self._completed_tags, 0
        if tags:
            self.post(area, _SDB, GOOD, tags=tags)

    def _execute(
        self, slot: int, header: int, prdtl: int, table: int, area: memoryview | None
    ) -> None:
        """Run the command of ``slot`` (its command header at ``header``, its table at
        ``table`` with ``prdtl`` PRD entries) through the task file and a request: the
        full path, which reports every error and tells the observer and the faults."""
        ram = self.memory.mem
        port = self.port
        observer = port.observer
        if observer is not None:
            observer.command_fetched(port, slot, header, table, prdtl)
        try:
            kind, flags, command, features, lba, count, device, control = _read_h2d(
                ram, table + CFIS_OFFSET
            )
        except (struct.error, OverflowError):
            raise _table_outside(table) from None
        if kind != fis.TYPE_REG_H2D:
            self._refuse(slot, area, ABORTED, "command FIS is not a Register H2D FIS")
            return
        if not flags & fis.H2D_C:
            self._device_control(slot, area, control)
            return
        disk = port.disk
        tf = TaskFile(command, features, lba, count, device, control)
        try:
            req = disk.decode(tf)
        except AtaError as err:
            self._refuse(slot, area, err.completion, f"command {tf.command:#04x} refused")
            return
        nbytes = req.nbytes
        buffers, interrupt_on_piece = prdt_buffers(self.memory, table, prdtl, nbytes, self._walked)
        if buffers is None:
            self._overflow(slot, nbytes)
            return
        queued = req.tag is not None  # READ/WRITE FPDMA QUEUED
        if queued and req.tag != slot:  # AHCI 5.3.2: the tag of an NCQ command is its slot
            self._refuse(slot, area, ABORTED, f"NCQ tag {req.tag} issued in slot {slot}")
            return
        faults = port.faults
        fault = None
        if faults is not None:
            lba, count = sector_range(tf)
            fault = faults.check(port.index, slot, tf.command, lba, count)
        if queued:
            setup = fault is None or fault.kind == "latency"
            if setup:
                self._accept(area, 1 << slot, slot, nbytes, req.protocol is Protocol.FPDMA_IN)
            else:
                self.post(area, Fis.D2H_QUIET, GOOD, 1 << slot)
        if fault is not None and fault.kind != "latency":
            self._lose(fault)
            return
        done = disk.execute(req, buffers)
        if observer is not None:
            observer.command_done(
                port,
                slot,
                tf,
                parse_prdt(ram, table, prdtl),
                nbytes,
                done,
                disk.read_sources(req),
            )
        if fault is not None:  # latency: the completion waits
            if not queued:
                self.busy = True  # the device is busy with it: later slots wait
                port.tfd = (port.tfd & ~0xFF) | STATUS_BSY
            held = (slot, header, req, done, interrupt_on_piece)
            faults.hold(port.index, fault, lambda: self._release(*held))
        else:
            self._ended(area, slot, header, req, done, interrupt_on_piece)

    def _accept(
        self, area: memoryview | None, slots: int, tag: int, nbytes: int, to_host: bool
    ) -> None:
        """The device accepts the queued commands of ``slots``: a D2H FIS with BSY clear and
        I=0 frees their slots, then a DMA Setup FIS opens the transfer of the last, ``tag``,
        of ``nbytes`` bytes."""
        self.post(area, Fis.D2H_QUIET, GOOD, slots)
        if area is not None:
            fis.write_dma_setup(area, tag, to_host=to_host, transfer_count=nbytes)

    def _ended(
        self,
        area: memoryview | None,
        slot: int,
        header: int,
        req: Request,
        done: Completion,
        interrupt_on_piece: bool,
    ) -> None:
        """``req`` (issued in ``slot``) ended with ``done``: its completion is posted."""
        if req.tag is None:
            ending = _ENDING[req.protocol]
            pio = None if ending is _D2H else req
            self.complete(area, slot, header, done, req.nbytes, interrupt_on_piece, pio)
        else:
            self._queued_done(area, slot, done)

    def _queued_done(self, area: memoryview | None, slot: int, done: Completion) -> None:
        """A queued command ended: done, its SDB FIS goes with the batch's; failed, the
        error goes in an SDB FIS of its own, after the batch's."""
        if done is GOOD or not done.failed:
            self._completed_tags |= 1 << slot
        else:
            self._post_completions(area)
            self.post(area, _SDB, done, 0, _IS_TFES)

    # -- injected faults (emu.faults.port) ----------------------------------------------

    def _lose(self, fault) -> None:
        """A stall (the device took the command and never answers) or a link lost under
        it: a queued command keeps its PxSACT bit (it was accepted), a non-queued one its
        PxCI bit, with PxTFD.BSY for a stall. Nothing more runs until a reset."""
        port = self.port
        self.stalled = True
        if fault.kind == "stall":
            if port.ci & ~port.sact:  # a non-queued command: the device stays busy
                port.tfd = (port.tfd & ~0xFF) | STATUS_BSY
            return
        port.unplug()
        port.faults.hold(port.index, fault, port.replug, completion=False)

    def _release(
        self, slot: int, header: int, req: Request, done: Completion, interrupt_on_piece: bool
    ) -> None:
        """A completion held back (latency) is posted, and the commands waiting behind it
        run."""
        area = self.port.rfis
        if req.tag is None:
            self.busy = False
            self._ended(area, slot, header, req, done, interrupt_on_piece)
        elif done is GOOD or not done.failed:
            self.post(area, _SDB, GOOD, tags=1 << slot)
        else:
            self.post(area, _SDB, done, 0, _IS_TFES)
        if self.port.ci and self.port.cmd & _CMD_ST:
            self._run_pending()

    def complete(
        self,
        area: memoryview | None,
        slot: int,
        header: int,
        done: Completion,
        nbytes: int,
        interrupt_on_piece: bool = False,
        pio: Request | None = None,
    ) -> None:
        """A command that is not queued (issued in ``slot``, its command header at
        ``header``) ended with ``done`` after moving ``nbytes``: PRDBC, then the ending
        FIS. ``pio`` is the request of a PIO data command (it ends with PIO Setup FISes),
        None for the others (a Register D2H FIS)."""
        if done is not GOOD and done.failed:
            write_prdbc(self.memory.mem, header, 0)
            self.post(area, _D2H, done, 0, _IS_TFES)
            return
        _pack_prdbc(self.memory.mem, header + PRDBC_OFFSET, nbytes)
        bits = _IS_DPS if interrupt_on_piece else 0
        if pio is None:  # the common case, first
            self.post(area, _D2H, done, 1 << slot, bits)
            return
        # PIO moves DRQ blocks, each after a PIO Setup FIS (SATA 11.7, 11.8); the area
        # keeps the last block's. Data-in Setup FISes have I set; data-out ones have it
        # from the second block on, asking for the next block (PxIS.PSS).
        kind = _ENDING[pio.protocol]
        block = pio.drq_block
        last = nbytes - (nbytes - 1) // block * block if nbytes else 0
        if kind is _PIO_OUT and nbytes > block:
            bits |= _IS_PSS
        self.post(area, kind, done, 1 << slot, bits, 0, last)

    def _device_control(self, slot: int, area: memoryview | None, control: int) -> None:
        """A control FIS (C=0): SRST asserted then released is a software reset."""
        bit = 1 << slot
        if control & fis.CONTROL_SRST:
            self._srst = True
            self.post(area, Fis.NONE, SRST_BUSY, bit)
        elif self._srst:
            self._srst = False
            self.port.disk.reset()
            self.port.signature(area, bit)
        else:
            self.post(area, Fis.NONE, None, bit)

    # -- errors --------------------------------------------------------------------

    def _refuse(self, slot: int, area: memoryview | None, done: Completion, why: str) -> None:
        """The device refused the command before running it: it ends with ERR, TFES is
        set and the port halts (AHCI 6.2.2)."""
        if self.port.observer is not None:
            self.port.observer.command_failed(self.port, slot, why, done)
        self.post(area, _D2H, done, 0, _IS_TFES)

    def _overflow(self, slot: int, nbytes: int) -> None:
        """The PRDT describes fewer bytes than the command moves (AHCI 6.1.3, PxIS.OFS)."""
        if self.port.observer is not None:
            self.port.observer.command_failed(
                self.port, slot, f"PRDT shorter than {nbytes} bytes", None
            )
        self.post(None, Fis.NONE, None, 0, regs.IS_OFS)

    def _host_bus_fatal(self, slot: int, why: str) -> None:
        """A command list, table, PRD or FIS area outside RAM: PxIS.HBFS, port halted."""
        if self.port.observer is not None:
            self.port.observer.command_failed(self.port, slot, why, None)
        self.post(None, Fis.NONE, None, 0, regs.IS_HBFS)
