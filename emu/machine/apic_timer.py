"""The local APIC with its timer and self-IPIs, for a 64-bit OS (Intel SDM vol. 3, 11.5.4, 11.6).

:class:`TimerApic` extends the board's :class:`~emu.machine.apic.LocalApic`:

* the timer counts down at ``bus_hz`` / the divide configuration (TDCR) from the
  initial count (TMICT), in one-shot or periodic mode (LVT timer bits 17-18);
  TMCCT reads the count left. Time is the board's virtual clock, ``now()``, so
  a guest that sleeps may skip it forward. TSC-deadline mode is not offered
  (the board's CPUID leaves its feature bit clear), so it reads as one-shot.
* ICR writes with a fixed delivery mode to this CPU (shorthand self or
  all-including-self, or destination 0 / broadcast) raise the vector here
  (Linux's irq_work and reschedule IPIs on one CPU); others go nowhere.
"""

from collections.abc import Callable

from emu.machine.apic import LVT_MASKED, LVT_TIMER, LocalApic

ICR_LOW = 0x300
ICR_HIGH = 0x310
TIMER_INITIAL = 0x380
TIMER_CURRENT = 0x390
TIMER_DIVIDE = 0x3E0

TIMER_MODE_SHIFT = 17
TIMER_PERIODIC = 1
LVT_TIMER_WRITABLE = 0x700FF | LVT_MASKED  # vector, mask, mode (bits 17-18)
DELIVERY_FIXED = 0
SHORTHAND_NONE, SHORTHAND_SELF, SHORTHAND_ALL_INCLUDING_SELF = 0, 1, 2
BROADCAST = 0xFF
OWN_ID = 0


def divide_by(tdcr: int) -> int:
    """The timer's divisor for a TDCR value (bits 0, 1, 3): 2, 4, ... 128, or 1."""
    code = (tdcr & 0x3) | ((tdcr >> 1) & 0x4)
    return 1 if code == 0x7 else 2 << code


class TimerApic(LocalApic):
    def __init__(
        self,
        now: Callable[[], float],
        bus_hz: int,
        on_eoi: Callable[[int], None] | None = None,
        on_change: Callable[[], None] = lambda: None,
    ) -> None:
        """``on_change()`` is told after every register write: the next timer deadline
        or the deliverable interrupt may have changed (an EOI lets a lower one in)."""
        super().__init__(on_eoi=on_eoi)
        self._now = now
        self.bus_hz = bus_hz
        self._on_change = on_change
        self.initial = 0
        self.tdcr = 0
        self.icr_high = 0
        self.icr_low = 0
        self._start: float | None = None  # when the current count began (virtual s)
        self.fired = 0

    @property
    def periodic(self) -> bool:
        return (self.lvt[LVT_TIMER] >> TIMER_MODE_SHIFT) & 0x3 == TIMER_PERIODIC

    def _period(self) -> float:
        return self.initial * divide_by(self.tdcr) / self.bus_hz

    def deadline(self) -> float | None:
        """When the count reaches zero next (virtual seconds), or None if not counting."""
        if self._start is None:
            return None
        return self._start + self._period()

    def expire(self, now: float) -> None:
        """Raise the timer interrupt if the count has run out by ``now``."""
        deadline = self.deadline()
        if deadline is None or now < deadline:
            return
        if not self.lvt[LVT_TIMER] & LVT_MASKED:
            self.accept(self.lvt[LVT_TIMER] & 0xFF)
            self.fired += 1
        if self.periodic:
            periods = int((now - self._start) / self._period())
            self._start += periods * self._period()  # reload; ticks missed meanwhile merge
        else:
            self._start = None

    def _count(self) -> int:
        if self._start is None:
            return 0
        elapsed = int((self._now() - self._start) * self.bus_hz / divide_by(self.tdcr))
        if self.periodic:
            return self.initial - elapsed % self.initial
        return max(0, self.initial - elapsed)

    def _read32(self, offset: int) -> int:
        if offset == TIMER_INITIAL:
            return self.initial
        if offset == TIMER_CURRENT:
            return self._count()
        if offset == TIMER_DIVIDE:
            return self.tdcr
        if offset == ICR_LOW:
            return self.icr_low  # delivery status (bit 12) idle: IPIs are sent at once
        if offset == ICR_HIGH:
            return self.icr_high
        return super()._read32(offset)

    def write(self, offset: int, size: int, value: int) -> None:
        offset &= ~3
        value &= 0xFFFFFFFF
        if offset == TIMER_INITIAL:
            self.initial = value
            self._start = self._now() if value else None
        elif offset == TIMER_DIVIDE:
            self.tdcr = value & 0xB
        elif offset == LVT_TIMER:
            self.lvt[LVT_TIMER] = value & LVT_TIMER_WRITABLE
        elif offset == ICR_HIGH:
            self.icr_high = value & 0xFF000000
        elif offset == ICR_LOW:
            self.icr_low = value & 0xFFFFEFFF
            self._send_ipi(value)
        else:
            super().write(offset, size, value)
        self._on_change()

    def _send_ipi(self, icr: int) -> None:
        mode, shorthand = (icr >> 8) & 0x7, (icr >> 18) & 0x3
        destination = self.icr_high >> 24
        to_self = shorthand in (SHORTHAND_SELF, SHORTHAND_ALL_INCLUDING_SELF) or (
            shorthand == SHORTHAND_NONE and destination in (OWN_ID, BROADCAST)
        )
        if mode == DELIVERY_FIXED and to_self:
            self.accept(icr & 0xFF)
