"""The watchdog: it wakes on its deadline and on Ctrl-C/SIGTERM, however long its budget."""

import math
import os
import signal
import threading

import pytest

from emu import interrupt
from emu.machine.watchdog import Watchdog

pytestmark = pytest.mark.skipif(
    threading.current_thread() is not threading.main_thread(),
    reason="signals reach only the main thread",
)


@pytest.mark.parametrize("budget", [math.inf, 1e10, 1e300])
@pytest.mark.parametrize("signum", [signal.SIGINT, signal.SIGTERM])
def test_a_signal_wakes_a_watchdog_with_any_budget(budget, signum):
    stops = []
    with Watchdog(budget, lambda: stops.append(1)) as watchdog:
        os.kill(os.getpid(), signum)
        assert watchdog.wait(30)
        assert watchdog.reason == "interrupt"
    assert stops  # it asked the run to stop


def test_the_deadline_fires():
    with Watchdog(0.01, lambda: None) as watchdog:
        assert watchdog.wait(30)
        assert watchdog.reason == "timeout"


@pytest.mark.parametrize("budget", [math.nan, 0.0, -1.0, -math.inf])
def test_a_budget_that_never_or_always_ends_is_refused(budget):
    with pytest.raises(ValueError, match="positive"):
        Watchdog(budget, lambda: None)


def test_an_interrupt_python_dropped_before_the_run_stops_it_at_once():
    with pytest.raises(KeyboardInterrupt):  # what Python swallows inside a finalizer
        interrupt.on_sigint(signal.SIGINT, None)
    with Watchdog(math.inf, lambda: None) as watchdog:
        assert watchdog.wait(30)
        assert watchdog.reason == "interrupt"
    assert not interrupt.take_seen()  # taken by that run, not by the next


def test_signal_handlers_are_put_back_afterwards():
    before = signal.getsignal(signal.SIGINT), signal.getsignal(signal.SIGTERM)
    with Watchdog(60, lambda: None):
        pass
    assert (signal.getsignal(signal.SIGINT), signal.getsignal(signal.SIGTERM)) == before
