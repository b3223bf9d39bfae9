"""One AHCI port: its register file (AHCI 3.3) and its command engine (AHCI 5).

Commands run to completion inside the guest's write to PxCI:
data, FISes, PxTFD, PRDBC and PxIS are all in place before PxCI's bit clears,
so the guest can never see a command done before its results.
"""

import struct
from collections.abc import Callable
from typing import TYPE_CHECKING

from emu.ahci import fis, regs
from emu.ahci.cmdtable import (
    CFIS_OFFSET,
    HEADER_SIZE,
    parse_prdt,
    prdt_buffers,
    read_header,
    write_prdbc,
)
from emu.ahci.dma import HostBusError, HostMemory
from emu.ata.errors import GOOD, AtaError
from emu.ata.taskfile import (
    STATUS_DRDY,
    STATUS_DRQ,
    STATUS_DSC,
    Completion,
    Protocol,
    Request,
)

if TYPE_CHECKING:
    from emu.ahci.trace import Tracer
    from emu.ata.disk import AtaDisk

# The signature a SATA disk reports after a reset (ATA8-ACS 9.12): status DRDY|DSC, error 01h
# ("no error" from diagnostics), count 1, LBA 1.
RESET_SIGNATURE = Completion(STATUS_DRDY | STATUS_DSC, 0x01, 0x000001, 0x01, 0x00)
NO_DEVICE_TFD = 0x7F
ABORTED = AtaError.abrt().completion
FULL = 0xFFFFFFFF
_DMA_IN = Protocol.DMA_IN
_DMA_OUT = Protocol.DMA_OUT


class AhciPort:
    """Port ``index`` of the HBA, with ``disk`` attached or empty."""

    def __init__(
        self,
        index: int,
        memory: HostMemory,
        disk: "AtaDisk | None",
        on_interrupt: Callable[["AhciPort", int], None],
        bus_master: Callable[[], bool],
        tracer: "Tracer | None" = None,
    ) -> None:
        self.index = index
        self.memory = memory
        self.disk = disk
        self._on_interrupt = on_interrupt
        self._bus_master = bus_master
        self.tracer = tracer
        self.power_on()

    # -- reset ---------------------------------------------------------------

    def power_on(self) -> None:
        """Power-on values: the command list and FIS bases start at zero."""
        self.clb = self.clbu = self.fb = self.fbu = 0
        self.reset()

    def reset(self) -> None:
        """HBA reset (AHCI 10.4.3): every port register back to its reset value except
        PxCLB/PxCLBU/PxFB/PxFBU, then the link comes up if a disk is there."""
        self.is_ = self.ie = 0
        self.cmd = regs.CMD_SUD | regs.CMD_POD  # no staggered spin-up, no cold presence detect
        self.tfd = NO_DEVICE_TFD
        self.sig = regs.SIG_NONE
        self.ssts = 0
        self.sctl = 0
        self.serr = 0
        self.sact = self.ci = self.sntf = 0
        self.halted = False
        self._srst = False
        self._completed_tags = 0  # queued commands done, their SDB FIS not yet posted
        self._link_up()

    def _link_up(self, area: memoryview | None = None) -> None:
        """COMRESET done: a disk answers with its signature FIS."""
        if self.disk is None:
            self.ssts = 0
            return
        self.disk.reset()
        self.ssts = regs.SSTS_IPM_ACTIVE | regs.SSTS_SPD_GEN1 | regs.SSTS_DET_PRESENT
        self._signature(area)

    def _signature(self, area: memoryview | None = None) -> None:
        """The device's reset signature lands in PxSIG and PxTFD (and in the FIS area)."""
        sig = RESET_SIGNATURE
        self.sig = (sig.lba & 0xFFFFFF) << 8 | sig.count
        self.tfd = sig.status | sig.error << 8
        if area is not None:
            fis.write_d2h(area, sig, interrupt=False)

    def _comreset(self) -> None:
        """SCTL.DET went 1 -> 0: the link is re-established and the device reset."""
        self.sact = self.ci = 0
        self.halted = False
        try:
            area = self._fis_area()
        except HostBusError:
            area = None  # nowhere to post the signature; PxSIG and PxTFD still get it
        self._link_up(area)
        if self.disk is not None:
            self.serr |= regs.SERR_DIAG_X
            self._raise(regs.IS_PCS)

    # -- registers -----------------------------------------------------------

    def read(self, reg: int) -> int:
        if reg == regs.PxCI:
            return self.ci
        if reg == regs.PxIS:
            return self.is_ | (regs.IS_PCS if self.serr & regs.SERR_DIAG_X else 0)
        if reg == regs.PxTFD:
            return self.tfd
        if reg == regs.PxCMD:
            return self.cmd
        if reg == regs.PxSACT:
            return self.sact
        return {
            regs.PxCLB: self.clb,
            regs.PxCLBU: self.clbu,
            regs.PxFB: self.fb,
            regs.PxFBU: self.fbu,
            regs.PxIE: self.ie,
            regs.PxSIG: self.sig,
            regs.PxSSTS: self.ssts,
            regs.PxSCTL: self.sctl,
            regs.PxSERR: self.serr,
            regs.PxSNTF: self.sntf,
        }.get(reg, 0)

    def write(self, reg: int, value: int, mask: int = FULL) -> None:
        """A guest write of ``value`` to the bytes ``mask`` selects of register ``reg``."""
        value &= mask
        if reg == regs.PxCI:
            self._write_ci(value)
        elif reg == regs.PxIS:
            self.is_ &= ~(value & regs.IS_RW1C)
        elif reg == regs.PxCMD:
            self._write_cmd((self.cmd & ~mask) | value)
        elif reg == regs.PxSACT:
            if self.cmd & regs.CMD_ST:
                self.sact |= value
        elif reg == regs.PxCLB:
            self.clb = _merge(self.clb, value, mask) & 0xFFFFFC00
        elif reg == regs.PxCLBU:
            self.clbu = _merge(self.clbu, value, mask)
        elif reg == regs.PxFB:
            self.fb = _merge(self.fb, value, mask) & 0xFFFFFF00
        elif reg == regs.PxFBU:
            self.fbu = _merge(self.fbu, value, mask)
        elif reg == regs.PxIE:
            self.ie = _merge(self.ie, value, mask) & regs.IE_WRITABLE
        elif reg == regs.PxSCTL:
            self._write_sctl(_merge(self.sctl, value, mask) & regs.SCTL_WRITABLE)
        elif reg == regs.PxSERR:
            self.serr &= ~(value & regs.SERR_RW1C)
        elif reg == regs.PxSNTF:
            self.sntf &= ~(value & 0xFFFF)
        # TFD, SIG, SSTS and FBS (no FIS-based switching) are read-only.

    def _write_cmd(self, value: int) -> None:
        old = self.cmd
        new = (old & ~regs.CMD_WRITABLE) | (value & regs.CMD_WRITABLE)
        if value & regs.CMD_CLO:  # command list override: forget BSY and DRQ
            self.tfd &= ~(regs.TFD_STS_BSY | regs.TFD_STS_DRQ)
        new = _set(new, regs.CMD_FR, new & regs.CMD_FRE)
        if new & regs.CMD_ST and not old & regs.CMD_ST:
            new |= regs.CMD_CR
        elif old & regs.CMD_ST and not new & regs.CMD_ST:
            # Stopping the engine clears what was outstanding (AHCI 3.3.14, 3.3.13).
            new &= ~(regs.CMD_CR | regs.CMD_CCS_MASK)
            self.ci = self.sact = 0
            self.halted = False
        self.cmd = new

    def _write_sctl(self, value: int) -> None:
        old_det = self.sctl & regs.SCTL_DET_MASK
        self.sctl = value
        det = value & regs.SCTL_DET_MASK
        if det == regs.SCTL_DET_COMRESET:  # AHCI 10.4.2: STS reads 7Fh, no link yet
            self.ssts = 0
            self.tfd = NO_DEVICE_TFD
        elif det == 0 and old_det == regs.SCTL_DET_COMRESET:
            self._comreset()
        elif det == 4:  # PHY offline
            self.ssts = 4

    # -- interrupts ------------------------------------------------------------

    def _raise(self, bits: int) -> None:
        self.is_ |= bits & ~regs.IS_PCS
        self._on_interrupt(self, bits)

    @property
    def interrupt_pending(self) -> bool:
        return bool(self.read(regs.PxIS) & self.ie)

    # -- the command engine ------------------------------------------------------

    def _write_ci(self, value: int) -> None:
        if not self.cmd & regs.CMD_ST or self.disk is None:
            return  # commands issued to a stopped or empty port are ignored
        issued = value & ~self.ci
        self.ci |= value
        if issued and not self.halted:
            self._run_pending()

    def _run_pending(self) -> None:
        """Run the issued commands, lowest slot first, until none is left or one halts the
        port. Bus mastering and the FIS area are settled once for the whole write: the
        guest cannot change them while its PxCI write runs."""
        try:
            if not self._bus_master():
                raise HostBusError("bus mastering is disabled in the PCI command register")
            area = self._fis_area()
        except HostBusError as exc:
            pending = self.ci
            self._host_bus_fatal((pending & -pending).bit_length() - 1, str(exc))
            return
        while self.ci and not self.halted:
            pending = self.ci
            self._run_slot((pending & -pending).bit_length() - 1, area)
        self._post_completions(area)

    def _post_completions(self, area: memoryview | None) -> None:
        """One Set Device Bits FIS for every queued command finished in this PxCI write:
        its SActive field names them all (SATA 13.6.5), as a device that completes
        several commands at once sends it."""
        tags, self._completed_tags = self._completed_tags, 0
        if not tags:
            return
        if area is not None:
            fis.write_sdb(area, GOOD.status, 0, tags)
        self.sact &= ~tags
        self._raise(regs.IS_SDBS)

    def _run_slot(self, slot: int, area: memoryview | None) -> None:
        self.cmd = (self.cmd & ~regs.CMD_CCS_MASK) | slot << regs.CMD_CCS_SHIFT
        try:
            header = (self.clbu << 32 | self.clb) + slot * HEADER_SIZE
            prdtl, table = read_header(self.memory.mem, header)
            self._execute(slot, header, table, prdtl, area)
        except HostBusError as exc:
            self._host_bus_fatal(slot, str(exc))

    def _fis_area(self) -> memoryview | None:
        """The received-FIS area while FIS receive is on, else None (nothing is posted)."""
        if not self.cmd & regs.CMD_FRE:
            return None
        return self.memory.view(self.fbu << 32 | self.fb, fis.RFIS_SIZE)

    def _execute(
        self, slot: int, header: int, table: int, prdtl: int, area: memoryview | None
    ) -> None:
        ram = self.memory.mem
        try:
            kind, flags, tf = fis.parse_h2d(ram, table + CFIS_OFFSET)
        except (struct.error, OverflowError):
            raise HostBusError(f"command table at 0x{table:x} is outside guest RAM") from None
        if kind != fis.TYPE_REG_H2D:
            self._fail(slot, area, ABORTED, "command FIS is not a Register H2D FIS")
            return
        if not flags & fis.H2D_C:
            self._device_control(slot, area, tf.control)
            return
        disk = self.disk
        try:
            req = disk.decode(tf)
        except AtaError as err:
            self._fail(slot, area, err.completion, f"command {tf.command:#04x} refused")
            return
        buffers, interrupt_on_piece = prdt_buffers(self.memory, table, prdtl, req.nbytes)
        if buffers is None:
            self._overflow(slot, req.nbytes)
            return
        if req.tag is not None:  # READ/WRITE FPDMA QUEUED
            self._execute_queued(slot, area, req, buffers, table, prdtl)
            return
        done = disk.execute(req, buffers)
        failed = done is not GOOD and done.failed
        write_prdbc(ram, header, 0 if failed else req.nbytes)
        if self.tracer is not None:
            self.tracer.command(
                self.index,
                slot,
                tf,
                parse_prdt(ram, table, prdtl),
                req.nbytes,
                done,
                disk.read_sources(req),
            )
        if failed:
            self._fail(slot, area, done)
            return
        self._complete(slot, area, req.protocol, done, req.nbytes, interrupt_on_piece)

    def _complete(
        self,
        slot: int,
        area: memoryview | None,
        protocol: Protocol,
        done: Completion,
        nbytes: int,
        interrupt_on_piece: bool,
    ) -> None:
        bits = regs.IS_DPS if interrupt_on_piece else 0
        if protocol is _DMA_IN or protocol is _DMA_OUT:  # the common case, first
            if area is not None:
                fis.write_d2h(area, done)
            self.tfd = done.status | done.error << 8
            self.ci &= ~(1 << slot)
            self._raise(bits | regs.IS_DHRS)
            return
        if protocol is Protocol.PIO_IN:
            # Data-in PIO ends with the PIO Setup FIS's E_Status; no D2H FIS (SATA 11.7).
            if area is not None:
                fis.write_pio_setup(
                    area,
                    done,
                    to_host=True,
                    interrupt=True,
                    transfer_count=nbytes,
                    status=STATUS_DRDY | STATUS_DRQ,
                )
            bits |= regs.IS_PSS
        else:
            if protocol is Protocol.PIO_OUT and area is not None:
                fis.write_pio_setup(
                    area,
                    done,
                    to_host=False,
                    interrupt=False,
                    transfer_count=nbytes,
                    status=STATUS_DRDY | STATUS_DRQ,
                )
            if area is not None:
                fis.write_d2h(area, done)
            bits |= regs.IS_DHRS
        self.tfd = done.status | done.error << 8
        self.ci &= ~(1 << slot)
        self._raise(bits)

    def _execute_queued(
        self,
        slot: int,
        area: memoryview | None,
        req: Request,
        buffers: list[memoryview],
        table: int,
        prdtl: int,
    ) -> None:
        tag = req.tag
        if tag != slot:  # AHCI 5.3.2: the tag of an NCQ command is its slot
            self._fail(slot, area, ABORTED, f"NCQ tag {tag} issued in slot {slot}")
            return
        # The device accepts the command: a D2H FIS with BSY clear and I=0 frees the slot.
        if area is not None:
            fis.write_d2h(area, GOOD, interrupt=False)
        self.tfd = GOOD.status
        self.ci &= ~(1 << slot)
        if area is not None:
            fis.write_dma_setup(
                area, tag, to_host=req.protocol is Protocol.FPDMA_IN, transfer_count=req.nbytes
            )
        done = self.disk.execute(req, buffers)
        if self.tracer is not None:
            self.tracer.command(
                self.index,
                slot,
                req.taskfile,
                parse_prdt(self.memory.mem, table, prdtl),
                req.nbytes,
                done,
                self.disk.read_sources(req),
            )
        if done is not GOOD and done.failed:  # the error goes in an SDB FIS of its own
            self._post_completions(area)
            if area is not None:
                fis.write_sdb(area, done.status, done.error, 0)
            self.tfd = done.status | done.error << 8
            self.halted = True
            self._raise(regs.IS_TFES | regs.IS_SDBS)
            return
        self._completed_tags |= 1 << tag

    def _device_control(self, slot: int, area: memoryview | None, control: int) -> None:
        """A control FIS (C=0): SRST asserted then released is a software reset."""
        if control & fis.CONTROL_SRST:
            self._srst = True
            self.tfd = regs.TFD_STS_BSY
        elif self._srst:
            self._srst = False
            self.disk.reset()
            self._signature(area)
        self.ci &= ~(1 << slot)

    # -- errors --------------------------------------------------------------------

    def _fail(
        self, slot: int, area: memoryview | None, done: Completion, why: str | None = None
    ) -> None:
        """The device ended the command with ERR: post it, set TFES and halt (AHCI 6.2.2).
        ``why`` is said for failures before execution (executed ones are traced already)."""
        if area is not None:
            fis.write_d2h(area, done)
        self.tfd = done.status | done.error << 8
        self.halted = True
        if self.tracer is not None and why is not None:
            self.tracer.failure(self.index, slot, why, done)
        self._raise(regs.IS_TFES | regs.IS_DHRS)

    def _overflow(self, slot: int, nbytes: int) -> None:
        """The PRDT describes fewer bytes than the command moves (AHCI 6.1.3, PxIS.OFS)."""
        self.halted = True
        if self.tracer is not None:
            self.tracer.failure(self.index, slot, f"PRDT shorter than {nbytes} bytes", None)
        self._raise(regs.IS_OFS)

    def _host_bus_fatal(self, slot: int, why: str) -> None:
        """A command list, table, PRD or FIS area outside RAM: PxIS.HBFS, port halted."""
        self.halted = True
        if self.tracer is not None:
            self.tracer.failure(self.index, slot, why, None)
        self._raise(regs.IS_HBFS)


def _merge(old: int, value: int, mask: int) -> int:
    return (old & ~mask) | value


def _set(word: int, bit: int, on: int) -> int:
    return word | bit if on else word & ~bit
