"""Hypothesis fuzzing of machine.json (issue 10: hostile tests in the project).

A real machine's file is mutated (values replaced by hostile scalars, paths to
other machines' and the user's files, UUIDs of other media and snapshots, keys
renamed or removed), then vm commands run on it through the real entry point.
The property, for every example:

- no traceback: each command exits 0, or 1 with one ``ahci-emu: error:`` line;
- no hang: each command finishes within ``HANG`` seconds;
- no file outside the expected set changed: only machine.json and the machine's
  Snapshots/{UUID}.vdi files may appear, change or go, and a file may go only
  if its UUID is one the (mutated) registry holds; the bases a parsable file
  registers may be written (the guest or a merge writes them). Another
  machine, the user's files, and everything else stay byte-identical.

The default test command runs ``DEFAULT_EXAMPLES`` examples; set
AHCI_EMU_FUZZ_EXAMPLES for a longer run (README, Testing).
"""

import json
import os
import re
import shutil
import signal
import uuid
from pathlib import Path

import pytest
from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st

from emu.storage import machine_file, ops
from emu.storage.vm import Machine

DEFAULT_EXAMPLES = 25
EXAMPLES = int(os.environ.get("AHCI_EMU_FUZZ_EXAMPLES", DEFAULT_EXAMPLES))
HANG = 60  # seconds; a command this slow on a 4 MiB machine is a hang
HUGE = "<a 5,000-digit number>"  # put into the file's text (Python will not print it)
MiB = 1 << 20
_DIFF = re.compile(r"^(\.new-)?\{([0-9a-f-]{36})\}\.vdi$")


class Hang(Exception):
    """A command outlived HANG."""


def _world(root: Path) -> None:
    """root/D (the machine fuzzed), root/B (another machine), bases, the user's files."""
    for name in ("base.vdi", "base2.vdi", "base3.vdi", "baseB.vdi"):
        ops.create_image(str(root / name), 4 * MiB, fmt="vdi", variant="dynamic")
    with Machine.create(root / "B") as b:
        b.attach(0, str(root / "baseB.vdi"))
        b.snapshot_take("b1")
    with Machine.create(root / "D") as d:
        d.attach(0, str(root / "base.vdi"))
        d.attach(1, str(root / "base3.vdi"), "immutable")
        d.snapshot_take("s1")
        d.snapshot_take("s2")
    (root / "sentinel.txt").write_text("the user's")
    (root / "D" / "notes.txt").write_text("the user's")
    (root / "D" / "Snapshots" / "notes.txt").write_text("the user's")


@pytest.fixture(scope="module")
def template(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("fuzz-template")
    _world(root)
    return root


def _uuids(root: Path) -> list[str]:
    """Every UUID the two machine files mention (media, snapshots, machines)."""
    text = (root / "D" / "machine.json").read_text() + (root / "B" / "machine.json").read_text()
    return sorted(set(re.findall(r"[0-9a-f]{8}-(?:[0-9a-f]{4}-){3}[0-9a-f]{12}", text)))


def _values(root: Path) -> st.SearchStrategy:
    uuids = _uuids(root)
    b_diffs = [p.name for p in (root / "B" / "Snapshots").iterdir()]
    paths = [
        "../sentinel.txt",
        "../B/machine.json",
        "notes.txt",
        "Snapshots/notes.txt",
        "../base2.vdi",
        "Snapshots",
        ".",
        "",
        "a\0b",
        *[f"../B/Snapshots/{n}" for n in b_diffs],
        *[f"Snapshots/{{{u}}}.vdi" for u in uuids],
    ]
    scalars = st.one_of(
        st.none(),
        st.booleans(),
        st.sampled_from([0, -1, 1, 31, 32, 2**64, 1e308, float("nan"), HUGE]),
        st.text(max_size=12),
        st.sampled_from(["normal", "immutable", "vdi", "raw", "forward", "backward", "s1"]),
    )
    return st.one_of(
        st.sampled_from(uuids),
        st.sampled_from(paths),
        scalars,
        st.recursive(scalars, lambda inner: st.lists(inner, max_size=3), max_leaves=5),
        st.just({}),
    )


def _nodes(obj, path=()):
    """Every (container path, key) in a JSON value."""
    if isinstance(obj, dict):
        for key, value in obj.items():
            yield path, key
            yield from _nodes(value, (*path, key))
    elif isinstance(obj, list):
        for index, value in enumerate(obj):
            yield path, index
            yield from _nodes(value, (*path, index))


def _mutate(obj, data, values) -> None:
    parent_path, key = data.draw(st.sampled_from(list(_nodes(obj))))
    parent = obj
    for step in parent_path:
        parent = parent[step]
    kind = data.draw(st.sampled_from(["replace", "replace", "remove", "rename"]))
    if kind == "replace":
        parent[key] = data.draw(values)
    elif kind == "remove":
        del parent[key]
    elif isinstance(parent, dict):
        new_key = data.draw(st.one_of(st.sampled_from(_uuids_of(obj)), st.text(max_size=4)))
        parent[new_key] = parent.pop(key)


def _uuids_of(obj) -> list[str]:
    text = json.dumps(obj)
    return sorted(set(re.findall(r"[0-9a-f]{8}-(?:[0-9a-f]{4}-){3}[0-9a-f]{12}", text))) or ["0"]


def _state(root: Path) -> dict[str, tuple[str, int, bytes]]:
    """Every file and symlink under ``root`` (symlinked folders not followed)."""
    out = {}
    for folder, dirs, files in os.walk(root):
        for name in files + [d for d in dirs if (Path(folder) / d).is_symlink()]:
            path = Path(folder) / name
            rel = str(path.relative_to(root))
            if path.is_symlink():
                out[rel] = ("link", 0, os.readlink(path).encode())
            elif path.is_file():
                out[rel] = ("file", path.stat().st_mtime_ns, path.read_bytes())
    return out


def _disturb(root: Path, how: str, data) -> None:
    """Change the machine's files behind its back, as another tool or person might."""
    snapshots = root / "D" / "Snapshots"
    diffs = sorted(p for p in snapshots.iterdir() if _DIFF.match(p.name))
    victim = data.draw(st.sampled_from(diffs))
    if how == "snapshots are B's":
        for path in snapshots.iterdir():
            shutil.move(path, root / "B" / "Snapshots" / path.name)
        snapshots.rmdir()
        snapshots.symlink_to(root / "B" / "Snapshots")
    elif how == "a diff is text":
        victim.unlink()
        victim.write_text("the user's now")
    elif how == "a diff is a symlink out":
        victim.unlink()
        victim.symlink_to(root / "sentinel.txt")
    elif how == "a copy of B's diff" and not snapshots.is_symlink():
        b_diff = next((root / "B" / "Snapshots").iterdir())
        shutil.copy(b_diff, snapshots / b_diff.name)
    elif how == "a base is gone":
        (root / "base3.vdi").unlink()


def _registered(root: Path) -> tuple[set[str], set[str]]:
    """(relative paths of the bases, UUIDs of the media and discards) the fuzzed file holds."""
    try:
        config = machine_file.read(str(root / "D"))
    except machine_file.MachineFileError:
        return set(), set()
    bases = {
        os.path.relpath(os.path.realpath(root / "D" / r.path), root)
        for r in config.media.values()
        if r.parent is None
    }
    held = {str(u) for u in [*config.media, *config.discard]}
    return bases, held


DISTURBANCES = [
    "snapshots are B's",
    "a diff is text",
    "a diff is a symlink out",
    "a copy of B's diff",
    "a base is gone",
]
COMMANDS = [
    ["info"],
    ["snapshot", "list"],
    ["snapshot", "restore", "s1"],
    ["snapshot", "delete", "s1"],
    ["snapshot", "delete", "s2"],
    ["snapshot", "take", "new"],
    ["detach", "--port", "0"],
    ["attach", "--port", "5", "--medium", "../base2.vdi", "--type", "immutable"],
    ["run", "hello"],
]


def _alarm(signum, frame):
    raise Hang


@settings(
    max_examples=EXAMPLES,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@given(data=st.data())
def test_a_mutated_machine_file_never_crashes_hangs_or_touches_others_files(
    template, tmp_path_factory, ahci_emu, data
):
    root = tmp_path_factory.mktemp("fuzz")
    shutil.copytree(template, root, dirs_exist_ok=True, symlinks=True)
    obj = json.loads((root / "D" / "machine.json").read_text())
    values = _values(root)
    for _ in range(data.draw(st.sampled_from([0, 0, 1, 2]))):
        if list(_nodes(obj)):
            _mutate(obj, data, values)
    if data.draw(st.booleans()):
        uuids = st.sampled_from(
            _uuids(root) + [n.name[1:37] for n in (root / "B" / "Snapshots").iterdir()]
        )
        obj["discard"] = data.draw(st.lists(uuids, max_size=3))
    for how in data.draw(st.lists(st.sampled_from(DISTURBANCES), max_size=2, unique=True)):
        _disturb(root, how, data)
    text = json.dumps(obj).replace(json.dumps(HUGE), "9" * 5000)
    (root / "D" / "machine.json").write_text(text)
    commands = data.draw(st.lists(st.sampled_from(COMMANDS), min_size=1, max_size=3))
    bases, held = _registered(root)
    before = _state(root)
    old = signal.signal(signal.SIGALRM, _alarm)
    try:
        for command in commands:
            action, *rest = command
            medium = [str(root / "D" / a) if a.startswith("..") else a for a in rest]
            signal.alarm(HANG)
            status, _, err = ahci_emu("vm", action, root / "D", *medium)
            signal.alarm(0)
            event(f"vm {action}: exit {status}")
            assert status in (0, 1) or action == "run", (command, status, err)
            if status == 1:
                assert err.count("\n") == 1 and err.startswith("ahci-emu: error: "), err
    finally:
        signal.alarm(0)
        signal.signal(signal.SIGALRM, old)
    after = _state(root)
    for rel in before.keys() | after.keys():
        if before.get(rel) == after.get(rel) or rel in bases:
            continue
        folder, name = os.path.split(rel)
        if rel in ("D/machine.json", "D/machine.json.tmp"):
            continue
        match = _DIFF.match(name)
        assert folder == "D/Snapshots" and match, f"{rel} changed"
        if rel in before:  # changed or deleted: only the machine's own regular file
            assert before[rel][0] == "file", f"{rel} (a symlink) changed"
        if rel not in after:  # deleted: only a diff whose UUID the registry held
            assert match[2] in held, f"{rel} deleted, not in the registry"
    assert (root / "sentinel.txt").read_text() == "the user's"
    shutil.rmtree(root)


def test_the_fuzzer_is_able_to_see_a_deleted_file(template, tmp_path):
    """The property's file check itself: a deleted user file is a difference."""
    shutil.copytree(template, tmp_path / "w", symlinks=True)
    before = _state(tmp_path / "w")
    (tmp_path / "w" / "D" / "notes.txt").unlink()
    assert _state(tmp_path / "w").keys() == before.keys() - {"D/notes.txt"}
    assert uuid.UUID(_uuids(tmp_path / "w")[0])
