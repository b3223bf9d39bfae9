import struct

import pytest

from emu.ata.commands import Command
from emu.ata.taskfile import ERROR_ABRT

from .helpers import issue, pattern, taskfile


def identify_words(disk) -> list[int]:
    data = bytes(issue(disk, taskfile(Command.IDENTIFY_DEVICE)).data)
    assert sum(data) % 256 == 0, "IDENTIFY checksum"
    return list(struct.unpack("<256H", data))


def set_features(disk, subcommand: int, count: int = 0):
    return issue(disk, taskfile(Command.SET_FEATURES, features=subcommand, count=count))


def test_disabling_the_write_cache_shows_in_identify_and_flushes_first(disk, mem):
    assert issue(disk, taskfile(Command.WRITE_DMA_EXT, lba=0, count=1), pattern(1)).ok
    assert mem.ops("flush") == []
    assert set_features(disk, 0x82).ok
    assert mem.ops("flush") == [("flush",)]
    assert not identify_words(disk)[85] & (1 << 5)
    assert identify_words(disk)[82] & (1 << 5)  # still supported


def test_writes_are_flushed_while_the_write_cache_is_disabled(disk, mem):
    assert set_features(disk, 0x82).ok
    mem.calls.clear()
    assert issue(disk, taskfile(Command.WRITE_DMA, lba=4, count=2), pattern(2)).ok
    assert [c[0] for c in mem.calls] == ["writev", "flush"]


def test_enabling_the_write_cache_stops_per_write_flushes(disk, mem):
    assert set_features(disk, 0x82).ok
    assert set_features(disk, 0x02).ok
    assert identify_words(disk)[85] & (1 << 5)
    mem.calls.clear()
    assert issue(disk, taskfile(Command.WRITE_DMA, lba=4, count=2), pattern(2)).ok
    assert [c[0] for c in mem.calls] == ["writev"]


def test_disabling_the_write_cache_aborts_if_the_flush_fails(disk, mem):
    mem.failing.add("flush")
    out = set_features(disk, 0x82)
    assert (out.completion.status, out.completion.error) == (0x41, ERROR_ABRT)
    assert identify_words(disk)[85] & (1 << 5)


def test_read_look_ahead_toggles_identify_word_85(disk):
    assert set_features(disk, 0x55).ok
    assert not identify_words(disk)[85] & (1 << 6)
    assert set_features(disk, 0xAA).ok
    assert identify_words(disk)[85] & (1 << 6)


@pytest.mark.parametrize("mode", range(7))
def test_set_transfer_mode_udma_selects_that_mode_only(disk, mode):
    assert set_features(disk, 0x03, 0x40 | mode).ok
    w = identify_words(disk)
    assert w[88] == 0x007F | (0x100 << mode)
    assert w[63] == 0x0007


@pytest.mark.parametrize("mode", range(3))
def test_set_transfer_mode_mwdma_selects_it_and_deselects_udma(disk, mode):
    assert set_features(disk, 0x03, 0x20 | mode).ok
    w = identify_words(disk)
    assert w[63] == 0x0007 | (0x100 << mode)
    assert w[88] == 0x007F


@pytest.mark.parametrize("value", [0x00, 0x01, 0x08, 0x0C])
def test_set_transfer_mode_pio_deselects_dma_modes(disk, value):
    assert set_features(disk, 0x03, value).ok
    w = identify_words(disk)
    assert (w[63], w[88]) == (0x0007, 0x007F)


@pytest.mark.parametrize(
    "value",
    [
        0x47,  # UDMA 7
        0x23,  # MWDMA 3
        0x0D,  # PIO flow control mode 5
        0x02,  # PIO default with a mode number
        0x10,  # single-word DMA 0: obsolete
        0x80,  # reserved transfer type
    ],
)
def test_set_transfer_mode_rejects_unsupported_modes(disk, value):
    before = identify_words(disk)
    out = set_features(disk, 0x03, value)
    assert (out.completion.status, out.completion.error) == (0x41, ERROR_ABRT)
    assert identify_words(disk) == before


@pytest.mark.parametrize("subcommand", [0x05, 0x10, 0x42, 0x66, 0xCC, 0x00, 0xFF])
def test_other_set_features_subcommands_abort(disk, subcommand):
    out = set_features(disk, subcommand)
    assert (out.completion.status, out.completion.error) == (0x41, ERROR_ABRT)


@pytest.mark.parametrize("sectors", [1, 2, 4, 8, 16])
def test_set_multiple_mode_shows_in_identify_word_59(disk, sectors):
    out = issue(disk, taskfile(Command.SET_MULTIPLE_MODE, count=sectors))
    assert out.ok and out.completion.status == 0x50
    assert identify_words(disk)[59] == 0x0100 | sectors


def test_set_multiple_mode_zero_disables_it(disk):
    assert issue(disk, taskfile(Command.SET_MULTIPLE_MODE, count=0)).ok
    assert identify_words(disk)[59] == 0


@pytest.mark.parametrize("sectors", [3, 6, 32, 128, 255])
def test_set_multiple_mode_rejects_other_sizes(disk, sectors):
    out = issue(disk, taskfile(Command.SET_MULTIPLE_MODE, count=sectors))
    assert out.completion.error == ERROR_ABRT
    assert identify_words(disk)[59] == 0x0110


def test_reset_restores_power_on_settings(disk, mem):
    before = identify_words(disk)
    assert issue(disk, taskfile(Command.SET_MULTIPLE_MODE, count=0)).ok
    assert set_features(disk, 0x82).ok
    assert set_features(disk, 0x55).ok
    assert set_features(disk, 0x03, 0x21).ok
    assert identify_words(disk) != before
    disk.reset()
    assert identify_words(disk) == before
    mem.calls.clear()
    assert issue(disk, taskfile(Command.WRITE_DMA, lba=0, count=1), pattern(1)).ok
    assert mem.ops("flush") == []  # write cache back on
