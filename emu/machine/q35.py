"""The q35 chipset functions a guest sees on bus 0 besides the AHCI controller.

QEMU's q35 with -nodefaults shows the host bridge 00:00.0 (8086:29c0), the
LPC bridge 00:1f.0 (8086:2918) and the SMBus controller 00:1f.3 (8086:2930).
Here they are configuration space only, with the identification and BARs that
SeaBIOS leaves behind, so that guest enumerations match QEMU's.
"""

from emu.machine.bus import PortBus
from emu.machine.pci import PciFunction, PciHost

INTEL = 0x8086
QEMU_SUBSYSTEM = (0x1AF4, 0x1100)


def attach_chipset(pci: PciHost, ports: PortBus) -> None:
    del ports  # the chipset functions decode no I/O here
    host = PciFunction(INTEL, 0x29C0, 0x060000, subsystem=QEMU_SUBSYSTEM)
    pci.attach(0, 0, host)
    lpc = PciFunction(
        INTEL, 0x2918, 0x060100, revision=0x02, subsystem=QEMU_SUBSYSTEM, header_type=0x80
    )
    pci.attach(31, 0, lpc)
    smbus = PciFunction(
        INTEL, 0x2930, 0x0C0500, revision=0x02, subsystem=QEMU_SUBSYSTEM, interrupt_pin=2
    )
    pci.attach(31, 3, smbus)
