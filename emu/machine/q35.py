"""The q35 functions on PCI bus 0, as QEMU 7.2's q35 with -nodefaults shows them after SeaBIOS.

Host bridge 00:00.0 (8086:29c0), LPC bridge 00:1f.0 (8086:2918) and SMBus
00:1f.3 (8086:2930) are configuration space only; 00:1f.2 (8086:2922) is the
AHCI controller. Identification, command register, BARs, interrupt line/pin and
chipset registers hold the values SeaBIOS leaves (tests/oracle/q35_reference.txt),
so that guest enumerations match QEMU's.
"""

from emu.machine.pci import CAP_ID_MSI, CAP_ID_SATA, Bar, PciFunction, PciHost

INTEL = 0x8086
QEMU_SUBSYSTEM = (0x1AF4, 0x1100)
MULTIFUNCTION = 0x80
FIRMWARE_COMMAND = 0x0103  # I/O, memory, SERR
FIRMWARE_IRQ_LINE = 0x0A

ABAR_ADDRESS = 0xFEBFF000
ABAR_SIZE = 0x1000
IDP_ADDRESS = 0xC040  # AHCI index/data pair (BAR4)
IDP_SIZE = 0x20
SMBUS_ADDRESS = 0x0700
MSI_OFFSET = 0x80
SATA_CAP_OFFSET = 0xA8


def attach_chipset(pci: PciHost) -> None:
    host = PciFunction(INTEL, 0x29C0, 0x060000, subsystem=QEMU_SUBSYSTEM, command=FIRMWARE_COMMAND)
    host.preset(
        {
            0x50: b"\x10",
            0x60: bytes.fromhex("010000b0"),
            0x90: bytes.fromhex("10111111111133"),
            0x9D: bytes.fromhex("0a38"),
        }
    )
    pci.attach(0, 0, host)
    lpc = PciFunction(
        INTEL,
        0x2918,
        0x060100,
        revision=0x02,
        subsystem=QEMU_SUBSYSTEM,
        header_type=MULTIFUNCTION,
        command=FIRMWARE_COMMAND,
    )
    lpc.preset(
        {
            0x40: bytes.fromhex("01060000"),
            0x44: b"\x80",
            0x60: bytes.fromhex("0a0a0b0b"),
            0x68: bytes.fromhex("0a0a0b0b"),
            0x82: b"\x01",
            0xA0: b"\x10",
            0xF0: bytes.fromhex("01c0d1fe"),
        }
    )
    pci.attach(31, 0, lpc)
    smbus = PciFunction(
        INTEL,
        0x2930,
        0x0C0500,
        revision=0x02,
        subsystem=QEMU_SUBSYSTEM,
        header_type=MULTIFUNCTION,
        command=FIRMWARE_COMMAND,
        interrupt_pin=1,
        interrupt_line=FIRMWARE_IRQ_LINE,
    )
    smbus.add_bar(4, Bar(0x20, io=True), SMBUS_ADDRESS)  # its registers are not emulated
    smbus.preset({0x40: b"\x01"})
    pci.attach(31, 3, smbus)


def ahci_function(abar: Bar, idp: Bar) -> PciFunction:
    """00:1f.2's configuration space: BAR4 index/data pair, BAR5 ABAR, MSI and SATA caps."""
    fn = PciFunction(
        INTEL,
        0x2922,
        0x010601,
        revision=0x02,
        subsystem=QEMU_SUBSYSTEM,
        header_type=MULTIFUNCTION,
        command=FIRMWARE_COMMAND | 0x0004,
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
    fn.preset({0x90: b"\x40"})  # ICH9 port mapping register, as firmware leaves it
    # SATA capability 1.0: index/data pair in BAR4 at offset 10h (SATACR1 = 0048h).
    fn.add_capability(CAP_ID_SATA, bytes.fromhex("100048000000"), offset=SATA_CAP_OFFSET)
    return fn


def msi_target(fn: PciFunction) -> tuple[int, int] | None:
    """(address, data) of an enabled MSI capability, or None when MSI is off."""
    control = fn.u16(MSI_OFFSET + 2)
    if not control & 1:
        return None
    address = fn.u32(MSI_OFFSET + 4) | fn.u32(MSI_OFFSET + 8) << 32
    return address, fn.u16(MSI_OFFSET + 12)
