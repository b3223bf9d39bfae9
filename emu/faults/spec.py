"""The fault vocabulary: ``KIND[:KEY=VALUE,...]`` specs, and files holding lists of them.

A spec names what goes wrong (the kind) and when (the trigger)::

    media-error:lba=100-107            every read or write touching LBA 100..107 fails
    abrt:opcode=0x25,nth=3             the third READ DMA EXT is aborted
    df:opcode=write,p=0.1              a write ends in device fault, one time in ten
    power-cut:flush=2                  the power goes at the second FLUSH CACHE (EXT)
    stall:opcode=0x25,nth=3            the third READ DMA EXT never completes
    latency:opcode=ncq,commands=4      a queued command completes after 4 later ones
    link-loss:port=1,nth=5,down-ms=50  port 1's link drops at its 5th command, back 50 ms on
    link-loss:nth=1,down=100           back at the guest's 100th read of the port's PxSSTS

Every key of a trigger must hold for a command to match; ``nth`` and ``p``
then pick among the matching commands, and ``times`` caps how often a fault
fires. A fault file (TOML or JSON) holds the same vocabulary: a list of specs,
as strings or as tables (``{kind = "media-error", lba = "100-107"}``).
"""

import json
import tomllib
from dataclasses import dataclass, field
from pathlib import Path

from emu.errors import EmuError


class FaultSpecError(EmuError):
    """A fault spec or fault file that does not parse (exit status 2, as a usage error)."""

    exit_status = 2


# Opcode classes a trigger may name instead of a number.
OPCODE_CLASSES: dict[str, frozenset[int]] = {
    "read": frozenset({0x20, 0x24, 0x25, 0x29, 0x60, 0xC4, 0xC8}),
    "write": frozenset({0x30, 0x34, 0x35, 0x39, 0x61, 0xC5, 0xCA}),
    "flush": frozenset({0xE7, 0xEA}),
    "ncq": frozenset({0x60, 0x61}),
}

# Where each kind acts: "ata" kinds in the disk (emu.ata), "ahci" kinds in the port.
KINDS: dict[str, str] = {
    "media-error": "ata",
    "idnf": "ata",
    "abrt": "ata",
    "df": "ata",
    "power-cut": "ata",
    "stall": "ahci",
    "latency": "ahci",
    "link-loss": "ahci",
}

_TRIGGER_KEYS = {"port", "lba", "opcode", "nth", "p", "times"}
_KIND_KEYS: dict[str, set[str]] = {
    "media-error": set(),
    "idnf": set(),
    "abrt": set(),
    "df": set(),
    "power-cut": {"write", "flush", "command"},
    "stall": set(),
    "latency": {"commands", "ms"},
    "link-loss": {"down", "down-ms"},
}
_POWER_CUT_AT = {"write": "write", "flush": "flush", "command": None}


@dataclass(frozen=True)
class Trigger:
    """When a fault fires: every given condition holds for the command."""

    port: int | None = None
    lba: tuple[int, int] | None = None  # first, last (inclusive)
    opcodes: frozenset[int] | None = None
    nth: int | None = None  # the Nth matching command only (1-based)
    probability: float = 1.0
    times: int | None = None  # fires at most this often

    def matches(self, port: int, opcode: int, lba: int, count: int) -> bool:
        """Does a command (its sector range ``lba``, ``count``; count 0: no range) match?"""
        if self.port is not None and port != self.port:
            return False
        if self.opcodes is not None and opcode not in self.opcodes:
            return False
        if self.lba is not None:
            first, last = self.lba
            if not count or lba > last or lba + count - 1 < first:
                return False
        return True


@dataclass(frozen=True)
class Fault:
    """One parsed spec: ``kind``, its ``trigger`` and its own parameters."""

    kind: str
    trigger: Trigger
    params: dict[str, int] = field(default_factory=dict)
    text: str = ""

    @property
    def layer(self) -> str:
        return KINDS[self.kind]


def _number(key: str, value: str, spec: str) -> int:
    try:
        number = int(value, 0)
    except ValueError:
        raise FaultSpecError(f"fault {spec!r}: {key}={value!r} is not a number") from None
    if number < 0:
        raise FaultSpecError(f"fault {spec!r}: {key} must not be negative")
    return number


def _lba_range(value: str, spec: str) -> tuple[int, int]:
    first, sep, last = value.partition("-")
    lo = _number("lba", first, spec)
    hi = _number("lba", last, spec) if sep else lo
    if hi < lo:
        raise FaultSpecError(f"fault {spec!r}: lba range {value!r} ends before it starts")
    return lo, hi


def _opcodes(value: str, spec: str) -> frozenset[int]:
    codes: set[int] = set()
    for name in value.split("+"):
        if name in OPCODE_CLASSES:
            codes |= OPCODE_CLASSES[name]
            continue
        code = _number("opcode", name, spec)
        if code > 0xFF:
            raise FaultSpecError(f"fault {spec!r}: opcode {name} is more than 0xff")
        codes.add(code)
    return frozenset(codes)


def parse_fault(spec: str) -> Fault:
    """Parse one ``KIND[:KEY=VALUE,...]`` spec; FaultSpecError says what is wrong."""
    kind, _, rest = spec.strip().partition(":")
    if kind not in KINDS:
        raise FaultSpecError(f"fault {spec!r}: unknown kind {kind!r} (one of {', '.join(KINDS)})")
    pairs: dict[str, str] = {}
    for item in filter(None, (part.strip() for part in rest.split(","))):
        key, sep, value = item.partition("=")
        if not sep or not value:
            raise FaultSpecError(f"fault {spec!r}: {item!r} is not KEY=VALUE")
        if key not in _TRIGGER_KEYS | _KIND_KEYS[kind]:
            raise FaultSpecError(f"fault {spec!r}: {kind} takes no {key!r}")
        if key in pairs:
            raise FaultSpecError(f"fault {spec!r}: {key} given twice")
        pairs[key] = value
    return _build(kind, pairs, spec)


def _build(kind: str, pairs: dict[str, str], spec: str) -> Fault:
    trigger: dict = {}
    params: dict[str, int] = {}
    for key, value in pairs.items():
        if key == "lba":
            trigger["lba"] = _lba_range(value, spec)
        elif key == "opcode":
            trigger["opcodes"] = _opcodes(value, spec)
        elif key == "p":
            try:
                probability = float(value)
            except ValueError:
                probability = -1.0
            if not 0.0 <= probability <= 1.0:
                raise FaultSpecError(f"fault {spec!r}: p={value!r} is not between 0 and 1")
            trigger["probability"] = probability
        elif key in ("port", "nth", "times"):
            trigger[key] = _number(key, value, spec)
            if key != "port" and not trigger[key]:
                raise FaultSpecError(f"fault {spec!r}: {key} counts from 1")
        else:
            params[key] = _number(key, value, spec)
    if kind == "media-error" and "lba" not in trigger:
        raise FaultSpecError(f"fault {spec!r}: media-error needs lba=FIRST-LAST")
    if kind == "power-cut":
        _power_cut_trigger(params, trigger, spec)
    if kind == "latency" and len(params) != 1:
        raise FaultSpecError(f"fault {spec!r}: latency needs commands=N or ms=T (one of them)")
    if kind == "link-loss" and len(params) > 1:
        raise FaultSpecError(f"fault {spec!r}: link-loss takes down=N or down-ms=T, not both")
    return Fault(kind, Trigger(**trigger), params, spec.strip())


def _power_cut_trigger(params: dict[str, int], trigger: dict, spec: str) -> None:
    """``power-cut:write=N`` is sugar for ``opcode=write,nth=N``, likewise flush and
    command (any command); with none of them, the trigger keys say when."""
    given = [key for key in _POWER_CUT_AT if key in params]
    if len(given) > 1:
        raise FaultSpecError(f"fault {spec!r}: power-cut takes one of write=, flush=, command=")
    if not given:
        return
    if "nth" in trigger or "opcodes" in trigger:
        raise FaultSpecError(f"fault {spec!r}: {given[0]}=N already says nth and opcode")
    at = params.pop(given[0])
    if not at:
        raise FaultSpecError(f"fault {spec!r}: {given[0]} counts from 1")
    trigger["nth"] = at
    if _POWER_CUT_AT[given[0]] is not None:
        trigger["opcodes"] = OPCODE_CLASSES[_POWER_CUT_AT[given[0]]]


def load_faults(path: str) -> list[Fault]:
    """The faults in a TOML file (``faults = [...]``) or a JSON file (a list, or an
    object with a ``faults`` list); each entry a spec string or a table of keys."""
    try:
        text = Path(path).read_bytes()
    except OSError as exc:
        raise FaultSpecError(f"{path}: cannot read: {exc.strerror}") from None
    try:
        json_file = path.endswith(".json")
        data = json.loads(text) if json_file else tomllib.loads(text.decode("utf-8"))
    except (ValueError, UnicodeDecodeError) as exc:
        first = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
        raise FaultSpecError(f"{path}: not valid {_format(path)}: {first}") from None
    entries = data.get("faults") if isinstance(data, dict) else data
    if not isinstance(entries, list):
        raise FaultSpecError(f"{path}: expected a list of faults (faults = [...])")
    return [parse_fault(_entry_spec(entry, path)) for entry in entries]


def _format(path: str) -> str:
    return "JSON" if path.endswith(".json") else "TOML"


def _entry_spec(entry: object, path: str) -> str:
    """A file entry as a spec string: strings as they are, tables as KIND:KEY=VALUE,..."""
    if isinstance(entry, str):
        return entry
    if isinstance(entry, dict) and isinstance(entry.get("kind"), str):
        keys = [f"{k}={v}" for k, v in entry.items() if k != "kind"]
        if any(isinstance(v, (dict, list, bool)) for v in entry.values()):
            raise FaultSpecError(f"{path}: fault {entry!r}: values are numbers or strings")
        return entry["kind"] + (":" + ",".join(keys) if keys else "")
    raise FaultSpecError(f"{path}: fault entry {entry!r} is neither a spec nor a table with kind")
