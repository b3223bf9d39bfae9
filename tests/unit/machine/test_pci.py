"""PCI configuration mechanism #1 and the generic configuration-space model."""

import pytest

from emu.machine.pci import (
    BAR0,
    CAP_ID_MSI,
    COMMAND,
    COMMAND_IO,
    COMMAND_MEMORY,
    STATUS,
    Bar,
    PciFunction,
    PciHost,
)


@pytest.fixture
def host():
    return PciHost()


def select(host: PciHost, device: int, function: int, register: int, bus: int = 0) -> None:
    host.write_address(0, 4, 0x80000000 | bus << 16 | device << 11 | function << 8 | register)


def test_present_function_answers_and_absent_reads_all_ones(host):
    host.attach(0, 0, PciFunction(0x8086, 0x29C0, 0x060000))
    select(host, 0, 0, 0)
    assert host.read_data(0, 4) == 0x29C08086
    select(host, 3, 0, 0)
    assert host.read_data(0, 4) == 0xFFFFFFFF
    select(host, 0, 0, 0, bus=1)
    assert host.read_data(0, 2) == 0xFFFF


def test_disabled_address_register_reads_all_ones(host):
    host.attach(0, 0, PciFunction(0x8086, 0x29C0, 0x060000))
    host.write_address(0, 4, 0x00000000)
    assert host.read_data(0, 4) == 0xFFFFFFFF
    assert host.read_address(0, 4) == 0


def test_byte_and_word_reads_agree_with_dword(host):
    host.attach(0, 0, PciFunction(0x8086, 0x2922, 0x010601, revision=2))
    select(host, 0, 0, 8)
    dword = host.read_data(0, 4)
    assert [host.read_data(i, 1) for i in range(4)] == [(dword >> 8 * i) & 0xFF for i in range(4)]
    assert host.read_data(2, 2) == dword >> 16


def test_identification_is_read_only():
    fn = PciFunction(0x8086, 0x29C0, 0x060000, revision=1)
    fn.write(0, 4, 0x12345678)
    fn.write(8, 4, 0xFFFFFFFF)
    assert fn.read(0, 4) == 0x29C08086
    assert fn.read(8, 4) == 0x06000001


def test_status_error_bits_are_write_one_to_clear():
    fn = PciFunction(0x8086, 0x2922, 0x010601)
    fn.config[STATUS + 1] = 0x20  # received master abort
    fn.write(STATUS, 2, 0x0000)
    assert fn.read(STATUS, 2) == 0x2000
    fn.write(STATUS, 2, 0x2000)
    assert fn.read(STATUS, 2) == 0


def test_bar_sizing_reads_back_the_size_mask_and_restores():
    moves = []
    fn = PciFunction(0x8086, 0x2922, 0x010601)
    fn.add_bar(5, Bar(0x1000, on_move=moves.append), 0xFEBFF000)
    fn.write(COMMAND, 2, COMMAND_MEMORY)
    assert moves[-1] == 0xFEBFF000
    fn.write(BAR0 + 20, 4, 0xFFFFFFFF)
    assert fn.read(BAR0 + 20, 4) == 0xFFFFF000
    assert moves[-1] is None  # not decoded while it holds its size mask
    fn.write(BAR0 + 20, 4, 0xFEBFF000)
    assert fn.read(BAR0 + 20, 4) == 0xFEBFF000
    assert moves[-1] == 0xFEBFF000


def test_io_bar_keeps_its_space_bit_and_size():
    fn = PciFunction(0x8086, 0x2922, 0x010601)
    fn.add_bar(4, Bar(0x20, io=True), 0xC040)
    fn.write(BAR0 + 16, 4, 0xFFFFFFFF)
    assert fn.read(BAR0 + 16, 4) == 0xFFFFFFE1


def test_command_register_gates_decoding_and_relocation_moves_the_window():
    moves = []
    fn = PciFunction(0x8086, 0x2922, 0x010601)
    fn.add_bar(5, Bar(0x1000, on_move=moves.append), 0xFEBFF000)
    fn.write(COMMAND, 2, COMMAND_IO)
    assert moves[-1] is None
    fn.write(COMMAND, 2, COMMAND_MEMORY)
    fn.write(BAR0 + 20, 4, 0xE0000000)
    assert moves[-1] == 0xE0000000
    fn.write(COMMAND, 2, 0)
    assert moves[-1] is None


def test_unimplemented_bars_read_zero_after_writing_ones():
    fn = PciFunction(0x8086, 0x29C0, 0x060000)
    fn.write(BAR0, 4, 0xFFFFFFFF)
    assert fn.read(BAR0, 4) == 0


def test_capability_list_is_linked_from_0x34():
    fn = PciFunction(0x8086, 0x2922, 0x010601)
    msi = fn.add_capability(CAP_ID_MSI, bytes(8), offset=0x80)
    sata = fn.add_capability(0x12, bytes(6), offset=0xA8)
    assert fn.read(STATUS, 2) & 0x10
    assert fn.read(0x34, 1) == msi
    assert fn.read(msi + 1, 1) == sata
    assert fn.read(sata + 1, 1) == 0
    assert fn.find_capability(0x12) == sata
    assert fn.find_capability(0x11) is None
