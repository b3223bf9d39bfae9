"""00:1f.2's ICH9 registers, read and written through configuration mechanism #1 as a
guest does: the Port Control and Status register (92h) and the power management
capability, whose D3hot state turns the function's BARs and interrupts off."""

import io

import pytest

from emu.machine.board import Board, BoardConfig
from emu.machine.pci import PciHost
from emu.testing.memory_disk import MemoryDevice

AHCI = (31, 2)
ABAR = 0xFEBFF000
GHC = 0x04


def config_address(offset: int) -> int:
    return 0x80000000 | AHCI[0] << 11 | AHCI[1] << 8 | (offset & 0xFC)


@pytest.fixture
def board():
    disks = [MemoryDevice(2048), None, MemoryDevice(2048)]
    return Board(BoardConfig(memory_mib=16, serial=io.BytesIO(), disks=disks))


def cfg_read(board, offset: int, size: int) -> int:
    board.ports.write(PciHost.ADDRESS_PORT, 4, config_address(offset))
    return board.ports.read(PciHost.DATA_PORT + (offset & 3), size)


def cfg_write(board, offset: int, size: int, value: int) -> None:
    board.ports.write(PciHost.ADDRESS_PORT, 4, config_address(offset))
    board.ports.write(PciHost.DATA_PORT + (offset & 3), size, value)


def test_pcs_reads_zero_as_firmware_leaves_it(board):
    assert cfg_read(board, 0x92, 2) == 0


def test_pcs_port_enables_read_back_with_present_disks(board):
    cfg_write(board, 0x92, 2, 0xFFFF)
    # P0E-P5E and ORM kept; P0P and P2P: the disks on ports 0 and 2.
    assert cfg_read(board, 0x92, 2) == 0x8000 | 0b101 << 8 | 0x3F
    cfg_write(board, 0x92, 1, 0x01)  # only port 0 enabled: port 2 is no longer present
    assert cfg_read(board, 0x92, 2) == 0x8000 | 0b001 << 8 | 0x01
    cfg_write(board, 0x92, 2, 0x0000)
    assert cfg_read(board, 0x92, 2) == 0
    assert cfg_read(board, 0x90, 1) == 0x40  # MAP beside it unchanged


def test_capability_list_is_msi_then_power_management_then_sata(board):
    chain, ptr = [], cfg_read(board, 0x34, 1)
    while ptr:
        chain.append((ptr, cfg_read(board, ptr, 1)))
        ptr = cfg_read(board, ptr + 1, 1)
    assert chain == [(0x80, 0x05), (0x70, 0x01), (0xA8, 0x12)]
    assert cfg_read(board, 0x72, 2) == 0x4003  # PM 1.2, PME from D3hot, no D1/D2
    assert cfg_read(board, 0x74, 2) == 0x0008  # D0, No_Soft_Reset


def test_pmc_is_read_only_and_d1_d2_are_refused(board):
    cfg_write(board, 0x72, 2, 0x0000)
    assert cfg_read(board, 0x72, 2) == 0x4003
    for unsupported in (1, 2):
        cfg_write(board, 0x74, 2, unsupported)
        assert cfg_read(board, 0x74, 2) & 3 == 0


def test_d3hot_turns_the_abar_off_and_d0_brings_it_back_unchanged(board):
    board.hba.write(GHC, 4, 0x2)  # GHC.IE
    cfg_write(board, 0x74, 2, 0x0003)
    assert cfg_read(board, 0x74, 2) & 3 == 3
    assert board.pci.functions[AHCI].bar_address(5) is None
    assert board.pci.functions[AHCI].bar_address(4) is None
    cfg_write(board, 0x74, 2, 0x0000)
    assert board.pci.functions[AHCI].bar_address(5) == ABAR
    assert board.hba.read(GHC, 4) & 0x2  # No_Soft_Reset: the HBA kept its state
