"""Hypothesis fuzzing of VDI headers and block maps (issue 10: hostile tests in the project).

A small chain (a base with data, a differencing image in ``Snapshots/`` with
data) is mutated: header fields set to hostile values, map entries pointed
anywhere, bytes overwritten, UUIDs swapped, files truncated or extended
sparsely. Then ``image info``, ``image check`` and ``image convert`` run on the
leaf through the real entry point, and the chain is opened read-only and read
whole, then opened for writing and written; a fixed image, mutated too, is
opened as a shareable medium (writable, shared lock) and written. The property,
for every example:

- no traceback: each command exits 0, or 1, 2, 3 as README documents, with at
  most one ``ahci-emu: error:`` line; opening raises nothing but a StorageError;
- no hang: each step finishes within ``HANG`` seconds;
- no file outside the expected set changed: info, check, convert and the
  read-only open change no byte of any file (convert may only add its new
  destination, and only when it succeeds); the writable opens may change the
  leaf or the fixed image only, and only when they succeeded; the user's file
  never changes.

The default test command runs ``DEFAULT_EXAMPLES`` examples; set
AHCI_EMU_FUZZ_EXAMPLES for a longer run (README, Testing).
"""

import contextlib
import hashlib
import os
import signal
import struct
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from emu import cli
from emu.storage import ops
from emu.storage.chain import open_chain
from emu.storage.errors import StorageError
from emu.storage.media import open_shareable
from emu.storage.vdi import VDIHEADER1PLUS

DEFAULT_EXAMPLES = 40
EXAMPLES = int(os.environ.get("AHCI_EMU_FUZZ_EXAMPLES", DEFAULT_EXAMPLES))
HANG = 60  # seconds; any step this slow on a 4 MiB chain is a hang
MiB = 1 << 20

U32 = [
    0,
    1,
    2,
    3,
    4,
    5,
    0x17F,
    0x180,
    0x190,
    0x200,
    MiB,
    MiB + 1,
    1 << 26,
    (1 << 26) + 1,
    0x7FFFFFFF,
    0xFFFFFFFE,
    0xFFFFFFFF,
]
U64 = [
    0,
    512,
    4 * MiB - 512,
    4 * MiB,
    4 * MiB + 512,
    64 << 40,
    (64 << 40) + MiB,
    1 << 63,
    (1 << 64) - 1,
]
U32_FIELDS = [
    "cbHeader",
    "u32Type",
    "fFlags",
    "offBlocks",
    "offData",
    "cbBlock",
    "cbBlockExtra",
    "cBlocks",
    "cBlocksAllocated",
]

u32 = st.one_of(st.sampled_from(U32), st.integers(0, 0xFFFFFFFF))
header_edit = st.one_of(
    st.tuples(st.just("field"), st.sampled_from(U32_FIELDS), u32),
    st.tuples(
        st.just("field"),
        st.just("cbDisk"),
        st.one_of(st.sampled_from(U64), st.integers(0, (1 << 64) - 1)),
    ),
    st.tuples(st.just("geometry"), st.sampled_from(["LegacyGeometry", "LCHSGeometry"]), u32),
    st.tuples(
        st.just("uuid"),
        st.sampled_from(["uuidCreate", "uuidModify", "uuidLinkage", "uuidParentModify"]),
        st.sampled_from(["nil", "other", "base", "diff"]),
    ),
)
map_edit = st.tuples(
    st.just("entry"),
    st.integers(0, 5),
    st.one_of(st.sampled_from([0, 1, 2, 3, 4, 0xFFFFFFFE, 0xFFFFFFFF]), u32),
)
byte_edit = st.tuples(st.just("bytes"), st.integers(0, 3 * MiB), st.binary(min_size=1, max_size=16))
size_edit = st.tuples(
    st.just("size"), st.sampled_from(["truncate", "extend"]), st.integers(0, 4 * MiB)
)
edits = st.lists(
    st.tuples(
        st.sampled_from(["base", "diff", "fixed"]),
        st.one_of(header_edit, map_edit, byte_edit, size_edit),
    ),
    min_size=1,
    max_size=4,
)


class Hang(Exception):
    """A step outlived HANG."""


@contextmanager
def deadline() -> Iterator[None]:
    def expire(signum: int, frame: object) -> None:
        raise Hang(f"a step took more than {HANG} s")

    old = signal.signal(signal.SIGALRM, expire)
    signal.alarm(HANG)
    try:
        yield
    finally:
        signal.alarm(0)
        signal.signal(signal.SIGALRM, old)


def world(root: Path) -> dict[str, Path]:
    base = root / "base.vdi"
    ops.create_image(str(base), 4 * MiB)
    with open_chain(str(base)) as chain:
        chain.writev(0, [memoryview(b"\x11" * 512)])
        chain.writev(2 * MiB, [memoryview(b"\x22" * 512)])
    (root / "Snapshots").mkdir()
    diff = root / "Snapshots" / "diff.vdi"
    ops.create_diff(str(base), str(diff))
    with open_chain(str(diff)) as chain:
        chain.writev(MiB, [memoryview(b"\x33" * 512)])
    fixed = root / "fixed.vdi"
    ops.create_image(str(fixed), 4 * MiB, variant="fixed")
    user = root / "notes.txt"
    user.write_text("the user's")
    return {"base": base, "diff": diff, "fixed": fixed, "user": user}


def mutate(files: dict[str, Path], target: str, edit: tuple) -> None:
    path = files[target]
    raw = bytearray(path.read_bytes())
    kind = edit[0]
    if kind in ("field", "geometry", "uuid", "entry") and len(raw) < 72 + 0x190:
        return  # truncated by an earlier edit: nothing to edit
    if kind in ("field", "geometry", "uuid"):
        hdr = VDIHEADER1PLUS.parse(raw[72:])
        if kind == "field":
            hdr[edit[1]] = edit[2]
        elif kind == "geometry":
            hdr[edit[1]].cbSector = edit[2]
        else:
            sources = {"nil": bytes(16), "other": os.urandom(16)}
            for name in ("base", "diff"):
                sources[name] = files[name].read_bytes()[0x188:0x198].ljust(16, b"\0")
            from uuid import UUID

            hdr[edit[1]] = UUID(bytes_le=sources[edit[2]])
        raw[72 : 72 + 0x190] = VDIHEADER1PLUS.build(hdr)
    elif kind == "entry":
        off_blocks = struct.unpack_from("<I", raw, 0x154)[0]  # the file offset of offBlocks
        at = off_blocks + 4 * edit[1]
        if at + 4 <= len(raw):
            raw[at : at + 4] = struct.pack("<I", edit[2])
    elif kind == "bytes":
        at = min(edit[1], max(0, len(raw) - len(edit[2])))
        raw[at : at + len(edit[2])] = edit[2]
    else:
        if edit[1] == "truncate":
            del raw[edit[2] :]
        else:
            path.write_bytes(raw)
            os.truncate(path, len(raw) + edit[2])
            return
    path.write_bytes(raw)


def snapshot(root: Path) -> dict[str, str]:
    return {
        str(p.relative_to(root)): hashlib.sha256(p.read_bytes()).hexdigest()
        for p in sorted(root.rglob("*"))
        if p.is_file()
    }


def run_cli(capsys: pytest.CaptureFixture, *argv: str) -> int:
    with deadline():
        status = cli.main(["image", *argv])
    err = capsys.readouterr().err
    assert status in (0, 1, 2, 3), (argv, status, err)
    assert err.count("ahci-emu: error:") <= 1 and "Traceback" not in err, (argv, err)
    return status


@settings(
    max_examples=EXAMPLES,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@given(changes=edits)
def test_mutated_vdis_never_crash_hang_or_change_files(capsys, changes):
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        files = world(root)
        for target, edit in changes:
            mutate(files, target, edit)
        leaf = str(files["diff"])
        before = snapshot(root)

        for command in (["info", leaf], ["info", leaf, "--output", "json"], ["check", leaf]):
            run_cli(capsys, *command)
            assert snapshot(root) == before, command
        out = root / "out.img"
        if run_cli(capsys, "convert", leaf, str(out), "-O", "raw") == 0:
            out.unlink()
        assert snapshot(root) == before, "convert"

        with deadline():
            try:
                with open_chain(leaf, read_only=True) as chain:
                    chain.readv(0, [memoryview(bytearray(min(chain.size, 8 * MiB)))])
            except StorageError:
                pass
        assert snapshot(root) == before, "read-only open"

        with deadline():
            try:
                chain = open_chain(leaf)
            except StorageError:
                assert snapshot(root) == before, "a refused writable open"
            else:
                with contextlib.suppress(StorageError), chain:
                    chain.writev(min(3 * MiB, chain.size - 512), [memoryview(b"\x44" * 512)])
        after = snapshot(root)
        changed = {name for name in before if after.get(name) != before[name]}
        assert changed <= {"Snapshots/diff.vdi"} and after.keys() == before.keys()

        with deadline():
            try:
                medium = open_shareable(str(files["fixed"]))
            except StorageError:
                assert snapshot(root) == after, "a refused shareable open"
            else:
                with contextlib.suppress(StorageError), medium:
                    medium.writev(min(MiB, medium.size - 512), [memoryview(b"\x55" * 512)])
        final = snapshot(root)
        changed = {name for name in after if final.get(name) != after[name]}
        assert changed <= {"fixed.vdi"} and final.keys() == after.keys()
