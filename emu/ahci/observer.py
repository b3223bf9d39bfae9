"""What a port tells an observer: register writes, fetched commands, their outcomes.

A port calls its observer (``AhciPort.observer``) only when one is attached, so an
unobserved port pays one ``is None`` test per event. Subclasses override the events
they need; the others stay no-ops. The `--trace` writer is one (emu.ahci.trace); a
driver checker that judges the guest's register writes and command tables against
the port's state is another kind.
"""

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from emu.ahci.port import AhciPort
    from emu.ata.taskfile import Completion, TaskFile


class PortObserver:
    def register_write(self, port: "AhciPort", reg: int, value: int, mask: int) -> None:
        """The guest writes ``value`` to the bytes ``mask`` selects of port register
        ``reg``; called before the write takes effect, so ``port`` shows the old state."""

    def command_fetched(
        self, port: "AhciPort", slot: int, header: int, table: int, prdtl: int
    ) -> None:
        """The engine fetched the command header of ``slot`` at guest address ``header``
        (command table at ``table`` with ``prdtl`` PRD entries), before running it."""

    def command_done(
        self,
        port: "AhciPort",
        slot: int,
        tf: "TaskFile",
        pieces: list[tuple[int, int, bool]],
        nbytes: int,
        done: "Completion",
        sources: list[tuple[int, int, str | None]] | None,
    ) -> None:
        """The disk executed the command: its task file, PRD pieces (address, length,
        I bit), bytes moved, completion and, for reads, the image serving each range."""

    def command_failed(
        self, port: "AhciPort", slot: int, reason: str, done: "Completion | None"
    ) -> None:
        """The command ended before the disk executed it, for ``reason``."""
