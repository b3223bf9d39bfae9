"""Faults the HBA's ports act out: stalls, held-back completions, link loss.

:class:`PortFaults` decides (through the run's :class:`~emu.faults.plan.FaultPlan`)
which "ahci" fault fires on a command, and keeps what a fault postpones: a
completion held back for N further commands or for some milliseconds, a link
that comes back after a while. The HBA lets it run what is due at every guest
access; a guest that halts is woken by the board at :meth:`next_deadline`.
"""

import time
from collections.abc import Callable
from dataclasses import dataclass

from emu.faults.plan import FaultPlan
from emu.faults.spec import Fault

DEFAULT_DOWN_MS = 10  # link-loss: how long the link stays down unless down-ms= says


@dataclass
class _Held:
    port: int
    commands: int | None  # due after this many more commands (on any port)
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
        commands = params.get("commands")
        ms = params.get("ms", params.get("down-ms"))
        if fault.kind == "link-loss" and ms is None:
            ms = DEFAULT_DOWN_MS
        deadline = None if ms is None else self._clock() + ms / 1000
        self._held.append(_Held(port, commands, deadline, action, completion, fault))

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
