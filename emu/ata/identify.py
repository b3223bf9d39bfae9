"""IDENTIFY DEVICE data (ACS-3 7.12.7): 256 little-endian words, built once per disk.

Only what :mod:`emu.ata.disk` implements is claimed. The words that SET FEATURES
and SET MULTIPLE MODE change (59, 63, 85, 88) are patched in place, together
with the integrity word 255.
"""

import struct

from emu import __version__

DEFAULT_MODEL = "AHCI-EMU HARDDISK"
DEFAULT_FIRMWARE = __version__

MAX_MULTIPLE = 16  # word 47: sectors per DRQ block for READ/WRITE MULTIPLE
NCQ_DEPTH = 32  # word 75: queue depth - 1
MAX_PIO_MODE = 4
MAX_MWDMA_MODE = 2
MAX_UDMA_MODE = 6

_SERIAL_LEN = 20
_FIRMWARE_LEN = 8
_MODEL_LEN = 40
_WORD = struct.Struct("<H")
_LBA28_LIMIT = 0x0FFFFFFF


def ata_string(text: str, length: int) -> bytes:
    """``text`` as an ATA string field: ASCII, space padded, each byte pair swapped."""
    raw = text.encode("ascii")
    if len(raw) > length or not all(0x20 <= c <= 0x7E for c in raw):
        raise ValueError(f"{text!r} is not printable ASCII of at most {length} characters")
    raw = raw.ljust(length, b" ")
    swapped = bytearray(length)
    swapped[0::2] = raw[1::2]
    swapped[1::2] = raw[0::2]
    return bytes(swapped)


def serial_for(identity: str) -> str:
    """A serial number that is stable for one medium: a hash of its identity."""
    import hashlib  # (OpenSSL) loaded only by a run with a disk

    digest = hashlib.sha256(identity.encode("utf-8", "surrogateescape")).hexdigest()
    return digest[:_SERIAL_LEN].upper()


def _legacy_geometry(sectors: int) -> tuple[int, int, int]:
    """Obsolete words 1/3/6: cylinders (at most 16383), 16 heads, 63 sectors per track."""
    heads, per_track = 16, 63
    cylinders = max(1, min(sectors // (heads * per_track), 16383))
    return cylinders, heads, per_track


class IdentifyData:
    """The 512 bytes IDENTIFY DEVICE returns, with setters for the mutable words."""

    def __init__(self, sectors: int, *, model: str, serial: str, firmware: str) -> None:
        w = [0] * 256
        cylinders, heads, per_track = _legacy_geometry(sectors)
        w[0] = 0x0040  # ATA device, fixed (not removable)
        w[1], w[3], w[6] = cylinders, heads, per_track
        w[47] = 0x8000 | MAX_MULTIPLE
        w[49] = 0x0B00  # IORDY supported, LBA supported, DMA supported
        w[50] = 0x4000  # bit 14 shall be one
        w[53] = 0x0006  # words 64-70 and word 88 are valid
        lba28 = min(sectors, _LBA28_LIMIT)
        w[60], w[61] = lba28 & 0xFFFF, lba28 >> 16
        w[64] = 0x0003  # PIO modes 3 and 4
        w[65] = w[66] = w[67] = w[68] = 120  # ns: MWDMA 2 and PIO 4 cycle times
        w[69] = 0x4020  # deterministic read after TRIM, and it reads zeros
        w[75] = NCQ_DEPTH - 1
        w[76] = 0x010E  # NCQ; SATA Gen1, Gen2 and Gen3 signalling speeds
        w[77] = 0x0002  # current signalling speed Gen1, as PxSSTS.SPD on QEMU's AHCI
        w[80] = 0x01F0  # ATA/ATAPI-4 up to ATA8-ACS
        w[82] = 0x4068  # NOP, read look-ahead, volatile write cache, power management
        w[83] = 0x7400  # FLUSH CACHE EXT, FLUSH CACHE, 48-bit addresses
        w[84] = 0x4020  # General Purpose Logging (READ LOG EXT)
        w[86] = 0x3400  # enabled: FLUSH CACHE EXT, FLUSH CACHE, 48-bit addresses
        w[87] = 0x4020
        for i in range(4):
            w[100 + i] = (sectors >> (16 * i)) & 0xFFFF
        w[106] = 0x4000  # one 512-byte logical sector per 512-byte physical sector
        w[169] = 0x0001  # DATA SET MANAGEMENT with TRIM
        w[217] = 0x0001  # non-rotating medium
        self._buf = bytearray(struct.pack("<256H", *w))
        self._buf[20:40] = ata_string(serial, _SERIAL_LEN)
        self._buf[46:54] = ata_string(firmware, _FIRMWARE_LEN)
        self._buf[54:94] = ata_string(model, _MODEL_LEN)
        self._view = memoryview(self._buf).toreadonly()
        self._seal()

    @property
    def data(self) -> memoryview:
        """The 512 bytes, read-only (a view: it follows later changes)."""
        return self._view

    def set_multiple(self, sectors: int) -> None:
        """Word 59: the current READ/WRITE MULTIPLE block size; 0 means disabled."""
        self._put(59, 0x0100 | sectors if sectors else 0)

    def set_cache(self, *, write_cache: bool, look_ahead: bool) -> None:
        """Word 85 bits 5 and 6: volatile write cache and read look-ahead enabled."""
        self._put(85, 0x4008 | (write_cache << 5) | (look_ahead << 6))

    def set_dma_mode(self, *, mwdma: int | None, udma: int | None) -> None:
        """Words 63 and 88: the selected Multiword DMA or Ultra DMA mode (at most one)."""
        self._put(63, 0x0007 | (0 if mwdma is None else 0x100 << mwdma))
        self._put(88, 0x007F | (0 if udma is None else 0x100 << udma))

    def _put(self, index: int, value: int) -> None:
        _WORD.pack_into(self._buf, 2 * index, value)
        self._seal()

    def _seal(self) -> None:
        """Word 255: signature A5h and a checksum making all 512 bytes sum to 0 mod 256."""
        self._buf[510] = 0xA5
        self._buf[511] = -sum(self._buf[:511]) & 0xFF
