"""``--sanitize``: watch what the guest's driver does to the HBA and report what AHCI forbids.

The checker sits in front of the HBA's register writes (the board hands the
HBA's MMIO write function through :meth:`Sanitizer.watch`), so a run without
``--sanitize`` does not pay for it at all. Each check looks at the port as it
is just before the write, and at the command headers, tables and PRDTs in
guest memory when slots are issued. A rule is reported once per port; under
``strict`` the first violation stops the run (exit status 125) before the
offending write reaches the HBA.

Legal error recovery is no violation: COMRESET through PxSCTL and GHC.HR may
come with commands outstanding, and clearing PxCMD.ST ends them. Nor is a
command issued while the port is halted before the driver could know: on real
hardware the error is found asynchronously, so a driver may issue more commands
(Linux's libata does, in one dispatch batch) before its interrupt handler runs.
A command issued once the driver has read PxIS or PxTFD of the halted port, and
before PxCMD.ST was cycled, is the violation; register reads are watched for
that (:meth:`Sanitizer.watch_reads`).
"""

import struct
import sys
from collections.abc import Callable
from typing import TextIO

from emu.ahci import regs
from emu.ahci.fis import CONTROL_SRST, H2D_C, TYPE_REG_H2D, parse_h2d
from emu.ata.disk import transfers_data
from emu.errors import RunStop
from emu.sanitizer.rules import RULES

_HEADER = struct.Struct("<IIII")
_PRD_DW3 = struct.Struct("<I")
_HEADER_R = 1 << 8  # command header DW0: Reset (the SRST-asserting FIS of a software reset)
_QUEUED = frozenset({0x60, 0x61, 0x63, 0x64, 0x65})  # FPDMA QUEUED commands, NCQ NON-DATA
_MAX_PRDS = 0xFFFF


class Violation(RunStop):
    """``--sanitize=strict``: the guest broke a rule (exit status 125, as --strict)."""

    exit_status = 125


class Sanitizer:
    """Checks a guest's register writes to ``hba`` against :data:`RULES`.

    ``eip`` says where the guest is; ``strict`` stops at the first violation.
    ``listeners`` get a record of each violation (the trace), and each is said
    on ``stream`` (stderr).
    """

    def __init__(
        self, hba, memory, eip: Callable[[], int], *, strict: bool, stream: TextIO | None = None
    ) -> None:
        self._hba = hba
        self._ram = memory.mem
        self._eip = eip
        self._strict = strict
        self._stream = stream
        self._seen: set[tuple[str, int]] = set()
        self._sact_written = [0] * len(hba.ports)  # PxSACT bits not yet issued through PxCI
        self._srst = [False] * len(hba.ports)  # a C=0 FIS asserted SRST
        # The low bits the guest last wrote to PxCLB and PxFB (the HBA drops them): they
        # matter once the port uses the areas (ST, FRE set).
        self._clb_low = [0] * len(hba.ports)
        self._fb_low = [0] * len(hba.ports)
        self._halt_seen = [False] * len(hba.ports)  # the driver read PxIS/PxTFD of the halt
        self.violations: list[dict] = []
        self.listeners: list[Callable[[dict], None]] = []

    def watch(self, write: Callable[[int, int, int], None]) -> Callable[[int, int, int], None]:
        """``write`` (the HBA's MMIO write: offset, size, value) with the checks in front."""

        def checked(offset: int, size: int, value: int) -> None:
            aligned = offset & ~3
            shift = 8 * (offset & 3)
            mask = (((1 << (8 * size)) - 1) << shift) & 0xFFFFFFFF
            self._check(aligned, (value << shift) & mask, mask)
            write(offset, size, value)

        return checked

    def watch_reads(self, read: Callable[[int, int], int]) -> Callable[[int, int], int]:
        """``read`` (the HBA's MMIO read: offset, size) noting when the driver sees a
        halted port's status (PxIS, PxTFD)."""
        ports = self._hba.ports
        seen = self._halt_seen

        def checked(offset: int, size: int) -> int:
            index = (offset - regs.PORT_BASE) >> 7
            if (
                0 <= index < len(ports)
                and (offset & 0x7C) in (regs.PxIS, regs.PxTFD)
                and ports[index].engine.halted
            ):
                seen[index] = True
            return read(offset, size)

        return checked

    # -- reporting -------------------------------------------------------------------

    def _violation(self, rule: str, port: int, slot: int | None, what: str) -> None:
        if (rule, port) in self._seen:
            return
        self._seen.add((rule, port))
        spec = RULES[rule]
        eip = self._eip()
        where = f"port {port}" if slot is None else f"port {port} slot {slot}"
        message = f"{rule} ({spec.section}): {what}, {where}, EIP=0x{eip:08x}"
        record = {"event": "violation", "rule": rule, "section": spec.section, "port": port}
        if slot is not None:
            record["slot"] = slot
        record |= {"eip": eip, "detail": what}
        self.violations.append(record)
        for listener in self.listeners:
            listener(record)
        print(f"ahci-emu: violation: {message}", file=self._stream or sys.stderr)
        if self._strict:
            raise Violation(f"stopped at the first violation ({rule}, --sanitize=strict)")

    # -- register writes ---------------------------------------------------------------

    def _check(self, offset: int, value: int, mask: int) -> None:
        if offset == regs.GHC and value & regs.GHC_HR:
            self._forget(range(len(self._hba.ports)))  # HBA reset: every port starts over
            return
        if offset < regs.PORT_BASE:
            return
        index = (offset - regs.PORT_BASE) >> 7
        if index >= len(self._hba.ports):
            return
        port = self._hba.ports[index]
        reg = offset & 0x7F
        if reg in (regs.PxCLB, regs.PxCLBU):
            if port.cmd & regs.CMD_CR:
                self._violation(
                    "clb-while-running", index, None, "PxCLB written while PxCMD.CR is set"
                )
            if reg == regs.PxCLB:
                self._clb_low[index] = (self._clb_low[index] & ~mask | value) & 0x3FF
        elif reg in (regs.PxFB, regs.PxFBU):
            if port.cmd & regs.CMD_FR:
                self._violation(
                    "fb-while-receiving", index, None, "PxFB written while PxCMD.FR is set"
                )
            if reg == regs.PxFB:
                self._fb_low[index] = (self._fb_low[index] & ~mask | value) & 0xFF
        elif reg == regs.PxCMD:
            self._cmd_write(port, (port.cmd & ~mask) | value)
        elif reg == regs.PxSACT:
            if port.cmd & regs.CMD_ST:
                self._sact_written[index] |= value & ~port.sact
        elif reg == regs.PxCI and port.cmd & regs.CMD_ST and port.disk is not None:
            self._issue(port, value)

    def _forget(self, ports) -> None:
        for index in ports:
            self._sact_written[index] = 0
            self._srst[index] = False
            self._halt_seen[index] = False

    def _cmd_write(self, port, new: int) -> None:
        old = port.cmd
        index = port.index
        if new & regs.CMD_FRE and not old & regs.CMD_FRE and self._fb_low[index]:
            base = port.fbu << 32 | port.fb | self._fb_low[index]
            self._violation(
                "misaligned-fis-area", index, None,
                f"FIS receive enabled with PxFB 0x{base:x}, not 256-byte aligned",
            )  # fmt: skip
        if new & regs.CMD_ST and not old & regs.CMD_ST and self._clb_low[index]:
            base = port.clbu << 32 | port.clb | self._clb_low[index]
            self._violation(
                "misaligned-command-list", index, None,
                f"PxCMD.ST set with PxCLB 0x{base:x}, not 1 KiB aligned",
            )  # fmt: skip
        if not new & regs.CMD_ST:
            if old & regs.CMD_ST:
                self._forget([port.index])  # stopping ends what was outstanding
            return
        if old & regs.CMD_ST:
            return
        if not old & regs.CMD_FRE:
            self._violation("start-without-fre", port.index, None, "PxCMD.ST set, FRE clear")
        if old & regs.CMD_CR:
            self._violation(
                "start-while-running", port.index, None, "PxCMD.ST set while CR is still set"
            )
        det = port.ssts & 0xF
        busy = port.tfd & (regs.TFD_STS_BSY | regs.TFD_STS_DRQ)
        # A port with nothing attached (DET 0) is left alone: no command can reach a
        # device there, and Linux's libahci starts every implemented port's engine.
        if det and (det != regs.SSTS_DET_PRESENT or busy):
            self._violation(
                "start-without-device",
                port.index,
                None,
                f"PxCMD.ST set with PxSSTS.DET {det} and PxTFD 0x{port.tfd:02x}",
            )

    # -- issuing commands ----------------------------------------------------------------

    def _issue(self, port, value: int) -> None:
        index = port.index
        issued = value & ~port.ci
        again = value & port.ci
        if again:
            slot = (again & -again).bit_length() - 1
            self._violation("reissued-slot", index, slot, "PxCI written with a bit still set")
        if not port.engine.halted:
            self._halt_seen[index] = False  # recovered (COMRESET included): a new halt is news
        elif issued and self._halt_seen[index]:
            slot = (issued & -issued).bit_length() - 1
            self._violation(
                "issue-while-halted", index, slot, "PxCI written while the port is halted"
            )
        written = self._sact_written[index]
        sact = port.sact | written
        queued_out = port.sact & ~written  # queued commands issued before this write
        plain_out = port.ci & ~port.sact
        slots = issued
        while slots:
            slot = (slots & -slots).bit_length() - 1
            slots &= slots - 1
            queued = self._command(port, slot, sact)
            if queued is None:
                continue
            if (queued and plain_out) or (not queued and queued_out):
                self._violation(
                    "mixed-queueing",
                    index,
                    slot,
                    f"a {'queued' if queued else 'non-queued'} command issued with "
                    f"{'non-queued' if queued else 'queued'} commands outstanding",
                )
            if queued:
                queued_out |= 1 << slot
            else:
                plain_out |= 1 << slot
        left = written & ~value
        if left:
            self._violation(
                "sact-without-ci", index, (left & -left).bit_length() - 1,
                f"PxSACT bits 0x{left:08x} written without their PxCI bits",
            )  # fmt: skip
        self._sact_written[index] = 0

    def _command(self, port, slot: int, sact: int) -> bool | None:
        """Check the command in ``slot``: True if queued, False if not, None when it is
        no command (a software reset's control FIS, or memory the HBA cannot read)."""
        index = port.index
        header = (port.clbu << 32 | port.clb) + slot * 32
        try:
            dw0, _prdbc, ctba, ctbau = _HEADER.unpack_from(self._ram, header)
            cfl, prdtl = dw0 & 0x1F, dw0 >> 16
            table = ctbau << 32 | ctba
            kind, flags, tf = parse_h2d(self._ram, table & ~0x7F)
        except (struct.error, OverflowError):
            return None  # the HBA reports a host bus error
        if not 5 <= cfl <= 16:
            self._violation("bad-cfl", index, slot, f"command header CFL {cfl}")
        if table & 0x7F:
            self._violation(
                "misaligned-command-table", index, slot, f"CTBA 0x{table:x} not 128-byte aligned"
            )
        if kind != TYPE_REG_H2D:
            self._violation("bad-command-fis", index, slot, f"command FIS type 0x{kind:02x}")
            return None
        if not flags & H2D_C:
            self._control_fis(port, slot, dw0, tf.control)
            return None
        self._check_prdt(index, slot, table & ~0x7F, prdtl)
        if prdtl == 0 and transfers_data(tf):
            self._violation(
                "prdtl-zero", index, slot, f"command 0x{tf.command:02x} moves data, PRDTL 0"
            )
        queued = tf.command in _QUEUED
        if queued:
            tag = tf.count >> 3 & 0x1F
            if tag != slot:
                self._violation("ncq-tag-mismatch", index, slot, f"NCQ tag {tag} in slot {slot}")
            if not sact >> slot & 1:
                self._violation(
                    "sact-without-ci", index, slot, "queued command issued without its PxSACT bit"
                )
        elif sact >> slot & 1:
            self._violation(
                "sact-without-ci", index, slot,
                f"PxSACT bit set for non-queued command 0x{tf.command:02x}",
            )  # fmt: skip
        return queued

    def _control_fis(self, port, slot: int, dw0: int, control: int) -> None:
        """A C=0 FIS is legal as the two FISes of a software reset (AHCI 10.4.1): SRST set
        in a header with R set, then SRST clear."""
        index = port.index
        if control & CONTROL_SRST:
            if not dw0 & _HEADER_R:
                self._violation(
                    "bad-command-fis", index, slot, "SRST asserted in a header without R set"
                )
            self._srst[index] = True
        elif self._srst[index]:
            self._srst[index] = False
        else:
            self._violation(
                "bad-command-fis", index, slot, "a C=0 FIS that is not part of a software reset"
            )

    def _check_prdt(self, index: int, slot: int, table: int, prdtl: int) -> None:
        for entry in range(min(prdtl, _MAX_PRDS)):
            try:
                (dw3,) = _PRD_DW3.unpack_from(self._ram, table + 0x80 + entry * 16 + 12)
            except (struct.error, OverflowError):
                return
            if not dw3 & 1:
                count = (dw3 & 0x3FFFFF) + 1
                self._violation(
                    "odd-prd-byte-count", index, slot,
                    f"PRD entry {entry} describes {count} bytes (DBC 0x{dw3 & 0x3FFFFF:x})",
                )  # fmt: skip
                return
