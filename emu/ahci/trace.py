"""`--trace`: one JSON line per command, and per register access if asked."""

from typing import TYPE_CHECKING, TextIO

from emu.ahci.observer import PortObserver
from emu.ata.taskfile import Completion, TaskFile

if TYPE_CHECKING:
    from emu.ahci.port import AhciPort


class Tracer(PortObserver):
    """Observes every port for its command records; the HBA calls :meth:`register` for
    each ABAR access when ``registers`` is set (host control registers included)."""

    def __init__(self, stream: TextIO, registers: bool = False) -> None:
        self._stream = stream
        self.registers = registers

    def emit(self, record: dict) -> None:
        """One line of the trace (faults and violations come here too)."""
        import json  # only traced runs pay for it

        self._stream.write(json.dumps(record, separators=(",", ":")) + "\n")

    def command_done(
        self,
        port: "AhciPort",
        slot: int,
        tf: TaskFile,
        pieces: list[tuple[int, int, bool]],
        nbytes: int,
        done: Completion,
        sources: list[tuple[int, int, str | None]] | None,
    ) -> None:
        record = {
            "event": "command",
            "port": port.index,
            "slot": slot,
            "opcode": tf.command,
            "lba": tf.lba,
            "count": tf.count,
            "features": tf.features,
            "bytes": nbytes,
            "prdt": [[address, length] for address, length, _ in pieces],
            "status": done.status,
            "error": done.error,
        }
        if sources is not None:
            record["sources"] = [list(source) for source in sources]
        self.emit(record)

    def command_failed(
        self, port: "AhciPort", slot: int, reason: str, done: Completion | None
    ) -> None:
        record = {"event": "failure", "port": port.index, "slot": slot, "reason": reason}
        if done is not None:
            record |= {"status": done.status, "error": done.error}
        self.emit(record)

    def register(self, kind: str, offset: int, size: int, value: int) -> None:
        self.emit({"event": kind, "offset": offset, "size": size, "value": value})
