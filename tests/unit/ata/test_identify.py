import struct

import pytest

from emu import __version__
from emu.ata import AtaDisk, Protocol
from emu.ata.commands import Command
from emu.testing.memory_disk import MemoryDevice

from .helpers import issue, taskfile


def identify(disk: AtaDisk) -> bytes:
    out = issue(disk, taskfile(Command.IDENTIFY_DEVICE))
    assert out.ok
    return bytes(out.data)


def words(data: bytes) -> list[int]:
    return list(struct.unpack("<256H", data))


def ata_text(data: bytes, first_word: int, nwords: int) -> str:
    """Undo the ATA string byte swap and strip the space padding."""
    raw = data[2 * first_word : 2 * (first_word + nwords)]
    return bytes(b for i in range(0, len(raw), 2) for b in (raw[i + 1], raw[i])).decode().rstrip()


def test_identify_is_512_bytes_of_pio_in(disk):
    req = disk.decode(taskfile(Command.IDENTIFY_DEVICE))
    assert (req.protocol, req.nbytes, req.tag) == (Protocol.PIO_IN, 512, None)


def test_identify_ends_with_signature_and_valid_checksum(disk):
    data = identify(disk)
    assert data[510] == 0xA5
    assert sum(data) % 256 == 0


def test_identify_reports_capacity_in_28_and_48_bit_words(disk):
    w = words(identify(disk))
    assert w[60] | w[61] << 16 == 2048
    assert w[100] | w[101] << 16 | w[102] << 32 | w[103] << 48 == 2048


def test_identify_caps_28_bit_capacity_and_geometry_on_a_large_disk():
    sectors = (1 << 33) + 5  # 4 TiB and a bit
    w = words(identify(AtaDisk(MemoryDevice(sectors))))
    assert w[60] | w[61] << 16 == 0x0FFFFFFF
    assert w[100] | w[101] << 16 | w[102] << 32 | w[103] << 48 == sectors
    assert (w[1], w[3], w[6]) == (16383, 16, 63)


def test_identify_legacy_geometry_follows_capacity(disk):
    w = words(identify(disk))
    assert (w[1], w[3], w[6]) == (2, 16, 63)  # 2048 sectors // (16 * 63)


def test_identify_strings_default_to_emulator_model_and_package_version(disk):
    data = identify(disk)
    assert ata_text(data, 27, 20) == "AHCI-EMU HARDDISK"
    assert ata_text(data, 23, 4) == __version__


def test_identify_strings_can_be_chosen():
    dev = MemoryDevice(64)
    data = identify(AtaDisk(dev, model="Test Disk 7", firmware="FW1.2", serial="SN-0042"))
    assert ata_text(data, 27, 20) == "Test Disk 7"
    assert ata_text(data, 23, 4) == "FW1.2"
    assert ata_text(data, 10, 10) == "SN-0042"


def test_identify_serial_is_stable_per_medium_and_differs_between_media():
    serial_a = ata_text(identify(AtaDisk(MemoryDevice(64, identity="/img/a.vdi"))), 10, 10)
    serial_a_again = ata_text(identify(AtaDisk(MemoryDevice(64, identity="/img/a.vdi"))), 10, 10)
    serial_b = ata_text(identify(AtaDisk(MemoryDevice(64, identity="/img/b.vdi"))), 10, 10)
    assert serial_a == serial_a_again
    assert serial_a != serial_b
    assert serial_a and serial_a.isascii() and serial_a.isprintable()


@pytest.mark.parametrize("model", ["x" * 41, "Disk\u00e9", "tab\there"])
def test_identify_rejects_a_model_that_does_not_fit_an_ata_string(model):
    with pytest.raises(ValueError):
        AtaDisk(MemoryDevice(64), model=model)


def test_identify_claims_ncq_with_32_tags_and_sata_speeds(disk):
    w = words(identify(disk))
    assert w[75] & 0x1F == 31
    assert w[76] & (1 << 8)  # NCQ
    assert w[76] & 0b1110 == 0b1110  # Gen1, Gen2, Gen3
    assert not w[76] & 1  # bit 0 shall be zero


def test_identify_claims_lba48_and_both_flush_commands(disk):
    w = words(identify(disk))
    for word in (83, 86):
        assert w[word] & (1 << 10), "48-bit"
        assert w[word] & (1 << 12), "FLUSH CACHE"
        assert w[word] & (1 << 13), "FLUSH CACHE EXT"
    assert w[49] & (1 << 9) and w[49] & (1 << 8)  # LBA and DMA


def test_identify_claims_trim_returning_zeros(disk):
    w = words(identify(disk))
    assert w[169] & 1
    assert w[69] & (1 << 14) and w[69] & (1 << 5)


def test_identify_does_not_claim_smart_or_security(disk):
    w = words(identify(disk))
    assert not w[82] & 1  # SMART
    assert not w[82] & (1 << 1)  # Security
    assert not w[84] & 0b11  # SMART error logging / self-test


def test_identify_reports_ata8_acs_sectors_and_a_non_rotating_medium(disk):
    w = words(identify(disk))
    assert w[80] == 0x01F0
    assert w[106] == 0x4000  # 512-byte logical == physical sectors
    assert w[217] == 1
    assert w[0] == 0x0040


def test_identify_power_on_settings(disk):
    w = words(identify(disk))
    assert w[47] == 0x8010  # max 16 sectors per READ/WRITE MULTIPLE block
    assert w[59] == 0x0110  # multiple mode on, 16 sectors
    assert w[85] & (1 << 5) and w[85] & (1 << 6)  # write cache, look-ahead on
    assert w[88] == 0x407F  # UDMA 0-6 supported, 6 selected
    assert w[63] == 0x0007  # MWDMA 0-2 supported, none selected


def test_identify_into_short_buffer_fills_only_the_buffer(disk):
    out = issue(disk, taskfile(Command.IDENTIFY_DEVICE), buffer_size=100)
    assert out.ok
    assert bytes(out.data) == identify(disk)[:100]


def test_identify_into_long_buffer_leaves_the_rest_untouched(disk):
    out = issue(disk, taskfile(Command.IDENTIFY_DEVICE), b"\xee" * 600, buffer_size=600)
    assert out.ok
    assert bytes(out.data[:512]) == identify(disk)
    assert out.data[512:] == b"\xee" * 88
