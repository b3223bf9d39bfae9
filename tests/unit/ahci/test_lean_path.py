"""The engine's lean path for plain sector transfers (READ/WRITE DMA EXT, READ/WRITE
FPDMA QUEUED) against its full path: the same commands on two machines, one plain (the
lean path runs) and one with --trace's observer attached (the full path runs), must
leave the guest the same registers, FISes, PRDBCs, RAM and disk contents."""

import io
import struct

import pytest
from driver import CLB, DATA, FB, h2d, make_machine, sector_pattern
from hypothesis import given, settings
from hypothesis import strategies as st

from emu.ahci import regs
from emu.ahci.cmdtable import PRD_I, prdt_buffers
from emu.ahci.trace import Tracer
from emu.machine.memory import GuestMemory

READ_DMA_EXT = 0x25
WRITE_DMA_EXT = 0x35
READ_FPDMA = 0x60
WRITE_FPDMA = 0x61
READ_LOG_EXT = 0x2F
SET_FEATURES = 0xEF
DISK_SECTORS = (1 << 20) // 512
RAM = 16 << 20
PORT_REGS = (regs.PxIS, regs.PxCI, regs.PxSACT, regs.PxTFD, regs.PxCMD, regs.PxSERR)


def _machine(lean: bool):
    tracer = None if lean else Tracer(io.StringIO())  # anything watching: the full path
    m = make_machine(disk_sizes=(1 << 20,), memory_mib=RAM >> 20, tracer=tracer)
    m.start(0)
    m.set_preg(0, regs.PxIE, 0xFFFFFFFF & regs.IE_WRITABLE)
    m.set_reg(regs.GHC, regs.GHC_IE | regs.GHC_AE)
    disk = m.hba.ports[0].disk
    decoded = []
    full_decode = disk.decode

    def decode(tf):
        decoded.append(tf.command)
        return full_decode(tf)

    disk.decode = decode
    return m, decoded


def _guest_view(m) -> dict:
    """Everything the guest can see of what its commands did."""
    return {
        "regs": [m.preg(0, reg) for reg in PORT_REGS],
        "is": m.reg(regs.IS),
        "fis": m.memory.read(FB, 0x100),
        "list": m.memory.read(CLB, 32 * 32),  # the PRDBCs
        "data": m.memory.read(DATA, 0x40000),
        "disk": dict(m.disks[0].sectors),
        "flushes": sum(call == ("flush",) for call in m.disks[0].calls),
        "interrupts": len(m.interrupts),
    }


def _ncq(command: int, lba: int, sectors: int, tag: int, fua: bool = False) -> bytes:
    return h2d(command, lba=lba, count=tag << 3, features=sectors, device=0xC0 if fua else 0x40)


def _both(script) -> tuple[list[int], list[int]]:
    """Run ``script(machine)`` on a lean and a full machine; both must show the guest
    the same; returns the commands each decoded through the full path."""
    lean, lean_decoded = _machine(True)
    full, full_decoded = _machine(False)
    for m in (lean, full):
        m.memory.write(DATA, bytes(range(256)) * 0x400)  # what a write sends
        script(m)
    assert _guest_view(lean) == _guest_view(full)
    return lean_decoded, full_decoded


PRDTS = {
    "one piece": [(DATA, 4096)],
    "adjacent pieces": [(DATA + i * 512, 512) for i in range(8)],
    "odd pieces": [
        (DATA + 0x1002, 2),
        (DATA + 0x2006, 254),
        (DATA + 0x3000, 256),
        (DATA + 0x400A, 3584),
    ],
    "adjacent then apart": [(DATA, 1024), (DATA + 1024, 1024), (DATA + 0x8000, 2048)],
    "longer than the command": [(DATA, 2048), (DATA + 0x4000, 8192)],
    "one byte pieces then the rest": [(DATA + 1, 1), (DATA + 3, 1), (DATA + 0x5000, 4094)],
}


@pytest.mark.parametrize("prdt", PRDTS.values(), ids=PRDTS.keys())
@pytest.mark.parametrize("command", [READ_DMA_EXT, WRITE_DMA_EXT])
def test_dma_ext_lean_and_full_paths_agree(prdt, command):
    def script(m):
        m.command(2, h2d(command, lba=40, count=8), prdt, write=command == WRITE_DMA_EXT)
        m.issue(1 << 2)

    lean_decoded, full_decoded = _both(script)
    assert lean_decoded == [] and full_decoded == [command]


@pytest.mark.parametrize("prdt", PRDTS.values(), ids=PRDTS.keys())
@pytest.mark.parametrize("command", [READ_FPDMA, WRITE_FPDMA])
def test_fpdma_batch_lean_and_full_paths_agree(prdt, command):
    def script(m):
        for tag in (0, 3, 7):
            table = [(address + tag * 0x10000, length) for address, length in prdt]
            m.command(tag, _ncq(command, 100 + tag * 8, 8, tag, fua=tag == 3), table)
        m.set_preg(0, regs.PxSACT, 0b10001001)
        m.issue(0b10001001)

    lean_decoded, full_decoded = _both(script)
    assert lean_decoded == [] and full_decoded == [command] * 3


def test_a_reissued_slot_with_a_changed_prdt_moves_data_where_the_new_one_says():
    """The lean path remembers PRDTs by their bytes: a table rewritten between issues
    (another buffer, another split) must be walked again."""

    def script(m):
        m.command(0, h2d(READ_DMA_EXT, lba=0, count=8), [(DATA, 4096)])
        m.issue(1)
        m.command(0, h2d(READ_DMA_EXT, lba=8, count=8), [(DATA + 0x10000, 2048), (DATA, 2048)])
        m.issue(1)
        sectors = b"".join(sector_pattern(lba) for lba in range(8, 16))
        assert m.memory.read(DATA + 0x10000, 2048) == sectors[:2048]
        assert m.memory.read(DATA, 2048) == sectors[2048:]
        m.command(0, h2d(READ_DMA_EXT, lba=16, count=8), [(DATA, 4096)])
        m.issue(1)

    lean_decoded, _ = _both(script)
    assert lean_decoded == []


@pytest.mark.parametrize(
    ("name", "prdt", "first_prd_outside"),
    [
        ("short PRDT: overflow", [(DATA, 1024)], False),
        ("no PRDT at all", [], False),
        ("a piece outside RAM", [(DATA, 512), (RAM - 512, 1024)], False),
        ("a piece far above RAM", [(1 << 40, 4096)], False),
        ("PRD entries outside RAM", [(DATA, 512), (DATA + 512, 3584)], True),
    ],
)
@pytest.mark.parametrize("command", [READ_DMA_EXT, WRITE_DMA_EXT, READ_FPDMA])
def test_bad_prdts_end_as_on_the_full_path(name, prdt, first_prd_outside, command):
    def script(m):
        cfis = _ncq(command, 8, 8, 0) if command == READ_FPDMA else h2d(command, lba=8, count=8)
        ctba = RAM - 0x80 - 16 if first_prd_outside else None  # the 2nd PRD past RAM's end
        m.command(0, cfis, prdt, write=command == WRITE_DMA_EXT, ctba=ctba)
        if first_prd_outside:
            m.memory.write(ctba, cfis.ljust(0x80, b"\0"))
            m.memory.write(ctba + 0x80, struct.pack("<IIII", DATA, 0, 0, 511))
        if command == READ_FPDMA:
            m.set_preg(0, regs.PxSACT, 1)
        m.issue(1)

    _both(script)


@pytest.mark.parametrize(
    ("command", "lba", "sectors"),
    [
        (READ_DMA_EXT, DISK_SECTORS - 4, 8),  # runs past the end
        (WRITE_DMA_EXT, DISK_SECTORS, 1),  # starts at the end
        (READ_DMA_EXT, 1 << 47, 1),
        (READ_FPDMA, DISK_SECTORS - 1, 2),
        (WRITE_FPDMA, DISK_SECTORS + 100, 8),
    ],
)
def test_lba_past_the_end_fails_as_on_the_full_path(command, lba, sectors):
    """IDNF with the command's LBA, PxIS.TFES, the port halted; a queued command also
    fills the NCQ Command Error log, read back here with READ LOG EXT."""
    queued = command in (READ_FPDMA, WRITE_FPDMA)

    def script(m):
        cfis = _ncq(command, lba, sectors, 5) if queued else h2d(command, lba=lba, count=sectors)
        m.command(5, cfis, [(DATA, sectors * 512)], write=command in (WRITE_DMA_EXT, WRITE_FPDMA))
        if queued:
            m.set_preg(0, regs.PxSACT, 1 << 5)
        m.issue(1 << 5)
        assert m.preg(0, regs.PxIS) & regs.IS_TFES
        m.stop()  # recover as a driver does, then read the log
        m.set_preg(0, regs.PxIS, 0xFFFFFFFF)
        m.set_preg(0, regs.PxCMD, regs.CMD_FRE | regs.CMD_ST)
        m.command(1, h2d(READ_LOG_EXT, lba=0x10, count=1), [(DATA + 0x20000, 512)])
        m.issue(1 << 1)

    lean_decoded, _ = _both(script)
    assert command in lean_decoded  # the lean path left it to the full path


def test_ncq_tag_not_its_slot_is_refused_as_on_the_full_path():
    def script(m):
        m.command(4, _ncq(READ_FPDMA, 8, 8, 6), [(DATA, 4096)])
        m.set_preg(0, regs.PxSACT, 1 << 4)
        m.issue(1 << 4)

    lean_decoded, _ = _both(script)
    assert lean_decoded == [READ_FPDMA]


def test_write_through_with_the_write_cache_off_flushes_as_on_the_full_path():
    def script(m):
        m.command(0, h2d(SET_FEATURES, features=0x82))  # write cache off
        m.issue(1)
        m.command(1, h2d(WRITE_DMA_EXT, lba=3, count=8), [(DATA, 4096)], write=True)
        m.issue(1 << 1)
        m.command(2, _ncq(WRITE_FPDMA, 30, 8, 2), [(DATA, 4096)], write=True)
        m.set_preg(0, regs.PxSACT, 1 << 2)
        m.issue(1 << 2)

    lean_decoded, _ = _both(script)
    assert lean_decoded == [SET_FEATURES]


@pytest.mark.parametrize("failing", ["readv", "writev", "flush"])
def test_a_medium_failure_ends_as_on_the_full_path(failing):
    """UNC for a read the medium cannot serve, ABRT for a write it refuses, on both."""

    def script(m):
        m.disks[0].failing.add(failing)
        m.command(0, h2d(SET_FEATURES, features=0x82))  # write through: the flush counts
        m.issue(1)
        command = READ_DMA_EXT if failing == "readv" else WRITE_DMA_EXT
        m.command(1, h2d(command, lba=9, count=8), [(DATA, 4096)], write=command != READ_DMA_EXT)
        m.issue(1 << 1)

    lean_decoded, _ = _both(script)
    assert lean_decoded == [SET_FEATURES]


@pytest.mark.parametrize("failing_slot", [None, 2, 5])
def test_a_mixed_batch_in_one_pxci_write_ends_as_on_the_full_path(failing_slot):
    """Lean and full commands in one PxCI write (the lean path hands a slot it does not
    take to the full path and goes on with the next): queued reads and writes, a READ
    DMA EXT, a command the lean path never takes, a control FIS, a table outside RAM, and
    (``failing_slot``) one past the disk's end that halts the port with the rest left in
    PxCI."""

    def script(m):
        def lba(slot: int) -> int:
            return DISK_SECTORS - 2 if slot == failing_slot else 16 + slot * 8

        m.command(0, _ncq(READ_FPDMA, lba(0), 8, 0), [(DATA, 4096)])
        m.command(1, h2d(READ_DMA_EXT, lba=lba(1), count=8), [(DATA + 0x1000, 4096)])
        m.command(2, _ncq(WRITE_FPDMA, lba(2), 8, 2), [(DATA + 0x2000, 4096)], write=True)
        m.command(3, h2d(SET_FEATURES, features=0x02))  # write cache on: full path
        m.command(4, h2d(0, c=False))  # a control FIS, SRST clear
        m.command(5, _ncq(READ_FPDMA, lba(5), 8, 5), [(DATA + 0x3000, 2048), (DATA, 2048)])
        m.command(6, h2d(READ_DMA_EXT, lba=lba(6), count=8), [(DATA + 0x5000, 4096)])
        m.set_preg(0, regs.PxSACT, 0b100101)
        m.issue(0b1111111)
        if failing_slot is None:
            m.command(7, h2d(READ_DMA_EXT, lba=8, count=8), [(DATA, 4096)], ctba=RAM)
            m.issue(1 << 7)  # a table outside RAM: host bus fatal
            assert m.preg(0, regs.PxIS) & regs.IS_HBFS
        else:
            assert m.preg(0, regs.PxIS) & regs.IS_TFES
            assert m.preg(0, regs.PxCI) >> failing_slot + 1 == 0b1111111 >> failing_slot + 1

    lean_decoded, _ = _both(script)
    assert SET_FEATURES in lean_decoded or failing_slot == 2


@pytest.mark.parametrize("trouble", ["prd outside RAM", "medium fails", "overflow"])
def test_a_queued_batch_that_fails_midway_ends_as_on_the_full_path(trouble):
    """The lean path posts the acceptance FISes of a queued batch once: a command of the
    batch that fails (a PRD outside RAM: host bus fatal; a read the medium refuses: an
    SDB FIS with the error; a short PRDT: overflow) must still come after the acceptance
    of those before it, as on the full path."""

    def script(m):
        for tag in range(4):
            prdt = [(DATA + tag * 0x1000, 4096)]
            if tag == 2 and trouble == "prd outside RAM":
                prdt = [(DATA, 2048), (RAM - 1024, 2048)]
            elif tag == 2 and trouble == "overflow":
                prdt = [(DATA, 2048)]
            m.command(tag, _ncq(WRITE_FPDMA if tag == 0 else READ_FPDMA, tag * 8, 8, tag), prdt)
        if trouble == "medium fails":
            m.disks[0].failing.add("readv")
        m.set_preg(0, regs.PxSACT, 0b1111)
        m.issue(0b1111)

    lean_decoded, _ = _both(script)
    assert lean_decoded == ([READ_FPDMA] if trouble == "overflow" else [])


def test_prd_interrupt_bit_sets_dps_on_both_paths():
    def script(m):
        m.command(0, h2d(READ_DMA_EXT, lba=0, count=8), [(DATA, 4096)], prd_interrupt=True)
        m.issue(1)
        assert m.preg(0, regs.PxIS) & regs.IS_DPS

    lean_decoded, _ = _both(script)
    assert lean_decoded == []


@given(
    pieces=st.lists(
        st.tuples(st.integers(0, 64), st.integers(1, 700), st.booleans(), st.booleans()),
        max_size=12,
    ),
    nbytes=st.integers(0, 5000),
)
@settings(max_examples=300, deadline=None)
def test_prdt_buffers_cover_the_pieces_in_order(pieces, nbytes):
    """Whatever the PRDT (adjacent or scattered pieces, odd sizes, I bits), the views
    hold exactly the first ``nbytes`` of its pieces, in order, the first time and from
    memory the next; None when it describes fewer bytes."""
    memory = GuestMemory(1 << 20)
    memory.mem[:] = bytes(range(251)) * (len(memory.mem) // 251) + bytes(len(memory.mem) % 251)
    table, address, prdt = 0x1000, 0x10000, []
    for gap, length, adjacent, interrupt in pieces:
        address = address if adjacent else address + gap * 2 + 2
        prdt.append((address, length, interrupt))
        dw3 = (length - 1) | (PRD_I if interrupt else 0)
        memory.write(table + 0x80 + 16 * len(prdt) - 16, struct.pack("<IIII", address, 0, 0, dw3))
        address += length + (length & 1)  # DBA bit 0 is ignored: keep them even
    expected, left, interrupt_expected = [], nbytes, False
    for address, length, interrupt in prdt:
        if left <= 0:
            break
        expected.append(memory.read(address, min(length, left)))
        interrupt_expected |= interrupt
        left -= min(length, left)
    walked = {}
    for _ in range(2):
        buffers, interrupt = prdt_buffers(memory, table, len(prdt), nbytes, walked)
        if left > 0:
            assert buffers is None
        else:
            assert b"".join(map(bytes, buffers)) == b"".join(expected)
            assert interrupt == interrupt_expected


@given(
    command=st.sampled_from([READ_DMA_EXT, WRITE_DMA_EXT, READ_FPDMA, WRITE_FPDMA]),
    lba=st.one_of(st.integers(0, DISK_SECTORS + 8), st.integers(0, (1 << 48) - 1)),
    count=st.integers(0, 0xFFFF),
    features=st.integers(0, 0xFFFF),
    device=st.integers(0, 0xFF),
)
@settings(max_examples=300, deadline=None)
def test_the_lean_decode_gives_what_the_full_decode_gives(command, lba, count, features, device):
    """decode_transfer remembers a transfer's shape by (command, COUNT, FEATURES): for
    every LBA it must say what decode's Request says, and None where decode refuses."""
    from emu.ata.errors import AtaError
    from emu.ata.taskfile import TaskFile

    disk = make_machine(disk_sizes=(1 << 20,), ports=1).hba.ports[0].disk
    tf = TaskFile(command, features, lba, count, device)
    for _ in range(2):  # derived, then remembered
        plain = disk.decode_transfer(command, features, lba, count, device)
        try:
            req = disk.decode(tf)
        except AtaError:
            assert plain is None
            continue
        assert plain == (req.lba, req.nbytes, req.tag, command in (WRITE_DMA_EXT, WRITE_FPDMA))
