"""Every bench guest (one per driver style) moves the data it says it does.

Each writes whole blocks from its zeroed .bss buffers over a disk of 0xFF
bytes, sequentially from LBA 0, non-queued and NCQ; the disk file must then
hold zeros exactly where the commands went. Run on ours, and on QEMU q35 too
where it is installed (so the guests are known to drive real-device-shaped
AHCI, not only ours).
"""

import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))

from bench.machines import Ours, find_qemu, guest  # noqa: E402
from bench.workloads import BENCH_GUESTS, check_bench  # noqa: E402

MACHINES = ["ours", "qemu"]
DRIVERS = [g for g in BENCH_GUESTS if g != "bench"]  # bench writes its own pattern


def machine(name: str):
    if name == "ours":
        return Ours()
    qemu = find_qemu()
    if qemu is None:
        pytest.skip("qemu-system-x86_64 is not installed")
    return qemu


@pytest.mark.parametrize("where", MACHINES)
@pytest.mark.parametrize("name", DRIVERS)
@pytest.mark.parametrize(
    ("append", "count", "bs"),
    [("op=write flush=0", 6, 8192), ("op=ncqwrite qd=4", 8, 4096)],
)
def test_sequential_writes_land_where_the_driver_sent_them(
    tmp_path, where, name, append, count, bs
):
    disk = tmp_path / "disk.img"
    disk.write_bytes(b"\xff" * (1 << 20))
    m = machine(where)
    run = m.run(guest(name), f"{append} pattern=seq bs={bs} count={count}", disk)
    assert check_bench(run, m, count) > 0
    data = disk.read_bytes()
    assert data[: count * bs] == bytes(count * bs)
    assert data[count * bs :] == b"\xff" * ((1 << 20) - count * bs)


@pytest.mark.parametrize("name", BENCH_GUESTS)
def test_bad_workload_is_refused_with_status_2(tmp_path, name):
    disk = tmp_path / "disk.img"
    disk.write_bytes(bytes(1 << 20))
    run = Ours().run(guest(name), "count=4 bs=1000", disk)
    assert run.exit_code == 2
    assert "bench: bad arguments: count=4 bs=1000" in run.output
