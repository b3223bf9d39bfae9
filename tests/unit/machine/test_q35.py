"""Bus 0's configuration spaces equal QEMU q35's, byte for byte, as SeaBIOS leaves them."""

import io
import re
from pathlib import Path

import pytest

from emu.machine.board import Board, BoardConfig

REFERENCE = Path(__file__).resolve().parents[2] / "oracle" / "q35_reference.txt"


def reference_config() -> dict[tuple[int, int], bytes]:
    text = REFERENCE.read_text().split("# Run 2")[0]
    spaces = {}
    for bdf, body in re.findall(r"config (\S+) \S+\n((?:  [0-9a-f]{2}:.*\n)+)", text):
        _, device, function = (int(x, 16) for x in re.split("[:.]", bdf))
        spaces[(device, function)] = b"".join(
            bytes.fromhex(line.split(":")[1]) for line in body.splitlines()
        )
    return spaces


REFERENCE_SPACES = reference_config()


@pytest.fixture(scope="module")
def board():
    return Board(BoardConfig(memory_mib=16, serial=io.BytesIO()))


def test_reference_lists_the_four_q35_functions():
    assert sorted(REFERENCE_SPACES) == [(0, 0), (31, 0), (31, 2), (31, 3)]


# Where ICH9 has what QEMU 7.2's q35 lacks (tests/oracle/differences.toml): the PCI power
# management capability at 70h (PMC 4003h, PMCS 0008h, next: the SATA capability at A8h),
# linked after MSI, whose next pointer (81h) leads to it.
ICH9_ADDITIONS = {
    (31, 2): {0x70: 0x01, 0x71: 0xA8, 0x72: 0x03, 0x73: 0x40, 0x74: 0x08, 0x81: 0x70},
}


@pytest.mark.parametrize("slot", sorted(REFERENCE_SPACES), ids=lambda s: f"00:{s[0]:02x}.{s[1]}")
def test_config_space_matches_q35(board, slot):
    ours = bytes(board.pci.functions[slot].config)
    theirs = bytearray(REFERENCE_SPACES[slot])
    for offset, value in ICH9_ADDITIONS.get(slot, {}).items():
        theirs[offset] = value
    diffs = [
        f"0x{i:02x}: ours {a:02x} q35 {b:02x}"
        for i, (a, b) in enumerate(zip(ours, theirs, strict=True))
        if a != b
    ]
    assert diffs == []


def test_no_other_functions_on_bus_0(board):
    assert sorted(board.pci.functions) == sorted(REFERENCE_SPACES)
