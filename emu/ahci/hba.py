"""The HBA: generic host control registers (AHCI 3.1) and MMIO dispatch to its ports."""

from collections.abc import Callable, Sequence
from functools import partial
from typing import TYPE_CHECKING

from emu.ahci import regs
from emu.ahci.port import FULL, AhciPort
from emu.machine.memory import HostMemory

if TYPE_CHECKING:
    from emu.ahci.trace import Tracer
    from emu.ata.disk import AtaDisk
    from emu.faults.port import PortFaults

NCQ_SLOTS = 32


class AhciHba:
    """An ICH9-style AHCI 1.0 HBA in AHCI-only mode with ``len(disks)`` ports.

    ``interrupt`` is called when a port raises an enabled interrupt while GHC.IE
    is set (the board turns it into an MSI); ``bus_master`` says whether the PCI
    function may master the bus.
    """

    def __init__(
        self,
        memory: HostMemory,
        disks: "Sequence[AtaDisk | None]",
        interrupt: Callable[[], None],
        bus_master: Callable[[], bool],
        tracer: "Tracer | None" = None,
        intx: Callable[[bool], None] | None = None,
        faults: "PortFaults | None" = None,
    ) -> None:
        if not 1 <= len(disks) <= 32:
            raise ValueError("an AHCI HBA has 1 to 32 ports")
        self.cap = (
            regs.CAP_S64A
            | regs.CAP_SNCQ
            | regs.CAP_ISS_GEN1
            | regs.CAP_SAM
            | (NCQ_SLOTS - 1) << 8
            | (len(disks) - 1)
        )
        self.pi = (1 << len(disks)) - 1
        self._interrupt = interrupt
        self._intx = intx
        self._intx_level = False
        self.tracer = tracer
        self._trace_registers = tracer is not None and tracer.registers
        self.ports = [
            AhciPort(i, memory, disk, self._port_interrupt, bus_master, tracer, faults)
            for i, disk in enumerate(disks)
        ]
        self.ghc = regs.GHC_AE
        self.is_ = 0
        self.readers, self.writers = self._dispatch()

    def reset(self) -> None:
        """GHC.HR: every port back to its reset state, the link re-established."""
        self.ghc = regs.GHC_AE
        self.is_ = 0
        for port in self.ports:
            port.reset()
        self._update_intx()

    def _port_interrupt(self, port: AhciPort, bits: int) -> None:
        if not bits & port.ie:
            return
        self.is_ |= 1 << port.index
        if self.ghc & regs.GHC_IE:
            self._interrupt()
        self._update_intx()

    def _update_intx(self) -> None:
        # The INTx level: some port's enabled interrupt is pending and GHC.IE is set.
        level = bool(self.ghc & regs.GHC_IE and self.is_)
        if level != self._intx_level:
            self._intx_level = level
            if self._intx is not None:
                self._intx(level)

    # -- MMIO --------------------------------------------------------------------

    def _dispatch(self) -> tuple[list[Callable[[], int]], list[Callable[[int], None]]]:
        """What an aligned 32-bit access to ABAR calls, by ``offset >> 2``: ``readers[i]()``
        is the register's value, ``writers[i](value)`` writes it. The ports' own tables
        fill their ranges. CAP2, BOHC, CCC, EM and what is past the last port read zero
        (see _write32); past the last port writes are ignored."""
        words = regs.ABAR_SIZE // 4
        readers: list[Callable[[], int]] = [int] * words
        writers: list[Callable[[int], None]] = [_ignore] * words
        for offset in range(0, regs.PORT_BASE, 4):
            writers[offset >> 2] = partial(self._write32, offset)
        for name, offset in (("cap", regs.CAP), ("ghc", regs.GHC), ("pi", regs.PI)):
            readers[offset >> 2] = partial(getattr, self, name)
        readers[regs.VS >> 2] = partial(int, regs.VS_AHCI_1_0)
        readers[regs.IS >> 2] = self._read_is
        writers[regs.IS >> 2] = self._write_is
        for port in self.ports:
            first = (regs.PORT_BASE + port.index * regs.PORT_STRIDE) >> 2
            readers[first : first + len(port.readers)] = port.readers
            writers[first : first + len(port.writers)] = port.writers
        return readers, writers

    @property
    def traces_registers(self) -> bool:
        """Every register access must go through :meth:`read` and :meth:`write` (--trace
        with register accesses); otherwise the tables may be called directly."""
        return self._trace_registers

    def read(self, offset: int, size: int) -> int:
        value = self.readers[offset >> 2]()
        if size != 4 or offset & 3:
            value = value >> (8 * (offset & 3)) & ((1 << (8 * size)) - 1)
        if self._trace_registers:
            self.tracer.register("read", offset, size, value)
        return value

    def write(self, offset: int, size: int, value: int) -> None:
        if self._trace_registers:
            self.tracer.register("write", offset, size, value)
        if size == 4 and not offset & 3:
            self.writers[offset >> 2](value)
            return
        shift = 8 * (offset & 3)
        mask = (((1 << (8 * size)) - 1) << shift) & FULL
        offset &= ~3
        value = (value << shift) & mask
        if offset >= regs.PORT_BASE:
            index = (offset - regs.PORT_BASE) >> 7
            if index < len(self.ports):
                self.ports[index].write(offset & 0x7F, value, mask)
        else:
            self._write32(offset, value, mask)

    def _read_is(self) -> int:
        self._refresh_is()
        return self.is_

    def _write_is(self, value: int) -> None:
        self.is_ &= ~value
        self._refresh_is()
        self._update_intx()

    def _write32(self, offset: int, value: int, mask: int = FULL) -> None:
        """A write of ``value`` to the bytes ``mask`` selects of a generic host control
        register."""
        if offset == regs.GHC:
            if value & regs.GHC_HR:
                self.reset()  # completes at once, so HR reads back zero
                return
            enabling = value & regs.GHC_IE and not self.ghc & regs.GHC_IE
            self.ghc = (self.ghc & ~(mask & regs.GHC_IE)) | (value & regs.GHC_IE) | regs.GHC_AE
            self._refresh_is()
            if enabling and self.is_:
                self._interrupt()
            self._update_intx()
        elif offset == regs.IS:
            self._write_is(value)
        # CAP, PI, VS, CAP2 and BOHC are read-only here; CCC and EM are not implemented
        # (CAP.CCCS = CAP.EMS = 0), so their registers are reserved and read zero.

    def _refresh_is(self) -> None:
        """IS.IPS[n] stays set while port n still has an enabled interrupt pending."""
        for port in self.ports:
            ie = port.ie  # (0 on the ports a driver does not use: nothing can be pending)
            if ie and (port.is_ & ie or (port.serr and port.interrupt_pending)):
                self.is_ |= 1 << port.index


def _ignore(_value: int) -> None:
    """A write to a register that is not there (past the last port)."""
