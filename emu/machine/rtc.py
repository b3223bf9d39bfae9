"""The MC146818 CMOS real-time clock at ports 0x70 (index) and 0x71 (data).

Time registers count from the host's wall clock at power-on plus the guest's
virtual time since (so a guest that skips idle time sees its clock move with
it), in BCD 24-hour mode as PC firmware leaves it (register B; Linux on x86
reads the RTC as BCD whatever DM says), never mid-update (register A's UIP
clear), with valid RAM and time (register D's VRT). Writes to the time
registers are accepted and dropped; the rest of the 128 bytes are CMOS RAM.
The alarm and periodic interrupts are not raised.
"""

import time
from collections.abc import Callable

SECONDS, MINUTES, HOURS, WEEKDAY, DAY, MONTH, YEAR = 0x00, 0x02, 0x04, 0x06, 0x07, 0x08, 0x09
REG_A, REG_B, REG_C, REG_D = 0x0A, 0x0B, 0x0C, 0x0D
CENTURY = 0x32
REG_A_DEFAULT = 0x26  # 32.768 kHz time base, 1024 Hz rate, UIP clear
REG_B_24H_BCD = 0x02
REG_D_VRT = 0x80
TIME_REGISTERS = frozenset({SECONDS, MINUTES, HOURS, WEEKDAY, DAY, MONTH, YEAR, CENTURY})
INDEX_MASK = 0x7F  # bit 7 of the index port is the NMI mask


class CmosRtc:
    BASE = 0x70
    LENGTH = 2

    def __init__(self, now: Callable[[], float], wall_clock: float | None = None) -> None:
        """``now()`` is the guest's clock in seconds; the RTC reads ``wall_clock``
        (default: the host's) at the ``now()`` of power-on."""
        self._now = now
        self._epoch = (time.time() if wall_clock is None else wall_clock) - now()
        self.index = 0
        self.ram = bytearray(128)
        self.ram[REG_A] = REG_A_DEFAULT
        self.ram[REG_B] = REG_B_24H_BCD
        self.ram[REG_D] = REG_D_VRT

    def read(self, offset: int, size: int) -> int:
        if offset == 0:
            return 0xFF  # the index register is write-only
        if self.index in TIME_REGISTERS:
            return self._time_register(self.index)
        if self.index == REG_C:
            return 0  # no interrupt flags (reading clears them)
        return self.ram[self.index]

    def write(self, offset: int, size: int, value: int) -> None:
        if offset == 0:
            self.index = value & INDEX_MASK
        elif self.index not in TIME_REGISTERS and self.index not in (REG_C, REG_D):
            self.ram[self.index] = value & 0xFF

    def _time_register(self, register: int) -> int:
        t = time.gmtime(self._epoch + self._now())
        value = {
            SECONDS: t.tm_sec,
            MINUTES: t.tm_min,
            HOURS: t.tm_hour,
            WEEKDAY: (t.tm_wday + 1) % 7 + 1,  # 1 = Sunday
            DAY: t.tm_mday,
            MONTH: t.tm_mon,
            YEAR: t.tm_year % 100,
            CENTURY: t.tm_year // 100,
        }[register]
        return (value // 10) << 4 | value % 10
