"""Crash safety: a process writing and flushing records to a VDI diff is killed with
SIGKILL at random instants; every flushed record survives and check finds no corruption.

The writer runs in a forked child, reports each record's number through a pipe
after its flush, and continues where the last run stopped (so recovery from the
previous kill is exercised too); every few kills a new diff is stacked on the
leaf, so that blocks keep being allocated (copy-on-write) under the kills. The
one record in flight at the kill may be absent, present, or present in part:
each of its sectors must be old or new.
"""

import itertools
import os
import random
import select
import signal
import struct
import time

import pytest

from emu.storage import ops
from emu.storage.chain import open_chain

MiB = 1 << 20
SIZE = 6 * MiB + 512  # a partial last block
SECTOR = 512
KILLS = 52  # per case; 4 cases: 208 kills


def record(seed: int, k: int) -> tuple[str, int, int, int]:
    """Record k of a run: (kind, offset, length, data seed); writes straddle blocks."""
    rng = random.Random(seed * 1_000_003 + k)
    if rng.random() < 0.2:
        if rng.random() < 0.5:  # whole blocks
            blocks = rng.randint(1, 2)
            return "discard", rng.randrange(6 - blocks + 1) * MiB, blocks * MiB, 0
        sectors = rng.randint(1, 3000)
    else:
        sectors = rng.choice([1, 8, rng.randint(1, 700)])
    offset = rng.randrange(SIZE // SECTOR - sectors + 1) * SECTOR
    kind = "write" if sectors <= 700 and rng.random() < 0.8 else "discard"
    return kind, offset, sectors * SECTOR, rng.getrandbits(32)


def payload(seed: int, length: int) -> bytes:
    return random.Random(seed).randbytes(length)


def apply(model: bytearray, rec: tuple[str, int, int, int]) -> None:
    kind, offset, length, seed = rec
    model[offset : offset + length] = payload(seed, length) if kind == "write" else bytes(length)


def writer(path: str, seed: int, start: int, report: int) -> None:
    """The child: write/discard, flush, report, forever (until killed)."""
    try:
        with open_chain(path) as chain:
            for k in itertools.count(start):
                kind, offset, length, dseed = record(seed, k)
                if kind == "write":
                    data = memoryview(payload(dseed, length))
                    cuts = sorted(random.Random(dseed).sample(range(1, length + 1), 3))
                    bounds = [0, *cuts, length]
                    chain.writev(offset, [data[a:b] for a, b in itertools.pairwise(bounds)])
                else:
                    chain.discard(offset, length)
                chain.flush()
                os.write(report, struct.pack("<I", k))
    finally:
        os._exit(0)


def read_all(path: str) -> bytes:
    with open_chain(path, read_only=True) as chain:
        buf = bytearray(SIZE)
        chain.readv(0, [memoryview(buf)])
    return bytes(buf)


def run_and_kill(path: str, seed: int, start: int, delay: float, after_first: bool) -> list[int]:
    """Run the writer from record ``start``, SIGKILL it after ``delay`` (counted from its
    first flushed record when ``after_first``, so that a loaded machine still makes
    progress between kills); the flushed records."""
    read_end, write_end = os.pipe()
    pid = os.fork()
    if pid == 0:
        os.close(read_end)
        writer(path, seed, start, write_end)
    os.close(write_end)
    early = b""
    if after_first:
        select.select([read_end], [], [], 30)
        early = os.read(read_end, 4)
    time.sleep(delay)
    os.kill(pid, signal.SIGKILL)
    os.waitpid(pid, 0)
    reported = early
    while chunk := os.read(read_end, 65536):
        reported += chunk
    os.close(read_end)
    return [k for (k,) in struct.iter_unpack("<I", reported[: len(reported) // 4 * 4])]


@pytest.mark.parametrize("seed", [1, 2, 3, 4])
def test_every_flushed_write_survives_sigkill_and_check_finds_no_corruption(tmp_path, seed):
    rng = random.Random(seed)
    base = ops.create_image(str(tmp_path / "base.vdi"), SIZE)
    model = bytearray(SIZE)
    model[: 4 * MiB - 512] = payload(seed, 4 * MiB - 512)  # blocks 4-6 absent in the base
    with open_chain(base) as chain:
        chain.writev(0, [memoryview(model)])
    leaf = base
    start, flushed = 0, 0
    for kill in range(KILLS):
        if kill % 6 == 0:  # a new diff now and then, so that blocks keep being allocated
            leaf = ops.create_diff(leaf, str(tmp_path / f"diff{kill}.vdi"))
        done = run_and_kill(leaf, seed, start, rng.uniform(0, 0.03), after_first=kill % 2 == 0)
        assert done == list(range(start, start + len(done)))
        for k in done:
            apply(model, record(seed, k))
        flushed += len(done)
        in_flight = record(seed, start + len(done))
        maybe = bytearray(model)
        apply(maybe, in_flight)
        actual = read_all(leaf)
        lo, hi = in_flight[1], in_flight[1] + in_flight[2]
        assert actual[:lo] == model[:lo] and actual[hi:] == model[hi:]
        for s in range(lo, hi, SECTOR):
            assert actual[s : s + SECTOR] in (model[s : s + SECTOR], maybe[s : s + SECTOR])
        model[lo:hi] = actual[lo:hi]
        result = ops.check(leaf)
        assert result.corruptions == [] and result.errors == [], result
        start += len(done) + 1
    assert flushed >= KILLS // 2  # the writer did get work done between kills
    assert read_all(leaf) == model
