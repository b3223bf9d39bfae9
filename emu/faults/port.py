"""Faults the HBA's ports act out: stalls, held-back completions, link loss.

:class:`PortFaults` decides (through the run's :class:`~emu.faults.plan.FaultPlan`)
which "ahci" fault fires on a command, and keeps what a fault postpones: a
completion held back for N further commands or for some milliseconds, a link
that comes back after a while. The HBA lets it run what is due at every guest
access (a link down for N polls comes back at the guest's Nth read of the
port's PxSSTS); a guest that halts is woken by the board at :meth:`next_deadline`.
"""

import time
from collections.abc import Callable
from dataclasses import dataclass

from emu.ahci import regs
from emu.faults.plan import FaultPlan
from emu.faults.spec import Fault

DEFAULT_DOWN_MS = 10  # link-loss: how long the link stays down unless down-ms= says


@dataclass
class _Held:
    port: int
    commands: int | None  # due after this many more commands (on any port)
    polls: int | None  # due after the guest has read this port's PxSSTS this often
    deadline: float | None  # due at this time.monotonic()
    action: Callable[[], None]
    completion: bool  # a held completion (a reset drops it), not a link coming back
    fault: Fault


class PortFaults:
    """The port-side faults of ``plan``; ``clock`` is time.monotonic (tests may pass
    another)."""

    def __init__(self, plan: FaultPlan, clock: Callable[[], float] = time.monotonic) -> None:
        self.plan = plan
        self._clock = clock
        self._held: list[_Held] = []

    def check(self, port: int, slot: int, opcode: int, lba: int, count: int) -> Fault | None:
        """The port-side fault that fires on this command, or None."""
        return self.plan.check("ahci", port, opcode, lba, count, slot)

    def before_access(self, offset: int, read: bool) -> None:
        """The guest accesses the ABAR at ``offset``: a read of a port's PxSSTS counts
        for a link down for N polls, then whatever is due runs first."""
        if read and offset >= regs.PORT_BASE and offset & 0x7F == regs.PxSSTS:
            port = (offset - regs.PORT_BASE) >> 7
            due = []
            for held in self._held:
                if held.port == port and held.polls is not None:
                    held.polls -= 1
                    if held.polls <= 0:
                        due.append(held)
            self._run(due)
        self.run_due()

    def issued(self, commands: int) -> None:
        """The guest issued ``commands`` more commands (on any port): completions held
        for N commands count them, and those now due are released."""
        due = []
        for held in self._held:
            if held.commands is not None:
                held.commands -= commands
                if held.commands <= 0:
                    due.append(held)
        self._run(due)

    def hold(
        self, port: int, fault: Fault, action: Callable[[], None], *, completion: bool = True
    ) -> None:
        """Run ``action`` (a held completion, or a link coming back) when ``fault`` says."""
        params = fault.params
        commands, polls = params.get("commands"), params.get("down")
        ms = params.get("ms", params.get("down-ms"))
        if fault.kind == "link-loss" and ms is None and polls is None:
            ms = DEFAULT_DOWN_MS
        deadline = None if ms is None else self._clock() + ms / 1000
        self._held.append(_Held(port, commands, polls, deadline, action, completion, fault))

    @property
    def pending(self) -> bool:
        return bool(self._held)

    def next_deadline(self) -> float | None:
        """When the earliest timed action is due (time.monotonic()), or None."""
        times = [h.deadline for h in self._held if h.deadline is not None]
        return min(times, default=None)

    def run_due(self) -> None:
        """Run every timed action whose time has come."""
        now = self._clock()
        self._run([h for h in self._held if h.deadline is not None and h.deadline <= now])

    def drop(self, port: int) -> None:
        """The device on ``port`` was reset: the completions it held back never come."""
        self._held = [h for h in self._held if h.port != port or not h.completion]

    def _run(self, due: list[_Held]) -> None:
        for held in due:
            if held in self._held:
                self._held.remove(held)
                what = "completion released" if held.completion else "link back"
                self.plan.report(held.fault, port=held.port, what=what)
                held.action()
