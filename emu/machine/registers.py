"""x86 registers read and written through libunicorn directly.

The run loop reads EIP and EFLAGS at every stop, and interrupt delivery and the
TLB fill touch a few more: the binding's ``reg_read``/``reg_write`` cost about
three times as much per call (they pick a register class on every call).
:meth:`read` and :meth:`write` take registers that fit 64 bits (general, segment
selectors, EFLAGS, CRn); :meth:`read_msr` a model-specific register (the
binding's MSR read costs about twenty times as much: the Linux board reads three
per SYSCALL). A :class:`RegisterBatch` reads or writes a fixed set of them, and
reads a descriptor-table register such as IDTR, in one call.

They call libunicorn's functions without the binding's ``argtypes``: converting
each argument through them costs more than the call itself (1.5 against 0.65 us
per uc_reg_read, measured), so the arguments are ctypes objects already, or ints
for C ints. The calls keep the GIL (``PyDLL``): these functions neither block nor
call back, and releasing and taking the GIL again cost about 0.1 us per call.
"""

import ctypes
from collections.abc import Sequence

from unicorn import UcError
from unicorn.unicorn_py3.unicorn import uclib
from unicorn.x86_const import UC_X86_REG_MSR

_libunicorn = ctypes.PyDLL(uclib._name)  # the same library, functions without argtypes
_reg_read = _libunicorn.uc_reg_read
_reg_write = _libunicorn.uc_reg_write
_reg_read_batch = _libunicorn.uc_reg_read_batch
_reg_write_batch = _libunicorn.uc_reg_write_batch


class _TableRegister(ctypes.Structure):
    """Unicorn's uc_x86_mmr: GDTR, IDTR (selector and flags unused), LDTR, TR."""

    _fields_ = [
        ("selector", ctypes.c_uint16),
        ("base", ctypes.c_uint64),
        ("limit", ctypes.c_uint32),
        ("flags", ctypes.c_uint32),
    ]


class _Msr(ctypes.Structure):
    """Unicorn's uc_x86_msr: which MSR, and its value."""

    _fields_ = [("rid", ctypes.c_uint32), ("value", ctypes.c_uint64)]


class Registers:
    def __init__(self, uc) -> None:
        self._uch = uc._uch
        self._value = ctypes.c_uint64()
        self._ref = ctypes.byref(self._value)
        self._msr = _Msr()
        self._msr_ref = ctypes.byref(self._msr)

    def read(self, reg: int) -> int:
        self._value.value = 0  # a 32- or 16-bit register fills only its low bytes
        status = _reg_read(self._uch, reg, self._ref)
        if status:
            raise UcError(status)
        return self._value.value

    def write(self, reg: int, value: int) -> None:
        self._value.value = value
        status = _reg_write(self._uch, reg, self._ref)
        if status:
            raise UcError(status)

    def read_msr(self, msr: int) -> int:
        self._msr.rid = msr
        status = _reg_read(self._uch, UC_X86_REG_MSR, self._msr_ref)
        if status:
            raise UcError(status)
        return self._msr.value


class RegisterBatch:
    """A fixed list of registers that fit 64 bits, and optionally one descriptor-table
    register, read or written together in one libunicorn call (uc_reg_read_batch /
    uc_reg_write_batch): each call through ctypes costs about as much as the register
    access itself."""

    def __init__(self, uc, regs: Sequence[int], table: int | None = None) -> None:
        self._uch = uc._uch
        self._count = len(regs)
        self._values = (ctypes.c_uint64 * self._count)()
        self._zeros = (0,) * self._count
        base = ctypes.addressof(self._values)
        pointers = [base + 8 * i for i in range(self._count)]
        ids = list(regs)
        self._table = _TableRegister() if table is not None else None
        if self._table is not None:
            ids.append(table)
            pointers.append(ctypes.addressof(self._table))
        self._all = len(ids)
        self._ids = (ctypes.c_int * self._all)(*ids)
        self._pointers = (ctypes.c_void_p * self._all)(*pointers)

    @property
    def call_arguments(self) -> tuple[int, int, int]:
        """(ids, pointers, count) as uc_reg_read_batch and uc_reg_write_batch take them,
        for machine code that makes the call itself (:mod:`emu.machine.irqwindow`)."""
        return ctypes.addressof(self._ids), ctypes.addressof(self._pointers), self._all

    def read(self) -> list[int]:
        """The registers' values in order, then the table register's base and limit."""
        self._values[:] = self._zeros  # narrower registers fill only their low bytes
        status = _reg_read_batch(self._uch, self._ids, self._pointers, self._all)
        if status:
            raise UcError(status)
        return self.values()

    def values(self) -> list[int]:
        """What the last read left (without reading again), as :meth:`read` returns it.
        Reads made by other code must be of this batch only, so that the registers
        narrower than 64 bits keep zero high bytes."""
        values = self._values[:]
        if self._table is not None:
            values += (self._table.base, self._table.limit)
        return values

    def write(self, *values: int) -> None:
        """Write the registers (not a table register: a batch that has one only reads)."""
        self.stage(*values)
        status = _reg_write_batch(self._uch, self._ids, self._pointers, self._count)
        if status:
            raise UcError(status)

    def stage(self, *values: int) -> None:
        """Hold ``values`` for a write that other code makes with :attr:`call_arguments`."""
        if self._table is not None:
            raise ValueError("a batch with a descriptor-table register only reads")
        self._values[:] = values
