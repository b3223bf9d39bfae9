"""Whatever a guest puts in a task file, decode raises only AtaError and execute never raises."""

import itertools

from hypothesis import event, given, settings
from hypothesis import strategies as st

from emu.ata import AtaDisk, AtaError, Completion
from emu.ata.commands import Command
from emu.testing.memory_disk import MemoryDevice

from .helpers import taskfile

SECTORS = 64

# Commands whose parameters are only checked once they run (or, for TRIM, once data arrived).
CHECKED_IN_EXECUTE = {Command.SET_FEATURES, Command.SET_MULTIPLE_MODE, Command.DATA_SET_MANAGEMENT}


def small_or_any(bits: int) -> st.SearchStrategy[int]:
    """Values near the disk's size (to hit its edges) or anywhere in the field."""
    return st.one_of(st.integers(0, 2 * SECTORS), st.integers(0, (1 << bits) - 1))


@st.composite
def split(draw, size: int) -> list[int]:
    """Cut ``size`` bytes into pieces, as a PRDT might."""
    cuts = sorted(draw(st.lists(st.integers(0, size), max_size=4)))
    edges = [0, *cuts, size]
    return [b - a for a, b in itertools.pairwise(edges)]


@settings(max_examples=600, deadline=None)
@given(
    command=st.one_of(st.sampled_from(list(Command)), st.integers(0, 0xFF)),
    features=small_or_any(16),
    lba=small_or_any(48),
    count=small_or_any(16),
    device=st.integers(0, 0xFF),
    exact=st.booleans(),
    size=st.integers(0, 6000),
    failing=st.sets(st.sampled_from(["readv", "writev", "flush", "discard"])),
    read_only=st.booleans(),
    data=st.data(),
)
def test_any_task_file_and_buffers_end_in_a_completion(
    command, features, lba, count, device, exact, size, failing, read_only, data
):
    mem = MemoryDevice(SECTORS, read_only=read_only)
    mem.failing = failing
    disk = AtaDisk(mem)
    tf = taskfile(command, lba=lba, features=features, count=count, device=device)
    try:
        req = disk.decode(tf)
    except AtaError as err:
        assert err.completion.failed and err.completion.error
        event("refused at decode")
        return
    if exact and req.nbytes <= 1 << 16:
        size = req.nbytes
    payload = bytearray(data.draw(st.binary(min_size=size, max_size=size)))
    view = memoryview(payload)
    buffers, pos = [], 0
    for piece in data.draw(split(size)):
        buffers.append(view[pos : pos + piece])
        pos += piece
    completion = disk.execute(req, buffers)
    assert isinstance(completion, Completion)
    event("failed in execute" if completion.failed else "completed")
    if completion.failed:
        assert completion.error
    if completion.failed and not (failing or read_only):
        assert command in CHECKED_IN_EXECUTE
