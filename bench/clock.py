"""The host's time-stamp counter rate, to turn the bench guests' ``tsc=`` into time.

Both machines give the guest the host's TSC: QEMU TCG without icount returns
the host's counter (plus an offset) for RDTSC, and so does Unicorn. A guest
that reads it before its first command and after its last one has timed its
commands alone, without boot and exit, whatever the host did meanwhile
around that window.
"""

from __future__ import annotations

import statistics
import time
from functools import cache

_RDTSC = b"\x0f\x31"  # rdtsc (EDX:EAX)
_CODE = 0x1000


def _read_tsc(uc) -> int:
    from unicorn.x86_const import UC_X86_REG_EAX, UC_X86_REG_EDX

    uc.emu_start(_CODE, _CODE + len(_RDTSC))
    return uc.reg_read(UC_X86_REG_EDX) << 32 | uc.reg_read(UC_X86_REG_EAX)


@cache
def tsc_hz(window: float = 0.05, samples: int = 5) -> float:
    """Counter ticks per second: the median over ``samples`` windows of ``window`` s."""
    from unicorn import UC_ARCH_X86, UC_MODE_32, Uc

    uc = Uc(UC_ARCH_X86, UC_MODE_32)
    uc.mem_map(0, 0x2000)
    uc.mem_write(_CODE, _RDTSC)
    rates = []
    for _ in range(samples):
        t0, c0 = time.perf_counter(), _read_tsc(uc)
        time.sleep(window)
        t1, c1 = time.perf_counter(), _read_tsc(uc)
        rates.append((c1 - c0) / (t1 - t0))
    return statistics.median(rates)
