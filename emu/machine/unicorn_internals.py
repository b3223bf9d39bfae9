"""The libunicorn internals a 64-bit OS needs, reached in this one module only.

Unicorn's public API cannot deliver a CPU exception through the guest's IDT,
inject an external interrupt, resume a CPU halted by HLT, move the guest's TSC,
or make an asynchronous stop exact. QEMU's own code for all of that is inside
libunicorn (some of it exported), but it takes the CPU's state structures, which
no API exposes. This module knows where they are, for the Unicorn versions
pyproject.toml allows:

* ``LAYOUTS`` gives, per libunicorn version, the offsets of the fields used
  (``uc_struct``, QEMU's ``CPUState`` and ``CPUX86State``). They are fixed by
  the version's build (the manylinux wheel), never searched for at run time.
* :func:`self_check` runs a tiny 64-bit program on a scratch CPU and checks
  every offset and entry point by its effect (a page fault delivered with its
  error code and CR2, a HLT resumed, the TSC moved, registers found where the
  layout says). The Linux board calls it before it builds anything.
* Any mismatch raises :class:`UnicornInternalsError`: one line, and Linux
  guests are refused.

The multiboot board uses one field only, and never depends on it:
:func:`eflags_address` gives the interrupt window (emu.machine.irqwindow) where
EFLAGS.IF lives, after checking that the field follows IF as it is set and
cleared; with a libunicorn whose layout is not known (another version, a
library other than the wheel's, another host) it gets None and reads EFLAGS
through uc_reg_read instead.
"""

import ctypes
import functools
import os
import struct
import sys
from dataclasses import dataclass

from unicorn import UC_ARCH_X86, UC_HOOK_INTR, UC_MODE_64, UC_TLB_CPU, Uc, UcError, uc_version
from unicorn.unicorn_py3 import unicorn as _binding
from unicorn.unicorn_py3.unicorn import uclib
from unicorn.x86_const import (
    UC_X86_REG_CR0,
    UC_X86_REG_CR2,
    UC_X86_REG_CR3,
    UC_X86_REG_CR4,
    UC_X86_REG_CS,
    UC_X86_REG_DR0,
    UC_X86_REG_DR1,
    UC_X86_REG_DR2,
    UC_X86_REG_DR3,
    UC_X86_REG_DS,
    UC_X86_REG_EFLAGS,
    UC_X86_REG_GDTR,
    UC_X86_REG_IDTR,
    UC_X86_REG_MSR,
    UC_X86_REG_R15,
    UC_X86_REG_RAX,
    UC_X86_REG_RDX,
    UC_X86_REG_RIP,
    UC_X86_REG_RSP,
    UC_X86_REG_SS,
)

from emu.machine.errors import MachineError
from emu.machine.interrupts import EFLAGS_IF

SEG_CS = 1  # QEMU's R_CS, R_SS: segment indices for cpu_x86_load_seg
SEG_SS = 2
HF_CPL_MASK = 0x3
HF_INHIBIT_IRQ = 1 << 3  # the instruction after STI / MOV SS: no interrupt yet
EFLAGS_ARITH = 0x8D5  # CF PF AF ZF SF OF: held lazily outside env->eflags while running
EFLAGS_DF = 1 << 10
NO_EXCEPTION = -1


class UnicornInternalsError(MachineError):
    """The installed libunicorn is not one whose internals this board knows."""


@dataclass(frozen=True)
class Layout:
    """Byte offsets inside libunicorn's structures, for one libunicorn version."""

    uc_cpu: int  # uc_struct.cpu: CPUState * (the X86CPU)
    uc_no_exit_request: int  # uc_struct.no_exit_request (bool)
    cpu_env: int  # X86CPU.env (CPUX86State) from the start of the X86CPU
    cpu_halted: int  # CPUState.halted (uint32)
    env_eip: int
    env_eflags: int
    env_df: int  # int32: +1 or -1
    env_hflags: int  # uint32
    env_error_code: int  # int32
    env_dr: int  # target_ulong dr[8]
    env_old_exception: int  # int32: exception in flight (-1: none)
    env_tsc_offset: int  # uint64: added to the host TSC by RDTSC


# libunicorn 2.1.4 (QEMU 5.0.x inside), x86_64 Linux wheel.
LAYOUTS = {
    (2, 1, 4): Layout(
        uc_cpu=0x1B8,
        uc_no_exit_request=0x7F2,
        cpu_env=0x8A50,
        cpu_halted=0x8198,
        env_eip=0x80,
        env_eflags=0x88,
        env_df=0xAC,
        env_hflags=0xB0,
        env_error_code=0x1508,
        env_dr=0x1518,
        env_old_exception=0x1578,
        env_tsc_offset=0x1588,
    ),
}


def library_version() -> tuple[int, int, int]:
    """libunicorn's own version (the binary's, not the Python binding's)."""
    combined = uc_version()[2]
    return (combined >> 24) & 0xFF, (combined >> 16) & 0xFF, (combined >> 8) & 0xFF


def library_path() -> str:
    """The libunicorn file the binding loaded."""
    return uclib._name


def bundled() -> bool:
    """The binding loaded the libunicorn the x86_64 Linux wheel bundles, the build LAYOUTS
    describe (not one named by LIBUNICORN_PATH or found on the system, nor another
    host's build, whose layouts may differ)."""
    if sys.platform != "linux" or os.uname().machine != "x86_64":
        return False
    package = os.path.dirname(os.path.dirname(os.path.abspath(_binding.__file__)))
    return os.path.dirname(os.path.abspath(library_path())) == os.path.join(package, "lib")


def _layout() -> Layout:
    version = library_version()
    layout = LAYOUTS.get(version)
    if layout is None:
        known = ", ".join(".".join(map(str, v)) for v in sorted(LAYOUTS))
        raise UnicornInternalsError(
            f"Linux guests need libunicorn {known} (its internal layout is known); "
            f"this is {'.'.join(map(str, version))}"
        )
    if not bundled():
        raise UnicornInternalsError(
            f"Linux guests need the libunicorn the unicorn wheel bundles for x86_64 Linux "
            f"(its internal layout is known); this one is {library_path()}"
        )
    return layout


def _function(name: str, argtypes: list) -> ctypes._CFuncPtr:
    try:
        fn = getattr(uclib, name)
    except AttributeError:
        raise UnicornInternalsError(
            f"libunicorn exports no {name}: Linux guests are refused"
        ) from None
    fn.argtypes = argtypes
    fn.restype = None
    return fn


_u32p = ctypes.POINTER(ctypes.c_uint32)


def _env(uc: Uc, layout: Layout) -> tuple[int, int]:
    """(the X86CPU, its CPUX86State): the addresses of ``uc``'s CPU state."""
    uch = ctypes.cast(uc._uch, ctypes.c_void_p).value
    cpu = ctypes.c_uint64.from_address(uch + layout.uc_cpu).value
    return cpu, cpu + layout.cpu_env


def eflags_address(uc: Uc) -> int | None:
    """The address of ``uc``'s env->eflags, where QEMU keeps IF (STI, CLI, POPF and IRET
    write it there; only the arithmetic flags and DF live elsewhere while code runs), or
    None when this libunicorn's layout is unknown or the field does not follow IF as
    uc_reg_write sets and clears it. Call it while the CPU is stopped."""
    if not bundled():
        return None
    layout = LAYOUTS.get(library_version())
    if layout is None:
        return None
    saved = uc.reg_read(UC_X86_REG_EFLAGS)  # (the first call creates the CPU)
    cpu, env = _env(uc, layout)
    if not cpu:
        return None
    field = ctypes.c_uint32.from_address(env + layout.env_eflags)
    seen = []
    try:
        for value in (saved | EFLAGS_IF, saved & ~EFLAGS_IF, saved | EFLAGS_IF):
            uc.reg_write(UC_X86_REG_EFLAGS, value)
            seen.append(field.value & EFLAGS_IF)
    finally:
        uc.reg_write(UC_X86_REG_EFLAGS, saved)
    return env + layout.env_eflags if seen == [EFLAGS_IF, 0, EFLAGS_IF] else None


class CpuInternals:
    """One Unicorn CPU's internal state and QEMU's delivery functions for it."""

    def __init__(self, uc: Uc, layout: Layout | None = None) -> None:
        self.layout = lay = layout or _layout()
        self._uc = uc
        self._uch = ctypes.cast(uc._uch, ctypes.c_void_p).value
        self.cpu, self.env = _env(uc, lay)
        self._do_interrupt = _function("x86_cpu_do_interrupt_x86_64", [ctypes.c_void_p])
        self._hardirq = _function(
            "do_interrupt_x86_hardirq_x86_64", [ctypes.c_void_p, ctypes.c_int, ctypes.c_int]
        )
        self._load_seg = _function(
            "cpu_x86_load_seg_x86_64", [ctypes.c_void_p, ctypes.c_int, ctypes.c_int]
        )
        self._cpuid = _function(
            "cpu_x86_cpuid_x86_64",
            [ctypes.c_void_p, ctypes.c_uint32, ctypes.c_uint32] + [_u32p] * 4,
        )
        self._halted = ctypes.c_uint32.from_address(self.cpu + lay.cpu_halted)
        self._eip = ctypes.c_uint64.from_address(self.env + lay.env_eip)
        self._eflags = ctypes.c_uint64.from_address(self.env + lay.env_eflags)
        self._df = ctypes.c_int32.from_address(self.env + lay.env_df)
        self._hflags = ctypes.c_uint32.from_address(self.env + lay.env_hflags)
        self._error_code = ctypes.c_int32.from_address(self.env + lay.env_error_code)
        self._old_exception = ctypes.c_int32.from_address(self.env + lay.env_old_exception)
        self._tsc_offset = ctypes.c_uint64.from_address(self.env + lay.env_tsc_offset)
        self._no_exit_request = ctypes.c_uint8.from_address(self._uch + lay.uc_no_exit_request)

    # -- checks -----------------------------------------------------------------------

    def verify_registers(self) -> None:
        """The layout's pointers and offsets hold this CPU's registers (cheap; any Uc)."""
        uc = self._uc
        saved = {r: uc.reg_read(r) for r in (UC_X86_REG_RAX, UC_X86_REG_R15, UC_X86_REG_RIP)}
        drs = (UC_X86_REG_DR0, UC_X86_REG_DR1, UC_X86_REG_DR2, UC_X86_REG_DR3)
        try:
            uc.reg_write(UC_X86_REG_RAX, 0x5A17C0DE00000001)
            uc.reg_write(UC_X86_REG_R15, 0x5A17C0DE0000000F)
            uc.reg_write(UC_X86_REG_RIP, 0x5A17C0DE00001000)
            for i, reg in enumerate(drs):
                uc.reg_write(reg, 0x0DB6000000000000 | i)
            regs = struct.unpack("<16Q", ctypes.string_at(self.env, 128))
            dr = struct.unpack("<4Q", ctypes.string_at(self.env + self.layout.env_dr, 32))
            found = (regs[0], regs[15], self._eip.value, dr)
            expected = (
                0x5A17C0DE00000001,
                0x5A17C0DE0000000F,
                0x5A17C0DE00001000,
                tuple(0x0DB6000000000000 | i for i in range(4)),
            )
        finally:
            for reg, value in saved.items():
                uc.reg_write(reg, value)
            for reg in drs:
                uc.reg_write(reg, 0)
        if found != expected:
            raise UnicornInternalsError(
                "libunicorn's CPU state is not where the layout for this version says: "
                "Linux guests are refused"
            )
        if self._no_exit_request.value not in (0, 1):
            raise UnicornInternalsError("libunicorn's uc_struct.no_exit_request is not a bool")

    # -- state ------------------------------------------------------------------------

    @property
    def halted(self) -> bool:
        return bool(self._halted.value)

    def wake(self) -> None:
        """Leave the HLT state (QEMU keeps the CPU halted until its own IRQ logic runs)."""
        self._halted.value = 0

    @property
    def interrupt_shadow(self) -> bool:
        """The CPU is in an STI / MOV SS shadow: no external interrupt before the next insn."""
        return bool(self._hflags.value & HF_INHIBIT_IRQ)

    @property
    def old_exception(self) -> int:
        """The exception being delivered (-1 when none): 8 while a #DF is in flight."""
        return self._old_exception.value

    def forget_exception(self) -> None:
        """Mark no exception in flight. Unicorn's mem_map/mem_unmap invalidate translated
        code by translating the region's address through the guest MMU as if it were a
        code address; where the guest maps nothing there, that raises a page fault that
        is never delivered but stays recorded (old_exception = 14, CR2, error code), and
        the guest's next real page fault would become a double fault."""
        self._old_exception.value = NO_EXCEPTION

    @property
    def error_code(self) -> int:
        return self._error_code.value & 0xFFFFFFFF

    @property
    def tsc_offset(self) -> int:
        return self._tsc_offset.value

    @tsc_offset.setter
    def tsc_offset(self, value: int) -> None:
        self._tsc_offset.value = value & 0xFFFFFFFFFFFFFFFF

    def exact_stops(self) -> None:
        """Make every stop land at the start of a translated block.

        Unicorn otherwise checks for a stop request after each guest memory access; a
        stop taken there leaves RIP on that instruction and the resumed run executes it
        again (a read-modify-write counts twice). The flag confines the check to block
        entries, where RIP is exact; code translated before is dropped.
        """
        self._no_exit_request.value = 1
        self._uc.ctl_flush_tb()

    # -- what the CPU does ----------------------------------------------------------------

    def deliver_exception(self) -> None:
        """Deliver the exception Unicorn is reporting to a UC_HOOK_INTR / INSN_INVALID hook
        through the guest's IDT, as QEMU's CPU loop would (error code, CR2, IST, ring
        switch). Only call it from such a hook."""
        self._do_interrupt(self.cpu)

    def deliver_interrupt(self, vector: int) -> None:
        """Enter the handler of external interrupt ``vector`` (between runs, IF=1)."""
        self._hardirq(self.env, vector, 1)
        self.wake()

    def syscall(self, star: int, lstar: int, fmask: int, insn_length: int) -> None:
        """The CS/SS, RFLAGS and RIP part of SYSCALL in long mode (RCX/R11 are the caller's).
        Unicorn adds the instruction length to RIP after the SYSCALL hook returns."""
        selector = (star >> 32) & 0xFFFC
        self._hflags.value &= ~HF_CPL_MASK
        self._load_seg(self.env, SEG_CS, selector)
        self._load_seg(self.env, SEG_SS, selector + 8)
        # Inside a run the arithmetic flags live outside env->eflags and DF in env->df:
        # only the others may be cleared here (reg_write would clobber the lazy flags).
        self._eflags.value &= ~(fmask & ~(EFLAGS_ARITH | EFLAGS_DF))
        if fmask & EFLAGS_DF:
            self._df.value = 1
        self._eip.value = (lstar - insn_length) & 0xFFFFFFFFFFFFFFFF

    def cpuid(self, leaf: int, subleaf: int) -> tuple[int, int, int, int]:
        """What QEMU's model of this CPU answers for CPUID ``leaf``/``subleaf``."""
        regs = [ctypes.c_uint32() for _ in range(4)]
        self._cpuid(self.env, leaf, subleaf, *(ctypes.byref(r) for r in regs))
        return regs[0].value, regs[1].value, regs[2].value, regs[3].value


# -- the self-check ------------------------------------------------------------------------

_PROBE_RAM = 0x20000
_PML4, _PDPT, _PD = 0x1000, 0x2000, 0x3000
_GDT, _IDT, _STACK = 0x4000, 0x5000, 0x9000
_CODE, _HANDLER = 0x6000, 0x7000
_UNMAPPED = 0x40000000  # outside the probe's 1 GiB of identity mapping
_PF_WRITE = 0x2  # page-fault error code: a write to a non-present page


def _probe_machine(uc: Uc) -> None:
    """1 GiB identity-mapped in long mode, a #PF gate to _HANDLER, code at _CODE."""
    uc.mem_map(0, _PROBE_RAM)
    uc.mem_write(_PML4, struct.pack("<Q", _PDPT | 3))
    uc.mem_write(_PDPT, struct.pack("<Q", _PD | 3))
    uc.mem_write(_PD, b"".join(struct.pack("<Q", (i << 21) | 0x83) for i in range(512)))
    uc.mem_write(_GDT, struct.pack("<3Q", 0, 0x00AF9A000000FFFF, 0x00CF92000000FFFF))
    gate = struct.pack("<HHBBHII", _HANDLER & 0xFFFF, 0x08, 0, 0x8E, _HANDLER >> 16, 0, 0)
    uc.mem_write(_IDT + 14 * 16, gate)
    # mov dword [_UNMAPPED], eax ; (resumed here by nobody) ; handler: hlt ; rdtsc ; hlt
    uc.mem_write(_CODE, b"\x89\x04\x25" + struct.pack("<I", _UNMAPPED) + b"\xf4")
    uc.mem_write(_HANDLER, b"\xf4\x0f\x31\xf4")
    uc.reg_write(UC_X86_REG_GDTR, (0, _GDT, 23, 0))
    uc.reg_write(UC_X86_REG_IDTR, (0, _IDT, 16 * 32 - 1, 0))
    uc.reg_write(UC_X86_REG_CR3, _PML4)
    uc.reg_write(UC_X86_REG_CR4, 0x20)  # PAE
    uc.reg_write(UC_X86_REG_MSR, (0xC0000080, 0x500))  # EFER: LME | LMA
    uc.reg_write(UC_X86_REG_CR0, 0x80000011)
    uc.reg_write(UC_X86_REG_CS, 0x08)
    for reg in (UC_X86_REG_DS, UC_X86_REG_SS):
        uc.reg_write(reg, 0x10)
    uc.reg_write(UC_X86_REG_RSP, _STACK)
    uc.reg_write(UC_X86_REG_EFLAGS, 0x2)


def _run_probe(layout: Layout) -> str | None:
    """The first thing that does not behave as the layout predicts, or None."""
    uc = Uc(UC_ARCH_X86, UC_MODE_64)
    uc.ctl_set_tlb_mode(UC_TLB_CPU)
    cpu = CpuInternals(uc, layout)
    cpu.verify_registers()
    _probe_machine(uc)
    seen: dict[str, int] = {}

    def on_exception(_uc, vector, _ud):
        seen.update(vector=vector, error=cpu.error_code, old=cpu.old_exception)
        cpu.deliver_exception()

    uc.hook_add(UC_HOOK_INTR, on_exception)
    try:
        uc.emu_start(_CODE, _CODE + 0x100)
    except UcError as exc:
        return f"the page-fault probe stopped: {exc}"
    if seen != {"vector": 14, "error": _PF_WRITE, "old": 14}:
        return f"the page fault was reported as {seen}"
    rip, rsp = uc.reg_read(UC_X86_REG_RIP), uc.reg_read(UC_X86_REG_RSP)
    frame = struct.unpack("<6Q", uc.mem_read(rsp, 48))
    if (rip, frame[0], frame[1], uc.reg_read(UC_X86_REG_CR2)) != (
        _HANDLER + 1,
        _PF_WRITE,
        _CODE,
        _UNMAPPED,
    ):
        return "the page fault was not delivered through the IDT with its error code and CR2"
    if cpu.old_exception != NO_EXCEPTION or cpu._halted.value != 1:
        return "the CPU's exception and halt state are not where the layout says"
    cpu.wake()
    cpu.tsc_offset = 1 << 62
    uc.emu_start(rip, rip + 0x10)
    tsc = uc.reg_read(UC_X86_REG_RDX) << 32 | uc.reg_read(UC_X86_REG_RAX)
    if uc.reg_read(UC_X86_REG_RIP) != _HANDLER + 4 or tsc < 1 << 62:
        return "a halted CPU did not resume, or the TSC offset did not move RDTSC"
    return None


@functools.cache
def self_check() -> Layout:
    """Check this libunicorn's internals once per process; the layout, or refuse."""
    layout = _layout()
    problem = _run_probe(layout)
    if problem is not None:
        version = ".".join(map(str, library_version()))
        raise UnicornInternalsError(
            f"libunicorn {version} does not behave as its known layout predicts ({problem}): "
            "Linux guests are refused"
        )
    return layout
