"""Hostile machine.json files (issue 10, item 11's JSON cases and the 77 hand edits).

Each is refused by every vm command in one line with exit status 1, never a
traceback, and no file under the folder changes.
"""

import json
import os
import subprocess
import sys
import uuid

import pytest

from emu.storage import ops
from emu.storage.vm import Machine

MiB = 1 << 20
DEEP = 100_000


@pytest.fixture
def folder(tmp_path):
    base = tmp_path / "base.vdi"
    ops.create_image(str(base), 4 * MiB, fmt="vdi", variant="dynamic")
    with Machine.create(tmp_path / "vm") as vm:
        vm.attach(0, str(base))
        vm.snapshot_take("s1")
    return tmp_path / "vm"


def edited(folder, edit) -> dict:
    data = json.loads((folder / "machine.json").read_text())
    edit(data)
    return data


def first_medium(data: dict) -> dict:
    return next(iter(data["media"].values()))


def set_port(data: dict, port: str) -> None:
    data["attachments"] = {port: data["attachments"]["0"]}
    data["current"]["leaves"] = {port: data["current"]["leaves"]["0"]}


EDITS = {
    "nul in a media path": (lambda d: first_medium(d).update(path="base\0.vdi"), "bad medium path"),
    "path not a string": (lambda d: first_medium(d).update(path=5), "expected a string"),
    "empty path": (lambda d: first_medium(d).update(path=""), "bad medium path"),
    "media a list": (lambda d: d.update(media=[]), "expected an object"),
    "snapshots an object": (lambda d: d.update(snapshots={}), "expected a list"),
    "uuid a number": (lambda d: d.update(uuid=123), "expected a string"),
    "uuid garbage": (lambda d: d.update(uuid="x" * 1000), "badly formed"),
    "name null": (lambda d: d.update(name=None), "expected a string"),
    "name a lone surrogate": (lambda d: d.update(name="\ud800"), "surrogates not allowed"),
    "port out of range": (lambda d: set_port(d, "99"), "bad port '99'"),
    "port negative": (lambda d: set_port(d, "-1"), "bad port"),
    "port not ascii": (lambda d: set_port(d, "\u0663"), "bad port"),
    "autoreset a string": (
        lambda d: d["attachments"]["0"].update(autoreset="yes"),
        "autoreset must be true or false",
    ),
    "unknown type": (lambda d: first_medium(d).update(type="weird"), "not a valid MediumType"),
    "no media": (lambda d: d.pop("media"), "no 'media'"),
    "huge version": (lambda d: d.update(version=1e308 * 10), "version inf is not supported"),
    "discard not a list": (lambda d: d.update(discard="all"), "expected a list"),
    "discard names a registered medium": (
        lambda d: d.update(discard=list(d["media"])[:1]),
        "both registered and to be discarded",
    ),
    "two snapshots with one name": (
        lambda d: d["snapshots"].append({**d["snapshots"][0], "uuid": str(uuid.uuid4())}),
        "two snapshots are named 's1'",
    ),
    "two snapshots with one uuid": (
        lambda d: d["snapshots"].append({**d["snapshots"][0], "name": "s2"}),
        "two snapshots have the UUID",
    ),
}

RAW = {
    "nested 100,000 levels": (
        b'{"schema": "ahci-emu machine", "version": 1, "media": '
        + b"[" * DEEP
        + b"]" * DEEP
        + b"}",
        "nested too deeply",
    ),
    "a 5,000-digit number": (
        b'{"schema": "ahci-emu machine", "version": 1' + b"0" * 5000 + b"}",
        "not valid JSON",
    ),
    "duplicate keys": (
        b'{"schema": "ahci-emu machine", "schema": "ahci-emu machine", "version": 1}',
        "the key 'schema' appears twice",
    ),
    "not UTF-8": (b'{"schema": "ahci-emu machine\xff"}', "not valid JSON"),
    "empty": (b"", "not valid JSON"),
    "null": (b"null", "not an ahci-emu machine file"),
    "larger than 16 MiB": (b" " * (16 * MiB + 1), "larger than 16 MiB"),
}


def commands(folder) -> list[list[object]]:
    return [
        ["vm", "info", folder],
        ["vm", "snapshot", folder, "list"],
        ["vm", "snapshot", folder, "restore", "s1"],
        ["vm", "detach", folder, "--port", 0],
        ["vm", "run", folder, "demo"],
    ]


def all_refused(ahci_emu, tree_state, folder, match: str) -> None:
    before = tree_state(folder.parent)
    for argv in commands(folder):
        status, out, err = ahci_emu(*argv)
        assert (status, out) == (1, ""), (argv, err)
        assert len(err.splitlines()) == 1 and err.startswith("ahci-emu: error: "), err
        assert match in err, (argv, err)
    assert tree_state(folder.parent) == before


@pytest.mark.parametrize("case", EDITS)
def test_a_hand_edited_machine_file_is_refused(folder, ahci_emu, tree_state, case):
    edit, match = EDITS[case]
    (folder / "machine.json").write_text(json.dumps(edited(folder, edit)))
    all_refused(ahci_emu, tree_state, folder, match)


@pytest.mark.parametrize("case", RAW)
def test_a_machine_file_that_is_not_sound_json_is_refused(folder, ahci_emu, tree_state, case):
    data, match = RAW[case]
    (folder / "machine.json").write_bytes(data)
    all_refused(ahci_emu, tree_state, folder, match)


@pytest.mark.parametrize("kind", ["fifo", "directory"])
def test_a_machine_file_that_is_not_a_regular_file_is_refused(folder, ahci_emu, tree_state, kind):
    """A FIFO is refused at once, not waited on."""
    (folder / "machine.json").unlink()
    if kind == "fifo":
        os.mkfifo(folder / "machine.json")
    else:
        (folder / "machine.json").mkdir()
    all_refused(ahci_emu, tree_state, folder, "not a regular file")


def test_deep_nesting_is_one_line_from_the_real_command(folder):
    """The recursion limit is met in a real process too (no RecursionError traceback)."""
    (folder / "machine.json").write_bytes(RAW["nested 100,000 levels"][0])
    result = subprocess.run(
        [sys.executable, "-m", "emu.cli", "vm", "info", str(folder)],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 1
    assert result.stderr.count("\n") == 1 and "nested too deeply" in result.stderr
