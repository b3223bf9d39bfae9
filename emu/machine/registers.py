"""x86 registers read and written through libunicorn directly.

The run loop reads EIP and EFLAGS at every stop, and interrupt delivery and the
TLB fill touch a few more: the binding's ``reg_read``/``reg_write`` cost about
three times as much per call (they pick a register class on every call).
Only for registers that fit 64 bits (general, segment selectors, EFLAGS, CRn).
"""

import ctypes

from unicorn import UcError
from unicorn.unicorn_py3.unicorn import uclib


class Registers:
    def __init__(self, uc) -> None:
        self._uch = uc._uch
        self._value = ctypes.c_uint64()
        self._ref = ctypes.byref(self._value)

    def read(self, reg: int) -> int:
        self._value.value = 0  # a 32- or 16-bit register fills only its low bytes
        status = uclib.uc_reg_read(self._uch, reg, self._ref)
        if status:
            raise UcError(status)
        return self._value.value

    def write(self, reg: int, value: int) -> None:
        self._value.value = value
        status = uclib.uc_reg_write(self._uch, reg, self._ref)
        if status:
            raise UcError(status)
