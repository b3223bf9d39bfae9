"""Bad media are refused before the guest starts, with one clear line, and nothing changes.

A diff whose parent is missing, an image another process holds, a truncated image:
``ahci-emu run --disk`` and ``ahci-emu vm run`` (run as the command, in a child
process) must exit non-zero with one ``ahci-emu: error: ...`` line naming the
problem, print no transcript, and leave every file as it was (bytes and mtimes).
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import re
import shutil
import subprocess
import sys

import pytest

from emu.testing import cli_env

KINDS = {
    "missing-parent": r"not found|No such file",
    "locked": r"locked|in use",
    "truncated": r"past the end of the file|truncated|short",
}
_HOLD = (
    "import sys\n"
    "from emu.storage.chain import open_chain\n"
    "disk = open_chain(sys.argv[1])\n"
    "print('held', flush=True)\n"
    "sys.stdin.read()\n"
)


@contextlib.contextmanager
def held(path):
    """Another process has ``path`` open for writing (an exclusive lock) meanwhile."""
    proc = subprocess.Popen(
        [sys.executable, "-c", _HOLD, str(path)],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        env=cli_env(),
    )
    try:
        assert proc.stdout.readline() == b"held\n"
        yield
    finally:
        proc.stdin.close()
        proc.wait(timeout=30)


def state(root) -> dict[str, tuple[int, int, str]]:
    """Every file under ``root`` (but the rig's run folders): size, mtime, sha256."""
    out = {}
    for folder, dirs, files in os.walk(root):
        dirs[:] = [d for d in dirs if d != "runs"]
        for name in files:
            path = os.path.join(folder, name)
            st = os.stat(path)
            with open(path, "rb") as f:
                digest = hashlib.sha256(f.read()).hexdigest()
            out[os.path.relpath(path, root)] = (st.st_size, st.st_mtime_ns, digest)
    return out


def truncate_in_data(path) -> None:
    """Cut a VDI in the middle of its last data block."""
    size = os.path.getsize(path)
    os.truncate(path, size - (1 << 19))


def refuse(ahci, args, kind, hold=None):
    """Run ``ahci-emu ARGS``; check the refusal and that no file changed."""
    with contextlib.ExitStack() as stack:
        if hold is not None:
            stack.enter_context(held(hold))
        before = state(ahci.root)
        result = ahci.cli(*args, "--append=ops=write:0:8:9,read:0:8")
        after = state(ahci.root)
    assert result.returncode == 1, result
    assert result.stdout == "", "the guest must not start"
    lines = result.stderr.splitlines()
    assert len(lines) == 1, result.stderr
    assert lines[0].startswith("ahci-emu: error: "), lines
    assert re.search(KINDS[kind], lines[0]), lines[0]
    assert after == before, "a refused run changed files"
    return lines[0]


def chain_on_disk(ahci):
    """disk/base.vdi (generation 1 on blocks 0, 1) and disk/top.vdi (generation 2 on 2)."""
    base = ahci.image("disk/base.vdi", "4M")
    ahci.fill(base, 0, 4096, 1)
    top = ahci.diff(base, "disk/top.vdi")
    ahci.fill(top, 4096, 2048, 2)
    return base, top


@pytest.mark.parametrize("kind", KINDS)
def test_run_disk_refuses_bad_media(ahci, kind):
    base, top = chain_on_disk(ahci)
    hold = None
    if kind == "missing-parent":
        (ahci.root / "elsewhere").mkdir()
        shutil.move(base, ahci.root / "elsewhere" / "base.vdi")
    elif kind == "truncated":
        truncate_in_data(top)
    else:
        hold = top
    message = refuse(ahci, ["run", "gen", "--disk", top], kind, hold)
    assert str(top) in message


@pytest.mark.parametrize("kind", KINDS)
def test_run_disk_refuses_a_bad_second_disk_too(ahci, kind):
    """The good disk on port 0 is not touched either when port 1's is refused."""
    good = ahci.image("good.vdi", "1M")
    ahci.fill(good, 0, 8, 3)
    base, top = chain_on_disk(ahci)
    hold = None
    if kind == "missing-parent":
        base.unlink()
    elif kind == "truncated":
        truncate_in_data(base)
    else:
        hold = base
    refuse(ahci, ["run", "gen", "--disk", good, "--disk", top], kind, hold)


@pytest.mark.parametrize("medium_type", ["normal", "immutable"])
@pytest.mark.parametrize("kind", KINDS)
def test_vm_run_refuses_bad_media(ahci, kind, medium_type):
    vm = ahci.machine("vm")
    base = ahci.image("vm/disk.vdi", "4M")
    ahci.fill(base, 0, 4096, 1)
    vm.attach(0, base, medium_type)
    if medium_type == "normal":
        vm.take("s1")  # the leaf becomes a diff in vm/Snapshots
    vm.run(ops="write:2048:2048:2").assert_ok()  # a data block in the leaf diff
    leaf = vm.leaf(0)
    assert leaf != base
    hold = None
    if kind == "missing-parent":
        shutil.move(base, ahci.root / "disk.vdi")
        target = None
    elif kind == "truncated":
        target = leaf if medium_type == "normal" else base
        truncate_in_data(target)
    else:
        target = hold = leaf if medium_type == "normal" else base
    message = refuse(ahci, ["vm", "run", vm.folder, "gen"], kind, hold)
    if target is not None:
        assert str(target) in message
