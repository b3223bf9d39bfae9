"""One AHCI port's register file (AHCI 3.3), its resets and its link.

The commands the guest issues in PxCI run in the port's command engine
(emu.ahci.engine), which posts every result through one completion path.
"""

from collections.abc import Callable
from functools import partial
from typing import TYPE_CHECKING

from emu.ahci import fis, regs
from emu.ahci.engine import CommandEngine, Fis
from emu.ata.taskfile import STATUS_DRDY, STATUS_DSC, Completion
from emu.machine.memory import HostBusError, HostMemory

if TYPE_CHECKING:
    from emu.ahci.observer import PortObserver
    from emu.ata.disk import AtaDisk
    from emu.faults.port import PortFaults

# The signature a SATA disk reports after a reset (ATA8-ACS 9.12): status DRDY|DSC, error 01h
# ("no error" from diagnostics), count 1, LBA 1.
RESET_SIGNATURE = Completion(STATUS_DRDY | STATUS_DSC, 0x01, 0x000001, 0x01, 0x00)
NO_DEVICE_TFD = 0x7F
FULL = 0xFFFFFFFF
WORDS = regs.PORT_STRIDE // 4  # 32-bit registers in a port's range

# The port registers that read back an attribute as it is (PxIS is worked out, the rest
# of the 80h bytes are reserved and read zero).
_STORED = {
    regs.PxCLB: "clb",
    regs.PxCLBU: "clbu",
    regs.PxFB: "fb",
    regs.PxFBU: "fbu",
    regs.PxIE: "ie",
    regs.PxCMD: "cmd",
    regs.PxTFD: "tfd",
    regs.PxSIG: "sig",
    regs.PxSSTS: "ssts",
    regs.PxSCTL: "sctl",
    regs.PxSERR: "serr",
    regs.PxSACT: "sact",
    regs.PxCI: "ci",
    regs.PxSNTF: "sntf",
}


class AhciPort:
    """Port ``index`` of the HBA, with ``disk`` attached or empty. ``observer``, when
    set, sees the guest's register writes and every command (emu.ahci.observer); it is
    fixed for the port's life, as is ``engine``.

    :attr:`readers` and :attr:`writers` dispatch a whole-register access by ``reg >> 2``:
    ``readers[i]()`` is the register's value, ``writers[i](value)`` a 32-bit write."""

    def __init__(
        self,
        index: int,
        memory: HostMemory,
        disk: "AtaDisk | None",
        on_interrupt: Callable[["AhciPort", int], None],
        bus_master: Callable[[], bool],
        observer: "PortObserver | None" = None,
        faults: "PortFaults | None" = None,
    ) -> None:
        self.index = index
        self.memory = memory
        self.disk = disk
        self._on_interrupt = on_interrupt
        self.observer = observer
        self.faults: PortFaults | None = faults
        self.link_down = False  # an injected link loss: no device until it comes back
        self.engine = CommandEngine(self, memory, bus_master)
        self.readers = self._readers()
        self.writers = self._writers()
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
        self._place_fis_area()
        self.engine.reset()
        self._link_up()

    def _link_up(self, area: memoryview | None = None) -> None:
        """COMRESET done: a disk answers with its signature FIS."""
        if self.disk is None or self.link_down:
            self.ssts = 0
            return
        self.disk.reset()
        self.engine.device_reset()
        self.ssts = regs.SSTS_IPM_ACTIVE | regs.SSTS_SPD_GEN1 | regs.SSTS_DET_PRESENT
        self.signature(area)

    def signature(self, area: memoryview | None, slots: int = 0) -> None:
        """The device's reset signature lands in PxSIG, PxTFD and (FIS receive on) the
        FIS area; ``slots`` are the PxCI bits of the software reset that asked for it."""
        sig = RESET_SIGNATURE
        self.sig = (sig.lba & 0xFFFFFF) << 8 | sig.count
        self.engine.post(area, Fis.D2H_QUIET, sig, slots)

    def _comreset(self) -> None:
        """SCTL.DET went 1 -> 0: the link is re-established and the device reset."""
        self.sact = self.ci = 0
        self.engine.stop()
        # With no FIS area in RAM the signature is not posted; PxSIG and PxTFD still get it.
        self._link_up(self.rfis)
        if self.ssts:
            self.serr |= regs.SERR_DIAG_X
            self.raise_interrupt(regs.IS_PCS)

    def unplug(self) -> None:
        """An injected link loss: PhyRdy drops (PxSSTS.DET 0, PxSERR.DIAG.N, PxIS.PRCS);
        what the device held is lost with it."""
        self.link_down = True
        self.ssts = 0
        self.tfd = NO_DEVICE_TFD
        self.serr |= regs.SERR_DIAG_N
        self.raise_interrupt(regs.IS_PRCS)

    def replug(self) -> None:
        """The device comes back: COMINIT, the link up (PxSERR.DIAG.X and .N, PxIS.PCS
        and PRCS) and the device's signature, as after a COMRESET."""
        self.link_down = False
        self._link_up(self.rfis)
        self.serr |= regs.SERR_DIAG_X | regs.SERR_DIAG_N
        self.raise_interrupt(regs.IS_PCS | regs.IS_PRCS)

    def _place_fis_area(self) -> None:
        """PxFB, PxFBU or PxCMD.FRE changed: ``rfis`` is the received-FIS area FISes go to
        from now on, None while FIS receive is off (nothing is posted); ``rfis_fault``
        says why an enabled area is not in RAM (the next command gets a host bus error)."""
        self.rfis: memoryview | None = None
        self.rfis_fault: str | None = None
        if self.cmd & regs.CMD_FRE:
            try:
                self.rfis = self.memory.view(self.fbu << 32 | self.fb, fis.RFIS_SIZE)
            except HostBusError as exc:
                self.rfis_fault = str(exc)

    # -- registers -----------------------------------------------------------

    def _readers(self) -> list[Callable[[], int]]:
        """What reads each 32-bit register, by ``reg >> 2``: mostly a getter in C
        (``partial(getattr, ...)``, no Python frame), and ``int`` (0) for reserved ones."""
        readers: list[Callable[[], int]] = [int] * WORDS
        for reg, name in _STORED.items():
            readers[reg >> 2] = partial(getattr, self, name)
        readers[regs.PxIS >> 2] = self._read_is
        return readers

    def _writers(self) -> list[Callable[[int], None]]:
        """What a whole-register write of a value calls, by ``reg >> 2``: with no observer,
        PxCI goes straight to the engine, PxIS to its RW1C clear and PxSACT to its set."""
        writers: list[Callable[[int], None]] = [
            partial(self.write, reg) for reg in range(0, regs.PORT_STRIDE, 4)
        ]
        if self.observer is None:
            writers[regs.PxCI >> 2] = self.engine.issue
            writers[regs.PxIS >> 2] = self._clear_is
            writers[regs.PxSACT >> 2] = self._set_sact
        return writers

    def read(self, reg: int) -> int:
        """The 32-bit register at ``reg`` (a multiple of 4 below 80h)."""
        return self.readers[reg >> 2]()

    def _read_is(self) -> int:
        """PxIS: PCS and PRCS mirror PxSERR.DIAG.X and .N (AHCI 3.3.5)."""
        serr = self.serr
        if not serr:
            return self.is_
        return (
            self.is_
            | (regs.IS_PCS if serr & regs.SERR_DIAG_X else 0)
            | (regs.IS_PRCS if serr & regs.SERR_DIAG_N else 0)
        )

    def _clear_is(self, value: int) -> None:
        self.is_ &= ~(value & regs.IS_RW1C)

    def _set_sact(self, value: int) -> None:
        """PxSACT: software sets bits (an NCQ command's tag) while the engine runs."""
        if self.cmd & regs.CMD_ST:
            self.sact |= value

    def write(self, reg: int, value: int, mask: int = FULL) -> None:
        """A guest write of ``value`` to the bytes ``mask`` selects of register ``reg``."""
        value &= mask
        if self.observer is not None:
            self.observer.register_write(self, reg, value, mask)
        if reg == regs.PxCI:
            self.engine.issue(value)
        elif reg == regs.PxIS:
            self._clear_is(value)
        elif reg == regs.PxCMD:
            self._write_cmd((self.cmd & ~mask) | value)
        elif reg == regs.PxSACT:
            self._set_sact(value)
        elif reg == regs.PxCLB:
            self.clb = _merge(self.clb, value, mask) & 0xFFFFFC00
        elif reg == regs.PxCLBU:
            self.clbu = _merge(self.clbu, value, mask)
        elif reg == regs.PxFB:
            self.fb = _merge(self.fb, value, mask) & 0xFFFFFF00
            self._place_fis_area()
        elif reg == regs.PxFBU:
            self.fbu = _merge(self.fbu, value, mask)
            self._place_fis_area()
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
            self.engine.stop()
        self.cmd = new
        self._place_fis_area()

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

    def raise_interrupt(self, bits: int) -> None:
        """Set ``bits`` in PxIS (PCS and PRCS only mirror PxSERR.DIAG.X and .N) and tell
        the HBA."""
        self.is_ |= bits & ~(regs.IS_PCS | regs.IS_PRCS)
        self._on_interrupt(self, bits)

    @property
    def interrupt_pending(self) -> bool:
        return bool(self._read_is() & self.ie)


def _merge(old: int, value: int, mask: int) -> int:
    return (old & ~mask) | value


def _set(word: int, bit: int, on: int) -> int:
    return word | bit if on else word & ~bit
