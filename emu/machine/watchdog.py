"""Stops a running guest from another thread: on its time budget, on Ctrl-C or SIGTERM.

Unicorn runs guest code inside a C call that holds no GIL and runs no Python
until a hook fires, so a Python signal handler alone could wait forever on a
guest spinning in a tight loop. The C-level handler writes the signal number to
a wake-up pipe (``signal.set_wakeup_fd``); this thread waits on that pipe and
on the deadline, and calls ``stop`` until the run loop acknowledges.

An interrupt that arrived before the run and that Python dropped (see
emu.interrupt) stops the run as soon as it starts.
"""

import os
import select
import signal
import threading
import time
from collections.abc import Callable

from emu import interrupt

_QUIT = b"\xff"
_RESTOP_INTERVAL = 0.05  # re-issue stop: one issued between two emu_start calls is lost
_LONGEST_WAIT = 3600.0  # poll() takes at most 2**31 - 1 ms (24.8 days); wait in slices


class Watchdog:
    def __init__(self, timeout: float, stop: Callable[[], None]) -> None:
        if not timeout > 0:  # also refuses NaN, which would make the deadline never come
            raise ValueError(f"watchdog timeout must be positive, not {timeout!r}")
        self.timeout = timeout
        self._stop = stop
        self.reason: str | None = None  # "timeout" or "interrupt" once fired
        self._fired = threading.Event()
        self._read_fd, self._write_fd = os.pipe()
        os.set_blocking(self._write_fd, False)
        self._poll = select.poll()  # not select(): a run's descriptors may pass FD_SETSIZE
        self._poll.register(self._read_fd, select.POLLIN)
        self._thread = threading.Thread(target=self._watch, name="watchdog", daemon=True)
        self._saved: dict[int, object] = {}
        self._saved_wakeup_fd: int | None = None

    def __enter__(self) -> "Watchdog":
        if threading.current_thread() is threading.main_thread():
            self._saved_wakeup_fd = signal.set_wakeup_fd(self._write_fd)
            try:
                for signum in (signal.SIGINT, signal.SIGTERM):
                    self._saved[signum] = signal.signal(signum, lambda *_: None)
            except BaseException:  # a pending Ctrl-C raised here: leave nothing installed
                self._restore_signals()
                os.close(self._read_fd)
                os.close(self._write_fd)
                raise
        if interrupt.take_seen():  # an interrupt before this run that Python dropped
            os.write(self._write_fd, bytes([signal.SIGINT]))
        self._thread.start()
        return self

    def __exit__(self, *exc_info: object) -> None:
        os.write(self._write_fd, _QUIT)
        self._thread.join()
        self._restore_signals()
        os.close(self._read_fd)
        os.close(self._write_fd)

    def _restore_signals(self) -> None:
        if self._saved_wakeup_fd is not None:
            signal.set_wakeup_fd(self._saved_wakeup_fd)
        for signum, handler in self._saved.items():
            signal.signal(signum, handler)

    def wait(self, seconds: float | None = None) -> bool:
        """Block until the watchdog fires (or ``seconds`` pass); True if it fired."""
        return self._fired.wait(seconds)

    def _watch(self) -> None:
        deadline = time.monotonic() + self.timeout
        while self.reason is None:
            wait = min(_LONGEST_WAIT, max(0.0, deadline - time.monotonic()))
            ready = self._poll.poll(wait * 1000)
            if ready:
                data = os.read(self._read_fd, 64)
                if _QUIT in data:
                    return
                self.reason = "interrupt"
            elif time.monotonic() >= deadline:
                self.reason = "timeout"
        self._fired.set()
        while True:  # keep stopping until the run loop has seen the reason and quit
            self._stop()
            ready = self._poll.poll(_RESTOP_INTERVAL * 1000)
            if ready and _QUIT in os.read(self._read_fd, 64):
                return
