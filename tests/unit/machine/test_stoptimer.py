"""The CPU stop timer: a spinning guest stops once the armed moment has come, a stop
armed before the run starts is not lost, and a disarmed timer leaves the guest alone."""

import gc
import time
import weakref

import pytest
from unicorn import UC_ARCH_X86, UC_MODE_64, Uc
from unicorn.x86_const import UC_X86_REG_RAX

from emu.machine.stoptimer import StopTimer
from emu.machine.watchdog import Watchdog

SPIN = b"\x48\xff\xc0\xeb\xfb"  # inc rax ; jmp back


@pytest.fixture
def uc():
    uc = Uc(UC_ARCH_X86, UC_MODE_64)
    uc.mem_map(0, 0x1000)
    uc.mem_write(0, SPIN)
    return uc


def test_the_guest_stops_once_the_armed_moment_has_come(uc):
    with StopTimer(uc) as timer:
        when = time.monotonic() + 0.05
        timer.arm(when)
        uc.emu_start(0, 0x1000)
        assert time.monotonic() >= when
        assert uc.reg_read(UC_X86_REG_RAX) > 0


def test_a_moment_already_past_when_the_run_starts_still_stops_it(uc):
    with StopTimer(uc) as timer:
        timer.arm(time.monotonic() - 1)
        time.sleep(0.01)  # the first stop lands before the run: it is repeated
        uc.emu_start(0, 0x1000)


def test_a_disarmed_timer_does_not_stop_the_guest(uc):
    with StopTimer(uc) as timer, Watchdog(0.3, uc.emu_stop) as watchdog:
        timer.arm(time.monotonic() + 0.05)
        timer.arm(None)
        uc.emu_start(0, 0x1000)
        assert watchdog.reason == "timeout"  # only the watchdog ended the run


def test_a_deleted_timer_keeps_its_emulator_alive_for_a_late_stop(monkeypatch):
    from emu.machine import stoptimer

    monkeypatch.setattr(stoptimer, "_retired", stoptimer.deque())
    first = Uc(UC_ARCH_X86, UC_MODE_64)
    with StopTimer(first):
        pass
    alive = weakref.ref(first)
    del first
    gc.collect()
    assert alive() is not None  # a notification still on its way finds it
    monkeypatch.setattr(stoptimer, "HOLD_SECONDS", 0.0)
    stoptimer._retired[0] = (0.0, stoptimer._retired[0][1])  # its hold is over
    with StopTimer(Uc(UC_ARCH_X86, UC_MODE_64)):
        pass
    gc.collect()
    assert alive() is None
