"""QEMU's isa-debug-exit at 0xF4 (iosize 4): a write of N ends the run with status N.

QEMU itself exits with (N << 1) | 1; the oracle harness converts.
"""

from collections.abc import Callable

BASE = 0xF4
LENGTH = 4


class DebugExit:
    def __init__(self, on_exit: Callable[[int], None]) -> None:
        self._on_exit = on_exit

    def read(self, offset: int, size: int) -> int:
        return (1 << (8 * size)) - 1

    def write(self, offset: int, size: int, value: int) -> None:
        self._on_exit(value)
