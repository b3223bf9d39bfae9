"""A machine's disks against an in-memory model, under random writes, snapshots and restarts.

Port 0 is normal, port 1 write-through, port 2 immutable (reset at every start).
The model keeps each port's bytes, each snapshot's bytes, the snapshot tree and
the current snapshot; after every step all three disks must read as the model.
"""

import random
import shutil
import tempfile
from pathlib import Path

from hypothesis import HealthCheck, settings
from hypothesis import strategies as st
from hypothesis.stateful import (
    Bundle,
    RuleBasedStateMachine,
    consumes,
    invariant,
    multiple,
    rule,
)

from emu.storage import ops
from emu.storage.vm import Machine, MachineError

MiB = 1 << 20
SIZE = 3 * MiB
SECTORS = SIZE // 512
PORTS = {0: "normal", 1: "writethrough", 2: "immutable"}


class MachineAgainstModel(RuleBasedStateMachine):
    snapshots = Bundle("snapshots")

    def __init__(self) -> None:
        super().__init__()
        self.tmp = Path(tempfile.mkdtemp(prefix="vm-stateful-"))
        self.vm = Machine.create(self.tmp / "vm")
        for port, mtype in PORTS.items():
            base = self.tmp / f"base{port}.vdi"
            ops.create_image(str(base), SIZE, fmt="vdi", variant="dynamic")
            self.vm.attach(port, str(base), mtype)
        self.disks = self.vm.start()
        self.model = {port: bytearray(SIZE) for port in PORTS}
        self.saved: dict[str, dict[int, bytes]] = {}  # snapshot -> port -> bytes
        self.parent: dict[str, str | None] = {}
        self.current: str | None = None
        self.names = iter(range(1_000_000))

    def teardown(self) -> None:
        self.vm.close()
        shutil.rmtree(self.tmp)

    def start(self) -> None:
        self.disks = self.vm.start()
        reset_to = self.saved[self.current][2] if self.current else bytes(SIZE)
        self.model[2] = bytearray(reset_to)  # immutable: back to the current snapshot

    @rule(
        port=st.sampled_from(sorted(PORTS)),
        sector=st.integers(0, SECTORS - 1),
        count=st.integers(1, 2600),  # up to 1.3 MiB: crosses block boundaries
        seed=st.integers(0, 2**32 - 1),
    )
    def write(self, port: int, sector: int, count: int, seed: int) -> None:
        count = min(count, SECTORS - sector)
        data = random.Random(seed).randbytes(count * 512)
        self.disks[port].writev(sector * 512, [memoryview(bytearray(data))])
        self.model[port][sector * 512 : (sector + count) * 512] = data

    @rule(target=snapshots)
    def take(self) -> str:
        name = f"s{next(self.names)}"
        self.vm.stop()
        self.vm.snapshot_take(name)
        self.saved[name] = {port: bytes(self.model[port]) for port in PORTS}
        self.parent[name] = self.current
        self.current = name
        self.start()
        return name

    @rule(name=snapshots)
    def restore(self, name: str) -> None:
        self.vm.stop()
        self.vm.snapshot_restore(name)
        self.current = name
        for port in (0, 2):  # the write-through disk keeps its contents
            self.model[port] = bytearray(self.saved[name][port])
        self.start()

    @rule(target=snapshots, name=consumes(snapshots))
    def delete(self, name: str):
        self.vm.stop()
        try:
            self.vm.snapshot_delete(name)
        except MachineError as exc:
            assert "children" in str(exc)
            self.start()
            return name  # refused: still there
        for child, parent in self.parent.items():
            if parent == name:
                self.parent[child] = self.parent[name]
        if self.current == name:
            self.current = self.parent[name]
        del self.saved[name], self.parent[name]
        self.start()
        return multiple()

    @rule()
    def restart(self) -> None:
        self.vm.close()
        self.vm = Machine.open(self.tmp / "vm")
        self.start()

    @invariant()
    def disks_read_as_the_model(self) -> None:
        for port, disk in self.disks.items():
            buf = bytearray(SIZE)
            disk.readv(0, [memoryview(buf)])
            assert buf == self.model[port], f"port {port} differs from the model"

    @invariant()
    def tree_matches(self) -> None:
        def flatten(nodes, parent):
            for node in nodes:
                yield node.name, parent, node.current
                yield from flatten(node.children, node.name)

        got = {
            name: (parent, current)
            for name, parent, current in flatten(self.vm.snapshot_list(), None)
        }
        assert got == {n: (p, n == self.current) for n, p in self.parent.items()}


MachineAgainstModel.TestCase.settings = settings(
    max_examples=20,
    stateful_step_count=20,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow],
)
TestMachineAgainstModel = MachineAgainstModel.TestCase
