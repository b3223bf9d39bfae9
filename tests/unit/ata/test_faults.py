"""Faults the disk reports (emu.ata.faults) and its volatile write cache with power cuts."""

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from emu.ata import AtaDisk
from emu.ata.cache import VolatileCache
from emu.ata.commands import Command
from emu.ata.faults import DiskFaults, PowerCut
from emu.ata.taskfile import ERROR_ABRT, ERROR_IDNF, ERROR_UNC, STATUS_DF
from emu.faults.plan import FaultPlan
from emu.faults.spec import parse_fault
from emu.storage.blockdev import SECTOR_SIZE

from .helpers import MemoryDevice, issue, pattern, taskfile
from .test_ncq import fpdma, read_log


def faulty(mem: MemoryDevice, *specs: str, cache: bool = False, seed: int = 0, **kw) -> AtaDisk:
    plan = FaultPlan([parse_fault(s) for s in specs], seed)
    front = VolatileCache(mem) if cache else None
    return AtaDisk(front or mem, faults=DiskFaults(plan, 0, front), **kw)


def test_media_error_on_a_read_reports_unc_at_the_first_bad_sector(mem):
    mem.writev(96 * SECTOR_SIZE, [memoryview(pattern(16))])
    disk = faulty(mem, "media-error:lba=100-107")
    out = issue(disk, taskfile(Command.READ_DMA_EXT, lba=96, count=16))
    assert (out.completion.status, out.completion.error) == (0x41, ERROR_UNC)
    assert out.completion.lba == 100
    assert bytes(out.data[: 4 * SECTOR_SIZE]) == pattern(16)[: 4 * SECTOR_SIZE]  # before it
    assert bytes(out.data[4 * SECTOR_SIZE :]) == bytes(12 * SECTOR_SIZE)  # none after
    assert issue(disk, taskfile(Command.READ_DMA_EXT, lba=108, count=8)).ok  # past the range


def test_media_error_on_a_28_bit_read_puts_lba_27_24_in_device():
    disk = faulty(MemoryDevice(0x0300_0000), "media-error:lba=0x2000010-0x2000010")
    tf = taskfile(Command.READ_DMA, lba=0x000008, count=16, device=0x42)
    out = issue(disk, tf)
    assert (out.completion.error, out.completion.lba) == (ERROR_UNC, 0x2000010)
    assert out.completion.device == 0x42


def test_media_error_on_a_write_keeps_the_good_prefix_and_aborts(mem):
    disk = faulty(mem, "media-error:lba=102-103")
    out = issue(disk, taskfile(Command.WRITE_DMA_EXT, lba=100, count=4), pattern(4))
    assert (out.completion.error, out.completion.lba) == (ERROR_ABRT, 102)
    assert sorted(mem.sectors) == [100, 101]


def test_media_error_on_a_queued_read_fills_the_ncq_error_log(mem):
    disk = faulty(mem, "media-error:lba=200-200")
    out = issue(disk, fpdma(Command.READ_FPDMA_QUEUED, lba=190, sectors=20, tag=12))
    assert out.completion.error == ERROR_UNC
    log = bytes(read_log(disk, 0x10).data)
    assert (log[0], log[2], log[3]) == (12, 0x41, ERROR_UNC)
    assert int.from_bytes(log[4:7] + log[8:11], "little") == 200
    assert sum(log) % 256 == 0


def test_verify_over_a_bad_range_fails_with_unc(mem):
    disk = faulty(mem, "media-error:lba=50-59")
    out = issue(disk, taskfile(Command.READ_VERIFY_SECTORS_EXT, lba=40, count=20))
    assert (out.completion.error, out.completion.lba) == (ERROR_UNC, 50)


@pytest.mark.parametrize(
    ("spec", "status", "error"),
    [("idnf", 0x41, ERROR_IDNF), ("abrt", 0x41, ERROR_ABRT), ("df", 0x41 | STATUS_DF, ERROR_ABRT)],
)
def test_idnf_abrt_and_device_fault(mem, spec, status, error):
    disk = faulty(mem, f"{spec}:opcode=read,nth=2")
    first = issue(disk, taskfile(Command.READ_DMA_EXT, lba=7, count=1))
    second = issue(disk, taskfile(Command.READ_DMA_EXT, lba=7, count=1))
    assert first.ok
    assert (second.completion.status, second.completion.error) == (status, error)
    assert issue(disk, taskfile(Command.READ_DMA_EXT, lba=7, count=1)).ok


def _word85(disk: AtaDisk) -> int:
    data = issue(disk, taskfile(Command.IDENTIFY_DEVICE)).data
    return int.from_bytes(data[170:172], "little")


def test_write_cache_setting_is_the_power_on_default(mem):
    disk = AtaDisk(mem, write_cache=False)
    assert not _word85(disk) & 0x20  # word 85 bit 5: volatile write cache enabled
    assert issue(disk, taskfile(Command.SET_FEATURES, features=0x02)).ok
    assert _word85(disk) & 0x20
    disk.reset()
    assert not _word85(disk) & 0x20


def test_power_cut_ends_the_run_and_keeps_only_what_was_flushed_or_chosen(mem):
    disk = faulty(mem, "power-cut:write=3", cache=True)
    issue(disk, taskfile(Command.WRITE_DMA_EXT, lba=0, count=2), pattern(2, 1))
    assert issue(disk, taskfile(Command.FLUSH_CACHE_EXT)).ok
    issue(disk, taskfile(Command.WRITE_DMA_EXT, lba=8, count=2), pattern(2, 5))
    assert sorted(mem.sectors) == [0, 1]  # the second write is still in the cache
    with pytest.raises(PowerCut, match="power cut at command 0x35"):
        issue(disk, taskfile(Command.WRITE_DMA_EXT, lba=16, count=2), pattern(2, 9))
    assert set(mem.sectors) <= {0, 1, 8, 9}
    assert 16 not in mem.sectors


def test_with_the_cache_off_every_completed_write_survives_a_cut(mem):
    disk = faulty(mem, "power-cut:command=4", cache=True, write_cache=False)
    for n in range(3):
        assert issue(disk, taskfile(Command.WRITE_DMA_EXT, lba=n, count=1), pattern(1, n)).ok
    with pytest.raises(PowerCut):
        issue(disk, taskfile(Command.READ_DMA_EXT, lba=0, count=1))
    assert sorted(mem.sectors) == [0, 1, 2]


# ---- the power-cut model, property-tested -----------------------------------------

SECTORS = 64
_op = st.one_of(
    st.tuples(
        st.just("write"), st.integers(0, SECTORS - 8), st.integers(1, 8), st.integers(1, 250)
    ),
    st.tuples(st.just("flush")),
)


def play(disk: AtaDisk, ops: list[tuple]) -> dict[int, set[bytes]] | None:
    """Run ``ops`` until the power cut; per sector, what the medium may hold after it:
    its contents at the last completed flush, or any write to it since (whole).
    None when the ops end before the cut."""
    durable: dict[int, bytes] = {}  # what the last flush left on each sector
    later: dict[int, set[bytes]] = {}  # writes after it, by sector
    current: dict[int, bytes] = {}
    for op in ops:
        try:
            if op[0] == "flush":
                assert issue(disk, taskfile(Command.FLUSH_CACHE_EXT)).ok
                durable, later = dict(current), {}
                continue
            _, lba, count, fill = op
            data = b"".join(bytes([fill, s & 0xFF]) * (SECTOR_SIZE // 2) for s in range(count))
            assert issue(disk, taskfile(Command.WRITE_DMA_EXT, lba=lba, count=count), data).ok
        except PowerCut:
            zero = bytes(SECTOR_SIZE)
            return {s: {durable.get(s, zero)} | later.get(s, set()) for s in range(SECTORS)}
        for i in range(count):
            contents = data[i * SECTOR_SIZE : (i + 1) * SECTOR_SIZE]
            current[lba + i] = contents
            later.setdefault(lba + i, set()).add(contents)
    return None


@settings(max_examples=150, deadline=None)
@given(ops=st.lists(_op, max_size=30), cut_at=st.integers(1, 31), seed=st.integers(0, 2**32))
def test_power_cut_model(ops, cut_at, seed):
    """After a cut at a random command: every write flushed before it is on the medium,
    every sector holds either what it had at the last flush or one of the later writes
    to it (whole), and no sector is torn."""
    mem = MemoryDevice(SECTORS)
    allowed = play(faulty(mem, f"power-cut:command={cut_at}", cache=True, seed=seed), ops)
    if allowed is None:
        return  # no cut in this run
    for sector in range(SECTORS):
        assert mem.sectors.get(sector, bytes(SECTOR_SIZE)) in allowed[sector], sector


def test_the_seed_decides_what_a_cut_keeps():
    def kept(seed: int) -> list[int]:
        mem = MemoryDevice(SECTORS)
        disk = faulty(mem, "power-cut:flush=1", cache=True, seed=seed)
        issue(disk, taskfile(Command.WRITE_DMA_EXT, lba=0, count=32), pattern(32))
        with pytest.raises(PowerCut):
            issue(disk, taskfile(Command.FLUSH_CACHE_EXT))
        return sorted(mem.sectors)

    assert kept(1) == kept(1)
    assert kept(1) != kept(2)


@settings(max_examples=40, deadline=None)
@given(ops=st.lists(_op, max_size=20), cut_at=st.integers(1, 21), seed=st.integers(0, 2**32))
def test_power_cut_on_a_vdi_chain_leaves_it_check_clean(ops, cut_at, seed):
    """The same model on a base VDI and a differencing image over it: after the cut
    (and the end of the run, which flushes the images) ``image check`` finds no
    corruption, and every sector is whole and allowed."""
    import tempfile

    from emu.storage import ops as image_ops
    from emu.storage.chain import open_chain

    with tempfile.TemporaryDirectory() as folder:
        base = image_ops.create_image(f"{folder}/base.vdi", SECTORS * SECTOR_SIZE)
        top = image_ops.create_diff(base, f"{folder}/top.vdi")
        with open_chain(top) as chain:
            disk = faulty(chain, f"power-cut:command={cut_at}", cache=True, seed=seed)
            allowed = play(disk, ops)
            disk.flush_cache()  # the end of the run
        result = image_ops.check(top)
        assert not result.corruptions and not result.errors, result
        if allowed is None:
            return  # no cut: the run ended normally
        with open_chain(top, read_only=True) as chain:
            for sector in range(SECTORS):
                buf = bytearray(SECTOR_SIZE)
                chain.readv(sector * SECTOR_SIZE, [memoryview(buf)])
                assert bytes(buf) in allowed[sector], sector
