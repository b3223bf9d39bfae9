"""The floor under our per-command figures: what Unicorn and a device in Python must pay.

    python -m bench.floor            unit costs on this machine, then a floor per bench
                                     guest and workload
    python -m bench.profiling floor  the same

Whatever a device does, every guest register access is one of Unicorn's MMIO exits
plus, for a device in Python, one ctypes callback into the interpreter; and every byte
a command moves is one kernel copy (``preadv`` from the page cache into guest RAM).
This module measures those unit costs on a bare Unicorn (no board, no AHCI), the way
emu.machine.bus maps MMIO (``uc_mmio_map`` with raw ctypes callbacks), and with a C
function from libc (``labs``, which ignores all but its first argument) standing in for
a device in compiled code that does nothing. It then counts each bench guest's register
accesses per command on our board and prints two floors per command:

- python: accesses x the Python callback + the copy: a Python device that does no AHCI
  work at all (no header, FIS or PRDT parsing, no completion) still pays this;
- compiled: accesses x the C callback + the copy.

The floors leave out the guest's own instructions and, for ``bench_msi``, entering its
interrupt handler, so they are lower bounds.
"""

from __future__ import annotations

import ctypes
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from bench.workloads import BENCH_GUESTS  # noqa: E402

MMIO_BASE = 0xFEBF0000
REGISTER = 0x138  # port 0's PxCI: any aligned dword of the page does
SENTINEL, STORED = 0x5A5A1234, 0x0BADF00D  # what the probe's register holds, what it stores
CODE = 0x1000
# (workload, the bench guests' append, bytes each command moves)
WORKLOADS = (
    ("qd1", "op=read bs=4096 pattern=rand", 4096),
    ("ncq", "op=ncq bs=4096 qd=32 pattern=rand", 4096),
    ("seq", "op=read bs=131072 pattern=seq", 131072),
)
# mov eax, [MMIO_BASE + REGISTER] (A1) or mov [..], eax (A3); dec ecx; jnz back; hlt
_LOOP_TAIL = b"\x49\x75\xf8\xf4"


def _loop(opcode: int) -> bytes:
    return bytes([opcode]) + (MMIO_BASE + REGISTER).to_bytes(4, "little") + _LOOP_TAIL


def mmio_access_us(device: str, write: bool, count: int = 100_000, reps: int = 7) -> float:
    """Median microseconds per guest MMIO access (guest loop included) with ``device``
    ("python": a raw ctypes callback returning a list element, "c": libc's labs)."""
    from unicorn import UC_ARCH_X86, UC_MODE_32, Uc
    from unicorn.unicorn_py3.unicorn import uclib
    from unicorn.x86_const import UC_X86_REG_EAX, UC_X86_REG_ECX

    from emu.machine.bus import _MMIO_READ, _MMIO_WRITE

    uc = Uc(UC_ARCH_X86, UC_MODE_32)
    uc.mem_map(0, 1 << 20)
    registers = [0] * 1024
    registers[REGISTER >> 2] = SENTINEL

    def read(_uc, offset, _size):
        return registers[offset >> 2]

    def store(_uc, offset, _size, value):
        registers[offset >> 2] = value

    if device == "python":
        keep = (_MMIO_READ(read), _MMIO_WRITE(store))
        callbacks = [ctypes.cast(cb, ctypes.c_void_p) for cb in keep]
    else:
        labs = ctypes.cast(ctypes.CDLL(None).labs, ctypes.c_void_p)
        callbacks = [labs, labs]
    status = uclib.uc_mmio_map(uc._uch, MMIO_BASE, 0x1000, callbacks[0], None, callbacks[1], None)
    if status:
        raise RuntimeError(f"uc_mmio_map failed: {status}")
    code = _loop(0xA3 if write else 0xA1)
    uc.mem_write(CODE, code)
    samples = []
    for _ in range(reps):
        uc.reg_write(UC_X86_REG_EAX, STORED)
        uc.reg_write(UC_X86_REG_ECX, count)
        start = time.perf_counter()
        uc.emu_start(CODE, CODE + len(code) - 1)
        samples.append((time.perf_counter() - start) / count * 1e6)
    if device == "python":  # the accesses reached the callback, as the board's do
        seen = registers[REGISTER >> 2] if write else uc.reg_read(UC_X86_REG_EAX)
        if seen != (STORED if write else SENTINEL):
            raise RuntimeError(f"the MMIO probe's callback was not reached ({seen:#x})")
    return statistics.median(samples)


def copy_us(nbytes: int, reps: int = 2001) -> float:
    """Median microseconds of one ``preadv`` of ``nbytes`` from a page-cached file into a
    ctypes buffer (as the engine reads into guest RAM)."""
    buffer = (ctypes.c_char * nbytes)()
    view = memoryview(buffer).cast("B")
    with tempfile.TemporaryFile(prefix="ahci-floor-") as f:
        f.write(os.urandom(nbytes))
        f.flush()
        fd = f.fileno()
        os.preadv(fd, [view], 0)
        samples = []
        for _ in range(reps):
            start = time.perf_counter()
            os.preadv(fd, [view], 0)
            samples.append(time.perf_counter() - start)
    return statistics.median(samples) * 1e6


def accesses_per_command(disk: Path, guest_name: str, append: str) -> float:
    """The guest's register accesses per command on our board (the difference of two
    runs, so boot and set-up drop out)."""
    from bench.profiling import MmioCounter, run_board

    counts = {}
    for count in (200, 1200):
        counter = MmioCounter()
        run_board(disk, f"{append} count={count}", guest_name=guest_name, hooks=counter.install)
        counts[count] = sum(counter.counts.values())
    return (counts[1200] - counts[200]) / 1000


def report() -> None:
    from bench.profiling import data_disk

    python_read = mmio_access_us("python", write=False)
    python_write = mmio_access_us("python", write=True)
    c_read = mmio_access_us("c", write=False)
    c_write = mmio_access_us("c", write=True)
    python_access = (python_read + python_write) / 2
    c_access = (c_read + c_write) / 2
    copies = {nbytes: copy_us(nbytes) for _, _, nbytes in WORKLOADS}
    load = os.getloadavg()[0]
    print(f"== Unit costs on this machine (load average {load:.2f}; medians) ==")
    print(
        f"guest MMIO access, Python callback: read {python_read:.3f} us, "
        f"write {python_write:.3f} us"
    )
    print(f"guest MMIO access, C callback:      read {c_read:.3f} us, write {c_write:.3f} us")
    print(
        "preadv from the page cache: "
        + ", ".join(f"{n // 1024} KiB {us:.2f} us" for n, us in sorted(copies.items()))
    )
    print()
    print("== Floors per command (accesses counted on our board) ==")
    print(f"{'guest':<12} {'workload':<8} {'accesses':>8} {'python us':>10} {'compiled us':>12}")
    with data_disk() as disk:
        for guest_name in BENCH_GUESTS:
            for workload, append, nbytes in WORKLOADS:
                accesses = accesses_per_command(disk, guest_name, append)
                python = accesses * python_access + copies[nbytes]
                compiled = accesses * c_access + copies[nbytes]
                print(
                    f"{guest_name:<12} {workload:<8} {accesses:>8.2f} {python:>10.2f} "
                    f"{compiled:>12.2f}"
                )


def main() -> int:
    report()
    return 0


if __name__ == "__main__":
    sys.exit(main())
