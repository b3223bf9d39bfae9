"""The Linux board's clocks: virtual time that may skip idle periods, and the host TSC rate.

Guest time is host monotonic time plus every idle period skipped: when the CPU
halts with nothing to do before the next timer deadline, the board jumps the
clock to that deadline instead of sleeping. The guest's TSC is the host's TSC
(Unicorn's RDTSC) plus an offset that the board moves by the same amount, so
the TSC, the local-APIC timer and the RTC keep telling the same time.
"""

import functools
import time

from unicorn import UC_ARCH_X86, UC_MODE_64, Uc
from unicorn.x86_const import UC_X86_REG_RAX, UC_X86_REG_RDX

TSC_SAMPLE_SECONDS = 0.03
_RDTSC = b"\x0f\x31"


class VirtualClock:
    def __init__(self) -> None:
        self.skipped = 0.0

    def now(self) -> float:
        """Guest time in seconds (its origin is arbitrary)."""
        return time.monotonic() + self.skipped

    def to_host(self, when: float) -> float:
        """The host monotonic time at which guest time reaches ``when`` (if nothing skips)."""
        return when - self.skipped

    def skip_to(self, when: float) -> float:
        """Jump guest time forward to ``when``; returns the seconds skipped (0 if past)."""
        delta = max(0.0, when - self.now())
        self.skipped += delta
        return delta


@functools.cache
def host_tsc_hz() -> int:
    """The rate of the host TSC, which Unicorn's RDTSC returns (measured once)."""
    uc = Uc(UC_ARCH_X86, UC_MODE_64)
    uc.mem_map(0, 0x1000)
    uc.mem_write(0, _RDTSC)

    def sample() -> tuple[float, int]:
        before = time.perf_counter()
        uc.emu_start(0, len(_RDTSC))
        after = time.perf_counter()
        return (before + after) / 2, uc.reg_read(UC_X86_REG_RDX) << 32 | uc.reg_read(UC_X86_REG_RAX)

    t0, c0 = sample()
    time.sleep(TSC_SAMPLE_SECONDS)
    t1, c1 = sample()
    return round((c1 - c0) / (t1 - t0))
