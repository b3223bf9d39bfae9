"""The board guests give the same transcript and exit code under QEMU as under ahci-emu."""

import pytest
from harness import GUESTS, boot, load_differences, unexplained

CASES = [
    ("hello", ""),
    ("hello", "first=1 second two"),
    ("pci", ""),
]


@pytest.mark.parametrize(("guest", "append"), CASES, ids=[f"{g}[{a}]" for g, a in CASES])
def test_guest_matches_qemu(guest, append, tmp_path):
    elf = GUESTS / f"{guest}.elf"
    theirs = boot(elf, tmp_path / "qemu", "qemu", append)
    ours = boot(elf, tmp_path / "ours", "emu", append)
    assert theirs.transcript, "QEMU printed nothing: the oracle would prove nothing"
    assert unexplained(guest, ours, theirs, load_differences()) == []
