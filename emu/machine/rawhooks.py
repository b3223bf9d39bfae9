"""Unicorn hooks with raw ctypes callbacks, for the hooks on the hot path.

The binding wraps every callback in Python layers (argument conversion, an
exception guard) that cost microseconds per call; these add the hook with
libunicorn's own uc_hook_add. A raw callback must not raise: ctypes would
print the exception and return 0.
"""

import ctypes

from unicorn import UcError
from unicorn.unicorn_py3.unicorn import uclib


class TlbEntry(ctypes.Structure):
    _fields_ = [("paddr", ctypes.c_uint64), ("perms", ctypes.c_uint32)]


# (uc, vaddr, access, entry, user data) -> handled
TLB_FILL = ctypes.CFUNCTYPE(
    ctypes.c_bool,
    ctypes.c_void_p,
    ctypes.c_uint64,
    ctypes.c_int,
    ctypes.POINTER(TlbEntry),
    ctypes.c_void_p,
)
# (uc, address, size, user data)
BLOCK = ctypes.CFUNCTYPE(None, ctypes.c_void_p, ctypes.c_uint64, ctypes.c_uint32, ctypes.c_void_p)


def function_pointer(callback) -> ctypes.c_void_p:
    """A ctypes callback, or a C function of a loaded library, as a plain pointer."""
    return ctypes.c_void_p(ctypes.cast(callback, ctypes.c_void_p).value)


def hook_add(uc, kind: int, function: ctypes.c_void_p, begin: int = 1, end: int = 0):
    """Add a hook of ``kind`` calling ``function``; its handle. begin > end: everywhere."""
    handle = ctypes.c_size_t()
    status = uclib.uc_hook_add(
        uc._uch,
        ctypes.byref(handle),
        kind,
        function,
        None,
        ctypes.c_uint64(begin),
        ctypes.c_uint64(end),
    )
    if status:
        raise UcError(status)
    return handle


def hook_del(uc, handle: ctypes.c_size_t) -> None:
    status = uclib.uc_hook_del(uc._uch, handle)
    if status:
        raise UcError(status)
