"""The command engine alone: commands issued by writing PxCI from the host, no guest.

    python -m bench.engine_alone [--count N] [--reps N] [WORKLOAD ...]

WORKLOADs: qd1_read, qd1_write (4 KiB at random LBAs, one PRD), ncq_read (32 queued
4 KiB reads in one PxCI write, one PRD each), ncq_read_single (the same, each with
its own PxSACT and PxCI write), seq_128k (128 KiB READ DMA EXT, 32
scattered 4 KiB PRDs). Each prints the median (and min, max) CPU microseconds per
command over ``reps`` runs, the harness's own loop (measured alone) subtracted, and
the Python calls per command (``sys.setprofile``: Python functions, and C functions
called from Python). The disk is a 64 MiB raw file in a temporary folder, opened as
``ahci-emu run`` opens it (emu.storage.chain.open_chain), its pages cached.
"""

from __future__ import annotations

import argparse
import os
import random
import statistics
import struct
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

from emu.ahci import regs
from emu.ahci.hba import AhciHba
from emu.ata.disk import AtaDisk
from emu.machine.memory import GuestMemory
from emu.storage.blockdev import BlockDevice
from emu.storage.chain import open_chain

DISK_SIZE = 64 << 20
CLB, FB, TABLES, DATA = 0x10000, 0x20000, 0x100000, 0x400000
READ_DMA_EXT, WRITE_DMA_EXT, READ_FPDMA = 0x25, 0x35, 0x60
_H2D = struct.Struct("<BBBBIIHBB")  # as emu.ahci.fis reads it
_LBA = struct.Struct("<HB")  # LBA(23:0) in bytes 4-6 of the FIS
_HEADER = struct.Struct("<IIII")
_PRD = struct.Struct("<IIII")


class Rig:
    """One port with a disk, started, with a command list, FIS area and tables."""

    def __init__(self, device: BlockDevice) -> None:
        self.memory = GuestMemory(16 << 20)
        self.hba = AhciHba(self.memory, [AtaDisk(device)], lambda: None, lambda: True)
        self.port = self.hba.ports[0]
        base = regs.PORT_BASE
        for reg, value in (
            (regs.PxCLB, CLB),
            (regs.PxFB, FB),
            (regs.PxCMD, regs.CMD_FRE),
            (regs.PxCMD, regs.CMD_FRE | regs.CMD_ST),
        ):
            self.hba.write(base + reg, 4, value)

    def command(self, slot: int, cfis: bytes, prdt: list[tuple[int, int]], write: bool) -> int:
        """Slot's header and table; the table address."""
        table = TABLES + slot * 0x1000
        dw0 = 5 | (0x40 if write else 0) | len(prdt) << 16
        _HEADER.pack_into(self.memory.mem, CLB + slot * 32, dw0, 0, table, 0)
        self.memory.write(table, cfis.ljust(0x80, b"\0"))
        for i, (address, length) in enumerate(prdt):
            _PRD.pack_into(self.memory.mem, table + 0x80 + i * 16, address, 0, 0, length - 1)
        return table


def _h2d(command: int, lba: int, count: int, features: int = 0) -> bytes:
    return _H2D.pack(
        0x27,
        0x80,
        command,
        features & 0xFF,
        (lba & 0xFFFFFF) | 0x40 << 24,
        lba >> 24 | (features >> 8) << 24,
        count,
        0,
        0,
    )


def _lbas(n: int, sectors: int) -> list[int]:
    rng = random.Random(1)
    return [rng.randrange(DISK_SIZE // 512 // sectors) * sectors for _ in range(n)]


def qd1(rig: Rig, command: int, write: bool) -> Callable[[int], None]:
    """4 KiB at a random LBA per PxCI write, slot 0, one PRD."""
    table = rig.command(0, _h2d(command, 0, 8), [(DATA, 4096)], write)
    return _single(rig, table, 8)


def seq_128k(rig: Rig) -> Callable[[int], None]:
    """128 KiB READ DMA EXT per PxCI write, 32 PRDs of 4 KiB, 8 KiB apart."""
    prdt = [(DATA + i * 0x2000, 4096) for i in range(32)]
    table = rig.command(0, _h2d(READ_DMA_EXT, 0, 256), prdt, False)
    return _single(rig, table, 256)


def _single(rig: Rig, table: int, sectors: int) -> Callable[[int], None]:
    mem, port, issue = rig.memory.mem, rig.port, rig.port.engine.issue
    pack_lba = _LBA.pack_into

    def run(n: int) -> None:
        for lba in _lbas(n, sectors):
            pack_lba(mem, table + 4, lba & 0xFFFF, lba >> 16 & 0xFF)
            issue(1)
            port.is_ = 0

    return run


def _ncq(rig: Rig, one_per_write: bool) -> Callable[[int], None]:
    """32 READ FPDMA QUEUED of 4 KiB (one PRD each) at a time; ``n`` commands."""
    tables = [
        rig.command(tag, _h2d(READ_FPDMA, 0, tag << 3, 8), [(DATA + tag * 0x1000, 4096)], False)
        for tag in range(32)
    ]
    mem, port, issue = rig.memory.mem, rig.port, rig.port.engine.issue
    pack_lba = _LBA.pack_into

    def run(n: int) -> None:
        lbas = _lbas(n, 8)
        for start in range(0, n - 31, 32):
            for tag, table in enumerate(tables):
                lba = lbas[start + tag]
                pack_lba(mem, table + 4, lba & 0xFFFF, lba >> 16 & 0xFF)
            if one_per_write:  # PxSACT then PxCI per tag, as Linux's libahci issues
                for tag in range(32):
                    port.sact |= 1 << tag
                    issue(1 << tag)
            else:
                port.sact = 0xFFFFFFFF
                issue(0xFFFFFFFF)
            port.is_ = 0

    return run


WORKLOADS: dict[str, Callable[[Rig], Callable[[int], None]]] = {
    "qd1_read": lambda rig: qd1(rig, READ_DMA_EXT, False),
    "qd1_write": lambda rig: qd1(rig, WRITE_DMA_EXT, True),
    "ncq_read": lambda rig: _ncq(rig, False),
    "ncq_read_single": lambda rig: _ncq(rig, True),
    "seq_128k": seq_128k,
}


def _harness_only(rig: Rig, make: Callable[[Rig], Callable[[int], None]]) -> Callable[[int], None]:
    """The workload with the engine's issue a no-op: the harness's own cost."""
    engine = rig.port.engine
    engine.issue = lambda value: None
    try:
        return make(rig)
    finally:
        del engine.issue


def _seconds(run: Callable[[int], None], n: int) -> float:
    """CPU seconds of ``run(n)``: time the process spent descheduled is not in it."""
    start = time.process_time()
    run(n)
    return time.process_time() - start


def python_calls(run: Callable[[int], None], n: int) -> tuple[float, float]:
    """(Python calls, C calls) per command."""
    counts = {"call": 0, "c_call": 0}

    def profile(_frame, event, _arg):
        if event in counts:
            counts[event] += 1

    sys.setprofile(profile)
    try:
        run(n)
    finally:
        sys.setprofile(None)
    return counts["call"] / n, counts["c_call"] / n


def measure(name: str, device: BlockDevice, count: int, reps: int) -> str:
    make = WORKLOADS[name]
    rig = Rig(device)
    run, idle = make(rig), _harness_only(rig, make)
    run(count // 4)  # warm
    samples = [(_seconds(run, count) - _seconds(idle, count)) / count * 1e6 for _ in range(reps)]
    base_py, base_c = python_calls(idle, 320)
    py, c = python_calls(run, 320)
    if rig.port.tfd & 0xFF != 0x50 or rig.port.ci:
        raise RuntimeError(f"{name}: a command failed (PxTFD {rig.port.tfd:#x})")
    return (
        f"{name:15} {statistics.median(samples):6.2f} us/command "
        f"(min {min(samples):.2f}, max {max(samples):.2f}); "
        f"{py - base_py:.1f} Python + {c - base_c:.1f} C calls per command"
    )


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("workloads", nargs="*", metavar="WORKLOAD", help=", ".join(WORKLOADS))
    parser.add_argument("--count", type=int, default=20000)
    parser.add_argument("--reps", type=int, default=5)
    args = parser.parse_args(argv)
    unknown = set(args.workloads) - set(WORKLOADS)
    if unknown:
        parser.error(f"unknown workloads: {', '.join(sorted(unknown))}")
    with tempfile.TemporaryDirectory(prefix="ahci-engine-") as tmp:
        path = Path(tmp) / "data.img"
        with open(path, "wb") as f:
            f.write(os.urandom(DISK_SIZE))
        print(f"load average {os.getloadavg()[0]:.2f}, raw disk, {args.count} commands")
        for name in args.workloads or WORKLOADS:
            with open_chain(str(path)) as chain:
                print(measure(name, chain, args.count, args.reps), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
