"""What one guest run gave back: transcript, exit code, checks, trace, generations."""

from __future__ import annotations

import json
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from emu.testing.gen import GenRange

_CHECK = re.compile(r"(not ok|ok) (\d+) - (.*)")
_PLAN = re.compile(r"1\.\.(\d+)")
_GEN = re.compile(
    r"gen: (flushed )?port (\d+) lba (\d+)\.\.(\d+) (?:generation (\d+)|unrecognised)"
)


@dataclass(frozen=True)
class Check:
    """One ``ok N - name`` / ``not ok N - name: detail`` line of a guest's transcript.

    The guest's test framework prints ``not ok N - name: detail``; since a name may
    hold ": " too, ``name`` is everything up to the last ": " of a failed line."""

    number: int
    name: str
    ok: bool
    detail: str
    line: str


def parse_checks(transcript: str) -> tuple[list[Check], int | None, list[str]]:
    """The checks, the plan (``1..N``, None if absent) and any inconsistency."""
    checks: list[Check] = []
    plan = None
    problems: list[str] = []
    for line in transcript.splitlines():
        m = _CHECK.fullmatch(line)
        if m:
            ok, number, text = m.group(1) == "ok", int(m.group(2)), m.group(3)
            name, detail = text, ""
            if not ok and ": " in text:
                name, detail = text.rsplit(": ", 1)
            if number != len(checks) + 1:
                problems.append(f"check {number} where {len(checks) + 1} was expected")
            checks.append(Check(number, name, ok, detail, line))
            continue
        m = _PLAN.fullmatch(line)
        if m:
            plan = int(m.group(1))
    if plan is None:
        problems.append("no plan line (1..N): the guest did not finish")
    elif plan != len(checks):
        problems.append(f"plan 1..{plan} but {len(checks)} checks")
    return checks, plan, problems


def gen_lines(transcript: str) -> list[tuple[bool, GenRange]]:
    """The gen guest's summary lines: (True for a ``flushed`` line, the range)."""
    out = []
    for line in transcript.splitlines():
        m = _GEN.fullmatch(line)
        if m:
            gen = None if m.group(5) is None else int(m.group(5))
            r = GenRange(int(m.group(2)), int(m.group(3)), int(m.group(4)), gen)
            out.append((bool(m.group(1)), r))
    return out


def parse_trace(text: str) -> list[dict[str, Any]]:
    """``--trace`` output: one JSON object per line."""
    return [json.loads(line) for line in text.splitlines() if line.strip()]


@dataclass
class GuestRun:
    """One boot of a guest, under ahci-emu (``backend="emu"``) or QEMU (``"qemu"``).

    ``transcript`` is everything the guest printed on COM1; ``exit_code`` the value
    it wrote to the debug-exit port (124 timeout, 126 CPU fault, 1 refused before
    the start, as ``ahci-emu run`` exits); ``stderr`` the emulator's messages;
    ``trace`` the parsed ``--trace`` lines (empty unless asked for, and always under
    QEMU); ``disks`` the files the guest saw (under QEMU: the raw copies it booted).
    """

    guest: str
    backend: str
    command: list[str]
    exit_code: int
    transcript: str
    stderr: str = ""
    trace: list[dict[str, Any]] = field(default_factory=list)
    duration: float = 0.0
    disks: list[Path] = field(default_factory=list)
    label: str = ""

    def __post_init__(self) -> None:
        self.checks, self.plan, self.problems = parse_checks(self.transcript)

    # ---- the transcript ----------------------------------------------------

    @property
    def lines(self) -> list[str]:
        return self.transcript.splitlines()

    @property
    def failed(self) -> list[Check]:
        return [c for c in self.checks if not c.ok]

    @property
    def passed(self) -> bool:
        """Exit code 0, every check ok, a plan that matches."""
        return self.exit_code == 0 and not self.failed and not self.problems

    def assert_ok(self) -> GuestRun:
        """Raise AssertionError (with the transcript) unless the run :attr:`passed`."""
        if not self.passed:
            raise AssertionError(f"guest run failed\n{self.describe()}")
        return self

    @property
    def error(self) -> str:
        """The emulator's last ``ahci-emu: error: ...`` message, or ''."""
        errors = [ln for ln in self.stderr.splitlines() if ln.startswith("ahci-emu: error: ")]
        return errors[-1].removeprefix("ahci-emu: error: ") if errors else ""

    # ---- the gen guest's summary lines -------------------------------------

    @property
    def generations(self) -> list[GenRange]:
        """What the ``gen`` guest read: its ``gen: port P lba A..B generation G`` lines."""
        return [r for flushed, r in self._gen_lines() if not flushed]

    @property
    def flushed(self) -> list[GenRange]:
        """The ``gen: flushed ...`` lines of a ``loop``: generations on the disk."""
        return [r for flushed, r in self._gen_lines() if flushed]

    def _gen_lines(self) -> list[tuple[bool, GenRange]]:
        return gen_lines(self.transcript)

    def generation_at(self, lba: int, port: int = 0) -> int | None:
        """The generation the guest read at ``lba`` (None: unrecognised); KeyError if
        it read nothing there."""
        for r in reversed(self.generations):
            if r.port == port and r.first <= lba <= r.last:
                return r.generation
        raise KeyError(f"the guest read nothing at port {port} lba {lba}")

    # ---- the trace -----------------------------------------------------------

    def commands(self, opcode: int | None = None) -> list[dict[str, Any]]:
        """Trace ``command`` events (of one opcode if given)."""
        return [
            e
            for e in self.trace
            if e.get("event") == "command" and (opcode is None or e.get("opcode") == opcode)
        ]

    @property
    def faults_fired(self) -> list[dict[str, Any]]:
        """The trace's ``fault`` events: each injected fault that fired, and where."""
        return [e for e in self.trace if e.get("event") == "fault"]

    @property
    def violations(self) -> list[dict[str, Any]]:
        """The trace's ``violation`` events: each AHCI rule the guest broke (``sanitize``)."""
        return [e for e in self.trace if e.get("event") == "violation"]

    def sources(self, port: int = 0) -> list[tuple[int, int, str | None]]:
        """Every ``[offset, length, image]`` the trace says served a read on ``port``."""
        return [
            (s[0], s[1], s[2])
            for e in self.commands()
            if e.get("port") == port
            for s in e.get("sources", ())
        ]

    # ---- showing it ------------------------------------------------------------

    def describe(self, max_lines: int = 400) -> str:
        """The run for a failure report: command, exit code, stderr and transcript."""
        lines = self.lines
        if len(lines) > max_lines:
            half = max_lines // 2
            cut = len(lines) - max_lines
            lines = [*lines[:half], f"[... {cut} lines not shown ...]", *lines[-half:]]
        parts = [
            f"guest {self.guest} on {self.backend}: exit code {self.exit_code}"
            + (f" ({self.duration:.2f} s)" if self.duration else ""),
            "command: " + " ".join(self.command),
        ]
        if self.problems:
            parts.append("problems: " + "; ".join(self.problems))
        if self.stderr.strip():
            parts += ["stderr:", self.stderr.rstrip()]
        parts += ["transcript:", *lines] if lines else ["transcript: (empty)"]
        return "\n".join(parts)

    def __str__(self) -> str:
        return self.describe()
