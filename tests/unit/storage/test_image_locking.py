"""Images in use are locked: the writable leaf exclusively, read-only images shared."""

import os
import subprocess
import sys

import pytest

from emu.storage import ops
from emu.storage.chain import open_chain
from emu.storage.errors import ImageLockedError
from emu.storage.vdi import VdiImage

MiB = 1 << 20
ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.dirname(__file__))))

OPENER = """
import sys
from emu.storage.chain import open_chain
from emu.storage.errors import ImageLockedError
try:
    open_chain(sys.argv[1], read_only=sys.argv[2] == "ro").close()
except ImageLockedError as exc:
    print(exc)
    sys.exit(3)
print("opened")
"""


def open_elsewhere(path: str, mode: str) -> subprocess.CompletedProcess:
    """Open a chain in another process ("rw" or "ro"); exit status 3 means refused as locked."""
    env = {**os.environ, "PYTHONPATH": ROOT}
    return subprocess.run(
        [sys.executable, "-c", OPENER, path, mode], capture_output=True, text=True, env=env
    )


@pytest.fixture
def chain_files(tmp_path) -> tuple[str, str, str]:
    base = ops.create_image(str(tmp_path / "base.vdi"), 2 * MiB)
    a = ops.create_diff(base, str(tmp_path / "a.vdi"))
    b = ops.create_diff(base, str(tmp_path / "b.vdi"))
    return base, a, b


def test_a_second_writer_in_another_process_is_refused_with_a_clear_message(chain_files):
    _, a, _ = chain_files
    with open_chain(a):
        result = open_elsewhere(a, "rw")
        assert result.returncode == 3, result.stdout + result.stderr
        assert a in result.stdout and "in use by another process" in result.stdout
        assert open_elsewhere(a, "ro").returncode == 3  # no reader while it is written
    assert open_elsewhere(a, "rw").returncode == 0  # closing released the lock


def test_several_readers_share_an_image(chain_files):
    _, a, _ = chain_files
    with open_chain(a, read_only=True), open_chain(a, read_only=True):
        assert open_elsewhere(a, "ro").returncode == 0
        result = open_elsewhere(a, "rw")
        assert result.returncode == 3 and "in use" in result.stdout


def test_a_parent_in_use_is_shared_by_siblings_and_closed_to_writers(chain_files):
    base, a, b = chain_files
    with open_chain(a):
        assert open_elsewhere(b, "rw").returncode == 0  # b's chain shares the base
        assert open_elsewhere(base, "rw").returncode == 3
        with pytest.raises(ImageLockedError, match=base):
            VdiImage.open(base)  # also in this process: flock is per open file


def test_a_chain_cannot_use_a_parent_someone_writes(chain_files):
    base, a, _ = chain_files
    with VdiImage.open(base), pytest.raises(ImageLockedError, match="open for writing elsewhere"):
        open_chain(a)


def test_raw_images_are_locked_the_same_way(tmp_path):
    path = ops.create_image(str(tmp_path / "d.img"), MiB, fmt="raw")
    with open_chain(path):
        assert open_elsewhere(path, "rw").returncode == 3
    with open_chain(path, read_only=True):
        assert open_elsewhere(path, "ro").returncode == 0
