"""Guest accesses to the AHCI ABAR through the MMIO bus: aligned 32-bit accesses take the
HBA's register tables, and whatever must see every access (register tracing, a wrapper
put on the region) still does."""

import io
import json
import struct

from elfmaker import exit_with

from emu.ahci import regs
from emu.machine.board import Board, BoardConfig
from emu.testing.memory_disk import MemoryDevice

ABAR = 0xFEBFF000
OUT = 0x200000  # where the guests store what they read
P0 = regs.PORT_BASE  # port 0's registers
P1 = regs.PORT_BASE + regs.PORT_STRIDE


def load(off: int) -> bytes:
    """mov eax, [ABAR+off]"""
    return b"\xa1" + struct.pack("<I", ABAR + off)


def store(index: int) -> bytes:
    """mov [OUT+4*index], eax"""
    return b"\xa3" + struct.pack("<I", OUT + 4 * index)


def write32(off: int, value: int) -> bytes:
    """mov dword [ABAR+off], value"""
    return b"\xc7\x05" + struct.pack("<II", ABAR + off, value)


def write8(off: int, value: int) -> bytes:
    """mov byte [ABAR+off], value"""
    return b"\xc6\x05" + struct.pack("<IB", ABAR + off, value)


def run(make_guest, code: bytes, **config) -> Board:
    board = Board(
        BoardConfig(memory_mib=16, serial=io.BytesIO(), disks=[MemoryDevice(2048)], **config)
    )
    board.load(make_guest(code + exit_with(0)))
    assert board.run(10) == 0
    return board


def stored(board: Board, count: int) -> list[int]:
    return list(struct.unpack_from(f"<{count}I", board.memory.mem, OUT))


def test_every_aligned_register_reads_as_the_spec_says(make_guest):
    # mov esi, ABAR; mov edi, OUT; mov ecx, 1024; rep movsd: all of ABAR, dword by dword
    code = (
        b"\xbe"
        + struct.pack("<I", ABAR)
        + b"\xbf"
        + struct.pack("<I", OUT)
        + b"\xb9\x00\x04\x00\x00\xf3\xa5"
    )
    words = stored(run(make_guest, code), 1024)
    expected = {
        regs.CAP: 0xC0141F05,
        regs.GHC: regs.GHC_AE,
        regs.PI: 0x3F,
        regs.VS: 0x00010000,
        P0 + regs.PxCMD: regs.CMD_SUD | regs.CMD_POD,
        P0 + regs.PxTFD: 0x150,
        P0 + regs.PxSIG: regs.SIG_ATA,
        P0 + regs.PxSSTS: 0x113,
    }
    for port in range(1, 6):  # the empty ports
        base = regs.PORT_BASE + port * regs.PORT_STRIDE
        expected |= {
            base + regs.PxCMD: regs.CMD_SUD | regs.CMD_POD,
            base + regs.PxTFD: 0x7F,
            base + regs.PxSIG: regs.SIG_NONE,
        }
    assert {4 * i: word for i, word in enumerate(words) if word} == expected


def test_pxis_mirrors_pxserr_and_clears_only_its_rw1c_bits(make_guest):
    code = (
        write32(P0 + regs.PxSCTL, 1)  # COMRESET, then release it: PxSERR.DIAG.X, PxIS.PCS
        + write32(P0 + regs.PxSCTL, 0)
        + write32(P0 + regs.PxIE, 0xFFFFFFFF)
        + load(P0 + regs.PxIS)
        + store(0)
        + write32(P0 + regs.PxIS, 0xFFFFFFFF)  # PCS is not RW1C: it stays
        + load(P0 + regs.PxIS)
        + store(1)
        + load(regs.IS)  # and keeps the port's IS bit set
        + store(2)
        + write32(P0 + regs.PxSERR, regs.SERR_DIAG_X)
        + load(P0 + regs.PxIS)
        + store(3)
        + write32(regs.IS, 0xFFFFFFFF)
        + load(regs.IS)
        + store(4)
    )
    pcs = stored(run(make_guest, code), 5)
    assert pcs[0] & regs.IS_PCS and pcs[1] == regs.IS_PCS
    assert pcs[2] == 1
    assert pcs[3:] == [0, 0]


def test_a_traced_run_records_every_register_access(make_guest, tmp_path):
    code = (
        load(P0 + regs.PxCI)
        + write32(P0 + regs.PxIS, 0xFFFFFFFF)
        + load(regs.IS)
        + write8(P1 + regs.PxFB + 1, 0x12)
        + load(P1 + regs.PxFB)
    )
    trace = io.StringIO()
    run(make_guest, code, trace=trace, trace_registers=True)
    events = [json.loads(line) for line in trace.getvalue().splitlines()]
    assert [(e["event"], e["offset"], e["size"], e["value"]) for e in events] == [
        ("read", P0 + regs.PxCI, 4, 0),
        ("write", P0 + regs.PxIS, 4, 0xFFFFFFFF),
        ("read", regs.IS, 4, 0),
        ("write", P1 + regs.PxFB + 1, 1, 0x12),
        ("read", P1 + regs.PxFB, 4, 0x1200),
    ]


def test_a_wrapper_put_on_the_abar_region_sees_every_access(make_guest):
    code = load(P0 + regs.PxSSTS) + store(0) + write32(P0 + regs.PxIE, 1) + load(P0 + regs.PxIE)
    code += store(1)
    board = Board(BoardConfig(memory_mib=16, serial=io.BytesIO(), disks=[MemoryDevice(2048)]))
    (region,) = [r for r in board.mmio._regions if r.name == "AHCI ABAR"]
    seen = []
    read, write = region.read, region.write

    def counted_read(offset, size):
        seen.append(("read", offset))
        return read(offset, size)

    def counted_write(offset, size, value):
        seen.append(("write", offset))
        write(offset, size, value)

    base = region.base
    board.mmio.move(region, None)
    region.read, region.write = counted_read, counted_write
    board.mmio.move(region, base)
    board.load(make_guest(code + exit_with(0)))
    assert board.run(10) == 0
    assert seen == [
        ("read", P0 + regs.PxSSTS),
        ("write", P0 + regs.PxIE),
        ("read", P0 + regs.PxIE),
    ]
    assert stored(board, 2) == [0x113, 1]
