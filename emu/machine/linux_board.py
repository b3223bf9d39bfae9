"""The board for a 64-bit OS: a stock x86-64 Linux kernel on the q35-shaped board.

:class:`LinuxBoard` is the multiboot :class:`~emu.machine.board.Board` (same RAM,
buses, PCI functions, AHCI controller, UART, I/O APIC, debug exit) with what a
64-bit OS needs on top:

* Unicorn in 64-bit mode with the CPU's own MMU (UC_TLB_CPU: 4-level paging,
  permissions, real page faults);
* CPU exceptions and INT n delivered through the guest's IDT with their error
  code and CR2, #UD included; SYSCALL; external interrupts injected between
  translated blocks while RFLAGS.IF allows (see :mod:`unicorn_internals`);
* CPUID as Unicorn's model answers it, plus leaves 15h/16h (TSC and core
  crystal rates, so the OS needs no PIT to calibrate), ARAT and an invariant
  TSC; no x2APIC and no TSC-deadline timer;
* a local APIC with its timer and self-IPIs, the 8259 pair (present, masked),
  the CMOS RTC, UART interrupts on I/O APIC input 4, and an MP table;
* HLT that sleeps until the next interrupt: with nothing to do before the next
  timer deadline, virtual time jumps to it (the TSC moves with it);
* BAR moves applied between translated blocks, never inside one;
* a kernel panic or a triple fault ends the run with its own exit status.
"""

import os
import time
from dataclasses import replace
from typing import BinaryIO

from unicorn import (
    UC_HOOK_INSN,
    UC_HOOK_INSN_INVALID,
    UC_MODE_64,
    UC_TLB_CPU,
    Uc,
    UcError,
)
from unicorn.x86_const import (
    UC_X86_INS_CPUID,
    UC_X86_INS_SYSCALL,
    UC_X86_REG_CR0,
    UC_X86_REG_CR2,
    UC_X86_REG_CR3,
    UC_X86_REG_CR4,
    UC_X86_REG_CS,
    UC_X86_REG_DS,
    UC_X86_REG_EAX,
    UC_X86_REG_EBX,
    UC_X86_REG_ECX,
    UC_X86_REG_EDX,
    UC_X86_REG_ES,
    UC_X86_REG_GDTR,
    UC_X86_REG_IDTR,
    UC_X86_REG_MSR,
    UC_X86_REG_R11,
    UC_X86_REG_RCX,
    UC_X86_REG_RFLAGS,
    UC_X86_REG_RIP,
    UC_X86_REG_RSI,
    UC_X86_REG_RSP,
    UC_X86_REG_SS,
)

from emu.machine import mptable, pic8259
from emu.machine.apic_timer import TimerApic
from emu.machine.board import AHCI_GSI, Board, BoardConfig
from emu.machine.bus import MmioRegion
from emu.machine.bzimage import (
    CODE_SELECTOR,
    DATA_SELECTOR,
    GDT_ADDRESS,
    PAGE_TABLES,
    STACK_TOP,
    load_linux,
)
from emu.machine.errors import GuestFault, KernelPanic
from emu.machine.interrupts import EFLAGS_IF, EFLAGS_RF
from emu.machine.pagewalk import translate_long
from emu.machine.rtc import CmosRtc
from emu.machine.stoptimer import StopTimer
from emu.machine.unicorn_internals import CpuInternals, self_check
from emu.machine.vclock import VirtualClock, host_tsc_hz
from emu.machine.watchdog import Watchdog

CRYSTAL_HZ = 25_000_000  # CPUID 15h core crystal = the local-APIC timer's input clock
MP_TABLE_ADDRESS = 0xF0000
AHCI_DEVICE = 31
BLOCKED_IRQ_POLL = 0.0001  # s: look again this soon when IF=0 holds an interrupt back
STOP_STORM_ENV = "AHCI_EMU_STOP_STORM_US"  # debugging: stop at least this often (µs)
DOUBLE_FAULT = 8
INVALID_OPCODE = 6
IDT_GATE_SIZE = 16
GATE_PRESENT = 0x80
GATE_INTERRUPT_OR_TRAP = 0xE  # types 0xE and 0xF: bit 0 tells them apart

MSR_EFER, MSR_STAR, MSR_LSTAR, MSR_FMASK = 0xC0000080, 0xC0000081, 0xC0000082, 0xC0000084
EFER_LME_LMA = 0x500
CR0_BOOT = 0x80000011  # PG | ET | PE
CR4_PAE = 0x20
SYSCALL_LENGTH = 2
USER_HALF_END = 0x00007FFFFFFFFFFF  # the canonical lower half: user space

CPUID_1_ECX_X2APIC = 1 << 21
CPUID_1_ECX_TSC_DEADLINE = 1 << 24
CPUID_6_EAX_ARAT = 1 << 2  # the APIC timer keeps running in deep C-states
CPUID_80000007_EDX_INVARIANT_TSC = 1 << 8
CPUID_TSC_LEAF = 0x15
CPUID_FREQUENCY_LEAF = 0x16

# Legacy PC ports Linux probes that nothing on this board decodes: answered as open
# bus without a warning (they are known absent, not strays): Super I/O configuration,
# PIT, port B, POST code/delay, DMA page registers, COM2-COM4, the i8042 keyboard
# controller.
ABSENT_LEGACY_PORTS = (
    (0x2E, 2),
    (0x4E, 2),
    (0x40, 4),
    (0x61, 1),
    (0x80, 0x10),
    (0x2F8, 8),
    (0x3E8, 8),
    (0x2E8, 8),
    (0x60, 1),
    (0x64, 1),
)
PANIC_END = b"---[ end Kernel panic - not syncing: "
LINE_KEPT = 512  # bytes of each console line searched for PANIC_END


class PanicWatch:
    """Holds the console's bytes until the run loop flushes them, and notices the line
    that ends a kernel panic as soon as it is written.

    The kernel writes its console a byte at a time (tens of thousands per boot): one
    write to the output per byte cost more than the UART itself. The run loop flushes
    whenever the CPU is stopped (every timer tick while the guest runs, before any
    wait, and when the run ends), so output shows as promptly as the guest runs."""

    def __init__(self, output: BinaryIO, on_panic) -> None:
        self._output = output
        self._on_panic = on_panic
        self._unwritten = bytearray()
        self._line = bytearray()

    def write(self, data: bytes) -> int:
        self._unwritten += data
        start = 0
        while (end := data.find(b"\n", start)) >= 0:
            self._take(data[start:end])
            self._end_line()
            start = end + 1
        self._take(data[start:])
        return len(data)

    def _take(self, part: bytes) -> None:
        room = LINE_KEPT - len(self._line)
        if room > 0:
            self._line += part[:room]

    def _end_line(self) -> None:
        line = bytes(self._line)
        self._line.clear()
        at = line.find(PANIC_END)
        if at >= 0:
            reason = line[at + len(PANIC_END) :].strip().removesuffix(b"]---").strip()
            self._on_panic(reason.decode(errors="replace"))

    def flush(self) -> None:
        if self._unwritten:
            data = bytes(self._unwritten)
            self._unwritten.clear()
            self._output.write(data)
            self._output.flush()


def _absent(_offset: int, size: int) -> int:
    return (1 << (8 * size)) - 1


def _ignore(_offset: int, _size: int, _value: int) -> None:
    return None


class LinuxBoard(Board):
    CPU_MODE = UC_MODE_64

    def __init__(self, config: BoardConfig) -> None:
        layout = self_check()  # refuse before building anything on unknown internals
        self.clock = VirtualClock()
        self.tsc_hz = host_tsc_hz()
        self.panic: str | None = None
        self._stopper: StopTimer | None = None
        self._storm = stop_storm_seconds()
        self._pending_moves: dict[MmioRegion, int | None] = {}
        self.console = PanicWatch(config.serial, self._on_panic)
        super().__init__(replace(config, serial=self.console))
        uc = self.uc
        self.cpu = CpuInternals(uc, layout)
        self.cpu.verify_registers()
        # Runs end only by a stop: with exits enabled and none set, Unicorn does not
        # invalidate the code at "until" after each run (through the guest MMU: a page
        # fault nobody delivers, which poisons the next one into a double fault).
        uc.ctl_exits_enabled(True)
        uc.ctl_set_exits([])
        self.cpu.exact_stops()
        self.ioapic.id = mptable.IOAPIC_ID
        self.pics = (pic8259.Pic8259(), pic8259.Pic8259())
        for base, pic in zip((pic8259.MASTER_BASE, pic8259.SLAVE_BASE), self.pics, strict=True):
            self.ports.register(base, pic8259.LENGTH, pic.read, pic.write)
        self.rtc = CmosRtc(self.clock.now)
        self.ports.register(CmosRtc.BASE, CmosRtc.LENGTH, self.rtc.read, self.rtc.write)
        for base, length in ABSENT_LEGACY_PORTS:
            self.ports.register(base, length, _absent, _ignore)
        uc.hook_add(UC_HOOK_INSN_INVALID, self._invalid_opcode)

    # -- what the base board builds differently -------------------------------------------

    def _add_cpu_hooks(self, uc: Uc) -> None:
        """SYSCALL and CPUID hooks, first in Unicorn's instruction-hook list.

        Unicorn's SYSCALL and CPUID helpers walk that list and give up at the first
        entry after which a stop is pending, whichever instruction the entry is for: a
        hook further down is then skipped and the instruction does nothing (a skipped
        SYSCALL returns to user space with RAX unchanged). A stop may be pending at any
        time (the timer thread asks for one), so the SYSCALL hook comes first, limited
        to the user half of the address space (only user code executes SYSCALL): in the
        kernel the walk passes over it without that check and reaches the CPUID hook. A
        CPUID in user space may still meet Unicorn's own answer, which differs only in
        the leaves the kernel reads (15h, 16h, 6, 80000007h)."""
        uc.hook_add(UC_HOOK_INSN, self._syscall, None, 0, USER_HALF_END, UC_X86_INS_SYSCALL)
        uc.hook_add(UC_HOOK_INSN, self._cpuid, None, 1, 0, UC_X86_INS_CPUID)

    def _setup_mmu(self, uc: Uc) -> None:
        uc.ctl_set_tlb_mode(UC_TLB_CPU)

    def _make_apic(self) -> TimerApic:
        return TimerApic(
            self.clock.now,
            CRYSTAL_HZ,
            on_eoi=self.ioapic.end_of_interrupt,
            on_change=self._apic_changed,
        )

    def _move_region(self, region: MmioRegion, base: int | None) -> None:
        """Remapping MMIO inside a translated block makes Unicorn fetch from the wrong
        page: note the move, stop at the end of the block, and apply it there."""
        if self._pending_moves.get(region, region.base) != base:
            self._pending_moves[region] = base
            self._request_stop()

    def _request_stop(self) -> None:
        # With exact stops there is no replayed MMIO store to step over (Board's way).
        self._stop_requested = True
        self.uc.emu_stop()

    def eip(self) -> int:
        return self.regs.read(UC_X86_REG_RIP)

    # -- hooks ---------------------------------------------------------------------------

    def _exception(self, uc, vector: int, _ud) -> None:
        self._deliver(vector)

    def _invalid_opcode(self, uc, _ud) -> bool:
        self._deliver(INVALID_OPCODE)  # Linux's BUG() and WARN() are ud2
        return True

    def _deliver(self, vector: int) -> None:
        """Hand the exception to QEMU's delivery, unless the guest has no usable gate for
        it: QEMU would then raise a fault inside the delivery, which must not unwind
        through this hook. The CPU would shut down (a triple fault, in the end)."""
        problem = self._gate_problem(vector)
        if problem is None:
            self.cpu.deliver_exception()
            return
        if self._fault is None:
            self._fault = (
                f"triple fault: CPU exception {vector} at RIP=0x{self.eip():x} and {problem}"
            )
        self.uc.emu_stop()

    def _gate_problem(self, vector: int) -> str | None:
        _, base, limit, _ = self.uc.reg_read(UC_X86_REG_IDTR)
        if vector * IDT_GATE_SIZE + IDT_GATE_SIZE - 1 > limit:
            return f"vector {vector} lies past the IDT limit"
        address = translate_long(
            self.memory, self.uc.reg_read(UC_X86_REG_CR3), base + vector * IDT_GATE_SIZE
        )
        if address is None or address + IDT_GATE_SIZE > self.memory.size:
            return "the IDT is not mapped in RAM"
        access = self.memory.mem[address + 5]
        if not access & GATE_PRESENT or access & 0xE != GATE_INTERRUPT_OR_TRAP:
            return f"vector {vector} has no present interrupt or trap gate"
        return None

    def _syscall(self, uc, _ud) -> None:
        regs = self.regs  # (thousands per boot: the binding's accessors cost 5-20x more)
        regs.write(UC_X86_REG_RCX, regs.read(UC_X86_REG_RIP) + SYSCALL_LENGTH)
        regs.write(UC_X86_REG_R11, regs.read(UC_X86_REG_RFLAGS) & ~EFLAGS_RF)
        self.cpu.syscall(
            regs.read_msr(MSR_STAR),
            regs.read_msr(MSR_LSTAR),
            regs.read_msr(MSR_FMASK),
            SYSCALL_LENGTH,
        )

    def _cpuid(self, uc, _ud) -> bool:
        leaf = uc.reg_read(UC_X86_REG_EAX)
        subleaf = uc.reg_read(UC_X86_REG_ECX)
        for reg, value in zip(
            (UC_X86_REG_EAX, UC_X86_REG_EBX, UC_X86_REG_ECX, UC_X86_REG_EDX),
            self.cpuid(leaf, subleaf),
            strict=True,
        ):
            uc.reg_write(reg, value)
        return True

    def cpuid(self, leaf: int, subleaf: int) -> tuple[int, int, int, int]:
        """What the guest's CPUID answers: Unicorn's CPU model with the board's changes."""
        native_max = self.cpu.cpuid(0, 0)[0]
        if native_max < leaf <= CPUID_FREQUENCY_LEAF:
            eax = ebx = ecx = edx = 0
        else:
            eax, ebx, ecx, edx = self.cpu.cpuid(leaf, subleaf)
        if leaf == 0:
            eax = max(eax, CPUID_FREQUENCY_LEAF)
        elif leaf == 1:
            ecx &= ~(CPUID_1_ECX_X2APIC | CPUID_1_ECX_TSC_DEADLINE)
        elif leaf == 6:
            eax |= CPUID_6_EAX_ARAT
        elif leaf == CPUID_TSC_LEAF:
            eax, ebx, ecx, edx = tsc_leaf(self.tsc_hz)
        elif leaf == CPUID_FREQUENCY_LEAF:
            mhz = round(self.tsc_hz / 1e6)
            eax, ebx, ecx, edx = mhz, mhz, CRYSTAL_HZ // 1_000_000, 0
        elif leaf == 0x80000007:
            edx |= CPUID_80000007_EDX_INVARIANT_TSC
        return eax, ebx, ecx, edx

    def _on_panic(self, reason: str) -> None:
        if self.panic is None:
            self.panic = reason
        self.uc.emu_stop()

    # -- loading -------------------------------------------------------------------------

    def load(self, path: str, cmdline: str = "", initrd: str | None = None) -> None:
        boot = load_linux(self.memory, path, initrd, cmdline)
        signature, _, _, features = self.cpuid(1, 0)
        self.memory.write(
            MP_TABLE_ADDRESS,
            mptable.build(MP_TABLE_ADDRESS, {AHCI_DEVICE: AHCI_GSI}, signature, features),
        )
        uc = self.uc
        uc.reg_write(UC_X86_REG_GDTR, (0, GDT_ADDRESS, 4 * 8 - 1, 0))
        uc.reg_write(UC_X86_REG_CR3, PAGE_TABLES)
        uc.reg_write(UC_X86_REG_CR4, CR4_PAE)
        uc.reg_write(UC_X86_REG_MSR, (MSR_EFER, EFER_LME_LMA))
        uc.reg_write(UC_X86_REG_CR0, CR0_BOOT)
        uc.reg_write(UC_X86_REG_CS, CODE_SELECTOR)
        for reg in (UC_X86_REG_DS, UC_X86_REG_ES, UC_X86_REG_SS):
            uc.reg_write(reg, DATA_SELECTOR)
        uc.reg_write(UC_X86_REG_RSI, boot.zero_page)
        uc.reg_write(UC_X86_REG_RSP, STACK_TOP)
        uc.reg_write(UC_X86_REG_RFLAGS, 0x2)
        uc.reg_write(UC_X86_REG_RIP, boot.entry)

    # -- running -------------------------------------------------------------------------

    def run(self, timeout: float) -> int:
        """Run until the guest writes the debug-exit port; return the value written."""
        with (
            Watchdog(timeout, self.uc.emu_stop) as watchdog,
            StopTimer(self.uc) as stopper,
        ):
            self._stopper = stopper
            try:
                return self._loop(watchdog)
            finally:
                self._stopper = None
                self.console.flush()

    def _loop(self, watchdog: Watchdog) -> int:
        while True:
            self.console.flush()
            if self._pending_moves:
                self._apply_moves()
            self.apic.expire(self.clock.now())
            if self.cpu.halted and not self._idle(watchdog):
                self._verdict(watchdog)
            self._take_interrupt()
            self._rearm()
            self._stop_requested = False
            try:
                self.uc.emu_start(self.eip(), 0)
            except UcError as exc:
                if self._fault is None:
                    self._fault = self._describe(exc)
            if (code := self._verdict(watchdog)) is not None:
                return code

    def _apply_moves(self) -> None:
        """Remap the BARs the guest moved, leaving no trace in the CPU's fault state."""
        cr2 = self.uc.reg_read(UC_X86_REG_CR2)
        for region, base in self._pending_moves.items():
            self.mmio.move(region, base)
        self._pending_moves.clear()
        self.cpu.forget_exception()
        self.uc.reg_write(UC_X86_REG_CR2, cr2)

    def _idle(self, watchdog: Watchdog) -> bool:
        """The guest halted: skip virtual time to its next timer interrupt. False when
        nothing can ever wake it (after waiting for the watchdog)."""
        if not self.regs.read(UC_X86_REG_RFLAGS) & EFLAGS_IF:
            raise GuestFault(f"guest halted with interrupts disabled at RIP=0x{self.eip():x}")
        while self.apic.deliverable() is None:
            deadline = self.apic.deadline()
            if deadline is None:
                watchdog.wait()
                return False
            skipped = self.clock.skip_to(deadline)
            self.cpu.tsc_offset += round(skipped * self.tsc_hz)
            self.apic.expire(self.clock.now())
        return True

    def _take_interrupt(self) -> None:
        """Enter the APIC's highest deliverable vector if RFLAGS.IF and no STI shadow allow."""
        vector = self.apic.deliverable()
        if vector is None or self.cpu.interrupt_shadow:
            return
        if not self.regs.read(UC_X86_REG_RFLAGS) & EFLAGS_IF:
            return
        self.apic.acknowledge(vector)
        self.cpu.deliver_interrupt(vector)

    def _apic_changed(self) -> None:
        """The guest wrote a local-APIC register: if that made an interrupt deliverable
        (an EOI, a self-IPI), stop now so the loop can take it, as the CPU would."""
        if self.apic.deliverable() is not None:
            self._request_stop()
        else:
            self._rearm()

    def _rearm(self) -> None:
        """Tell the stop timer when the loop must look at the guest next."""
        if self._stopper is None:
            return
        if self.apic.deliverable() is not None:
            self._stopper.arm(time.monotonic() + BLOCKED_IRQ_POLL)
            return
        deadline = self.apic.deadline()
        when = None if deadline is None else self.clock.to_host(deadline)
        if self._storm is not None:
            soon = time.monotonic() + self._storm
            when = soon if when is None else min(when, soon)
        self._stopper.arm(when)

    def _verdict(self, watchdog: Watchdog) -> int | None:
        if self.exit_code is None:
            if self.panic is not None:
                raise KernelPanic(f"kernel panic: {self.panic}")
            if self.cpu.halted and self.cpu.old_exception == DOUBLE_FAULT:
                raise GuestFault(f"triple fault at RIP=0x{self.eip():x}")
        return super()._verdict(watchdog)


def stop_storm_seconds() -> float | None:
    """``AHCI_EMU_STOP_STORM_US``: stop the CPU at least this often, to shake out what
    goes wrong when a stop lands at an unlucky moment (a debugging aid; a correct
    board runs the guest the same, only slower). None when unset, 0 or invalid."""
    try:
        micros = float(os.environ.get(STOP_STORM_ENV, ""))
    except ValueError:
        return None
    return micros / 1e6 if 0 < micros < 1e9 else None


def tsc_leaf(tsc_hz: int) -> tuple[int, int, int, int]:
    """CPUID 15h for a TSC of ``tsc_hz``: (denominator, numerator, crystal Hz, 0).

    Linux computes crystal_khz * numerator in 32 bits: the denominator is chosen so
    that product (= tsc_khz * denominator) cannot overflow."""
    tsc_khz = max(1, tsc_hz // 1000)
    denominator = max(1, min(1000, 0xFFFFFFFF // tsc_khz))
    numerator = round(tsc_hz * denominator / CRYSTAL_HZ)
    return denominator, numerator, CRYSTAL_HZ, 0
