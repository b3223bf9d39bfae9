"""Ctrl-C outside a guest run, for the `ahci-emu` process (emu.cli installs it first).

SIGINT raises KeyboardInterrupt, as Python's own handler does, and is also
remembered: Python drops an exception raised inside a finalizer or a weakref or
ctypes callback ("Exception ignored in ..."), and a Ctrl-C that lands there would
otherwise be lost and the guest run on to its time budget. The run's watchdog
(emu.machine.watchdog) takes a remembered interrupt as if it had just arrived.
This module imports nothing, so installing it costs no start-up time.
"""

_seen = False


def on_sigint(_signum: int, _frame: object) -> None:
    """The SIGINT handler: remember the interrupt, then raise KeyboardInterrupt."""
    global _seen
    _seen = True
    raise KeyboardInterrupt


def take_seen() -> bool:
    """Whether an interrupt arrived since the last call (and forget it)."""
    global _seen
    seen, _seen = _seen, False
    return seen


def quiet_unraisable(unraisable: object) -> None:
    """sys.unraisablehook: a KeyboardInterrupt Python could not raise is already
    remembered, so it is not reported; anything else is, as Python would."""
    import sys

    if not isinstance(getattr(unraisable, "exc_value", None), KeyboardInterrupt):
        sys.__unraisablehook__(unraisable)
