"""The HBA: generic host control registers (AHCI 3.1) and MMIO dispatch to its ports."""

from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING

from emu.ahci import regs
from emu.ahci.port import AhciPort
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
        self._nports = len(self.ports)
        self.ghc = regs.GHC_AE
        self.is_ = 0

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
        level = self.interrupt_pending
        if level != self._intx_level:
            self._intx_level = level
            if self._intx is not None:
                self._intx(level)

    @property
    def interrupt_pending(self) -> bool:
        """The INTx level: some port's enabled interrupt is pending and GHC.IE is set."""
        return bool(self.ghc & regs.GHC_IE and self.is_)

    # -- MMIO --------------------------------------------------------------------

    def read(self, offset: int, size: int) -> int:
        if size == 4 and not offset & 3:
            if offset >= regs.PORT_BASE and not self._trace_registers:  # the common case
                index = (offset - regs.PORT_BASE) >> 7
                return self.ports[index].read(offset & 0x7F) if index < self._nports else 0
            value = self._read32(offset)
        else:
            value = self._read32(offset & ~3) >> (8 * (offset & 3)) & ((1 << (8 * size)) - 1)
        if self._trace_registers:
            self.tracer.register("read", offset, size, value)
        return value

    def write(self, offset: int, size: int, value: int) -> None:
        if self._trace_registers:
            self.tracer.register("write", offset, size, value)
        if size == 4 and not offset & 3:
            if offset >= regs.PORT_BASE:  # the common case
                index = (offset - regs.PORT_BASE) >> 7
                if index < self._nports:
                    self.ports[index].write(offset & 0x7F, value)
                return
            self._write32(offset, value, 0xFFFFFFFF)
            return
        shift = 8 * (offset & 3)
        mask = (((1 << (8 * size)) - 1) << shift) & 0xFFFFFFFF
        self._write32(offset & ~3, (value << shift) & mask, mask)

    def _read32(self, offset: int) -> int:
        if offset >= regs.PORT_BASE:
            # PORT_BASE and PORT_STRIDE are aligned: the register is the low 7 bits.
            index = (offset - regs.PORT_BASE) >> 7
            return self.ports[index].read(offset & 0x7F) if index < self._nports else 0
        if offset == regs.IS:
            self._refresh_is()
            return self.is_
        return {
            regs.CAP: self.cap,
            regs.GHC: self.ghc,
            regs.PI: self.pi,
            regs.VS: regs.VS_AHCI_1_0,
        }.get(offset, 0)

    def _write32(self, offset: int, value: int, mask: int) -> None:
        if offset >= regs.PORT_BASE:
            index = (offset - regs.PORT_BASE) >> 7
            if index < self._nports:
                self.ports[index].write(offset & 0x7F, value, mask)
        elif offset == regs.GHC:
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
            self.is_ &= ~value
            self._refresh_is()
            self._update_intx()
        # CAP, PI, VS, CAP2 and BOHC are read-only here; CCC and EM are not implemented
        # (CAP.CCCS = CAP.EMS = 0), so their registers are reserved and read zero.

    def _refresh_is(self) -> None:
        """IS.IPS[n] stays set while port n still has an enabled interrupt pending."""
        for port in self.ports:
            if port.is_ & port.ie or (port.serr and port.interrupt_pending):
                self.is_ |= 1 << port.index
