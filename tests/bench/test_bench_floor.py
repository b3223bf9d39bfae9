"""bench/floor.py: the register traffic it multiplies by, and the unit probes it runs.

The access counts are the driver styles' defining behaviour (the guest sources say
what each touches per command), so they are checked exactly; the unit costs are only
checked to be measured at all (no timing is asserted).
"""

import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))

from bench import floor  # noqa: E402
from bench.profiling import data_disk  # noqa: E402


@pytest.fixture(scope="module")
def disk():
    with data_disk(8 << 20) as path:
        yield path


@pytest.mark.parametrize(
    ("guest_name", "append", "expected"),
    [
        # write PxCI, then one poll of PxCI and one read of PxIS (the command is done
        # when the write returns)
        ("bench", "op=read bs=4096 pattern=rand", 3.0),
        # write PxIS; read PxSACT, PxCI, PxTFD; write PxCI; read PxCI and PxIS
        ("bench_osdev", "op=read bs=4096 pattern=rand", 7.0),
    ],
)
def test_register_accesses_per_command_are_counted_on_the_board(disk, guest_name, append, expected):
    assert floor.accesses_per_command(disk, guest_name, append) == expected


@pytest.mark.parametrize("device", ["python", "c"])
@pytest.mark.parametrize("write", [False, True])
def test_mmio_probe_runs_the_guest_loop_through_the_device(device, write):
    assert floor.mmio_access_us(device, write, count=2000, reps=1) > 0


def test_copy_probe_measures_a_read():
    assert floor.copy_us(4096, reps=3) > 0
