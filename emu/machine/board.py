"""The board: assembles CPU, RAM, buses and devices, loads a guest and runs it."""

import sys
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, BinaryIO, TextIO

from unicorn import (
    UC_ARCH_X86,
    UC_ERR_EXCEPTION,
    UC_ERR_FETCH_UNMAPPED,
    UC_ERR_INSN_INVALID,
    UC_HOOK_INSN,
    UC_HOOK_INTR,
    UC_HOOK_TLB_FILL,
    UC_MEM_FETCH,
    UC_MEM_WRITE,
    UC_MODE_32,
    UC_PROT_ALL,
    UC_PROT_READ,
    UC_PROT_WRITE,
    UC_TLB_VIRTUAL,
    Uc,
    UcError,
)
from unicorn.x86_const import (
    UC_X86_INS_IN,
    UC_X86_INS_OUT,
    UC_X86_REG_CR0,
    UC_X86_REG_CR3,
    UC_X86_REG_CS,
    UC_X86_REG_DS,
    UC_X86_REG_EAX,
    UC_X86_REG_EBX,
    UC_X86_REG_EFLAGS,
    UC_X86_REG_EIP,
    UC_X86_REG_ES,
    UC_X86_REG_FS,
    UC_X86_REG_GDTR,
    UC_X86_REG_GS,
    UC_X86_REG_SS,
)

from emu.ahci.hba import AhciHba
from emu.ata.disk import AtaDisk
from emu.machine import apic, debugexit, ioapic, rawhooks, uart
from emu.machine.ahci_pci import AhciFunction
from emu.machine.bus import MmioBus, MmioRegion, PortBus, StrayReporter
from emu.machine.errors import GuestFault, GuestTimeout, Interrupted, MachineError, RunStop
from emu.machine.interrupts import EFLAGS_IF, HLT_OPCODE, InterruptEntry
from emu.machine.irqwindow import InterruptWindow
from emu.machine.loader import load_multiboot
from emu.machine.memory import PAGE_SIZE, GuestMemory
from emu.machine.pagewalk import translate
from emu.machine.pci import PciHost
from emu.machine.q35 import attach_chipset
from emu.machine.registers import Registers
from emu.machine.watchdog import Watchdog
from emu.storage.blockdev import BlockDevice

if TYPE_CHECKING:  # --trace, --fault and --sanitize load their modules when used
    from emu.faults.plan import FaultPlan
    from emu.faults.port import PortFaults
    from emu.sanitizer.checker import Sanitizer

CR0_PG = 1 << 31
_STOP_AT = 0xFFFFFFFF  # emu_start's "until", ignored: exits are enabled, none set

EXCEPTION_NAMES = {
    0: "#DE",
    1: "#DB",
    2: "NMI",
    3: "#BP",
    4: "#OF",
    5: "#BR",
    6: "#UD",
    7: "#NM",
    8: "#DF",
    10: "#TS",
    11: "#NP",
    12: "#SS",
    13: "#GP",
    14: "#PF",
    16: "#MF",
    17: "#AC",
    18: "#MC",
    19: "#XM",
}


Q35_PORTS = 6
AHCI_GSI = 16  # 00:1f.2 INTA -> PIRQA -> I/O APIC input 16 on q35


@dataclass
class BoardConfig:
    memory_mib: int = 128
    strict: bool = False
    serial: BinaryIO = field(default_factory=lambda: sys.stdout.buffer)
    disks: Sequence[BlockDevice | None] = ()  # on AHCI ports 0, 1, ...; None: empty port
    trace: TextIO | None = None
    trace_registers: bool = False
    faults: "FaultPlan | None" = None  # injected faults (--fault), None: none
    write_cache: bool = True  # the disks' volatile write cache at power-on
    sanitize: str | None = None  # --sanitize: "report" or "strict"; None: off


class Board:
    """A q35-shaped PC with no firmware: RAM, COM1, debug exit, PCI bus 0."""

    CPU_MODE = UC_MODE_32  # Unicorn's mode; the Linux board runs in UC_MODE_64
    port_faults: "PortFaults | None"  # the run's AHCI-layer faults
    sanitizer: "Sanitizer | None"  # --sanitize

    def __init__(self, config: BoardConfig) -> None:
        self.config = config
        self.memory = GuestMemory(config.memory_mib << 20)
        self.uc = uc = Uc(UC_ARCH_X86, self.CPU_MODE)
        self.regs = Registers(uc)
        uc.mem_map_ptr(0, self.memory.size, UC_PROT_ALL, self.memory.host_address)
        self._setup_mmu(uc)
        self.reporter = StrayReporter(config.strict, uc.emu_stop, self.eip)
        self.ports = PortBus(self.reporter)
        self.mmio = MmioBus(
            uc, self.memory.size, self.reporter, self._device_error, self._device_stop
        )
        self.exit_code: int | None = None
        self._fault: str | None = None
        self._stop: RunStop | None = None  # a device ended the run (a power cut, ...)

        self.ioapic = ioapic.IoApic(self._accept_interrupt)
        self.apic = self._make_apic()
        self.mmio.add(
            MmioRegion("local APIC", apic.SIZE, self.apic.read, self.apic.write), apic.BASE
        )
        self.mmio.add(
            MmioRegion("I/O APIC", ioapic.SIZE, self.ioapic.read, self.ioapic.write), ioapic.BASE
        )
        self.uart = uart.Uart16550(
            config.serial, irq=lambda level: self.ioapic.set_line(uart.ISA_IRQ, level)
        )
        self.ports.register(uart.BASE, uart.LENGTH, self.uart.read, self.uart.write)
        self.debug_exit = debugexit.DebugExit(self._guest_exit)
        self.ports.register(
            debugexit.BASE, debugexit.LENGTH, self.debug_exit.read, self.debug_exit.write
        )
        self.pci = PciHost()
        self.ports.register(PciHost.ADDRESS_PORT, 4, self.pci.read_address, self.pci.write_address)
        self.ports.register(PciHost.DATA_PORT, 4, self.pci.read_data, self.pci.write_data)
        attach_chipset(self.pci)
        self._attach_ahci(config)
        self._stop_requested = False
        self._window_fault: GuestFault | None = None  # delivery failed inside the run
        self._entry = InterruptEntry(uc, self.regs, self.memory)
        self._window = InterruptWindow(uc, self._window_opened, self._entry)
        # Runs end only by a stop. With exits enabled and none set, Unicorn does not look
        # up the code at "until" at each emu_start: that TLB fill (a Python callback) also
        # evicted the AHCI BAR's entry, which shares its TLB slot, so an interrupt-driven
        # guest paid two fills per interrupt.
        uc.ctl_exits_enabled(True)
        uc.ctl_set_exits([])

        self._add_cpu_hooks(uc)  # before the port hooks: see LinuxBoard
        uc.hook_add(UC_HOOK_INSN, self._port_in, None, 1, 0, UC_X86_INS_IN)
        uc.hook_add(UC_HOOK_INSN, self._port_out, None, 1, 0, UC_X86_INS_OUT)
        uc.hook_add(UC_HOOK_INTR, self._exception)

    def _setup_mmu(self, uc: Uc) -> None:
        """Guest RAM stores stay on Unicorn's fast path only with the virtual TLB, data pages
        filled without execute permission, and no UC_HOOK_MEM_*_UNMAPPED hook at all (any
        one of them sends every RAM store through helper_ret_st*_mmu / notdirty_write;
        measured in bench/profiling.py's `perf` mode). So the TLB fill is also where
        accesses beyond RAM are decoded: open bus pages, and jumps to nowhere."""
        uc.ctl_set_tlb_mode(UC_TLB_VIRTUAL)
        self._tlb_fill_callback = rawhooks.TLB_FILL(self._tlb_fill)
        rawhooks.hook_add(uc, UC_HOOK_TLB_FILL, rawhooks.function_pointer(self._tlb_fill_callback))

    def _add_cpu_hooks(self, uc: Uc) -> None:
        """Instruction hooks a subclass needs ahead of the port hooks (none here)."""

    def _make_apic(self) -> apic.LocalApic:
        return apic.LocalApic(on_eoi=self.ioapic.end_of_interrupt)

    def _attach_ahci(self, config: BoardConfig) -> None:
        if len(config.disks) > 32:
            raise MachineError("an AHCI controller has at most 32 ports")
        tracer = None
        if config.trace:
            from emu.ahci.trace import Tracer

            tracer = Tracer(config.trace, config.trace_registers)
        plan = config.faults
        if plan is not None and tracer is not None:
            plan.listeners.append(tracer.emit)
        self.port_faults = None
        if plan is not None and plan.layer_faults("ahci"):
            from emu.faults.port import PortFaults

            self.port_faults = PortFaults(plan)
        self.disks = [
            None if dev is None else self._disk(config, port, dev)
            for port, dev in enumerate(config.disks)
        ]
        disks = self.disks + [None] * (max(Q35_PORTS, len(self.disks)) - len(self.disks))
        self.ahci = AhciFunction(
            self.memory,
            disks,
            self._msi,
            lambda level: self.ioapic.set_line(AHCI_GSI, level),
            tracer,
            faults=self.port_faults,
        )
        self.hba = self.ahci.hba
        self.sanitizer = None
        if self.port_faults is not None:  # what a fault holds back comes due at an access
            self.ahci.read, self.ahci.write = _due_first(self.port_faults, self.hba)
        if config.sanitize is not None:
            from emu.sanitizer.checker import Sanitizer

            self.sanitizer = Sanitizer(
                self.hba, self.memory, self.eip, strict=config.sanitize == "strict"
            )
            if tracer is not None:
                self.sanitizer.listeners.append(tracer.emit)
            self.ahci.write = self.sanitizer.watch(self.ahci.write)
            self.ahci.read = self.sanitizer.watch_reads(self.ahci.read)
        self.ahci.attach(self.pci, self.mmio, self.ports, self._move_region)

    @staticmethod
    def _disk(config: BoardConfig, port: int, dev: BlockDevice) -> AtaDisk:
        """The ATA disk on ``port``: with the run's disk faults, and behind a modelled
        volatile write cache when a power cut may come."""
        plan = config.faults
        if plan is None or not plan.layer_faults("ata"):
            return AtaDisk(dev, write_cache=config.write_cache)
        from emu.ata.cache import VolatileCache
        from emu.ata.faults import DiskFaults

        cache = VolatileCache(dev) if plan.has_kind("power-cut") else None
        return AtaDisk(
            cache or dev,
            write_cache=config.write_cache,
            faults=DiskFaults(plan, port, cache),
        )

    def flush_disks(self) -> None:
        """The end of a run: what the guest wrote survives it, flushed or not (a power cut
        already decided what its disks keep)."""
        for disk in self.disks:
            if disk is not None:
                disk.flush_cache()

    def _move_region(self, region: MmioRegion, base: int | None) -> None:
        """A BAR write moved ``region`` (the guest's config-space write is the cause)."""
        self.mmio.move(region, base)

    def _msi(self, address: int, data: int) -> None:
        """A message signalled interrupt: q35 delivers writes to FEEx_xxxx to the local APIC."""
        if address & 0xFFF00000 == apic.BASE:
            self._accept_interrupt(data & 0xFF, False)

    def _accept_interrupt(self, vector: int, level: bool) -> None:
        self.apic.accept(vector, level)
        if self._window.ready:
            self._window.arm()  # taken at the next block that starts with IF=1
        else:
            self._request_stop()  # (until the window is ready: the first interrupt)

    def _request_stop(self) -> None:
        self._stop_requested = True
        self.mmio.stop()

    def _window_opened(self) -> None:
        """The interrupt window saw IF=1 at the start of a block, inside emu_start: enter
        the pending handler there. Writing EIP makes Unicorn go on at the handler without
        leaving emu_start, so an interrupt costs no run-loop round trip; the window reads
        and writes the registers around this call (InterruptEntry.deliver_staged). A
        guest without a usable gate stops the run, which then reports it."""
        try:
            vector = self.apic.deliverable()
            if vector is None:
                self._window.disarm()
            else:
                self._enter(vector, staged=True)
        except GuestFault as fault:
            self._window_fault = fault
            self.uc.emu_stop()
        except Exception as exc:  # a raw callback must not raise: stop the run instead
            self._device_error(f"interrupt delivery failed: {exc!r}")

    # -- hooks (Unicorn calls these from inside emu_start) ------------------------------

    def eip(self) -> int:
        return self.regs.read(UC_X86_REG_EIP)

    def _tlb_fill(self, _uch, vaddr: int, access: int, entry, _ud) -> bool:
        try:
            paddr = self._physical_page(vaddr, access)
        except Exception as exc:  # a raw callback must not raise: stop the run instead
            self._device_error(f"TLB fill of 0x{vaddr:08x} failed: {exc!r}")
            return False
        if paddr is None:
            return False
        entry.contents.paddr = paddr
        # Only pages the guest executes from are mapped executable: a data page filled
        # executable sends every store to it down Unicorn's slow path.
        entry.contents.perms = (
            UC_PROT_ALL if access == UC_MEM_FETCH else UC_PROT_READ | UC_PROT_WRITE
        )
        return True

    def _physical_page(self, vaddr: int, access: int) -> int | None:
        """The physical page behind ``vaddr`` (None: not mapped by the guest's page tables);
        a data access to a page that nothing decodes maps it as open bus."""
        if self.regs.read(UC_X86_REG_CR0) & CR0_PG:
            paddr = translate(self.memory, self.regs.read(UC_X86_REG_CR3), vaddr, access)
            if paddr is None:
                return None
        else:
            paddr = vaddr & ~(PAGE_SIZE - 1)
        if access != UC_MEM_FETCH and paddr >= self.memory.size and not self.mmio.decodes(paddr):
            # (a fetch there ends the run as UC_ERR_FETCH_UNMAPPED; see _describe)
            self.mmio.open_bus(paddr | (vaddr & (PAGE_SIZE - 1)), access == UC_MEM_WRITE)
        return paddr

    def _port_in(self, _uc, port: int, size: int, _ud) -> int:
        return self.ports.read(port, size)

    def _port_out(self, _uc, port: int, size: int, value: int, _ud) -> None:
        self.ports.write(port, size, value)

    def _exception(self, uc, vector: int, _ud) -> None:
        name = EXCEPTION_NAMES.get(vector, "software interrupt" if vector >= 32 else "reserved")
        self._fault = f"unhandled CPU exception: vector {vector} ({name}) at EIP=0x{self.eip():08x}"
        uc.emu_stop()

    def _device_error(self, message: str) -> None:
        """A device raised where it must not: stop the run rather than go on half-done."""
        if self._fault is None:
            self._fault = f"internal error: {message}"
        self.uc.emu_stop()

    def _device_stop(self, stop: RunStop) -> None:
        """A device ended the run on purpose: the first such stop is the run's result."""
        if self._stop is None:
            self._stop = stop
        self.uc.emu_stop()

    def _guest_exit(self, code: int) -> None:
        if self.exit_code is None:
            self.exit_code = code
        self.uc.emu_stop()

    # -- loading and running -------------------------------------------------------------

    def load(self, path: str, cmdline: str = "") -> None:
        boot = load_multiboot(self.memory, path, cmdline)
        uc = self.uc
        uc.reg_write(UC_X86_REG_GDTR, (0, boot.gdt_address, boot.gdt_limit, 0))
        uc.reg_write(UC_X86_REG_CS, boot.code_selector)
        for reg in (UC_X86_REG_DS, UC_X86_REG_ES, UC_X86_REG_FS, UC_X86_REG_GS, UC_X86_REG_SS):
            uc.reg_write(reg, boot.data_selector)
        uc.reg_write(UC_X86_REG_EAX, boot.eax)
        uc.reg_write(UC_X86_REG_EBX, boot.info_address)
        uc.reg_write(UC_X86_REG_EFLAGS, 0x2)
        uc.reg_write(UC_X86_REG_EIP, boot.entry)

    def run(self, timeout: float) -> int:
        """Run until the guest writes the debug-exit port; return the value written."""
        with Watchdog(timeout, self.uc.emu_stop) as watchdog:
            while True:
                self._take_interrupt()
                self._stop_requested = False
                try:
                    self.uc.emu_start(self.eip(), _STOP_AT)
                except UcError as exc:
                    if self._fault is None:
                        self._fault = self._describe(exc)
                if self._window_fault is not None:
                    fault, self._window_fault = self._window_fault, None
                    raise fault
                if (code := self._verdict(watchdog)) is not None:
                    return code
                if self.mmio.replay_pending:
                    self._finish_store()
                if self._stop_requested or self._window.opened or self._interrupt_ready():
                    continue
                self._halted(watchdog)
                if (code := self._verdict(watchdog)) is not None:
                    return code

    def _finish_store(self) -> None:
        """Step over the MMIO store the guest stopped in (its repeat is dropped), so an
        interrupt it raised is taken after the store, as on a CPU. Unicorn counts
        instructions with a hook that only freshly translated code calls, so the
        store's translation is dropped before (and after) the one-instruction step."""
        eip = self.eip()
        self.uc.ctl_remove_cache(eip, eip + 1)
        try:
            self.uc.emu_start(eip, _STOP_AT, 0, 1)
        except UcError as exc:
            if self._fault is None:
                self._fault = self._describe(exc)
        self.uc.ctl_remove_cache(eip, eip + 1)
        self.mmio.forget_replay()

    def _interrupt_ready(self) -> bool:
        return self.apic.deliverable() is not None and bool(
            self.regs.read(UC_X86_REG_EFLAGS) & EFLAGS_IF
        )

    def _take_interrupt(self) -> None:
        """Deliver the APIC's pending interrupt if EFLAGS.IF allows; while one waits on
        IF, the interrupt window stops the guest where IF is next set."""
        vector = self.apic.deliverable()
        if vector is None:
            self._window.disarm()
            return
        self._window.anchor()
        if not self.regs.read(UC_X86_REG_EFLAGS) & EFLAGS_IF:
            self._window.arm()
            return
        self._enter(vector)

    def _enter(self, vector: int, staged: bool = False) -> None:
        """Take ``vector`` (EFLAGS.IF is set): into service, and into its handler (with
        ``staged``, from inside the interrupt window)."""
        apic = self.apic
        apic.acknowledge(vector)
        if staged:
            self._entry.deliver_staged(vector)
        else:
            self._entry.deliver(vector)
        if not apic.irr or apic.deliverable() is None:  # (most often nothing else waits)
            self._window.disarm()
        else:
            self._window.arm()  # the next one, once the handler sets IF again

    def _verdict(self, watchdog: Watchdog) -> int | None:
        """The guest's exit code if the run is over; raises if it ended abnormally."""
        if self.reporter.error is not None:  # it came first: the stop lands at the block's end
            raise self.reporter.error
        if self._stop is not None:
            raise self._stop
        if self.exit_code is not None:
            return self.exit_code
        if self._fault is not None:
            raise GuestFault(self._fault)
        if watchdog.reason == "timeout":
            raise GuestTimeout(
                f"guest still running after its {watchdog.timeout:g} s budget "
                f"(EIP=0x{self.eip():08x})"
            )
        if watchdog.reason == "interrupt":
            raise Interrupted("interrupted")
        return None

    def _halted(self, watchdog: Watchdog) -> None:
        """emu_start returned without a verdict: the guest executed HLT; wait for a wake-up."""
        eip = self.eip()
        if not (0 < eip <= self.memory.size and self.memory.mem[eip - 1] == HLT_OPCODE):
            raise GuestFault(f"guest stopped for no known reason at EIP=0x{eip:08x}")
        if not self.regs.read(UC_X86_REG_EFLAGS) & EFLAGS_IF:
            raise GuestFault(f"guest halted with interrupts disabled at EIP=0x{eip - 1:08x}")
        # Devices act inside the guest's own accesses, and at the times an injected fault
        # holds something back for: nothing else can wake the guest but the time budget
        # (or Ctrl-C).
        faults = self.port_faults
        while faults is not None and (deadline := faults.next_deadline()) is not None:
            if watchdog.wait(max(0.0, deadline - time.monotonic())):
                return
            faults.run_due()
            if self._interrupt_ready():
                return
        watchdog.wait()

    def _describe(self, exc: UcError) -> str:
        if exc.errno == UC_ERR_INSN_INVALID:
            return f"unhandled CPU exception: vector 6 (#UD) at EIP=0x{self.eip():08x}"
        if exc.errno == UC_ERR_FETCH_UNMAPPED:
            return f"guest jumped to 0x{self.eip():08x}, where nothing executable is mapped"
        if exc.errno == UC_ERR_EXCEPTION:
            return f"unhandled CPU exception at EIP=0x{self.eip():08x}"
        return f"CPU stopped: {exc} at EIP=0x{self.eip():08x}"


def _due_first(faults: "PortFaults", hba: AhciHba):
    """The HBA's MMIO read and write, each running first what injected faults held back
    until now (a completion, a link coming back)."""

    def read(offset: int, size: int) -> int:
        if faults.pending:
            faults.before_access(offset, True)
        return hba.read(offset, size)

    def write(offset: int, size: int, value: int) -> None:
        if faults.pending:
            faults.before_access(offset, False)
        hba.write(offset, size, value)

    return read, write
