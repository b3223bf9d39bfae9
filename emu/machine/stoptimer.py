"""Stops the CPU at a given host time, from its own thread.

The Linux board's run loop arms it with the next moment it must look at the
guest (a local-APIC timer deadline, or soon when an interrupt waits for the
guest to enable interrupts). Unicorn's own emu_start timeout cannot serve: it
starts and joins a thread per call. A stop issued just before emu_start begins
is lost, so once the moment has passed the stop is repeated every
``RESTOP_SECONDS`` until the loop arms a new moment.
"""

import threading
import time
from collections.abc import Callable

RESTOP_SECONDS = 0.002


class StopTimer:
    def __init__(self, stop: Callable[[], None]) -> None:
        self._stop = stop
        self._when: float | None = None
        self._quit = False
        self._cond = threading.Condition()
        self._thread = threading.Thread(target=self._run, name="stop-timer", daemon=True)

    def __enter__(self) -> "StopTimer":
        self._thread.start()
        return self

    def __exit__(self, *exc_info: object) -> None:
        with self._cond:
            self._quit = True
            self._cond.notify()
        self._thread.join()

    def arm(self, when: float | None) -> None:
        """Stop the CPU at host monotonic time ``when`` (None: no stop needed)."""
        with self._cond:
            if when != self._when:
                self._when = when
                self._cond.notify()

    def _run(self) -> None:
        with self._cond:
            while not self._quit:
                if self._when is None:
                    self._cond.wait()
                    continue
                delay = self._when - time.monotonic()
                if delay > 0:
                    self._cond.wait(delay)
                    continue
                self._stop()
                self._cond.wait(RESTOP_SECONDS)
