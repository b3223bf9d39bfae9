"""00:1f.2, q35's AHCI controller as a PCI function: configuration space, the HBA behind
BAR5 (ABAR) and the index/data pair in BAR4, bus mastering, and MSI or INTx.

The configuration space holds what SeaBIOS leaves on QEMU 7.2's q35
(tests/oracle/q35_reference.txt) plus what ICH9 has and QEMU lacks
(tests/oracle/differences.toml).
"""

from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING

from emu.ahci.hba import AhciHba
from emu.machine.bus import (
    MmioBus,
    MmioRegion,
    PortBus,
    ReadFn,
    WordReaders,
    WordWriters,
    WriteFn,
)
from emu.machine.memory import GuestMemory
from emu.machine.pci import (
    CAP_ID_MSI,
    CAP_ID_SATA,
    COMMAND_BUS_MASTER,
    COMMAND_INTX_DISABLE,
    D0,
    Bar,
    PciFunction,
    PciHost,
)
from emu.machine.q35 import (
    FIRMWARE_COMMAND,
    FIRMWARE_IRQ_LINE,
    INTEL,
    MULTIFUNCTION,
    QEMU_SUBSYSTEM,
)

if TYPE_CHECKING:
    from emu.ahci.trace import Tracer
    from emu.ata.disk import AtaDisk
    from emu.faults.port import PortFaults

DEVICE, FUNCTION = 31, 2
ABAR_ADDRESS = 0xFEBFF000
ABAR_SIZE = 0x1000
IDP_ADDRESS = 0xC040  # AHCI index/data pair (BAR4)
IDP_SIZE = 0x20
IDP_INDEX = 0x10  # the pair's registers within BAR4 (ICH9)
IDP_DATA = 0x14
MSI_OFFSET = 0x80
PM_OFFSET = 0x70
SATA_CAP_OFFSET = 0xA8
# ICH9 power management capability: PMC 4003h (PCI PM 1.2, PME from D3hot, no D1/D2),
# PMCS 0008h (No_Soft_Reset: D3hot -> D0 keeps the configuration).
ICH9_PMC = 0x4003
ICH9_PMCS = 0x0008
# ICH9 Port Control and Status (PCS, 92h): port enables P0E-P5E (bits 5:0, R/W), port
# present P0P-P5P (bits 13:8, RO: a device detected on an enabled port), OOB retry
# mode (bit 15, R/W).
PCS = 0x92
PCS_PORTS = 6
PCS_ENABLE_MASK = (1 << PCS_PORTS) - 1
PCS_ORM = 0x8000


class AhciConfigSpace(PciFunction):
    """00:1f.2's configuration space; ``present`` has bit n set for a disk on port n.

    What the controller asks of it on every command and interrupt is kept, worked out
    again after each configuration write (:meth:`settle`): ``bus_master`` (it may DMA),
    ``msi`` (where a message goes, None with MSI off) and ``signals`` (it may signal
    an MSI: bus master and in D0)."""

    present = 0
    bus_master = False
    msi: tuple[int, int] | None = None
    signals = False

    def write(self, offset: int, size: int, value: int) -> None:
        super().write(offset, size, value)
        if offset < PCS + 2 and offset + size > PCS:
            enabled = self.u16(PCS) & PCS_ENABLE_MASK
            pcs = (self.u16(PCS) & (PCS_ORM | PCS_ENABLE_MASK)) | (enabled & self.present) << 8
            self.config[PCS : PCS + 2] = pcs.to_bytes(2, "little")
        self.settle()

    def settle(self) -> None:
        """Work out ``bus_master``, ``msi`` and ``signals`` from the registers."""
        self.bus_master = bool(self.command & COMMAND_BUS_MASTER)
        self.msi = msi_target(self)
        self.signals = self.bus_master and self.power_state == D0


def ahci_config(abar: Bar, idp: Bar) -> AhciConfigSpace:
    """00:1f.2's configuration space: BAR4 index/data pair, BAR5 ABAR, the MSI, power
    management and SATA capabilities (in ICH9's order), ICH9's MAP and PCS registers."""
    fn = AhciConfigSpace(
        INTEL,
        0x2922,
        0x010601,
        revision=0x02,
        subsystem=QEMU_SUBSYSTEM,
        header_type=MULTIFUNCTION,
        command=FIRMWARE_COMMAND | COMMAND_BUS_MASTER,
        interrupt_pin=1,
        interrupt_line=FIRMWARE_IRQ_LINE,
    )
    fn.add_bar(4, idp, IDP_ADDRESS)
    fn.add_bar(5, abar, ABAR_ADDRESS)
    # MSI, 64-bit capable, one vector: control, address low/high, data (PCI 3.0, 6.8.1).
    fn.add_capability(
        CAP_ID_MSI,
        bytes.fromhex("8000000000000000000000000000"),
        wmask=bytes.fromhex("0100fcffffffffffffffffff"),
        offset=MSI_OFFSET,
    )
    fn.add_power_management(PM_OFFSET, ICH9_PMC, ICH9_PMCS)
    fn.preset({0x90: b"\x40"})  # ICH9 port mapping register, as firmware leaves it
    # PCS reads 0 as firmware leaves it on q35; the ports work whatever it holds (an
    # AHCI driver owns them through PxSCTL.DET and PxCMD.SUD).
    fn.wmask[PCS : PCS + 2] = (PCS_ORM | PCS_ENABLE_MASK).to_bytes(2, "little")
    # SATA capability 1.0: index/data pair in BAR4 at offset 10h (SATACR1 = 0048h).
    fn.add_capability(CAP_ID_SATA, bytes.fromhex("100048000000"), offset=SATA_CAP_OFFSET)
    fn.settle()
    return fn


def msi_target(fn: PciFunction) -> tuple[int, int] | None:
    """(address, data) of an enabled MSI capability, or None when MSI is off."""
    control = fn.u16(MSI_OFFSET + 2)
    if not control & 1:
        return None
    address = fn.u32(MSI_OFFSET + 4) | fn.u32(MSI_OFFSET + 8) << 32
    return address, fn.u16(MSI_OFFSET + 12)


class AhciFunction:
    """The controller on the buses: ``msi(address, data)`` is called for each message it
    signals, ``intx(level)`` when its INTA line changes."""

    def __init__(
        self,
        memory: GuestMemory,
        disks: "Sequence[AtaDisk | None]",
        msi: Callable[[int, int], None],
        intx: Callable[[bool], None],
        tracer: "Tracer | None" = None,
        faults: "PortFaults | None" = None,
    ) -> None:
        self._msi = msi
        self._intx_line = intx
        self._line_asserted = False
        self._abar: MmioRegion | None = None
        self._ports: PortBus | None = None
        self._idp_base: int | None = None
        self._idp_index = 0
        self.config = ahci_config(
            Bar(ABAR_SIZE, on_move=self._move_abar), Bar(IDP_SIZE, io=True, on_move=self._move_idp)
        )
        self.config.present = sum(
            1 << port for port, disk in enumerate(disks[:PCS_PORTS]) if disk is not None
        )
        self.hba = AhciHba(
            memory, disks, self._interrupt, self.bus_master, tracer, intx=self._intx, faults=faults
        )
        # What guest accesses to the HBA's registers (ABAR or the data port) go through:
        # fault injection or a checker of the guest's driver wraps them before attach().
        self.read: ReadFn = self.hba.read
        self.write: WriteFn = self.hba.write

    def attach(
        self,
        pci: PciHost,
        mmio: MmioBus,
        ports: PortBus,
        move_region: Callable[[MmioRegion, int | None], None],
    ) -> None:
        """Plug in at 00:1f.2; the BARs decode where firmware left them. ``move_region``
        moves the ABAR's MMIO region when the guest moves BAR5."""
        self._ports = ports
        self._move_region = move_region
        self._abar = MmioRegion("AHCI ABAR", ABAR_SIZE, self.read, self.write, self._words())
        mmio.add(self._abar, None)
        pci.attach(DEVICE, FUNCTION, self.config)
        self.config.update_decoding()

    def _words(self) -> tuple[WordReaders, WordWriters] | None:
        """The HBA's register tables for the ABAR's aligned 32-bit accesses, unless
        something must see every access: a wrapper of :attr:`read`/:attr:`write`, or
        the tracer of register accesses."""
        hba = self.hba
        if self.read != hba.read or self.write != hba.write or hba.traces_registers:
            return None
        return hba.readers, hba.writers

    def bus_master(self) -> bool:
        """May the function master the bus (DMA, and MSI, which is a memory write)?"""
        return self.config.bus_master

    # -- BARs --------------------------------------------------------------------

    def _move_abar(self, base: int | None) -> None:
        if self._abar is not None:
            self._move_region(self._abar, base)

    def _move_idp(self, base: int | None) -> None:
        if self._ports is None:
            return
        if self._idp_base is not None:
            self._ports.unregister(self._idp_base, IDP_SIZE)
        self._idp_base = base
        if base is not None:
            self._ports.register(base, IDP_SIZE, self._idp_read, self._idp_write)

    def _idp_read(self, offset: int, size: int) -> int:
        if offset == IDP_INDEX:
            return self._idp_index
        if offset == IDP_DATA:
            return self.read(self._idp_index, size)
        return 0

    def _idp_write(self, offset: int, size: int, value: int) -> None:
        if offset == IDP_INDEX:
            self._idp_index = value & 0xFFC
        elif offset == IDP_DATA:
            self.write(self._idp_index, size, value)

    # -- interrupts -----------------------------------------------------------------

    def _interrupt(self) -> None:
        """The HBA raised an interrupt: a message when MSI is on, the function may master
        the bus and is in D0 (PCI PM 1.2: no interrupts from D3hot)."""
        config = self.config
        if config.msi is not None and config.signals:
            self._msi(*config.msi)

    def _intx(self, level: bool) -> None:
        """The HBA's INTA level; a function with MSI enabled or INTx disabled in its
        command register keeps it deasserted."""
        quiet = self.config.msi is not None or (self.config.command & COMMAND_INTX_DISABLE)
        asserted = level and not quiet
        if asserted or self._line_asserted:  # (deasserting a line that is low does nothing)
            self._line_asserted = asserted
            self._intx_line(asserted)
