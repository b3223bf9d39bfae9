"""A Chain behaves like a flat bytearray under random reads, writes, discards,
snapshots (new diffs), merges in both directions, compactions and reopens."""

import itertools
import os
import random
import shutil
import tempfile

import hypothesis.strategies as st
from hypothesis import HealthCheck, Phase, settings
from hypothesis.stateful import RuleBasedStateMachine, initialize, precondition, rule

from emu.storage import ops
from emu.storage.chain import open_chain

MiB = 1 << 20
SIZE = 3 * MiB + 1536  # a partial last block
SECTORS = SIZE // 512
MAX_DEPTH = 5


def cut(total: int, cuts: list[int]) -> list[tuple[int, int]]:
    """(start, end) pieces of [0, total) cut at ``cuts`` (any byte positions)."""
    bounds = [0, *sorted(c for c in set(cuts) if 0 < c < total), total]
    return list(itertools.pairwise(bounds))


class ChainVersusBytearray(RuleBasedStateMachine):
    def __init__(self) -> None:
        super().__init__()
        self.folder = tempfile.mkdtemp(prefix="chain-model-")
        self.model = bytearray(SIZE)
        self.paths: list[str] = []  # leaf first
        self.kinds: list[str] = []  # "raw", "fixed", "normal" or "diff", as paths
        self.chain = None
        self.names = 0

    def teardown(self) -> None:
        if self.chain is not None:
            self.read_everything()
            self.chain.close()
            assert ops.check(self.paths[0]).exit_code == 0
        shutil.rmtree(self.folder)

    def new_path(self, suffix: str = ".vdi") -> str:
        self.names += 1
        return os.path.join(self.folder, f"image{self.names}{suffix}")

    def reopen(self) -> None:
        self.chain.close()
        assert ops.check(self.paths[0]).exit_code == 0
        self.chain = open_chain(self.paths[0])

    @initialize(kind=st.sampled_from(["normal", "fixed", "raw"]))
    def create_base(self, kind: str) -> None:
        fmt = "raw" if kind == "raw" else "vdi"
        path = self.new_path(".img" if kind == "raw" else ".vdi")
        ops.create_image(path, SIZE, fmt=fmt, variant="fixed" if kind == "fixed" else "dynamic")
        self.paths, self.kinds = [path], [kind]
        self.chain = open_chain(path)

    @rule(start=st.integers(0, SECTORS - 1), data=st.data())
    def write(self, start: int, data: st.DataObject) -> None:
        total = data.draw(st.integers(1, min(SECTORS - start, 2600))) * 512
        cuts = data.draw(st.lists(st.integers(1, total), max_size=4))
        payload = random.Random(data.draw(st.integers(0, 2**32))).randbytes(total)
        view = memoryview(payload)
        self.chain.writev(start * 512, [view[a:b] for a, b in cut(total, cuts)])
        self.model[start * 512 : start * 512 + total] = payload

    @rule(start=st.integers(0, SECTORS - 1), data=st.data())
    def read(self, start: int, data: st.DataObject) -> None:
        total = data.draw(st.integers(1, min(SECTORS - start, 2600))) * 512
        cuts = data.draw(st.lists(st.integers(1, total), max_size=4))
        pieces = [memoryview(bytearray(b - a)) for a, b in cut(total, cuts)]
        self.chain.readv(start * 512, pieces)
        got = b"".join(bytes(p) for p in pieces)
        assert got == self.model[start * 512 : start * 512 + total]

    @rule(start=st.integers(0, SECTORS - 1), data=st.data(), aligned=st.booleans())
    def discard(self, start: int, data: st.DataObject, aligned: bool) -> None:
        if aligned:  # whole blocks (the last one partial)
            start -= start % 2048
        count = data.draw(st.integers(1, min(SECTORS - start, 4200)))
        self.chain.discard(start * 512, count * 512)
        self.model[start * 512 : (start + count) * 512] = bytes(count * 512)

    @rule()
    def read_everything(self) -> None:
        buf = bytearray(SIZE)
        self.chain.readv(0, [memoryview(buf)])
        assert buf == self.model

    @rule()
    def flush_and_reopen(self) -> None:
        self.chain.flush()
        self.reopen()

    @precondition(lambda self: self.kinds[-1] != "raw" and len(self.paths) < MAX_DEPTH)
    @rule()
    def snapshot(self) -> None:
        self.chain.close()
        self.paths.insert(0, ops.create_diff(self.paths[0], self.new_path()))
        self.kinds.insert(0, "diff")
        self.reopen()

    @precondition(lambda self: len(self.paths) > 1)
    @rule(drop_child=st.booleans())
    def merge_into_parent(self, drop_child: bool) -> None:
        self.chain.close()
        assert ops.merge(self.paths[0]) == self.paths[1]
        if drop_child:  # the parent now reads as the child did
            os.unlink(self.paths.pop(0))
            self.kinds.pop(0)
        self.reopen()

    @precondition(lambda self: len(self.paths) > 1)
    @rule()
    def merge_parent_into_leaf(self) -> None:
        self.chain.close()
        ops.merge_into_child(self.paths[1], self.paths[0])
        os.unlink(self.paths.pop(1))
        if self.kinds.pop(1) != "diff":
            self.kinds[0] = "normal"  # the leaf became the base
        self.reopen()

    @precondition(lambda self: "normal" in self.kinds or "diff" in self.kinds)
    @rule(pick=st.integers(0, MAX_DEPTH))
    def compact_an_image(self, pick: int) -> None:
        kinds = zip(self.paths, self.kinds, strict=True)
        candidates = [path for path, kind in kinds if kind in ("normal", "diff")]
        self.chain.close()
        ops.compact(candidates[pick % len(candidates)])
        self.reopen()


ChainVersusBytearray.TestCase.settings = settings(
    max_examples=120,
    stateful_step_count=30,
    deadline=None,
    # Shrinking file-backed runs takes minutes; an unshrunk failing run is printed whole.
    phases=[Phase.explicit, Phase.reuse, Phase.generate],
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)
TestChainVersusBytearray = ChainVersusBytearray.TestCase
