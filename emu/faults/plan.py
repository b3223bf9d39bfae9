"""Which fault fires on which command: the faults of a run, their counters and one seed.

Each fault draws its probabilities from its own generator, seeded from the run's
``--fault-seed`` and the fault's position, so a run with the same faults and
seed fires the same faults at the same commands whatever else changes.
"""

import random
import sys
from collections.abc import Callable, Sequence
from typing import TextIO

from emu.faults.spec import Fault

Report = Callable[[dict], None]


class FaultPlan:
    """The faults of one run. ``report`` gets a record of every fault that fires;
    ``verbose`` also puts a line on ``stream`` (stderr) for each."""

    def __init__(
        self,
        faults: Sequence[Fault],
        seed: int = 0,
        *,
        verbose: bool = False,
        stream: TextIO | None = None,
    ) -> None:
        self.faults = list(faults)
        self.seed = seed
        self._random = [random.Random(f"{seed}:{i}") for i in range(len(self.faults))]
        self._matched = [0] * len(self.faults)
        self._fired = [0] * len(self.faults)
        self._verbose = verbose
        self._stream = stream
        self.fired: list[dict] = []
        self.listeners: list[Report] = []

    def layer_faults(self, layer: str) -> bool:
        """Is there any fault of ``layer`` ("ata" or "ahci")? Layers with none skip the plan."""
        return any(f.layer == layer for f in self.faults)

    def has_kind(self, kind: str) -> bool:
        return any(f.kind == kind for f in self.faults)

    def random(self, purpose: str) -> random.Random:
        """A generator for something else the seed drives (e.g. what a power cut keeps)."""
        return random.Random(f"{self.seed}:{purpose}")

    def check(
        self,
        layer: str,
        port: int,
        opcode: int,
        lba: int = 0,
        count: int = 0,
        slot: int | None = None,
    ) -> Fault | None:
        """The first fault of ``layer`` that fires on this command (reported), or None."""
        for i, fault in enumerate(self.faults):
            if fault.layer != layer:
                continue
            trigger = fault.trigger
            if not trigger.matches(port, opcode, lba, count):
                continue
            self._matched[i] += 1
            if trigger.nth is not None and self._matched[i] != trigger.nth:
                continue
            if trigger.times is not None and self._fired[i] >= trigger.times:
                continue
            if trigger.probability < 1.0 and self._random[i].random() >= trigger.probability:
                continue
            self._fired[i] += 1
            where = {"port": port} if slot is None else {"port": port, "slot": slot}
            self.report(fault, **where, opcode=opcode, lba=lba, count=count)
            return fault
        return None

    def report(self, fault: Fault, **details: int | str) -> None:
        """Record that ``fault`` fired (or did something later, e.g. a link coming back)."""
        record = {"event": "fault", "kind": fault.kind, "spec": fault.text, **details}
        self.fired.append(record)
        for listener in self.listeners:
            listener(record)
        if self._verbose:
            said = ", ".join(
                f"{k} {v:#x}" if k == "opcode" else f"{k} {v}" for k, v in details.items()
            )
            print(f"ahci-emu: fault: {fault.text}: {said}", file=self._stream or sys.stderr)
