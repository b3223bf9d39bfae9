"""Stops the CPU at a given host time, with no Python thread involved.

The Linux board's run loop arms it with the next moment it must look at the
guest (a local-APIC timer deadline, or soon when an interrupt waits for the
guest to enable interrupts). Unicorn's own emu_start timeout cannot serve: it
starts and joins a thread per call. A Python thread that waits and calls
emu_stop can, but it wakes twice per timer tick and must take the GIL each time,
which the run loop then waits to get back (it gives it up at every ctypes call):
that cost more wall time than the loop's own work.

So the stop comes from a POSIX timer (``timer_create`` with ``SIGEV_THREAD``):
at the deadline the C library calls libunicorn's ``uc_emu_stop`` directly, on a
thread of its own, without Python. Arming is one ``timer_settime`` call with an
absolute CLOCK_MONOTONIC time (the clock of ``time.monotonic``). A stop issued
just before emu_start begins is lost, so once the moment has passed the timer
repeats the stop every ``RESTOP_SECONDS`` until the loop arms a new moment.

Deleting a POSIX timer does not wait for a notification already on its way, so
a late ``uc_emu_stop`` could reach a Unicorn instance freed as soon as the board
is dropped. A retired timer therefore keeps its Unicorn instance alive for
``HOLD_SECONDS`` more (a late stop on an instance that no longer runs is harmless).
"""

import ctypes
import ctypes.util
import math
import os
import time
from collections import deque

from unicorn.unicorn_py3.unicorn import uclib

from emu.machine.errors import MachineError

RESTOP_SECONDS = 0.002
CLOCK_MONOTONIC = 1
SIGEV_THREAD = 2
TIMER_ABSTIME = 1
HOLD_SECONDS = 10.0

# (release time, Unicorn instance) of timers deleted recently: see the module doc.
_retired: deque[tuple[float, object]] = deque()


class _SigEvent(ctypes.Structure):
    """struct sigevent (64 bytes on Linux) with the SIGEV_THREAD members."""

    _fields_ = [
        ("value", ctypes.c_void_p),  # union sigval: the notify function's argument
        ("signo", ctypes.c_int),
        ("notify", ctypes.c_int),
        ("function", ctypes.c_void_p),  # void (*)(union sigval)
        ("attributes", ctypes.c_void_p),
        ("_padding", ctypes.c_byte * 32),
    ]


class _TimeSpec(ctypes.Structure):
    _fields_ = [("seconds", ctypes.c_long), ("nanoseconds", ctypes.c_long)]


class _ItimerSpec(ctypes.Structure):
    _fields_ = [("interval", _TimeSpec), ("value", _TimeSpec)]


def _libc() -> ctypes.CDLL:
    libc = ctypes.CDLL(ctypes.util.find_library("c"), use_errno=True)
    if not hasattr(libc, "timer_create"):
        raise MachineError("Linux guests need POSIX timers (timer_create): this C library has none")
    return libc


class StopTimer:
    def __init__(self, uc) -> None:
        """Stops ``uc`` (a Unicorn instance) when the armed moment comes."""
        self._libc = _libc()
        self._uc = uc
        self._uch = ctypes.cast(uc._uch, ctypes.c_void_p).value
        self._timer = ctypes.c_void_p()
        self._spec = _ItimerSpec()
        self._spec.interval.nanoseconds = round(RESTOP_SECONDS * 1e9)
        self._spec_ref = ctypes.byref(self._spec)
        self._when: float | None = None
        self._created = False

    def __enter__(self) -> "StopTimer":
        event = _SigEvent(value=self._uch, notify=SIGEV_THREAD)
        event.function = ctypes.cast(uclib.uc_emu_stop, ctypes.c_void_p).value
        if self._libc.timer_create(CLOCK_MONOTONIC, ctypes.byref(event), ctypes.byref(self._timer)):
            reason = os.strerror(ctypes.get_errno())
            raise MachineError(f"cannot create the CPU stop timer: {reason}")
        self._created = True
        return self

    def __exit__(self, *exc_info: object) -> None:
        if self._created:
            self._libc.timer_delete(self._timer)
            self._created = False
            now = time.monotonic()
            while _retired and _retired[0][0] <= now:
                _retired.popleft()
            _retired.append((now + HOLD_SECONDS, self._uc))

    def arm(self, when: float | None) -> None:
        """Stop the CPU at host monotonic time ``when`` (None: no stop needed)."""
        if when == self._when:
            return
        self._when = when
        value = self._spec.value
        if when is None:
            value.seconds = value.nanoseconds = 0  # disarms
        else:
            fraction, seconds = math.modf(max(when, 1e-9))  # 0 would disarm
            value.seconds, value.nanoseconds = int(seconds), int(fraction * 1e9)
        self._libc.timer_settime(self._timer, TIMER_ABSTIME, self._spec_ref, None)
