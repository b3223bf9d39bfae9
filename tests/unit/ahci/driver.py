"""A host-side AHCI driver for unit tests: it drives an AhciHba through its registers and
builds command lists, tables and PRDTs in guest memory, as a guest driver would."""

import struct
from dataclasses import dataclass, field

from emu.ahci import regs
from emu.ahci.hba import AhciHba
from emu.ata.disk import AtaDisk
from emu.machine.memory import GuestMemory
from emu.testing.memory_disk import MemoryDevice

CLB = 0x10000  # command list of port n at CLB + n * 0x1000
FB = 0x40000  # FIS area of port n at FB + n * 0x100
TABLES = 0x80000  # command table of slot s at TABLES + s * 0x1000 (port 0)
DATA = 0x200000


@dataclass
class Machine:
    memory: GuestMemory
    hba: AhciHba
    disks: list[MemoryDevice]
    interrupts: list[int] = field(default_factory=list)
    bus_master: bool = True

    def reg(self, offset: int) -> int:
        return self.hba.read(offset, 4)

    def set_reg(self, offset: int, value: int) -> None:
        self.hba.write(offset, 4, value)

    def preg(self, port: int, reg: int) -> int:
        return self.reg(regs.PORT_BASE + port * regs.PORT_STRIDE + reg)

    def set_preg(self, port: int, reg: int, value: int) -> None:
        self.set_reg(regs.PORT_BASE + port * regs.PORT_STRIDE + reg, value)

    def start(self, port: int = 0) -> None:
        self.set_preg(port, regs.PxCLB, CLB + port * 0x1000)
        self.set_preg(port, regs.PxFB, FB + port * 0x100)
        self.set_preg(port, regs.PxSERR, 0xFFFFFFFF)
        self.set_preg(port, regs.PxIS, 0xFFFFFFFF)
        self.set_preg(port, regs.PxCMD, regs.CMD_FRE)
        self.set_preg(port, regs.PxCMD, regs.CMD_FRE | regs.CMD_ST)

    def stop(self, port: int = 0) -> None:
        self.set_preg(port, regs.PxCMD, regs.CMD_FRE)

    def command(
        self,
        slot: int,
        cfis: bytes,
        prdt: list[tuple[int, int]] = (),
        *,
        write: bool = False,
        port: int = 0,
        prd_interrupt: bool = False,
        ctba: int | None = None,
    ) -> int:
        """Build slot's header, table and PRDT; returns the table address."""
        table = TABLES + (port * 32 + slot) * 0x1000 if ctba is None else ctba
        flags = (len(cfis) // 4) | (0x40 if write else 0)  # CFL in dwords, W
        header = struct.pack(
            "<IIII", flags | len(prdt) << 16, 0xDEADBEEF, table & 0xFFFFFFFF, table >> 32
        )
        self.memory.write(CLB + port * 0x1000 + slot * 32, header + bytes(16))
        if table + 0x80 + len(prdt) * 16 <= self.memory.size:
            self.memory.write(table, cfis.ljust(0x80, b"\0"))
            for i, (address, length) in enumerate(prdt):
                dw3 = (length - 1) | (1 << 31 if prd_interrupt else 0)
                self.memory.write(
                    table + 0x80 + i * 16,
                    struct.pack("<IIII", address & 0xFFFFFFFF, address >> 32, 0, dw3),
                )
        return table

    def issue(self, slots: int, port: int = 0) -> None:
        self.set_preg(port, regs.PxCI, slots)

    def prdbc(self, slot: int, port: int = 0) -> int:
        return struct.unpack_from("<I", self.memory.mem, CLB + port * 0x1000 + slot * 32 + 4)[0]

    def disk_bytes(self, lba: int, count: int, disk: int = 0) -> bytes:
        """``count`` sectors from ``lba`` of disk ``disk``, as the medium holds them."""
        buffer = bytearray(count * 512)
        self.disks[disk].readv(lba * 512, [memoryview(buffer)])
        return bytes(buffer)

    def rfis(self, offset: int, length: int, port: int = 0) -> bytes:
        return self.memory.read(FB + port * 0x100 + offset, length)


def h2d(
    command: int,
    lba: int = 0,
    count: int = 0,
    features: int = 0,
    device: int = 0x40,
    c: bool = True,
    control: int = 0,
) -> bytes:
    return struct.pack(
        "<BBBBBBBBBBBBBBBB",
        0x27,
        0x80 if c else 0,
        command,
        features & 0xFF,
        lba & 0xFF,
        (lba >> 8) & 0xFF,
        (lba >> 16) & 0xFF,
        device,
        (lba >> 24) & 0xFF,
        (lba >> 32) & 0xFF,
        (lba >> 40) & 0xFF,
        features >> 8,
        count & 0xFF,
        count >> 8,
        0,
        control,
    ) + bytes(4)


def make_machine(
    disk_sizes=(1 << 20,),
    ports: int = 6,
    pattern: bool = True,
    memory_mib: int = 16,
    faults=None,
    tracer=None,
) -> Machine:
    """An HBA with in-memory disks (emu.testing.memory_disk) on its first ports, so that
    these tests exercise the HBA and not the image files; ``pattern`` fills every
    sector with :func:`sector_pattern`. ``tracer`` (an emu.ahci.trace.Tracer) observes
    every port from the start, as ``--trace`` does (a port's observer is fixed for its
    life)."""
    memory = GuestMemory(memory_mib << 20)
    devices = []
    for index, size in enumerate(disk_sizes):
        device = MemoryDevice(size // 512, identity=f"mem:{index}")
        if pattern:
            device.sectors = {lba: sector_pattern(lba, index) for lba in range(size // 512)}
        devices.append(device)
    disks = [AtaDisk(device) for device in devices] + [None] * (ports - len(devices))
    machine = Machine(memory, None, devices)  # type: ignore[arg-type]
    machine.hba = AhciHba(
        memory,
        disks,
        lambda: machine.interrupts.append(1),
        lambda: machine.bus_master,
        tracer=tracer,
        faults=faults,
    )
    return machine


def sector_pattern(lba: int, disk: int = 0) -> bytes:
    return struct.pack("<Q", lba | disk << 56) * 64
