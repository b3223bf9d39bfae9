"""The q35 functions on PCI bus 0, as QEMU 7.2's q35 with -nodefaults shows them after SeaBIOS.

Host bridge 00:00.0 (8086:29c0), LPC bridge 00:1f.0 (8086:2918) and SMBus
00:1f.3 (8086:2930) are configuration space only; 00:1f.2 (8086:2922), the AHCI
controller, is emu.machine.ahci_pci. Identification, command register, BARs,
interrupt line/pin and chipset registers hold the values SeaBIOS leaves
(tests/oracle/q35_reference.txt), so that guest enumerations match QEMU's.
"""

from emu.machine.pci import Bar, PciFunction, PciHost

INTEL = 0x8086
QEMU_SUBSYSTEM = (0x1AF4, 0x1100)
MULTIFUNCTION = 0x80
FIRMWARE_COMMAND = 0x0103  # I/O, memory, SERR
FIRMWARE_IRQ_LINE = 0x0A

SMBUS_ADDRESS = 0x0700


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
